"""Hostile input to the env, the vector env and their world processes (issue 12)."""

from __future__ import annotations

import contextlib
import inspect
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import steve1_env  # noqa: F401 (registers the env ids)
from steve1_env.agent.native import NativeSteve1Policy
from steve1_env.cli import main
from steve1_env.errors import (
    ConfigurationError,
    DetectorError,
    InvalidActionError,
    ResetNeededError,
    Steve1EnvError,
    UnknownNameError,
    WorldCrashError,
)
from steve1_env.prompt.steve1_encoder import Steve1PromptEncoder
from steve1_env.success import all_of, checked_answer, custom
from steve1_env.validation import (
    MAX_FRAME_SIDE,
    MAX_TIMEOUT_S,
    boolean,
    bounded_int,
    keyword_arguments,
    reset_options,
    reset_seed,
)
from steve1_env.vector.env import MAX_NUM_ENVS, Steve1SkillVectorEnv
from steve1_env.vector.world_process import WorldProcess
from steve1_env.worlds.minerl import MineRLWorld
from steve1_env.worlds.synthetic import MAX_SIZE, SyntheticWorld
from tests.conftest import offline_env

REPO = Path(__file__).resolve().parents[1]

# A vector env over two slow worlds in processes, stepping until interrupted; the caller closes
# it in `finally`, as a script would. With "send N", the N-th pipe write from then on writes
# half its message and raises KeyboardInterrupt: Ctrl-C landing inside WorldProcess._send; the
# script prints the (system-wide) monotonic clock at that moment. With "bare" it builds nothing
# and only waits for Ctrl-C: the exit of a bare interpreter with the same imports.
CTRL_C_SCRIPT = textwrap.dedent(
    """
    import multiprocessing.connection as mc
    import sys
    import time

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
            print("interrupted", time.monotonic(), flush=True)
            raise KeyboardInterrupt

        mc.Connection._send = half_then_interrupt


    def main():
        if sys.argv[1] == "bare":
            print("ready", flush=True)
            while True:
                time.sleep(1)
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


def _interrupt(process: subprocess.Popen[str]) -> float:
    """Sends SIGINT (Ctrl-C) and returns the seconds until the process has exited."""
    since = time.monotonic()
    process.send_signal(signal.SIGINT)
    return _seconds_to_exit(process, since)


CTRL_C_EXIT_S = 2.0
"""The issue's bound on the exit after Ctrl-C, measured from the interrupt to the exit."""


def _ci_margin(tmp_path: Path) -> float:
    """Seconds a bare interpreter with the same imports takes to exit after Ctrl-C, now.

    The CI margin: on a loaded machine Python's own exit (signal delivery, traceback, module
    teardown) stretches with the load, and is no part of the package's shutdown. It is
    measured next to each try, so the bound follows the load instead of a guess.
    """
    return _interrupt(_start_ctrl_c_script(tmp_path, "bare"))


def test_ctrl_c_inside_world_process_send_exits_within_2_s(tmp_path):
    # 1: the first world's message is cut in half (its child waits for the rest forever);
    # 2: the second's is, while the first world is busy with a 5 s step.
    for nth_send in (1, 2):
        process = _start_ctrl_c_script(tmp_path, "5.0", str(nth_send))
        assert process.stdout is not None
        marker, interrupted_at = process.stdout.readline().split()
        assert marker == "interrupted"
        # From the interrupt itself (the child's clock, system-wide on Linux), not from when
        # this loaded test got round to reading the line.
        elapsed = _seconds_to_exit(process, float(interrupted_at))
        stderr = process.stderr.read() if process.stderr else ""
        assert "KeyboardInterrupt" in stderr
        bound = CTRL_C_EXIT_S + _ci_margin(tmp_path)
        assert elapsed < bound, (
            f"exit took {elapsed:.2f} s (bound {bound:.2f} s) after Ctrl-C in _send #{nth_send}"
        )


@pytest.mark.slow
def test_ctrl_c_at_random_moments_exits_within_2_s_every_time(tmp_path):
    rng = random.Random(12)
    late = []
    for attempt in range(20):
        process = _start_ctrl_c_script(tmp_path, "3.0")
        time.sleep(rng.uniform(0.0, 0.5))
        elapsed = _interrupt(process)
        margin = _ci_margin(tmp_path)
        if elapsed >= CTRL_C_EXIT_S + margin:
            late.append((attempt, round(elapsed, 2), round(margin, 2)))
    assert not late, f"(try, exit s, CI margin s) over {CTRL_C_EXIT_S} s + margin: {late}"


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
FAST_FAILURE_PEAK_BYTES = 32 * 2**20
"""Most memory (traced by tracemalloc, numpy included) refusing a huge size may take: checking
after allocating would take gigabytes, or fail with MemoryError."""


def _fails_fast(make, match):
    # Memory, not time, shows a check made before the allocation (time only stretches with
    # the load of the machine); the generous time bound still catches a long loop.
    started = time.monotonic()
    tracemalloc.start()
    try:
        with pytest.raises(ConfigurationError, match=match):
            make()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < FAST_FAILURE_PEAK_BYTES, f"refusing took {peak / 2**20:.0f} MiB"
    assert time.monotonic() - started < 20.0


@pytest.mark.parametrize("size", [10**6, MAX_SIZE + 1, 2**63])
def test_a_huge_world_size_is_refused_at_once_with_the_limit(size):
    _fails_fast(lambda: SyntheticWorld(size=size), rf"between 16 and {MAX_SIZE} blocks")
    _fails_fast(
        lambda: offline_env(world_kwargs={"size": size}), rf"between 16 and {MAX_SIZE} blocks"
    )


@pytest.mark.parametrize("shape", [(10**6, 64), (64, MAX_FRAME_SIDE + 1), (2**40, 2**40)])
def test_huge_frame_shapes_are_refused_at_once_with_the_limit(shape):
    limit = rf"must be between (1|16) and {MAX_FRAME_SIDE} pixels \(MAX_FRAME_SIDE\)"
    _fails_fast(lambda: SyntheticWorld(pov_shape=shape), limit)
    _fails_fast(lambda: offline_env(pov_shape=shape), limit)
    _fails_fast(lambda: MineRLWorld(resolution=[shape[1], shape[0]]), limit)


def test_too_many_vector_envs_are_refused_at_once_with_the_limit():
    _fails_fast(
        lambda: Steve1SkillVectorEnv(MAX_NUM_ENVS + 1, policy="random", prompt_encoder="hash"),
        rf"num_envs must be between 1 and {MAX_NUM_ENVS} \(MAX_NUM_ENVS\), got {MAX_NUM_ENVS + 1}; "
        "run several vector envs",
    )


def test_the_largest_allowed_sizes_are_usable():
    world = SyntheticWorld(size=MAX_SIZE, pov_shape=(MAX_FRAME_SIDE, MAX_FRAME_SIDE))
    assert world.reset(seed=0)["pov"].shape == (MAX_FRAME_SIDE, MAX_FRAME_SIDE, 3)
    assert world.step({"forward": 1}).obs["pov"].shape == (MAX_FRAME_SIDE, MAX_FRAME_SIDE, 3)
    world.close()


def test_the_smallest_worlds_generate_instead_of_looping_forever():
    # No pond centre lies 8 blocks from the spawn in a world under 20 blocks: the draw looped.
    code = (
        "from steve1_env.worlds.synthetic import SyntheticWorld\n"
        "for size in range(16, 21):\n"
        "    SyntheticWorld(size=size, pov_shape=(16, 16)).reset(seed=size)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=REPO)


# ---------------------------------------------------------------- all-or-nothing vector reset (14)
@contextlib.contextmanager
def _vector(n=3):
    envs = Steve1SkillVectorEnv(
        n,
        policy="scripted",
        prompt_encoder="hash",
        pov_shape=(32, 32),
        k=2,
        world_kwargs={"size": 32, "pov_shape": (64, 64)},
    )
    try:
        yield envs
    finally:
        envs.close()


def _snapshot(envs):
    return [
        (env.current_instruction, env._needs_reset, env._slot.total_steps, str(env.np_random_seed))
        for env in envs.envs
    ] + [list(envs._autoreset), str(envs.np_random_seed)]


BAD_RESETS = [
    ({}, {"instruction": ["chop a tree", "get dirt", "\x07bad"]}, "env 2"),
    ({}, {"instruction": ["chop a tree", "get dirt", 5]}, "env 2"),
    ({}, {"instruction": ["chop a tree", "get dirt"]}, "list of 3"),
    ({}, {"instruction": 5}, "one text or a list of 3"),
    ({"seed": [0, 1, -2]}, {}, r"seed\[2\] must be None or an integer >= 0"),
    ({"seed": [0, 1, "x"]}, {}, r"seed\[2\]"),
    ({"seed": 1.5}, {}, "seed must be None or an integer >= 0"),
    ({"seed": -1}, {}, "seed must be None or an integer >= 0"),
    ({}, {"reset_mask": [True, False, "yes"]}, "reset_mask must be a boolean array"),
    ({}, {"instruction": "get dirt", "success": 42}, "success detector must be"),
    ({}, {"instruction": "get dirt", "success": {"get dirt": "no"}}, "success detector must"),
    ({}, {"typo": 1}, "Unknown reset option"),
]


@pytest.mark.parametrize(("kwargs", "options", "match"), BAD_RESETS)
def test_a_bad_vector_reset_changes_nothing_and_the_env_stays_usable(kwargs, options, match):
    with _vector() as envs:
        envs.reset(seed=0, options={"instruction": "chop a tree"})
        envs.step(["", "", ""])
        before = _snapshot(envs)
        with pytest.raises(Steve1EnvError, match=match):
            envs.reset(**kwargs, options=options)
        assert _snapshot(envs) == before
        _, _, _, _, info = envs.step(["", "", ""])  # every env goes on with its episode
        assert list(info["high_level_steps"]) == [2, 2, 2]


def test_a_world_failing_mid_reset_leaves_the_vector_env_clearly_needing_a_full_reset():
    with _vector() as envs:
        envs.reset(seed=0, options={"instruction": "chop a tree"})
        world = envs.envs[1].world
        healthy_reset = world.reset
        world.reset = lambda seed=None: 1 / 0
        with pytest.raises(WorldCrashError):
            envs.reset(seed=1, options={"instruction": "get dirt"})
        with pytest.raises(ResetNeededError, match="failed part-way"):
            envs.step(["", "", ""])
        with pytest.raises(ConfigurationError, match="first reset must reset every env"):
            envs.reset(options={"reset_mask": np.array([False, True, False])})
        world.reset = healthy_reset
        envs.reset(seed=1, options={"instruction": "get dirt"})
        _, _, _, _, info = envs.step(["", "", ""])
        assert list(info["instruction"]) == ["get dirt"] * 3


# ---------------------------------------------------------------- package errors, not tracebacks
def test_reset_options_that_are_not_a_dict_say_what_to_pass():
    expected = r"options must be a dict such as \{'instruction': 'chop a tree'\}, got str"
    with (
        offline_env(instruction="chop a tree") as env,
        pytest.raises(ConfigurationError, match=expected),
    ):
        env.reset(options="chop a tree")
    with _vector() as envs, pytest.raises(ConfigurationError, match=expected):
        envs.reset(options="chop a tree")


@pytest.mark.parametrize("seed", [-1, 1.5, True, "7", np.int64(-3)])
def test_bad_reset_seeds_are_package_errors(seed):
    with offline_env(instruction="chop a tree") as env:
        with pytest.raises(ConfigurationError, match="seed must be None or an integer >= 0"):
            env.reset(seed=seed)
        env.reset(seed=np.int64(3))  # numpy integers are fine


def test_demo_refuses_a_negative_seed_before_building_anything(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["demo", "--seed", "-1"])
    assert caught.value.code == 2
    assert "--seed: must be an integer >= 0, got -1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("env_id", "action"), [("Steve1Skill-v0", "chop a tree"), ("Steve1SkillLibrary-v0", 0)]
)
def test_step_or_render_before_reset_through_gym_make_raise_the_package_error(env_id, action):
    env = gym.make(env_id, policy="random", prompt_encoder="hash", world_kwargs={"size": 32})
    with pytest.raises(ResetNeededError, match=r"Call reset\(\) before step\(\)"):
        env.step(action)
    with pytest.raises(ResetNeededError, match=r"Call reset\(\) before render\(\)"):
        env.render()
    # Code written against gymnasium's own error keeps catching it.
    with pytest.raises(gym.error.ResetNeeded):
        env.step(action)
    # The passive env checker is still there; the order is now the env's own business.
    assert "PassiveEnvChecker" in str(env) and "OrderEnforcing" not in str(env)
    env.reset(seed=0, options={"instruction": "chop a tree"})
    env.step(action)
    env.close()


def test_step_before_reset_through_make_vec_raises_the_package_error():
    envs = gym.make_vec("Steve1Skill-v0", num_envs=2, policy="random", prompt_encoder="hash")
    with pytest.raises(ResetNeededError, match=r"Call reset\(\) before step\(\)"):
        envs.step(["chop a tree"] * 2)
    envs.close()


@pytest.mark.parametrize(
    ("process_kwargs", "match"),
    [
        ({"step_timeout": "soon"}, "step_timeout must be a positive finite number"),
        ({"reset_timeout": -1}, "reset_timeout must be a positive finite number"),
        ({"step_timeout": 1e300}, r"at most 86400 s \(MAX_TIMEOUT_S\)"),
        ({"step_timout": 5}, r"Unknown world_process_kwargs \['step_timout'\]"),
    ],
)
def test_world_process_options_are_checked_when_the_vector_env_is_built(process_kwargs, match):
    _fails_fast(
        lambda: Steve1SkillVectorEnv(
            1,
            policy="random",
            prompt_encoder="hash",
            world_processes=True,
            world_process_kwargs=process_kwargs,
        ),
        match,
    )


def test_a_step_interrupted_between_envs_leaves_the_vector_env_usable(monkeypatch):
    with _vector() as envs:
        envs.reset(seed=0, options={"instruction": "chop a tree"})
        monkeypatch.setattr(envs.envs[2], "_begin_step", _raise_keyboard_interrupt)
        with pytest.raises(KeyboardInterrupt):
            envs.step(["", "", ""])  # envs 0 and 1 began their step, env 2 never did
        monkeypatch.undo()
        _, rewards, terms, truncs, info = envs.step(["", "", ""])
        # The half-stepped envs start new episodes (next-step autoreset); env 2 goes on.
        assert list(info["high_level_steps"]) == [0, 0, 1]
        assert not rewards.any() and not terms.any() and not truncs.any()
        _, _, _, _, info = envs.step(["", "", ""])
        assert list(info["high_level_steps"]) == [1, 1, 2]


def _raise_keyboard_interrupt(*args):
    raise KeyboardInterrupt


# ---------------------------------------------------------------- review fixes (second round)
@pytest.mark.parametrize(
    "action",
    [5, "forward", {"forward": 1, "camera": lambda: 0}],
    ids=["an int", "a text", "an unpicklable value"],
)
def test_an_action_that_cannot_be_sent_leaves_the_world_process_usable(action):
    world = WorldProcess("synthetic", {"size": 32, "pov_shape": (32, 32)})
    try:
        world.reset(seed=0)
        pid = world.pid
        with pytest.raises(InvalidActionError, match="action"):
            world.step_async(action)
        # Nothing was sent: no answer is awaited, and the same child goes on stepping.
        assert not world.waiting
        assert world.step({"forward": 1}).obs["pov"].shape == (32, 32, 3)
        assert world.pid == pid
    finally:
        world.close()


class _DetectorTrouble(Steve1EnvError, ValueError):
    """An error class whose constructor takes more than a message."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


@pytest.mark.parametrize(
    ("error", "expected_type"),
    [
        (_DetectorTrouble("success.parts[1]", "unknown kind"), ConfigurationError),
        (UnknownNameError("No detector named 'tree'."), UnknownNameError),
        (DetectorError("The detector 'tree' is broken."), DetectorError),
    ],
)
def test_a_per_env_reset_failure_names_the_env_whatever_the_error_class(
    monkeypatch, error, expected_type
):
    with _vector() as envs:

        def refuse(*args, **kwargs):
            raise error

        monkeypatch.setattr(envs.envs[2], "_checked_reset", refuse)
        with pytest.raises(expected_type) as caught:
            envs.reset(options={"instruction": ["chop a tree", "get dirt", "get wood"]})
        assert str(caught.value) == f"env 2: {error}"
        assert caught.value.__cause__ is error  # the original, with its attributes
        if expected_type is type(error):
            assert vars(caught.value) == vars(error)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"typo": 1}, r"^Unknown reset option"),
        ({"instruction": "get dirt", "success": 42}, r"^A success detector must be"),
        ({"instruction": ["get dirt"] * 3, "success": 42}, r"^A success detector must be"),
        ({"instruction": ["\x07bad"] * 3}, r"^(?!env \d)"),
    ],
)
def test_a_reset_failure_shared_by_every_env_names_no_env(options, match):
    with _vector() as envs, pytest.raises(Steve1EnvError, match=match):
        envs.reset(options=options)


@pytest.mark.parametrize("timeout", [1e300, float(MAX_TIMEOUT_S) + 1])
def test_minerl_timeouts_have_the_same_bound_as_world_processes(timeout):
    limit = r"at most 86400 s \(MAX_TIMEOUT_S\)"
    for name in ("step_timeout", "reset_timeout"):
        with pytest.raises(ConfigurationError, match=rf"{name} may be {limit}"):
            MineRLWorld(**{name: timeout})
        with pytest.raises(ConfigurationError, match=rf"{name} may be {limit}"):
            WorldProcess("synthetic", **{name: timeout})
    assert MineRLWorld(step_timeout=MAX_TIMEOUT_S).step_timeout == MAX_TIMEOUT_S


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (
            lambda: SyntheticWorld(size="big"),
            r"size must be an integer between 16 and \d+ blocks \(MIN_SIZE to MAX_SIZE\), got str",
        ),
        (
            lambda: SyntheticWorld(size=True),
            r"size must be an integer between 16 and \d+ blocks \(MIN_SIZE to MAX_SIZE\)",
        ),
        (
            lambda: Steve1SkillVectorEnv(2.5, policy="random", prompt_encoder="hash"),
            r"num_envs must be an integer between 1 and \d+ \(MAX_NUM_ENVS\), got float",
        ),
        (
            lambda: offline_env(pov_shape=(64, "wide")),
            r"pov_shape\[1\] \(the width\) must be an integer between 1 and \d+ pixels "
            r"\(MAX_FRAME_SIDE\), got str",
        ),
        (
            lambda: SyntheticWorld(pov_shape=(8, 64)),
            r"pov_shape\[0\] \(the height\) must be between 16 and \d+ pixels \(MAX_FRAME_SIDE\)",
        ),
    ],
)
def test_every_documented_range_is_named_in_the_same_words(make, match):
    with pytest.raises(ConfigurationError, match=match):
        make()


def test_bounded_int_accepts_numpy_integers_at_both_ends():
    assert bounded_int(np.int64(16), "size", 16, 512, limit_name="X") == 16
    assert type(bounded_int(np.uint16(512), "size", 16, 512, limit_name="X")) is int
    with pytest.raises(ConfigurationError, match=r"size must be between 16 and 512 \(X\), got 513"):
        bounded_int(513, "size", 16, 512, limit_name="X")


@pytest.mark.parametrize("resolution", [[4096, 360], [640, 0]])
def test_a_bad_minerl_resolution_is_reported_in_minerl_order(resolution):
    side = "width" if resolution[0] == 4096 else "height"
    expected = (
        rf"resolution \[width, height\]: the {side} must be between 1 and {MAX_FRAME_SIDE} "
        rf"pixels \(MAX_FRAME_SIDE\), got {resolution[0] if side == 'width' else 0}"
    )
    with pytest.raises(ConfigurationError, match=expected):
        MineRLWorld(resolution=resolution)


@pytest.mark.parametrize("function", [boolean, reset_seed, reset_options, checked_answer])
def test_public_checks_document_their_arguments_and_errors(function):
    doc = inspect.getdoc(function) or ""
    assert "Args:" in doc and "Raises:" in doc and "Returns:" in doc, function.__name__


def test_render_before_reset_raises_for_every_render_mode_as_gymnasium_does():
    # Gymnasium's OrderEnforcing raises on render() before reset() whatever the render_mode;
    # the env does the same itself, since gym.make no longer adds that wrapper.
    for render_mode in (None, "rgb_array"):
        with offline_env(instruction="chop a tree", render_mode=render_mode) as env:
            with pytest.raises(ResetNeededError, match=r"Call reset\(\) before render\(\)"):
                env.render()
            env.reset(seed=0)
            frame = env.render()
            assert (frame is None) if render_mode is None else frame.ndim == 3
    made = gym.make("Steve1Skill-v0", policy="random", prompt_encoder="hash")
    with pytest.raises(AttributeError, match="has_reset"):
        made.get_wrapper_attr("has_reset")  # OrderEnforcing's property is gone with it
    made.close()


# ------------------------------------------ component kwargs: mappings of named, checked values
OFFLINE_COMPONENTS = {"world": "synthetic", "policy": "scripted", "prompt_encoder": "hash"}


@pytest.mark.parametrize(
    ("name", "value", "got"),
    [
        ("world_kwargs", [1, 2], "got list [1, 2]"),
        ("policy_kwargs", "x", "got str 'x'"),
        ("prompt_encoder_kwargs", 5, "got int 5"),
        ("world_kwargs", {1: 64}, "keys must be argument names"),
    ],
)
def test_component_kwargs_that_are_not_keyword_arguments_are_configuration_errors(name, value, got):
    expected = rf"{name} must be a dict of keyword arguments such as \{{.*\}}"
    expected += rf"(, |: ).*{re.escape(got)}"
    with pytest.raises(ConfigurationError, match=expected):
        gym.make("Steve1Skill-v0", **OFFLINE_COMPONENTS, **{name: value})


@pytest.mark.parametrize(
    "name", ["world_kwargs", "policy_kwargs", "prompt_encoder_kwargs", "world_process_kwargs"]
)
def test_vector_env_kwargs_that_are_not_mappings_are_refused_before_building(name):
    with pytest.raises(ConfigurationError, match=rf"{name} must be a dict of keyword arguments"):
        Steve1SkillVectorEnv(2, world_processes=False, **OFFLINE_COMPONENTS, **{name: [1, 2]})


def test_keyword_arguments_copies_and_none_is_empty():
    given = {"size": 64}
    copied = keyword_arguments(given, "world_kwargs")
    assert copied == given and copied is not given
    assert keyword_arguments(None, "world_kwargs") == {}


RANDOM_ENCODER = {"weights": "random"}


def make_with_encoder(encoder: str, kwargs: dict) -> gym.Env:
    return gym.make(
        "Steve1Skill-v0",
        world="synthetic",
        policy="scripted",
        prompt_encoder=encoder,
        prompt_encoder_kwargs=kwargs,
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cache_size": None}, r"cache_size must be an integer >= 0 such as 1024, got NoneType"),
        ({"cache_size": "big"}, r"cache_size must be an integer >= 0 .* got str 'big'"),
        ({"cache_size": True}, r"cache_size must be an integer >= 0 .* got bool True"),
        ({"cache_size": -1}, r"cache_size must be an integer >= 0 .* got int -1"),
        ({"seed": "x"}, r"seed must be an integer between 0 and \d+ \(MAX_SEED\), got str"),
        ({"seed": True}, r"seed must be an integer between .* got bool True"),
        ({"seed": 2**64}, r"seed must be between 0 and \d+ \(MAX_SEED\)"),
        ({"cache_dir": 3}, r"cache_dir must be None or a file path .* got int 3"),
        ({"mineclip": 3.5}, r"mineclip must be None or a file path"),
    ],
)
def test_steve1_encoder_arguments_are_checked(kwargs, match):
    with pytest.raises(ConfigurationError, match=match):
        make_with_encoder("steve1", {**RANDOM_ENCODER, **kwargs})


def test_steve1_encoder_weights_of_the_wrong_type_are_a_configuration_error():
    with pytest.raises(ConfigurationError, match=r"weights must be None or a file path .* int 5"):
        Steve1PromptEncoder(weights=5)


def test_steve1_encoder_accepts_numpy_sizes_and_seeds(recwarn):
    encoder = Steve1PromptEncoder(weights="random", cache_size=np.int64(0), seed=np.uint64(7))
    assert encoder.cache_size == 0 and type(encoder.cache_size) is int
    encoder.close()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"path": 5}, r"path must be None or a file path .* got int 5"),
        ({"path": ""}, r"path must be None or a file path"),
        ({"embeddings": "abc"}, r"embeddings must be a dict mapping each instruction .* str 'abc'"),
        ({"embeddings": [[0.0] * 512]}, r"embeddings must be a dict .* got list"),
        ({"embeddings": {1: [0.0] * 512}}, r"embeddings must be a dict .* got the key int 1"),
    ],
)
def test_precomputed_encoder_arguments_are_checked(kwargs, match):
    with pytest.raises(ConfigurationError, match=match):
        make_with_encoder("precomputed", kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"seed": -1}, r"seed must be between 0 and \d+ \(MAX_SEED\), got -1"),
        ({"seed": "0"}, r"seed must be an integer between .* got str '0'"),
        ({"seed": False}, r"seed must be an integer between .* got bool False"),
        ({"weights": 7}, r"weights must be None or a file path .* got int 7"),
    ],
)
def test_native_policy_arguments_are_checked(kwargs, match):
    with pytest.raises(ConfigurationError, match=match):
        NativeSteve1Policy(**{"weights": "random", **kwargs})
