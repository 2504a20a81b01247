"""Fake `steve1.data.text_alignment.vae`."""

import torch
from torch import nn


class TranslatorVAE(nn.Module):
    def __init__(self, input_dim=512, hidden_dim=512, latent_dim=512):
        super().__init__()
        torch.manual_seed(1)
        self.decoder = nn.Sequential(nn.Linear(input_dim + latent_dim, hidden_dim), nn.ReLU(),
                                     nn.Linear(hidden_dim, input_dim))  # fmt: skip
        self.latent_dim = latent_dim

    def forward(self, text_embed):
        z = torch.zeros(text_embed.shape[0], self.latent_dim, device=text_embed.device)
        return self.decoder(torch.cat([z, text_embed], dim=1))


def load_vae_model(vae_info):
    return TranslatorVAE(
        vae_info["mineclip_dim"], vae_info["hidden_dim"], vae_info["latent_dim"]
    ).eval()
