"""Fake `steve1.data.text_alignment.vae`.

As upstream: `load_vae_model` reads ``model_path`` with plain ``torch.load`` onto CUDA when
available, and `TranslatorVAE.forward` samples its latent from torch's global generator unless
``deterministic=True``.
"""

import torch
from torch import nn


class TranslatorVAE(nn.Module):
    def __init__(self, input_dim=512, hidden_dim=256, latent_dim=256):
        super().__init__()
        self.decoder = nn.Sequential(nn.Linear(input_dim + latent_dim, hidden_dim), nn.ReLU(),
                                     nn.Linear(hidden_dim, input_dim))  # fmt: skip
        self.latent_dim = latent_dim

    def forward(self, text_embed, deterministic=False):
        shape = (text_embed.shape[0], self.latent_dim)
        mu = torch.zeros(shape, device=text_embed.device)
        z = mu if deterministic else mu + torch.randn_like(mu)  # the global generator
        return self.decoder(torch.cat([z, text_embed], dim=1))


def load_vae_model(vae_info):
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = TranslatorVAE(vae_info["mineclip_dim"], vae_info["hidden_dim"], vae_info["latent_dim"])
    model.load_state_dict(torch.load(vae_info["model_path"], map_location=device))
    return model.to(device).eval()
