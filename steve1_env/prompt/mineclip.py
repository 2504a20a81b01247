"""MineCLIP's text tower: a causal GPT over CLIP tokens, projected to 512 dimensions.

Module names follow the MineCLIP checkpoint (``model.clip_model.text_model.*``) so ``attn.pth``
loads; its other keys (vision tower, temporal pooling, reward head) are the video side's
(`steve1_env.prompt.mineclip_video`), which reuses this module's residual block.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from steve1_env.prompt.tokenizer import CONTEXT_LENGTH, VOCAB_SIZE

CHECKPOINT_PREFIX = "model.clip_model.text_model."
"""Where the text tower's keys live in a MineCLIP checkpoint's ``state_dict``."""


@dataclass(frozen=True)
class TextTowerConfig:
    """Text tower sizes; the released MineCLIP uses 512 wide, 12 layers, 8 heads.

    The head count cannot be read from weight shapes, hence a parameter.
    """

    width: int = 512
    layers: int = 12
    heads: int = 8
    embed_dim: int = 512
    context_length: int = CONTEXT_LENGTH
    vocab_size: int = VOCAB_SIZE


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x)``, CLIP's approximation of GELU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Applies the activation."""
        return x * torch.sigmoid(1.702 * x)


class FeedForward(nn.Module):
    """``c_proj(QuickGELU(c_fc(x)))``."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(width, 4 * width)
        self.gelu = QuickGELU()
        self.c_proj = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Applies the block."""
        return self.c_proj(self.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Module):
    """CLIP's pre-norm residual block: self-attention, then the feed-forward layer.

    The text tower masks the attention causally; the vision tower (`mineclip_video`) does not.
    Parameter names follow ``nn.MultiheadAttention`` as the checkpoint does.
    """

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = FeedForward(width)
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Applies the block to ``(B, L, width)``; `mask` is an additive attention mask or None."""
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


TextBlock = ResidualAttentionBlock
"""The block's earlier name (the text tower was its only user)."""


class TextTower(nn.Module):
    """Token rows ``(B, 77)`` -> text embeddings ``(B, 512)`` (not normalised).

    The embedding is the final-LayerNorm feature at each row's end token (its largest id),
    multiplied by ``projection``.
    """

    def __init__(self, config: TextTowerConfig = TextTowerConfig()) -> None:
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.width)
        self.pos_embed = nn.Parameter(torch.zeros(config.context_length, config.width))
        self.blocks = nn.ModuleList(
            [ResidualAttentionBlock(config.width, config.heads) for _ in range(config.layers)]
        )
        self.ln_final = nn.LayerNorm(config.width)
        self.projection = nn.Parameter(torch.zeros(config.width, config.embed_dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Embeds ``(B, L)`` int64 token rows."""
        length = tokens.shape[1]
        x = self.token_embedding(tokens) + self.pos_embed[:length]
        mask = torch.full((length, length), float("-inf"), device=x.device, dtype=x.dtype)
        mask = mask.triu(1)
        for block in self.blocks:
            x = block(x, mask)
        x = self.ln_final(x)
        ends = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
        return ends @ self.projection
