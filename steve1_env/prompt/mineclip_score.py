"""The MineCLIP score: how well each env's last 16 frames match its instruction.

MineDojo's judgement for any instruction: MineCLIP's video tower pools the last 16 frames into a
video embedding, its reward head compares it with the text embeddings of the instruction and of
a list of negative prompts, and the score is the softmax probability of the instruction,
``softmax(logits_per_video over [instruction] + negatives)[0]``. It is a similarity, not a
measurement of the world: a high score says the frames look like the text to MineCLIP, which can
be fooled (a tree in view scores "chop a tree" before a log is cut). Thresholds must be
calibrated on real weights; none is shipped as tuned.

Each new frame is encoded exactly once, batched across the engine's envs, and kept in its env's
window; the temporal pooling then runs over all windows in one batch per window length (early in
an episode a window holds fewer than 16 frames and is pooled over those).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from steve1_env.errors import ConfigurationError

CLIP_FRAMES = 16
"""Frames in a MineCLIP clip: the window each env keeps."""

DEFAULT_NEGATIVE_PROMPTS: tuple[str, ...] = (
    "stand still",
    "look at the ground",
    "walk around",
    "look at the sky",
    "open the inventory",
)
"""Prompts the instruction competes with in the softmax (``mineclip_negatives=`` changes them).

Generic Minecraft activities, in the way MineDojo uses other tasks' prompts: a score near
``1 / (1 + len(negatives))`` means the frames match the instruction no better than these. An
instruction that is itself one of them competes with the others only.
"""

TEXT_CACHE_SIZE = 1024
"""Prompts whose MineCLIP text features a scorer keeps."""


class VideoTower(Protocol):
    """What the scorer needs of MineCLIP's video model."""

    def encode_frames(self, frames: np.ndarray) -> Any:
        """``(N, H, W, 3)`` uint8 RGB frames -> ``(N, D)`` per-frame features."""
        ...

    def pool(self, features: Any) -> Any:
        """``(B, T, D)`` per-frame features -> ``(B, D)`` video features."""
        ...

    def logits_per_video(self, video_features: Any, text_features: Any) -> Any:
        """``(B, D)`` video and ``(P, D)`` text features -> ``(B, P)`` logits."""
        ...


class FrameWindow:
    """One env's last frame features, oldest first.

    Args:
        size: Frames kept.
    """

    def __init__(self, size: int = CLIP_FRAMES) -> None:
        self.features: deque[Any] = deque(maxlen=size)

    def clear(self) -> None:
        """Forgets every frame (a new episode)."""
        self.features.clear()

    def __len__(self) -> int:
        return len(self.features)


class MineCLIPScorer:
    """Scores windows of frames against instructions with MineCLIP.

    Args:
        video: The video tower.
        text_features: Maps a list of prompts to their ``(P, D)`` MineCLIP text features.
        negatives: The negative prompts of the softmax.
        frames: Frames per window (MineCLIP's clip length).
    """

    def __init__(
        self,
        video: VideoTower,
        text_features: Callable[[Sequence[str]], Any],
        negatives: Sequence[str] = DEFAULT_NEGATIVE_PROMPTS,
        frames: int = CLIP_FRAMES,
    ) -> None:
        if isinstance(negatives, str):
            negatives = [negatives]
        checked = tuple(negatives)
        if not checked or not all(isinstance(p, str) and p.strip() for p in checked):
            raise ConfigurationError(
                "The MineCLIP negatives must be a non-empty list of prompts such as "
                f"['stand still', 'walk around'], got {checked!r}."
            )
        self.video = video
        self.negatives = tuple(dict.fromkeys(checked))  # a prompt listed twice counts once
        self.frames = frames
        self.frames_encoded = 0
        """Frames encoded so far (each frame exactly once)."""
        self._text_features = text_features
        self._text: OrderedDict[str, Any] = OrderedDict()

    def window(self) -> FrameWindow:
        """Returns an empty window for one env."""
        return FrameWindow(self.frames)

    def push(self, windows: Sequence[FrameWindow], frames: Sequence[Any]) -> None:
        """Encodes each frame once, batched per frame size, and appends it to its window."""
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for position, frame in enumerate(frames):
            by_shape.setdefault(tuple(np.shape(frame)), []).append(position)
        for positions in by_shape.values():
            batch = np.stack([np.asarray(frames[p], dtype=np.uint8) for p in positions])
            features = _tensor(self.video.encode_frames(batch))
            self.frames_encoded += len(positions)
            for row, position in enumerate(positions):
                windows[position].features.append(features[row])

    def scores(self, windows: Sequence[FrameWindow], instructions: Sequence[str]) -> list[float]:
        """Returns each window's score for its instruction, in ``[0, 1]``."""
        import torch

        if len(windows) != len(instructions):
            raise ConfigurationError(
                f"scores() needs one instruction per window, got {len(instructions)} for "
                f"{len(windows)}."
            )
        if any(len(window) == 0 for window in windows):
            raise ConfigurationError("A window without frames cannot be scored; push a frame.")
        prompts = list(dict.fromkeys([*instructions, *self.negatives]))
        text = self._features_of(prompts)
        column = {prompt: i for i, prompt in enumerate(prompts)}
        by_length: dict[int, list[int]] = {}
        for position, window in enumerate(windows):
            by_length.setdefault(len(window), []).append(position)
        results = [0.0] * len(windows)
        with torch.inference_mode():
            for positions in by_length.values():
                clips = torch.stack([torch.stack(list(windows[p].features)) for p in positions])
                logits = torch.as_tensor(self.video.logits_per_video(self.video.pool(clips), text))
                for row, position in enumerate(positions):
                    instruction = instructions[position]
                    others = [column[n] for n in self.negatives if n != instruction]
                    if not others:
                        raise ConfigurationError(
                            f"The instruction {instruction!r} is the only MineCLIP negative "
                            "prompt, so nothing competes with it and its score would always "
                            "be 1.0; give negatives that differ from the instructions scored."
                        )
                    chosen = logits[row, [column[instruction], *others]].float()
                    results[position] = float(torch.softmax(chosen, dim=0)[0])
        return results

    def score_clip(self, clip: np.ndarray, instruction: str) -> float:
        """Returns the score of one clip (its frames encoded in one batch), e.g. to calibrate.

        Args:
            clip: uint8 RGB frames ``(T, H, W, 3)``, the last `frames` of which are scored.
            instruction: The text it is scored for.
        """
        array = np.asarray(clip)
        if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3 or not len(array):
            raise ConfigurationError(
                f"A clip must be uint8 RGB frames (T, H, W, 3), got shape {array.shape} dtype "
                f"{array.dtype}."
            )
        window = self.window()
        frames = array[-self.frames :]
        features = _tensor(self.video.encode_frames(frames))
        self.frames_encoded += len(frames)
        window.features.extend(features[i] for i in range(len(frames)))
        return self.scores([window], [instruction])[0]

    def close(self) -> None:
        """Releases the video tower (and its weights); safe to call twice."""
        close = getattr(self.video, "close", None)
        if callable(close):
            close()
        self._text.clear()

    def _features_of(self, prompts: list[str]) -> Any:
        import torch

        missing = [p for p in prompts if p not in self._text]
        if missing:
            for prompt, row in zip(missing, self._text_features(missing), strict=True):
                self._text[prompt] = torch.as_tensor(row)
        rows = []
        for prompt in prompts:
            self._text.move_to_end(prompt)
            rows.append(self._text[prompt])
        while len(self._text) > max(TEXT_CACHE_SIZE, len(prompts)):
            self._text.popitem(last=False)
        return torch.stack(rows)


