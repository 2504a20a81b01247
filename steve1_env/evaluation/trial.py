"""Running one trial: build the world, policy and encoder once per worker, then play episodes.

`TrialRunner` is what every executor runs, in this process, in a worker process or in a Ray
actor: it keeps one env, rebuilt when a task asks for other world options or its world
crashed, retries crashed trials, and returns a `TrialRecord` per trial.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from steve1_env.closing import close_all
from steve1_env.errors import (
    ConfigurationError,
    TaskSpecError,
    UnknownNameError,
    WorldCrashError,
)
from steve1_env.evaluation.records import DURATION_DECIMALS, TrialRecord, TrialSpec
from steve1_env.evaluation.video import FrameRecordingPolicy, VideoWriter
from steve1_env.files import MAX_JSON_DEPTH, json_depth_exceeds
from steve1_env.precision import resolve_device
from steve1_env.registry import POLICIES, PROMPT_ENCODERS, WORLDS
from steve1_env.tasks.detectors import build_detector
from steve1_env.validation import positive_int

StepsCallback = Callable[[TrialSpec, int], None]
"""Called after every high-level step with the trial and its low-level steps so far."""


@dataclass(frozen=True)
class RunSettings:
    """How trials are run: which world, policy and encoder, and how crashes are handled.

    Plain data, so it travels to worker processes and Ray actors. Names may be registered
    names or import paths ``"package.module:factory"`` (workers do not see registrations made
    at run time in the caller's process).

    Args:
        world: World name (``"synthetic"``, ``"minerl"``, ``"minestudio"``).
        policy: Policy name (``"steve1"``, ``"scripted"``, ``"random"``).
        prompt_encoder: Prompt encoder name (``"steve1"``, ``"hash"``, ``"precomputed"``).
        world_kwargs: Arguments of every world; a task's ``world_options`` override them.
        policy_kwargs: Arguments of the policy (``{"weights": ...}``).
        prompt_encoder_kwargs: Arguments of the encoder.
        device: Torch device of policy and encoder.
        k: Low-level steps per high-level env step (how often progress is reported).
        crash_retries: How often a trial whose world crashed is run again.
        video_dir: Directory for one mp4 per trial
            (``<task>/<instruction index>-<trial>.mp4``); None records no video.
    """

    world: str = "synthetic"
    policy: str = "steve1"
    prompt_encoder: str = "steve1"
    world_kwargs: Mapping[str, Any] = field(default_factory=dict)
    policy_kwargs: Mapping[str, Any] = field(default_factory=dict)
    prompt_encoder_kwargs: Mapping[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    k: int = 100
    crash_retries: int = 2
    video_dir: str | None = None

    def __post_init__(self) -> None:
        for name in ("world", "policy", "prompt_encoder", "device"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ConfigurationError(f"{name} must be a non-empty name, got {value!r}.")
        for name in ("world_kwargs", "policy_kwargs", "prompt_encoder_kwargs"):
            value = getattr(self, name)
            if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
                raise ConfigurationError(
                    f"{name} must map argument names to values, got {value!r}."
                )
            object.__setattr__(self, name, dict(value))
        positive_int(self.k, "k")
        retries = self.crash_retries
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ConfigurationError(f"crash_retries must be an integer >= 0, got {retries!r}.")

    def to_json(self) -> dict[str, Any]:
        """Returns the settings as a JSON-ready dict.

        Raises:
            ConfigurationError: If an argument nests deeper than a run directory may record
                (`steve1_env.files.MAX_JSON_DEPTH` levels in all).
        """
        too_deep = ConfigurationError(
            "The run's world, policy or encoder arguments nest lists or mappings deeper than "
            f"run.json may hold ({MAX_JSON_DEPTH} levels in all); pass flatter values."
        )
        try:
            as_json = json.loads(json.dumps(asdict(self), default=str))
        except RecursionError:
            raise too_deep from None
        # run.json holds these two levels down (kwargs -> world_kwargs -> value).
        if json_depth_exceeds(as_json, MAX_JSON_DEPTH - 2):
            raise too_deep
        return as_json


def check_run_arguments(
    settings: RunSettings,
    specs: Iterable[TrialSpec],
    *,
    importable_here: bool = True,
    source: str | None = None,
) -> None:
    """Checks, before anything runs or is written, that every component takes its arguments.

    The check is the registries' own, the one `Registry.make` does before building: the
    world factory's signature must accept the run's ``world_kwargs`` merged with each task's
    ``world_options`` (what `TrialRunner` will pass it), and the policy's and encoder's
    factories their arguments. So a misspelt option fails at once instead of at its task's
    first trial. Nothing is built. A factory taking ``**kwargs`` (the MineRL and MineStudio
    worlds pass them on to the simulator) accepts every name here; the simulator checks those
    when the world is built. Values are checked only then too.

    Args:
        settings: The run's settings.
        specs: The trials to run.
        importable_here: False when components may be importable only where the trials run
            (Ray actors on other machines): an import path that cannot be imported here is
            not checked.
        source: The task file, named in errors.

    Raises:
        UnknownNameError: If a component's name is not registered.
        ConfigurationError: If the run's arguments are not accepted, or its device is not
            usable here.
        TaskSpecError: If a task's ``world_options`` are not accepted; names the task.
    """
    if importable_here and settings.device != "cpu":
        # A device this machine lacks would fail at the first trial, after run.json is written.
        # (Under Ray, the actors' machines may have it: they check it themselves.)
        resolve_device(settings.device)
    checks = [
        # Partial for the world: a required argument may come from the tasks' world_options.
        (WORLDS, settings.world, settings.world_kwargs, True, "world (world_kwargs)"),
        (
            POLICIES,
            settings.policy,
            {"world": None, "device": settings.device, **settings.policy_kwargs},
            False,
            "policy (policy_kwargs)",
        ),
        (
            PROMPT_ENCODERS,
            settings.prompt_encoder,
            {"device": settings.device, **settings.prompt_encoder_kwargs},
            False,
            "prompt encoder (prompt_encoder_kwargs)",
        ),
    ]
    world_known = True
    for registry, name, arguments, partial, whose in checks:
        try:
            registry.check_arguments(name, arguments, partial=partial)
        except UnknownNameError:
            if importable_here or ":" not in name:  # a name, not an import path
                raise
            world_known = world_known and registry is not WORLDS
        except ConfigurationError as exc:
            raise ConfigurationError(
                f"{exc} Fix the arguments of the {whose}; nothing was run."
            ) from exc
    checked: set[str] = set()
    for spec in specs if world_known else ():
        key = TrialRunner._key(spec.world_options)
        if key in checked:
            continue
        checked.add(key)
        try:
            WORLDS.check_arguments(settings.world, {**settings.world_kwargs, **spec.world_options})
        except ConfigurationError as exc:
            of = f" of {source}" if source else ""
            raise TaskSpecError(
                f"Task {spec.task!r}{of}: its world_options {dict(spec.world_options)!r} do not "
                f"fit the world. {exc} Fix the task's world_options; nothing was run."
            ) from exc


class _WorldBundle:
    """A world, the policy built for it, and the env composing them with the shared encoder."""

    def __init__(self, settings: RunSettings, world_kwargs: dict[str, Any], encoder: Any) -> None:
        from steve1_env.env import Steve1SkillEnv

        self.world = WORLDS.make(settings.world, **world_kwargs)
        policy = None
        try:
            policy = POLICIES.make(
                settings.policy,
                world=self.world,
                device=settings.device,
                **settings.policy_kwargs,
            )
            self.policy = FrameRecordingPolicy(policy)
            self.env = Steve1SkillEnv(
                world=self.world,
                policy=self.policy,
                prompt_encoder=encoder,
                k=settings.k,
                terminate_on_success=True,
                render_mode="rgb_array",
                pov_shape=(64, 64),
                device=settings.device,
            )
        except BaseException:
            if policy is not None:
                policy.close()
            self.world.close()
            raise

    def close(self) -> None:
        close_all([self.env.close, self.policy.close, self.world.close])


@dataclass
class Episode:
    """How the last try of a trial ended (the env's info at its end)."""

    reason: str
    steps: int
    high_level_steps: int
    detector: str | None
    detector_spec: str | None
    inventory: dict[str, int]
    error: str | None


MAX_ERROR_CHARS = 4000
"""Longest crash message kept in a record; the rest is cut so results lines stay small."""


def _clip(message: str) -> str:
    if len(message) <= MAX_ERROR_CHARS:
        return message
    return f"{message[:MAX_ERROR_CHARS]}... ({len(message) - MAX_ERROR_CHARS} characters cut)"


def trial_record(
    spec: TrialSpec,
    episode: Episode,
    errors: list[str],
    duration_s: float,
    worker: str,
    video: str | None = None,
) -> TrialRecord:
    """Returns the record of a trial whose last try ended as `episode`.

    Args:
        spec: The trial.
        episode: Its last try.
        errors: The world crashes met on the way, oldest first.
        duration_s: Wall time of all tries.
        worker: The worker that ran it.
        video: The video's path relative to the run directory, if one was recorded.
    """
    crashed = episode.reason == "crash"
    success = episode.reason == "success"
    return TrialRecord(
        task=spec.task,
        instruction=spec.instruction,
        instruction_index=spec.instruction_index,
        trial=spec.trial,
        seed=spec.seed,
        outcome="crash" if crashed else ("success" if success else "failure"),
        reason=episode.reason,
        steps=episode.steps,
        steps_to_success=episode.steps if success else None,
        max_steps=spec.max_steps,
        detector=episode.detector,
        detector_spec=episode.detector_spec,
        crashes=len(errors),
        errors=[_clip(error) for error in errors],
        high_level_steps=episode.high_level_steps,
        inventory=dict(episode.inventory),
        duration_s=round(duration_s, DURATION_DECIMALS),
        worker=worker,
        finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        video=None if crashed else video,
    )


class TrialRunner:
    """Runs trials one after another with the components `settings` names.

    Args:
        settings: The run's settings.
        worker: Name stored in each record's ``worker`` field.
    """

    def __init__(self, settings: RunSettings, worker: str = "local") -> None:
        self.settings = settings
        self.worker = worker
        self._encoder: Any = None
        self._bundle_now: _WorldBundle | None = None  # the live world, for `_bundle_key`
        self._bundle_key: str | None = None

    def run(
        self, spec: TrialSpec, on_steps: StepsCallback | None = None, earlier_crashes: int = 0
    ) -> TrialRecord:
        """Runs one trial, retrying it while its world crashes and retries are left.

        Args:
            spec: The trial.
            on_steps: Called after every high-level step with the low-level steps so far.
            earlier_crashes: Tries of this trial already lost elsewhere (a worker that died);
                they use up the run's ``crash_retries`` too.

        Raises:
            TaskSpecError: If the trial's detector config cannot be built here.
            Steve1EnvError: For configuration errors (unknown names, bad arguments), which no
                retry would fix.
        """
        detector = build_detector(spec.detector, spec.instruction)
        started = time.perf_counter()
        errors: list[str] = []
        episode: Episode | None = None
        video: str | None = None
        for _ in range(max(1, self.settings.crash_retries + 1 - earlier_crashes)):
            try:
                episode, video = self._attempt(spec, detector, on_steps)
            except WorldCrashError as exc:  # the world did not even reset
                episode = Episode("crash", 0, 0, None, detector.name, {}, str(exc))
            if episode.reason != "crash":
                break
            errors.append(episode.error or "the world crashed")
            self._discard()  # a crashed world is replaced, not reused
        if episode is None:  # unreachable: the loop runs at least once
            raise RuntimeError("no attempt was made")
        duration = time.perf_counter() - started
        return trial_record(spec, episode, errors, duration, self.worker, video)

    def close(self) -> None:
        """Closes the world, policy and encoder this runner built."""
        bundle, encoder = self._bundle_now, self._encoder
        self._bundle_now, self._bundle_key, self._encoder = None, None, None
        close_all(c.close for c in (bundle, encoder) if c is not None)

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _key(world_options: Mapping[str, Any]) -> str:
        return json.dumps(dict(world_options), sort_keys=True, default=repr)

    def _bundle(self, world_options: Mapping[str, Any]) -> _WorldBundle:
        key = self._key(world_options)
        if self._bundle_now is not None and self._bundle_key == key:
            return self._bundle_now
        # Trials run task by task, so one live world suffices: a real one (a Minecraft
        # server) is too heavy to keep idle while another task runs.
        self._discard()
        if self._encoder is None:
            self._encoder = PROMPT_ENCODERS.make(
                self.settings.prompt_encoder,
                device=self.settings.device,
                **self.settings.prompt_encoder_kwargs,
            )
        self._bundle_now = _WorldBundle(
            self.settings, {**self.settings.world_kwargs, **world_options}, self._encoder
        )
        self._bundle_key = key
        return self._bundle_now

    def _discard(self) -> None:
        bundle, self._bundle_now, self._bundle_key = self._bundle_now, None, None
        if bundle is not None:
            with contextlib.suppress(Exception):  # it already crashed; closing is best effort
                bundle.close()

    def _video_path(self, spec: TrialSpec) -> tuple[Path, str] | None:
        if self.settings.video_dir is None:
            return None
        # Recorded relative to the folder holding video_dir (the run's output directory), so
        # the record stays valid wherever the directory is moved.
        folder = Path(self.settings.video_dir)
        name = f"{spec.task}/{spec.instruction_index}-{spec.trial}.mp4"
        return folder / name, f"{folder.name}/{name}"

    def _attempt(
        self, spec: TrialSpec, detector: Any, on_steps: StepsCallback | None
    ) -> tuple[Episode, str | None]:
        bundle = self._bundle(spec.world_options)
        env = bundle.env
        # Read by the env at every step: the task's budget applies from this reset on.
        env.max_low_level_steps = spec.max_steps
        target = self._video_path(spec)
        writer = None if target is None else VideoWriter(target[0])
        bundle.policy.writer = writer
        try:
            _, info = env.reset(
                seed=spec.seed, options={"instruction": spec.instruction, "success": detector}
            )
            while True:
                _, _, terminated, truncated, info = env.step(spec.instruction)
                if on_steps is not None:
                    on_steps(spec, int(info["total_steps"]))
                if info["is_success"] or terminated or truncated:
                    break
            if writer is not None:
                last = env.render()
                if last is not None:
                    writer.write(np.asarray(last))
        except BaseException:
            if writer is not None:
                writer.discard()
            raise
        finally:
            bundle.policy.writer = None
        episode = Episode(
            reason=str(info["reason"]),
            steps=int(info["total_steps"]),
            high_level_steps=int(info["high_level_steps"]),
            detector=info["detector"],
            detector_spec=info["detector_spec"],
            inventory={str(k): int(v) for k, v in info["inventory"].items()},
            error=info.get("error"),
        )
        video = None
        if writer is not None and target is not None:
            if episode.reason == "crash":
                writer.discard()
            else:
                writer.close()
                video = target[1]
        return episode, video
