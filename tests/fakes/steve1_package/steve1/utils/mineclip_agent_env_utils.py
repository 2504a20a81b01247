"""Fake `steve1.utils.mineclip_agent_env_utils`."""

import hashlib

import torch
from torch import nn


class FakeMineCLIP(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.text = nn.Linear(64, 512)

    def encode_text(self, texts):
        rows = []
        for text in texts:
            digest = hashlib.sha256(text.encode()).digest() * 2
            rows.append(torch.tensor(list(digest), dtype=torch.float32) / 255.0)
        return self.text(torch.stack(rows))


def load_mineclip_wconfig():
    return FakeMineCLIP().eval()


def make_agent(in_model, in_weights, cond_scale):
    # Upstream creates a real MineRL env here and hard-codes device='cuda'.
    raise RuntimeError("make_agent needs Minecraft (MineRLBasaltFindCave-v0) and CUDA")
