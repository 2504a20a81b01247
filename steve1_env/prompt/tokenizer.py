"""The CLIP byte-pair-encoding tokenizer, offline.

MineCLIP tokenizes with the CLIP tokenizer it fetches from a model hub at run time. This one
reads the same vocabulary (``bpe_simple_vocab_16e6.txt.gz``, 49408 ids, shipped in
``steve1_env/prompt/data`` under OpenAI's MIT licence) and needs no network.

Text is fixed with ftfy, HTML-unescaped, whitespace-collapsed and lower-cased, split into words,
numbers and punctuation, and each piece's UTF-8 bytes are merged pair by pair in the order the
vocabulary ranks them.
"""

from __future__ import annotations

import gzip
import html
import itertools
from functools import lru_cache
from importlib import resources

import numpy as np

from steve1_env.errors import warn_caller

CONTEXT_LENGTH = 77
VOCAB_SIZE = 49408
START = "<|startoftext|>"
END = "<|endoftext|>"
_VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
_END_OF_WORD = "</w>"
_CACHE_LIMIT = 10_000


@lru_cache(maxsize=1)
def _byte_alphabet() -> dict[int, str]:
    """Maps every byte to a printable character, keeping printable Latin-1 bytes as themselves."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    alphabet = {b: chr(b) for b in printable}
    spare = 256
    for b in range(256):
        if b not in alphabet:
            alphabet[b] = chr(spare)
            spare += 1
    return alphabet


class ClipTokenizer:
    """Turns text into CLIP token ids and fixed-length rows.

    Args:
        vocab_path: A ``bpe_simple_vocab_16e6.txt.gz``; the packaged copy by default.
    """

    def __init__(self, vocab_path: str | None = None) -> None:
        import regex  # a core dependency; imported here to keep `import steve1_env` light

        if vocab_path is None:
            data = resources.files("steve1_env.prompt") / "data" / _VOCAB_FILE
            raw = data.read_bytes()
        else:
            with open(vocab_path, "rb") as handle:
                raw = handle.read()
        lines = gzip.decompress(raw).decode("utf-8").split("\n")
        # Line 0 is a version header; the ranked merges fill the vocabulary up to its size.
        n_merges = VOCAB_SIZE - 2 * 256 - 2
        merges = [tuple(line.split()) for line in lines[1 : 1 + n_merges]]
        alphabet = list(_byte_alphabet().values())
        tokens = alphabet + [c + _END_OF_WORD for c in alphabet]
        tokens += ["".join(pair) for pair in merges] + [START, END]
        self.encoder = {token: index for index, token in enumerate(tokens)}
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.start_id, self.end_id = self.encoder[START], self.encoder[END]
        self._pattern = regex.compile(
            r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|"""
            r"""[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE,
        )
        self._cache: dict[str, list[str]] = {}

    @staticmethod
    def clean(text: str) -> str:
        """Fixes mojibake, unescapes HTML twice, collapses whitespace and lower-cases."""
        import ftfy

        text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
        return " ".join(text.split()).lower()

    def _merge(self, piece: str) -> list[str]:
        cached = self._cache.get(piece)
        if cached is not None:
            return cached
        symbols = [*piece[:-1], piece[-1] + _END_OF_WORD]
        while len(symbols) > 1:
            pairs = set(itertools.pairwise(symbols))
            best = min(pairs, key=lambda pair: self.ranks.get(pair, len(self.ranks)))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(symbols):
                if i < len(symbols) - 1 and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()  # bounded: instructions come from users, without end
        self._cache[piece] = symbols
        return symbols

    def encode(self, text: str, limit: int | None = None) -> list[int]:
        """Returns the BPE ids of `text` (no start or end token added).

        ``<|startoftext|>`` and ``<|endoftext|>`` written in the text become their special
        ids, as in CLIP. With `limit`, encoding stops once more than `limit` ids exist.
        """
        alphabet = _byte_alphabet()
        ids: list[int] = []
        for match in self._pattern.findall(self.clean(text)):
            if match in (START, END):
                ids.append(self.encoder[match])
            else:
                piece = "".join(alphabet[b] for b in match.encode("utf-8"))
                ids.extend(self.encoder[symbol] for symbol in self._merge(piece))
            if limit is not None and len(ids) > limit:
                break
        return ids

    def tokenize(self, text: str, *, warn: bool = True) -> np.ndarray:
        """Returns the ``(77,)`` int64 row: start, up to 75 ids, end, then zeros.

        Longer texts are truncated to 75 ids, with a `steve1_env.errors.Steve1EnvWarning`
        when `warn`.
        """
        keep = CONTEXT_LENGTH - 2
        ids = self.encode(text, limit=keep)
        if len(ids) > keep and warn:
            warn_caller(
                f"The instruction has more than {keep} tokens, all MineCLIP reads, so it was "
                f"truncated: {text[:60]!r}...",
            )
        row = np.zeros(CONTEXT_LENGTH, dtype=np.int64)
        body = [self.start_id, *ids[:keep], self.end_id]
        row[: len(body)] = body
        return row
