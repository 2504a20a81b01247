"""STEVE-1's prior: a conditional VAE mapping a MineCLIP text embedding to a visual goal.

Only the decoder runs at inference: ``decoder(cat[z, text_embedding])`` with ``z`` the latent
(zeros for the deterministic goal, a standard normal sample otherwise). The encoder is kept so
the official ``steve1_prior.pt`` loads with ``strict=True``.
"""

from __future__ import annotations

import torch
from torch import nn

EMBED_DIM = 512


def _mlp(in_features: int, hidden: int, out_features: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_features, hidden),
        nn.LayerNorm(hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.LayerNorm(hidden),
        nn.ReLU(),
        nn.Linear(hidden, out_features),
    )


class PriorVAE(nn.Module):
    """The prior network (512/512/512 when released).

    Args:
        embed_dim: Width of the text and visual embeddings.
        latent_dim: Width of the latent ``z``.
        hidden_dim: Width of the hidden layers.
    """

    def __init__(
        self, embed_dim: int = EMBED_DIM, latent_dim: int = 512, hidden_dim: int = 512
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        # The encoder sees (visual, text) and outputs the latent's mean and log-variance.
        self.encoder = _mlp(2 * embed_dim, hidden_dim, 2 * latent_dim)
        self.decoder = _mlp(latent_dim + embed_dim, hidden_dim, embed_dim)

    def decode(
        self, text_embedding: torch.Tensor, latent: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Returns visual goal embeddings ``(B, 512)`` for text embeddings ``(B, 512)``.

        Args:
            text_embedding: MineCLIP text embeddings.
            latent: ``(B, latent_dim)``; None for zeros (the deterministic goal).
        """
        if latent is None:
            latent = text_embedding.new_zeros(text_embedding.shape[0], self.latent_dim)
        return self.decoder(torch.cat([latent.to(text_embedding.dtype), text_embedding], dim=1))
