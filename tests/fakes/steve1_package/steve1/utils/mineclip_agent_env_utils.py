"""Fake `steve1.utils.mineclip_agent_env_utils`."""

from steve1.config import DEVICE, MINECLIP_CONFIG
from steve1.mineclip_code.load_mineclip import load


def load_mineclip_wconfig():
    return load(MINECLIP_CONFIG, device=DEVICE)  # the config's relative path, as upstream


def make_agent(in_model, in_weights, cond_scale):
    # Upstream creates a real MineRL env here and hard-codes device='cuda'.
    raise RuntimeError("make_agent needs Minecraft (MineRLBasaltFindCave-v0) and CUDA")
