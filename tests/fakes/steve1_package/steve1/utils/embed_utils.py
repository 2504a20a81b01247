"""Fake `steve1.utils.embed_utils`: computes under autocast, as upstream does.

Upstream uses `torch.cuda.amp.autocast()`, which makes the result float16 on a GPU. This fake
uses CPU autocast with float16 so the same float16 result appears on a CPU-only machine.
"""

import torch


def get_prior_embed(text, mineclip, prior, device):
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        text_embed = mineclip.encode_text([text]).to(device)
        prior_embed = prior(text_embed.float())
    return prior_embed.cpu().numpy()
