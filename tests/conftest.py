"""Shared fixtures and test doubles."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from steve1_env.worlds.actions import canonical_action
from steve1_env.worlds.base import WorldStep
from steve1_env.worlds.synthetic import SyntheticWorld


def offline_env(**kwargs):
    """A `Steve1SkillEnv` on the offline stack (small synthetic frames, scripted, hash)."""
    from steve1_env.env import Steve1SkillEnv

    kwargs.setdefault("world_kwargs", {"pov_shape": (64, 64)})
    kwargs.setdefault("policy", "scripted")
    kwargs.setdefault("prompt_encoder", "hash")
    return Steve1SkillEnv(**kwargs)


class ScriptedWorld:
    """A world double whose `step` follows a script: healthy, then done, error or raise."""

    def __init__(self, fail_at: int | None = None, mode: str = "raise", done_at: int | None = None):
        self.inner = SyntheticWorld(pov_shape=(64, 64))
        self.fail_at, self.mode, self.done_at = fail_at, mode, done_at
        self.ticks = 0
        self.closed = 0
        self.reset_seeds: list[int | None] = []

    def reset(self, seed: int | None = None) -> dict[str, Any]:
        self.ticks = 0
        self.reset_seeds.append(seed)
        return self.inner.reset(seed)

    def step(self, action: Mapping[str, Any]) -> WorldStep:
        canonical_action(action)
        self.ticks += 1
        if self.fail_at is not None and self.ticks >= self.fail_at:
            if self.mode == "raise":
                raise ConnectionResetError("socket closed by Minecraft")
            # Like MineRL on a socket failure: a random observation, done, and info["error"].
            bogus = self.inner.reset(12345)
            bogus["inventory"] = dict.fromkeys(bogus["inventory"], 99)
            return WorldStep(bogus, True, {"error": "java.net.SocketException: Broken pipe"})
        result = self.inner.step(action)
        done = self.done_at is not None and self.ticks >= self.done_at
        return WorldStep(result.obs, done, {})

    def close(self) -> None:
        self.closed += 1


class FunctionPolicy:
    """A policy double whose action is `act_fn(call_number)` (1-based)."""

    device = "cpu"

    def __init__(self, act_fn):
        self.act_fn = act_fn
        self.calls = 0

    def initial_state(self, seed):
        return None

    def act(self, obs, goal, state):
        self.calls += 1
        return self.act_fn(self.calls), state

    def close(self):
        pass


class CountingEncoder:
    """A prompt encoder double that counts calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.device = "cpu"
        self.closed = 0

    def encode(self, instruction: str) -> np.ndarray:
        self.calls.append(instruction)
        return np.full(512, len(instruction), dtype=np.float64)

    def close(self) -> None:
        self.closed += 1


@pytest.fixture
def counting_encoder() -> CountingEncoder:
    return CountingEncoder()


GOLDEN_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "golden"
"""Fixtures produced by the official code (see its README)."""


@pytest.fixture(scope="session")
def golden() -> Path:
    """The verified golden-fixture directory.

    Every file is checked against SHA256SUMS, so a corrupt copy fails loudly. Without the
    directory the tests skip, unless STEVE1_REQUIRE_GOLDEN=1 (as in CI) makes that a failure.
    """
    sums = GOLDEN_DIR / "SHA256SUMS"
    if not sums.is_file():
        message = f"golden fixtures not found at {GOLDEN_DIR}"
        if os.environ.get("STEVE1_REQUIRE_GOLDEN") == "1":
            pytest.fail(message)
        pytest.skip(message)
    for line in sums.read_text().splitlines():
        digest, name = line.split()
        actual = hashlib.sha256((GOLDEN_DIR / name).read_bytes()).hexdigest()
        assert actual == digest, f"golden file {name} is corrupt (sha256 {actual} != {digest})"
    return GOLDEN_DIR


@pytest.fixture(scope="session")
def tiny_policy_files(golden: Path) -> dict[str, Path]:
    """The tiny policy's .model and .weights files."""
    return {"model": golden / "policy_tiny.model", "weights": golden / "policy_tiny.weights"}


@pytest.fixture
def recording_world() -> list[ScriptedWorld]:
    """Registers world="recording", which builds ScriptedWorlds; yields the ones built."""
    from steve1_env.registry import register_world

    built: list[ScriptedWorld] = []

    def factory() -> ScriptedWorld:
        built.append(ScriptedWorld())
        return built[-1]

    register_world("recording", factory, overwrite=True)
    return built


@pytest.fixture(autouse=True)
def isolated_user_cache(tmp_path_factory, monkeypatch):
    """Keeps tests out of the real user cache and independent of the caller's weights."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "user-cache"))
    monkeypatch.delenv("STEVE1_WEIGHTS_DIR", raising=False)


@pytest.fixture(scope="session")
def tiny_configs(golden):
    """The golden tiny MineCLIP model's video and text tower configs."""
    from steve1_env.prompt.mineclip import TextTowerConfig
    from steve1_env.prompt.mineclip_video import VideoTowerConfig

    spec = json.loads((golden / "mineclip_video_tiny.json").read_text())
    clip = spec["clip_config"]
    video = VideoTowerConfig(
        width=clip["vision_width"],
        layers=clip["vision_layers"],
        heads=spec["vision_heads"],
        patch_size=clip["vision_patch_size"],
        frame_size=tuple(spec["resolution"]),
        embed_dim=clip["embed_dim"],
        max_frames=spec["video_seq_len_max"],
        frames_per_clip=spec["frames_per_clip"],
    )
    text = TextTowerConfig(
        clip["text_width"], clip["text_layers"], clip["text_heads"], clip["embed_dim"]
    )
    return video, text
