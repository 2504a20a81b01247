"""Fake `steve1.mineclip_code.load_mineclip`: `load(cfg, device)` as upstream.

Upstream opens ``cfg["ckpt"]["path"]`` (relative to the working directory in the official
config), asserts its md5 against ``cfg["ckpt"]["checksum"]``, builds MineCLIP from the rest of
the config and loads the checkpoint with plain ``torch.load``.
"""

import hashlib

import torch
from torch import nn


class FakeMineCLIP(nn.Module):
    """Stands in for the `mineclip` package's MineCLIP (text side only)."""

    def __init__(self):
        super().__init__()
        self.text = nn.Linear(64, 512)

    def encode_text(self, texts):
        rows = []
        for text in texts:
            digest = hashlib.sha256(text.encode()).digest() * 2
            rows.append(torch.tensor(list(digest), dtype=torch.float32) / 255.0)
        return self.text(torch.stack(rows).to(self.text.weight.device))


def load(cfg, device):
    cfg = cfg.copy()
    ckpt = cfg.pop("ckpt")
    with open(ckpt["path"], "rb") as handle:
        assert hashlib.md5(handle.read()).hexdigest() == ckpt["checksum"], "broken ckpt"
    model = FakeMineCLIP().to(device)
    model.load_state_dict(torch.load(ckpt["path"], map_location=device))
    return model
