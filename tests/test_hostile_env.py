"""Hostile input to the env, the vector env and their world processes (issue 12)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from steve1_env.errors import ConfigurationError, DetectorError
from steve1_env.success import all_of, custom
from steve1_env.validation import MAX_FRAME_SIDE
from steve1_env.vector.env import MAX_NUM_ENVS, Steve1SkillVectorEnv
from steve1_env.worlds.minerl import MineRLWorld
from steve1_env.worlds.synthetic import MAX_SIZE, SyntheticWorld
from tests.conftest import offline_env

REPO = Path(__file__).resolve().parents[1]

# A vector env over two slow worlds in processes, stepping until interrupted; the caller closes
# it in `finally`, as a script would. With "send N", the N-th pipe write from then on writes
# half its message and raises KeyboardInterrupt: Ctrl-C landing inside WorldProcess._send.
CTRL_C_SCRIPT = textwrap.dedent(
    """
    import multiprocessing.connection as mc
    import sys

    from steve1_env.vector.env import Steve1SkillVectorEnv


    def interrupt_inside_send(nth):
        original = mc.Connection._send
        calls = []

        def half_then_interrupt(self, buf, *args):
            calls.append(1)
            if len(calls) < nth:
                return original(self, buf, *args)
            mc.Connection._send = original  # one Ctrl-C
            original(self, bytes(buf)[: len(buf) // 2], *args)
            print("interrupted", flush=True)
            raise KeyboardInterrupt

        mc.Connection._send = half_then_interrupt


    def main():
        envs = Steve1SkillVectorEnv(
            2,
            world="tests.fakes.crashing_worlds:SlowWorld",
            policy="random",
            prompt_encoder="hash",
            instruction="chop a tree",
            k=4,
            pov_shape=(32, 32),
            world_kwargs={"size": 32, "pov_shape": (64, 64), "step_delay": float(sys.argv[1])},
        )
        try:
            envs.reset(seed=0)
            if len(sys.argv) > 2:
                interrupt_inside_send(int(sys.argv[2]))
            print("ready", flush=True)
            while True:
                envs.step(["chop a tree"] * 2)
        finally:
            envs.close()


    if __name__ == "__main__":
        main()
    """
)


def _start_ctrl_c_script(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    script = tmp_path / "ctrl_c.py"
    script.write_text(CTRL_C_SCRIPT)
    # The package under test first, then the repository for tests.fakes.
    path = os.pathsep.join([os.environ.get("PYTHONPATH", ""), str(REPO)])
    env = {**os.environ, "PYTHONPATH": path}
    process = subprocess.Popen(
        [sys.executable, str(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if line != "ready":
        process.kill()
        pytest.fail(f"the script did not start: {line!r} {process.communicate()[1][-2000:]}")
    return process


def _seconds_to_exit(process: subprocess.Popen[str], since: float) -> float:
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    return time.monotonic() - since


def test_ctrl_c_inside_world_process_send_exits_within_2_s(tmp_path):
    # 1: the first world's message is cut in half (its child waits for the rest forever);
    # 2: the second's is, while the first world is busy with a 5 s step.
    for nth_send in (1, 2):
        process = _start_ctrl_c_script(tmp_path, "5.0", str(nth_send))
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "interrupted"
        elapsed = _seconds_to_exit(process, time.monotonic())
        stderr = process.stderr.read() if process.stderr else ""
        assert "KeyboardInterrupt" in stderr
        assert elapsed < 2.0, f"exit took {elapsed:.1f} s after Ctrl-C in _send #{nth_send}"


@pytest.mark.slow
def test_ctrl_c_at_random_moments_exits_within_2_s_every_time(tmp_path):
    rng = random.Random(12)
    times = []
    for _ in range(20):
        process = _start_ctrl_c_script(tmp_path, "3.0")
        time.sleep(rng.uniform(0.0, 0.5))
        process.send_signal(signal.SIGINT)
        times.append(_seconds_to_exit(process, time.monotonic()))
    assert max(times) < 2.0, [round(t, 2) for t in times]


# ---------------------------------------------------------------- real booleans (case 8)
@pytest.mark.parametrize("answer", ["no", "False", 1, 0.5, [0], np.array([1]), None])
def test_a_detector_answering_anything_but_a_bool_is_an_error_naming_it(answer):
    env = offline_env(instruction="chop a tree", k=3, success=custom(lambda *_: answer, "mine"))
    env.reset(seed=0)
    with pytest.raises(DetectorError, match=r"detector 'mine' must be True or False, got"):
        env.step("")
    env.close()


def test_a_detector_object_answering_text_is_an_error_too():
    class Texty:
        name = "texty"

        def __call__(self, start_obs, obs, steps):
            return "no"

    with offline_env(instruction="chop a tree", k=3, success=all_of(Texty())) as env:
        env.reset(seed=0)
        with pytest.raises(DetectorError, match=r"'texty'.*got str 'no'"):
            env.step("")
        env.reset(seed=0, options={"success": Texty()})
        with pytest.raises(DetectorError, match="'texty'"):
            env.step("")


@pytest.mark.parametrize("answer", [True, False, np.bool_(True), np.bool_(False)])
def test_real_booleans_and_numpy_booleans_are_detector_answers(answer):
    with offline_env(instruction="chop a tree", k=3, success=lambda *_: answer) as env:
        env.reset(seed=0)
        _, reward, _, _, info = env.step("")
    assert info["is_success"] is bool(answer) and reward == float(answer)


@pytest.mark.parametrize("value", ["no", "False", 1, 0, [True]])
def test_boolean_flags_must_be_booleans(value):
    with pytest.raises(ConfigurationError, match="terminate_on_success must be True or False"):
        offline_env(terminate_on_success=value)
    with pytest.raises(ConfigurationError, match="terminate_on_success must be True or False"):
        Steve1SkillVectorEnv(1, policy="random", prompt_encoder="hash", terminate_on_success=value)
    with pytest.raises(ConfigurationError, match="world_processes must be True or False"):
        Steve1SkillVectorEnv(1, policy="random", prompt_encoder="hash", world_processes=value)
    assert offline_env(terminate_on_success=np.bool_(True)).terminate_on_success is True


# ---------------------------------------------------------------- documented maxima (case 5)
def _fails_fast(make, match):
    started = time.monotonic()
    with pytest.raises(ConfigurationError, match=match):
        make()
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("size", [10**6, MAX_SIZE + 1, 2**63])
def test_a_huge_world_size_is_refused_at_once_with_the_limit(size):
    _fails_fast(lambda: SyntheticWorld(size=size), rf"between 16 and {MAX_SIZE} blocks")
    _fails_fast(
        lambda: offline_env(world_kwargs={"size": size}), rf"between 16 and {MAX_SIZE} blocks"
    )


@pytest.mark.parametrize("shape", [(10**6, 64), (64, MAX_FRAME_SIDE + 1), (2**40, 2**40)])
def test_huge_frame_shapes_are_refused_at_once_with_the_limit(shape):
    limit = rf"at most {MAX_FRAME_SIDE} pixels each way \(MAX_FRAME_SIDE\)"
    _fails_fast(lambda: SyntheticWorld(pov_shape=shape), limit)
    _fails_fast(lambda: offline_env(pov_shape=shape), limit)
    _fails_fast(lambda: MineRLWorld(resolution=[shape[1], shape[0]]), limit)


def test_too_many_vector_envs_are_refused_at_once_with_the_limit():
    _fails_fast(
        lambda: Steve1SkillVectorEnv(MAX_NUM_ENVS + 1, policy="random", prompt_encoder="hash"),
        rf"at most {MAX_NUM_ENVS} \(MAX_NUM_ENVS\)",
    )


def test_the_largest_allowed_sizes_are_usable():
    world = SyntheticWorld(size=MAX_SIZE // 4, pov_shape=(MAX_FRAME_SIDE, 16))
    assert world.reset(seed=0)["pov"].shape == (MAX_FRAME_SIDE, 16, 3)


def test_the_smallest_worlds_generate_instead_of_looping_forever():
    # No pond centre lies 8 blocks from the spawn in a world under 20 blocks: the draw looped.
    code = (
        "from steve1_env.worlds.synthetic import SyntheticWorld\n"
        "for size in range(16, 21):\n"
        "    SyntheticWorld(size=size, pov_shape=(16, 16)).reset(seed=size)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=REPO)