def _tensor(features: Any) -> Any:
    # A tower may answer with numpy arrays; windows hold tensors, which pooling stacks.
    import torch

    return torch.as_tensor(features)


def build_mineclip_scorer(
    weights: Any = None,
    device: Any = "cpu",
    dtype: Any = None,
    negatives: Sequence[str] = DEFAULT_NEGATIVE_PROMPTS,
    config: Any = None,
    text_config: Any = None,
) -> MineCLIPScorer:
    """Builds a scorer on MineCLIP's towers loaded from ``attn.pth``.

    Args:
        weights: The MineCLIP checkpoint, or a directory holding ``attn.pth`` (default: the
            weights directory, see `steve1_env.weights`).
        device: Torch device of the towers.
        dtype: Their dtype (default float32).
        negatives: The softmax's negative prompts.
        config: The video tower's sizes (default: the released MineCLIP).
        text_config: The text tower's sizes (default: the released MineCLIP).
    """
    from steve1_env.prompt.mineclip_video import load_mineclip_video

    model = load_mineclip_video(
        weights, device=device, dtype=dtype, config=config, text_config=text_config
    )
    return MineCLIPScorer(model, model.encode_text, negatives)


def scorer_for(env_kwargs: Mapping[str, Any], device: Any) -> MineCLIPScorer | None:
    """Returns the scorer a vector env shares among its envs, given their arguments.

    None when the envs do not score (``mineclip_score`` False, no ``reward="mineclip"`` or
    ``fallback_detector="mineclip"``); the given scorer when one was passed; else a new one
    built from ``mineclip_kwargs``.
    The rule is the env's: a detector in ``success`` or ``fallback_detector`` that reads the
    score turns scoring on too, so the envs share this scorer instead of building one each.
    """
    given = env_kwargs.get("mineclip_score", False)
    if isinstance(given, MineCLIPScorer):
        return given
    fallback = env_kwargs.get("fallback_detector")
    wanted = (
        given is True
        or env_kwargs.get("reward") == "mineclip"
        or (isinstance(fallback, str) and fallback == "mineclip")
        or reads_mineclip(fallback)
        or reads_mineclip(env_kwargs.get("success"))
    )
    if not wanted:
        return None
    return build_mineclip_scorer(device=device, **dict(env_kwargs.get("mineclip_kwargs") or {}))


def reads_mineclip(spec: Any) -> bool:
    """Whether a detector spec (one detector, or instruction -> detector) reads the score."""
    from steve1_env.success import needs_mineclip

    parts = spec.values() if isinstance(spec, Mapping) else [spec]
    return any(needs_mineclip(part) for part in parts)


def dense_reward(score: float, prompts: int) -> float:
    """MineDojo's dense reward for one tick: ``max(score - 1 / prompts, 0)``.

    Args:
        score: The MineCLIP score of the tick.
        prompts: Prompts in the softmax (the instruction and its negatives).
    """
    return max(score - 1.0 / prompts, 0.0)
