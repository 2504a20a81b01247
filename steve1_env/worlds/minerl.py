"""`MineRLWorld`: MineRL 1.0 (``HumanSurvival`` and other env ids) behind the `World` protocol.

MineRL speaks the old gym API and has quirks this adapter absorbs:

- the world seed must be set before every ``reset()`` (reset clears it);
- on a socket failure ``step`` returns a *random* observation with ``done=True`` and
  ``info["error"]``, and stepping after done raises; Minecraft may also hang. All of these are
  crashes, raised as `WorldCrashError` (the one crash channel of `steve1_env.worlds.base`): the
  Java process tree is killed, a new world is made at the next reset, and the bogus observation
  is never passed on;
- Java leaks memory, so the world can be restarted every N episodes;
- actions must carry all 24 keys (``ESC``, ``pickItem``, ``swapHands`` included).

Install: Java 8, xvfb (``xvfb-run``),
``pip install git+https://github.com/minerllabs/minerl@v1.0.2`` and the ``minerl`` extra
(``pip install "steve1-env[minerl]"``; from a clone ``pip install -e ".[minerl]"``).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from steve1_env.errors import ClosedError, ConfigurationError, ResetNeededError, WorldCrashError
from steve1_env.optional import import_optional, require_installed
from steve1_env.validation import frame_side, positive_int, short_repr
from steve1_env.worlds.actions import canonical_action
from steve1_env.worlds.base import WorldObs, WorldStep, WorldTimeouts, world_timeouts
from steve1_env.worlds.processes import child_processes, command_line, kill_processes

_log = logging.getLogger(__name__)

STEVE1_ENV_KWARGS: dict[str, Any] = {
    "fov_range": [70, 70],
    "resolution": [640, 360],
    "gamma_range": [2, 2],
    "guiscale_range": [1, 1],
    "cursor_size_range": [16.0, 16.0],
    "frameskip": 1,
}
"""The settings STEVE-1 was trained with (HumanSurvival's constructor arguments)."""

INSTALL_HINT = (
    "MineRL itself installs from git, with Java 8 first on PATH: `pip install "
    "git+https://github.com/minerllabs/minerl@v1.0.2`, and runs under a display (`xvfb-run`). "
    "To run without Minecraft, use world='synthetic'."
)


def make_minerl_env(env_id: str = "HumanSurvival", **env_kwargs: Any) -> Any:
    """Builds a MineRL env (old gym API); HumanSurvival gets STEVE-1's settings."""
    import_optional("minerl", "minerl", "world='minerl'", INSTALL_HINT)
    if env_id == "HumanSurvival":
        specs = import_optional(
            "minerl.herobraine.env_specs.human_survival_specs", "minerl", "world='minerl'",
            INSTALL_HINT,
        )  # fmt: skip
        return specs.HumanSurvival(**{**STEVE1_ENV_KWARGS, **env_kwargs}).make()
    gym = import_optional("gym", "minerl", "world='minerl'", INSTALL_HINT)
    return gym.make(env_id, **env_kwargs)


def _plain(value: Any) -> Any:
    """Turns MineRL's numpy scalars and nested dicts into plain Python values (pov excepted)."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    if isinstance(value, np.generic):
        return value.item()
    return value


MONITORS = ("isGuiOpen",)
"""Keys MineRL 1.0 reports among its monitors (the step's ``info``), not in the observation,
that the observation takes in: ``HumanSurvival`` monitors ``isGuiOpen`` and a copy of
``location_stats``."""


def minerl_observation(obs: Mapping[str, Any], info: Mapping[str, Any] | None = None) -> WorldObs:
    """Converts a MineRL observation: ``pov`` stays a uint8 array, the rest plain values.

    Args:
        obs: MineRL's observation.
        info: The step's info (MineRL's monitors): its `MONITORS` keys join the observation
            where the observation lacks them. A reset has none, so ``isGuiOpen`` appears from
            the first step on.
    """
    converted = {key: _plain(value) for key, value in obs.items() if key != "pov"}
    if isinstance(info, Mapping):
        for key in MONITORS:
            if key in info and key not in converted:
                converted[key] = _plain(info[key])
    converted["pov"] = np.asarray(obs["pov"], dtype=np.uint8)
    return converted


def _check_resolution(resolution: Any) -> None:
    # MineRL's order is [width, height]; the frame size limit is the package's.
    try:
        width, height = resolution
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"resolution must be [width, height] such as [640, 360], got {short_repr(resolution)}."
        ) from None
    frame_side(width, "resolution [width, height]: the width")
    frame_side(height, "resolution [width, height]: the height")


class MineRLWorld:
    """A MineRL env as a `World`, with crash recovery.

    Args:
        env_id: A MineRL env id; ``HumanSurvival`` gets STEVE-1's settings.
        env_factory: Builds the old-gym env (default: `make_minerl_env`); called again after a
            crash or a scheduled restart.
        restart_every: Make a new world (new Java process) every this many episodes; None for
            only after crashes.
        step_timeout: Seconds a step may take before Minecraft counts as hung (a crash); None
            for ``timeouts.step_s`` (120 s).
        reset_timeout: Seconds creating the env or a reset may take (Minecraft starts at the
            first reset, which takes minutes, more on a first install); None for
            ``timeouts.reset_s`` (1800 s).
        env_kwargs: Passed to the factory.
    """

    timeouts = WorldTimeouts(step_s=120.0, reset_s=1800.0, watchdog=True)
    """MineRL's limits, read by this world's watchdog and by a `WorldProcess` running it."""

    def __init__(
        self,
        env_id: str = "HumanSurvival",
        env_factory: Callable[..., Any] | None = None,
        restart_every: int | None = None,
        step_timeout: float | None = None,
        reset_timeout: float | None = None,
        **env_kwargs: Any,
    ) -> None:
        if not isinstance(env_id, str) or not env_id:
            raise ConfigurationError(
                f"env_id must be a MineRL env id such as 'HumanSurvival', got {env_id!r}."
            )
        self.env_id = env_id
        self.restart_every = (
            None if restart_every is None else positive_int(restart_every, "restart_every")
        )
        limits = world_timeouts(
            type(self), {"step_timeout": step_timeout, "reset_timeout": reset_timeout}
        )
        self.step_timeout, self.reset_timeout = limits.step_s, limits.reset_s
        if "resolution" in env_kwargs:
            _check_resolution(env_kwargs["resolution"])
        self._factory = env_factory or make_minerl_env
        self._env_kwargs = env_kwargs
        self._env: Any = None
        self._world_processes: set[int] = set()
        self._episodes = 0
        self._done = True
        self._closed = False
        self._worker = _Worker()
        self.crashes = 0
        """Crashes seen so far (for monitoring)."""

    @staticmethod
    def check_backend(arguments: Mapping[str, Any]) -> None:
        """Raises `DependencyNotInstalledError` if MineRL is missing where it will be needed.

        Called before a run starts (nothing is imported); a custom ``env_factory`` needs no
        MineRL.
        """
        if arguments.get("env_factory") is None:
            require_installed("minerl", "minerl", "world='minerl'", INSTALL_HINT)

    # --------------------------------------------------------------- World
    def reset(self, seed: int | None = None) -> WorldObs:
        """Starts a new episode in a world seeded with `seed` (restarting it when due)."""
        if self._closed:
            raise ClosedError("This MineRLWorld was closed; create a new one.")
        due = self.restart_every is not None and self._episodes >= self.restart_every
        if self._env is None or due:
            if due:
                _log.info("MineRL: restarting the world after %d episodes", self._episodes)
            self._restart()
        try:
            obs = self._tracked(_seeded_reset, self._env, seed)
        except WorldCrashError as exc:
            self.crashes += 1
            _log.warning("MineRL: the world crashed on reset (%s); restarting it once", exc)
            self._restart()
            obs = self._tracked(_seeded_reset, self._env, seed)
        self._episodes += 1
        self._done = False
        return minerl_observation(obs)

    def step(self, action: Mapping[str, Any]) -> WorldStep:
        """Applies one 24-key action.

        Raises:
            WorldCrashError: If Minecraft failed, hung or reported a socket error
                (``info["error"]``); the world is shut down and the next reset makes a new one.
            ResetNeededError: If the episode is over or never started.
        """
        if self._done or self._env is None:
            raise ResetNeededError("The MineRL episode is over (or never started); reset().")
        full = canonical_action(action)
        minerl_action = {
            key: (value.copy() if isinstance(value, np.ndarray) else np.array(value))
            for key, value in full.items()
        }
        try:
            obs, _reward, done, info = self._call(self._env.step, minerl_action)
        except WorldCrashError as exc:
            _log.warning("MineRL: the world crashed on step (%s); shutting it down", exc)
            self._crashed()
            raise
        if info.get("error"):
            # The observation that came with the error is MineRL's random filler: dropped.
            _log.warning("MineRL: the world reported a crash (%s); shutting it down", info["error"])
            self._crashed()
            raise WorldCrashError(f"MineRL reported a crash: {info['error']}")
        self._done = bool(done)
        return WorldStep(minerl_observation(obs, info), self._done, dict(info))

    def close(self) -> None:
        """Closes the env and kills its processes; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._shutdown()

    # ------------------------------------------------------------ internals
    def _call(self, function: Callable[..., Any], *args: Any, timeout: float | None = None) -> Any:
        timeout = self.step_timeout if timeout is None else timeout
        try:
            return self._worker.run(function, *args, timeout=timeout)
        except TimeoutError as exc:
            # The hung call keeps its (daemon) thread; later calls get a fresh one.
            self._worker = _Worker()
            raise WorldCrashError(f"MineRL did not answer within {timeout:g} s.") from exc
        except WorldCrashError:
            raise
        except Exception as exc:
            raise WorldCrashError(f"MineRL failed: {type(exc).__name__}: {exc}") from exc

    def _tracked(self, function: Callable[..., Any], *args: Any) -> Any:
        # Minecraft starts on the first reset: remember the Java processes that appear meanwhile
        # (only those: other code may start children of its own at the same time).
        before = child_processes()
        try:
            return self._call(function, *args, timeout=self.reset_timeout)
        finally:
            self._world_processes |= _java(child_processes() - before)

    def _crashed(self) -> None:
        self.crashes += 1
        self._shutdown()
        self._done = True

    def _restart(self) -> None:
        self._shutdown()
        before = child_processes()
        _log.info("MineRL: launching the world %s", self.env_id)
        try:
            self._env = self._factory(self.env_id, **self._env_kwargs)
        except ImportError:
            raise
        except Exception as exc:
            raise WorldCrashError(
                f"Could not create the MineRL env {self.env_id!r}: {exc}"
            ) from exc
        finally:
            self._world_processes |= child_processes() - before
        self._episodes = 0

    def _shutdown(self) -> None:
        env, self._env = self._env, None
        if env is not None:
            # A broken world may fail to close: its processes are killed below anyway.
            with contextlib.suppress(Exception):
                self._worker.run(env.close, timeout=10.0)
        # Minecraft's Java and its children go too; a recorded pid that is no longer our
        # descendant (ended, and maybe reused) is left alone.
        ours = child_processes()
        doomed = self._world_processes & ours
        for pid in list(doomed):
            doomed |= child_processes(pid)
        self._world_processes = set()
        if doomed:
            _log.debug("MineRL: killing the world's processes %s", sorted(doomed))
            kill_processes(doomed)


def _seeded_reset(env: Any, seed: int | None) -> Any:
    if seed is not None:
        env.seed(int(seed))  # before every reset: MineRL's reset clears the seed
    return env.reset()


def _java(pids: set[int]) -> set[int]:
    return {pid for pid in pids if "java" in command_line(pid).lower()}


class _Worker:
    """Runs calls on one daemon thread, so a hung Minecraft cannot block interpreter exit."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[Any] = queue.Queue()
        threading.Thread(target=self._loop, daemon=True, name="minerl-world").start()

    def _loop(self) -> None:
        while True:
            function, args, answer = self._jobs.get()
            try:
                answer.put((True, function(*args)))
            except BaseException as exc:  # handed to the caller, who decides
                answer.put((False, exc))

    def run(self, function: Callable[..., Any], *args: Any, timeout: float) -> Any:
        """Returns ``function(*args)``; raises `TimeoutError` after `timeout` seconds."""
        answer: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=1)
        self._jobs.put((function, args, answer))
        try:
            ok, value = answer.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError from None
        if not ok:
            raise value
        return value
