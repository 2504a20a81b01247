"""`OfficialPromptEncoder`: the official package's ``get_prior_embed``, made safe.

Upstream runs MineCLIP and the prior inside CUDA autocast, so on a GPU the goal comes out
float16 and the float32 policy fails. The result here always goes through
`steve1_env.precision.as_goal_embedding`: float32, shape ``(512,)``, finite.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from steve1_env import precision
from steve1_env.agent.official import official_module


class OfficialPromptEncoder:
    """Text prompts through the installed official `steve1` package.

    Args:
        device: Torch device for MineCLIP and the prior.
        prior: The prior weight file (default: the official config's path).
    """

    def __init__(self, device: Any = "cpu", prior: str | os.PathLike[str] | None = None) -> None:
        purpose = "prompt_encoder='steve1-official'"
        utils = official_module("steve1.utils.mineclip_agent_env_utils", purpose)
        self._embed = official_module("steve1.utils.embed_utils", purpose).get_prior_embed
        vae = official_module("steve1.data.text_alignment.vae", purpose)
        config = official_module("steve1.config", purpose)
        prior_info = dict(config.PRIOR_INFO)
        if prior is not None:
            prior_info["model_path"] = str(prior)
        self.device = device
        self.mineclip = utils.load_mineclip_wconfig().to(device)
        self.prior = vae.load_vae_model(prior_info).to(device)

    def encode(self, instruction: str) -> np.ndarray:
        """Returns the float32 ``(512,)`` goal embedding of `instruction`."""
        return precision.as_goal_embedding(
            self._embed(instruction, self.mineclip, self.prior, self.device)
        )

    def close(self) -> None:
        """Nothing to release beyond the references."""
