"""`OfficialPromptEncoder`: the official package's ``get_prior_embed``, made safe.

Upstream runs MineCLIP and the prior inside CUDA autocast, so on a GPU the goal comes out
float16 and the float32 policy fails. The result here always goes through
`steve1_env.precision.as_goal_embedding`: float32, shape ``(512,)``, finite.

Upstream's configuration names its weights by paths relative to the working directory
(``data/weights/mineclip/attn.pth``); here they are found like the native encoder's, in the
weights directory (``$STEVE1_WEIGHTS_DIR``), and the prior is read with our safe loader. The
official prior samples its latent from torch's global generator on every call; here that draw
comes from a stream seeded per episode (`start_episode`), so the same ``reset(seed=...)`` gives
the same goal and the caller's generator is left alone.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from steve1_env import precision
from steve1_env.agent.official import GlobalRngStream, official_module
from steve1_env.validation import MAX_SEED, bounded_int, reset_seed
from steve1_env.weights import (
    OFFICIAL_FILES,
    check_state_dict,
    load_state_dict,
    verify_known_digest,
    weight_file,
    weights_dir,
)


class OfficialPromptEncoder:
    """Text prompts through the installed official `steve1` package.

    Args:
        device: Torch device for MineCLIP and the prior.
        weights: A directory holding ``attn.pth`` and ``steve1_prior.pt``, or None for the
            weights directory (``$STEVE1_WEIGHTS_DIR``, see `steve1_env.weights.weights_dir`).
        mineclip: A MineCLIP checkpoint, overriding the one in `weights`; it must have the
            checksum the official configuration names (upstream refuses any other).
        prior: A prior weight file, overriding the one in `weights`.
        seed: Seeds the prior's sampling until the first `start_episode`, so that an encoder
            used outside an env is reproducible too.
    """

    def __init__(
        self,
        device: Any = "cpu",
        weights: str | os.PathLike[str] | None = None,
        mineclip: str | os.PathLike[str] | None = None,
        prior: str | os.PathLike[str] | None = None,
        seed: int = 0,
    ) -> None:
        purpose = "prompt_encoder='steve1-official'"
        self.device = precision.resolve_device(device)
        config = official_module("steve1.config", purpose)
        loader = official_module("steve1.mineclip_code.load_mineclip", purpose)
        vae = official_module("steve1.data.text_alignment.vae", purpose)
        self._embed = official_module("steve1.utils.embed_utils", purpose).get_prior_embed
        directory = weights_dir(weights)
        mineclip_path = weight_file("mineclip", mineclip, directory)
        prior_path = weight_file("prior", prior, directory)
        ckpt = dict(config.MINECLIP_CONFIG["ckpt"])
        # The package's configured checksum (upstream would only `assert` it).
        verify_known_digest(mineclip_path, str(ckpt["checksum"]), OFFICIAL_FILES["mineclip"])
        mineclip_config = {**config.MINECLIP_CONFIG, "ckpt": {**ckpt, "path": str(mineclip_path)}}
        info = config.PRIOR_INFO
        # Upstream initialises its modules from torch's global generator: a private stream
        # keeps the caller's untouched (the weights loaded next replace those values).
        with GlobalRngStream(0, self.device).borrowed():
            self.mineclip = loader.load(mineclip_config, device=self.device)
            prior_net = vae.TranslatorVAE(
                input_dim=info["mineclip_dim"], hidden_dim=info["hidden_dim"],
                latent_dim=info["latent_dim"],
            )  # fmt: skip
        state = load_state_dict(prior_path)  # upstream's load_vae_model uses plain torch.load
        check_state_dict(prior_net.state_dict(), state, f"official prior ({prior_path})")
        prior_net.load_state_dict(state, strict=True)
        self.prior = prior_net.to(self.device).eval()
        self._rng = GlobalRngStream(reset_seed(seed) or 0, self.device)

    @property
    def varies_per_episode(self) -> bool:
        """True: the official prior draws a new latent per call, here one stream per episode."""
        return True

    def start_episode(self, seed: int) -> None:
        """Seeds the prior's sampling for the episode (the env calls this at every reset).

        Args:
            seed: The episode's seed; the same seed gives the same goals in the same order.
        """
        self._rng = GlobalRngStream(reset_seed(seed) or 0, self.device)

    def encode(self, instruction: str) -> np.ndarray:
        """Returns the float32 ``(512,)`` goal embedding of `instruction`.

        Each call draws a new latent from the stream `start_episode` (or the constructor's
        `seed`) began, as upstream draws one per call from torch's global generator.
        """
        with self._rng.borrowed():
            embedding = self._embed(instruction, self.mineclip, self.prior, self.device)
        return precision.as_goal_embedding(embedding)

    def encode_sampled(self, instruction: str, seed: int) -> np.ndarray:
        """Returns the goal embedding of `instruction` with the prior's latent drawn from `seed`.

        Upstream's own draw (``get_prior_embed``, its prior sampling from torch's global
        generator), on a stream seeded by `seed` alone: the paper's prompt embedding, made
        reproducible (a task's ``prompt_latent: sampled``). The episode's stream is left alone.

        Raises:
            ConfigurationError: If `seed` is not an integer from 0 to
                `steve1_env.validation.MAX_SEED`.
        """
        seed = bounded_int(seed, "seed", 0, MAX_SEED, limit_name="MAX_SEED")
        with GlobalRngStream(seed, self.device).borrowed():
            embedding = self._embed(instruction, self.mineclip, self.prior, self.device)
        return precision.as_goal_embedding(embedding)

    def close(self) -> None:
        """Nothing to release beyond the references."""
