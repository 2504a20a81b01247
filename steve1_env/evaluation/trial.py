"""Running one trial: build the world, policy and encoder once per worker, then play episodes.

`TrialRunner` is what every executor runs, in this process, in a worker process or in a Ray
actor: it keeps one env, rebuilt when a task asks for other world options or its world
crashed, retries crashed trials, and returns a `TrialRecord` per trial.

A fixed-horizon trial (``spec.horizon``, the paper's protocol) runs all its low-level steps,
recording the detector's first success and its metrics (`steve1_env.tasks.metrics`, updated
with every tick's world observation). An unconditional trial pursues the zero goal
(``Goal.unconditional``) and is judged by its task's detector. A sampled prompt latent embeds
each instruction once per (instruction, seed) with the encoder's ``encode_sampled``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from steve1_env.agent.base import Goal
from steve1_env.closing import close_all
from steve1_env.engine import SkillEngine
from steve1_env.errors import (
    ConfigurationError,
    TaskSpecError,
    UnknownNameError,
    WorldCrashError,
)
from steve1_env.evaluation.records import DURATION_DECIMALS, TrialRecord, TrialSpec
from steve1_env.evaluation.video import FrameCaption, VideoWriter, inventory_changes
from steve1_env.files import MAX_JSON_DEPTH, json_depth_exceeds
from steve1_env.precision import GOAL_DIM, resolve_device
from steve1_env.registry import POLICIES, PROMPT_ENCODERS, WORLDS
from steve1_env.success import needs_mineclip
from steve1_env.tasks.detectors import build_detector
from steve1_env.tasks.metrics import MetricTracker
from steve1_env.validation import bounded_int, positive_int

_log = logging.getLogger(__name__)

MAX_ENVS_PER_WORKER = 64
"""Most worlds one evaluation worker hosts (they share its one policy)."""
DEFAULT_ENVS_PER_WORKER = 1
"""Worlds per worker unless asked: the same as a worker with one world, policy and encoder."""

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
            (``<task>/<instruction index>-<trial>.mp4``, ``...-<trial>-unconditional.mp4``
            for a baseline trial), each with an animated WebP thumbnail beside it; None
            records no video.
        overlay: Draw on each video frame the instruction, tick, the last step's outcome and
            reason, the attempt's inventory changes and the MineCLIP score when one is
            computed (`steve1_env.evaluation.video.FrameCaption`).
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
    overlay: bool = False

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
        if not isinstance(self.overlay, bool):
            raise ConfigurationError(f"overlay must be True or False, got {self.overlay!r}.")

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
        DependencyNotInstalledError: If the world's backend (MineRL, MineStudio) is missing.
        TaskSpecError: If a task's ``world_options`` are not accepted; names the task.
        ConfigurationError: Also if a task asks for a sampled prompt latent and the run's
            prompt encoder is a class without ``encode_sampled`` (the precomputed encoder:
            a table of fixed embeddings).
    """
    specs = list(specs)
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
    if importable_here and any(spec.prompt_latent == "sampled" for spec in specs):
        factory = PROMPT_ENCODERS.factory(settings.prompt_encoder)
        if isinstance(factory, type) and not callable(getattr(factory, "encode_sampled", None)):
            message = sampled_latent_unsupported(settings.prompt_encoder)
            raise ConfigurationError(f"{message} Nothing was run.")
    checked: set[str] = set()
    if world_known and importable_here:
        # A missing simulator is a setup error, not a world crash to retry and record.
        WORLDS.check_backend(settings.world, settings.world_kwargs)
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


@dataclass
class Episode:
    """How the last try of a trial ended (the env's info at its end).

    `steps_to_success` is the first success's step of a fixed-horizon trial (None when its
    detector never fired); a trial that stops at success ends there instead.
    """

    reason: str
    steps: int
    high_level_steps: int
    detector: str | None
    detector_spec: str | None
    inventory: dict[str, int]
    error: str | None
    steps_to_success: int | None = None


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
    metrics: Mapping[str, float] | None = None,
) -> TrialRecord:
    """Returns the record of a trial whose last try ended as `episode`.

    Args:
        spec: The trial.
        episode: Its last try.
        errors: The world crashes met on the way, oldest first.
        duration_s: Wall time of all tries.
        worker: The worker that ran it.
        video: The video's path relative to the run directory, if one was recorded.
        metrics: The episode's metrics (name -> value), if any were tracked.
    """
    crashed = episode.reason == "crash"
    success = episode.reason == "success"
    first_success = episode.steps if success else None
    if spec.horizon is not None:  # it ran on after its first success
        first_success = None if crashed else episode.steps_to_success
        success = first_success is not None
    return TrialRecord(
        task=spec.task,
        instruction=spec.instruction,
        instruction_index=spec.instruction_index,
        trial=spec.trial,
        seed=spec.seed,
        outcome="crash" if crashed else ("success" if success else "failure"),
        reason=episode.reason,
        steps=episode.steps,
        steps_to_success=first_success,
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
        condition=spec.condition,
        horizon=spec.horizon,
        metrics={} if crashed or metrics is None else {k: float(v) for k, v in metrics.items()},
        prompt_latent=spec.prompt_latent,
        prompt_seed=spec.prompt_seed,
    )


def _ended(reason: str, detector: str | None) -> str:
    # The overlay's line for a high-level step's end.
    return f"step: {reason}" + (f" ({detector})" if detector else "")


def sampled_latent_unsupported(encoder: str) -> str:
    """Returns the message for a sampled prompt latent asked of an encoder without a prior."""
    return (
        f"A task asks for prompt_latent 'sampled' (its text embedded by STEVE-1's prior with a "
        f"latent drawn from its prompt_seed), but the prompt encoder {encoder!r} cannot draw the "
        "prior's latent from a seed (it has no encode_sampled method; a precomputed table holds "
        "fixed embeddings). Use prompt_encoder='steve1' (with "
        "prompt_encoder_kwargs={'weights': 'random'} to run offline), 'hash' for policies "
        "that read the text, or drop prompt_latent from the task."
    )


def check_envs_per_worker(envs: Any) -> int:
    """Returns `envs` if it is a valid number of worlds per worker.

    Raises:
        ConfigurationError: If it is not an integer from 1 to `MAX_ENVS_PER_WORKER`.
    """
    return bounded_int(
        envs,
        "envs_per_worker",
        1,
        MAX_ENVS_PER_WORKER,
        limit_name="MAX_ENVS_PER_WORKER",
        hint="use more workers instead",
    )


class TrialFailedError(Exception):
    """A trial raised an error that is not a world crash (a configuration error, a bug).

    Not a `Steve1EnvError` itself: the executors turn it into an `EvaluationError` that names
    the trial, where it ran and the cause.

    Attributes:
        spec: The trial.
        cause: What it raised.
    """

    def __init__(self, spec: TrialSpec, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.spec = spec
        self.cause = cause

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from its fields: a Ray actor's failed trial reaches the driver as itself.
        return (TrialFailedError, (self.spec, self.cause))


class _WorldSlot:
    """One world of a worker: its env (on the worker's engine) and the trial it runs."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.env: Any = None  # a Steve1SkillEnv, built for `key`
        self.world: Any = None
        self.policy: Any = None  # set when the policy is per world (it reads its world)
        self.key: str | None = None
        self.spec: TrialSpec | None = None
        self.detector: Any = None
        self.started = 0.0
        self.tries_left = 0
        self.errors: list[str] = []
        self.writer: VideoWriter | None = None
        self.target: tuple[Path, str] | None = None
        self.metrics: MetricTracker | None = None
        self.first_success: tuple[int, str | None] | None = None  # (step, detector)
        self.outcome: str | None = None  # the last high-level step's end, for the overlay

    def close(self) -> None:
        env, world, policy = self.env, self.world, self.policy
        self.env = self.world = self.policy = None
        self.key = None
        close_all(c.close for c in (env, policy, world) if c is not None)


class TrialRunner:
    """Runs trials on the skill engine over `envs` worlds with ONE policy and encoder.

    Each world runs one trial at a time; all worlds' ticks share one batched policy call
    (a STEVE-1 network serves the worlds in one forward pass). A world is rebuilt when its
    next trial asks for other world options, or after it crashed. Crashed trials are retried
    while the run's ``crash_retries`` allow. A trial plays the same episode whichever world
    and batch it runs in, so records do not depend on `envs`.

    Args:
        settings: The run's settings.
        worker: Name stored in each record's ``worker`` field.
        envs: Worlds hosted (trials in flight at once), 1 to `MAX_ENVS_PER_WORKER`.
    """

    def __init__(self, settings: RunSettings, worker: str = "local", envs: int = 1) -> None:
        self.settings = settings
        self.worker = worker
        self.envs = check_envs_per_worker(envs)
        self._encoder: Any = None
        self._policy: Any = None  # shared by every world when it batches
        self._shared: bool | None = None
        self._slots = [_WorldSlot(i) for i in range(self.envs)]
        self._scorer: Any = None
        self._video: Any = None  # MineCLIP's video tower for visual goals, loaded on first use
        # Sampled prompt latents: one embedding per (instruction, seed), for all its trials.
        self._sampled: dict[tuple[str, int], np.ndarray] = {}

    @property
    def free(self) -> int:
        """Worlds without a trial."""
        return sum(slot.spec is None for slot in self._slots)

    @property
    def busy(self) -> bool:
        """True while a trial is in flight."""
        return any(slot.spec is not None for slot in self._slots)

    def run(
        self, spec: TrialSpec, on_steps: StepsCallback | None = None, earlier_crashes: int = 0
    ) -> TrialRecord:
        """Runs one trial to its end, retrying it while its world crashes and retries are left.

        Args:
            spec: The trial.
            on_steps: Called after every high-level step with the low-level steps so far.
            earlier_crashes: Tries of this trial already lost elsewhere (a worker that died);
                they use up the run's ``crash_retries`` too.

        Raises:
            TrialFailedError: If the trial raised anything but a world crash (a detector
                config that cannot be built here, a bad world argument), which no retry fixes.
        """
        if self.busy:
            raise ConfigurationError("run() needs an idle runner; use advance() for several.")
        records = self.advance([(spec, earlier_crashes)], on_steps)
        while not records:
            records = self.advance([], on_steps)
        return records[0]

    def advance(
        self,
        new: Sequence[tuple[TrialSpec, int]] = (),
        on_steps: StepsCallback | None = None,
    ) -> list[TrialRecord]:
        """Starts `new` trials on free worlds, then ticks until at least one trial ends.

        Args:
            new: ``(trial, tries already lost elsewhere)`` pairs, at most `free` of them.
            on_steps: Called after every high-level step of a trial with its steps so far.

        Returns:
            The records of the trials that ended (empty only when none was in flight).

        Raises:
            TrialFailedError: If a trial raised anything but a world crash; the worlds'
                unfinished videos are discarded.
        """
        if len(new) > self.free:
            raise ConfigurationError(
                f"advance() got {len(new)} trials but only {self.free} of {self.envs} worlds "
                "are free."
            )
        finished: list[TrialRecord] = []
        try:
            free = (slot for slot in self._slots if slot.spec is None)
            for (spec, earlier), slot in zip(new, free, strict=False):
                self._start_trial(slot, spec, earlier, finished, on_steps)
            while not finished and self.busy:
                running = [slot for slot in self._slots if slot.spec is not None]
                engine = SkillEngine([slot.env._slot for slot in running])
                try:
                    engine.tick()
                except Exception as exc:
                    # A trial's own detector (or policy) failed, or the batched policy call:
                    # blamed on the first trial then.
                    failed = running[engine.failed_slot or 0]
                    raise TrialFailedError(failed.spec, exc) from exc  # type: ignore[arg-type]
                for slot in running:
                    if not slot.env._slot.stepping:
                        self._after_step(slot, finished, on_steps)
        except BaseException:
            for slot in self._slots:
                self._abandon_trial(slot)
            raise
        return finished

    def close(self) -> None:
        """Closes the worlds, policy and encoder this runner built."""
        for slot in self._slots:
            self._abandon_trial(slot)
        policy, encoder, scorer = self._policy, self._encoder, self._scorer
        self._policy = self._encoder = self._scorer = self._video = None
        closers = [slot.close for slot in self._slots]
        closers += [c.close for c in (policy, encoder, scorer) if c is not None]
        close_all(closers)

    # ------------------------------------------------------------------ trials
    def _start_trial(
        self,
        slot: _WorldSlot,
        spec: TrialSpec,
        earlier: int,
        finished: list[TrialRecord],
        on_steps: StepsCallback | None,
    ) -> None:
        try:
            slot.detector = build_detector(spec.detector, spec.instruction)
        except Exception as exc:
            raise TrialFailedError(spec, exc) from exc
        slot.spec = spec
        slot.started = time.perf_counter()
        slot.errors = []
        slot.tries_left = max(1, self.settings.crash_retries + 1 - earlier)
        _log.debug("trial %s: starting (%r, seed %s)", spec.key, spec.instruction, spec.seed)
        self._start_try(slot, finished, on_steps)

    def _start_try(
        self, slot: _WorldSlot, finished: list[TrialRecord], on_steps: StepsCallback | None
    ) -> None:
        spec = slot.spec
        assert spec is not None
        slot.tries_left -= 1
        try:
            self._world_for(slot, spec.world_options)
            env = slot.env
            # Read by the env at every step: the task's budget applies from this reset on.
            env.max_low_level_steps = spec.max_steps
            slot.target = self._video_path(spec)
            slot.writer = self._writer_for(slot)
            slot.outcome = None
            env._slot.on_frame = self._frame_observer(slot)
            # Scored only for a detector reading the score: a world keeps no scorer from
            # an earlier task.
            env._use_scorer(self._mineclip_scorer() if needs_mineclip(slot.detector) else None)
            # A fixed-horizon trial runs on after success; the env's flag is read every step.
            env.terminate_on_success = spec.horizon is None
            options: dict[str, Any] = {"instruction": spec.instruction, "success": slot.detector}
            goal = self._pinned_goal(spec)
            if spec.visual_goal is not None and goal is None:
                options.update(visual_goal=spec.visual_goal, cond_scale=spec.cond_scale)
            if goal is None:
                env.reset(seed=spec.seed, options=options)
            else:
                # As reset(), with this goal pinned for the episode as a visual goal is.
                seed, given, detectors, _ = env._checked_reset(spec.seed, options)
                env._reset_checked((seed, given, detectors, goal), options)
            if spec.cond_scale is not None and spec.visual_goal is None and goal is None:
                # A text goal with the task's guidance scale, for every attempt of the episode.
                scaled = dataclasses.replace(env._slot.goal, cond_scale=spec.cond_scale)
                env._slot.goals.pin(scaled)
                env._slot.goal = scaled
            slot.first_success = None
            slot.metrics = MetricTracker(spec.metrics, env._slot.obs) if spec.metrics else None
            env._slot.on_tick = None if slot.metrics is None else slot.metrics.update
            env._begin_step(spec.instruction)
            return
        except WorldCrashError as exc:  # the world did not even reset
            crash = Episode("crash", 0, 0, None, slot.detector.name, {}, str(exc))
        except Exception as exc:
            raise TrialFailedError(spec, exc) from exc
        self._end_try(slot, crash, finished, on_steps)

    def _after_step(
        self, slot: _WorldSlot, finished: list[TrialRecord], on_steps: StepsCallback | None
    ) -> None:
        spec, env = slot.spec, slot.env
        assert spec is not None
        try:
            _, _, terminated, truncated, info = env._end_step()
            if on_steps is not None:
                on_steps(spec, int(info["total_steps"]))
            if info["is_success"] and slot.first_success is None:
                slot.first_success = (int(info["total_steps"]), info["detector"])
            slot.outcome = _ended(str(info["reason"]), info["detector"])
            stops = info["is_success"] and spec.horizon is None
            if not (stops or terminated or truncated):
                env._begin_step(spec.instruction)
                return
        except Exception as exc:
            raise TrialFailedError(spec, exc) from exc
        reason, detector = str(info["reason"]), info["detector"]
        first = slot.first_success
        if spec.horizon is not None and reason != "crash":
            # Ended by its horizon or its world, never by success; the detector is the one
            # that fired first.
            reason = "world_done" if terminated else "budget"
            detector = None if first is None else first[1]
        episode = Episode(
            reason=reason,
            steps=int(info["total_steps"]),
            high_level_steps=int(info["high_level_steps"]),
            detector=detector,
            detector_spec=info["detector_spec"],
            inventory={str(k): int(v) for k, v in info["inventory"].items()},
            error=info.get("error"),
            steps_to_success=None if first is None else first[0],
        )
        if slot.writer is not None and reason != "crash":
            try:
                last = env.render()
                if last is not None:
                    won = reason == "success" or first is not None
                    # The last frame shows how the trial ended, as its record will.
                    slot.outcome = f"trial: {'success' if won else 'failure'} ({reason})"
                    slot.writer.write(np.asarray(last), self._caption(slot))
            except Exception as exc:
                raise TrialFailedError(spec, exc) from exc
        self._end_try(slot, episode, finished, on_steps)

    def _end_try(
        self,
        slot: _WorldSlot,
        episode: Episode,
        finished: list[TrialRecord],
        on_steps: StepsCallback | None,
    ) -> None:
        spec = slot.spec
        assert spec is not None
        video = None
        writer, slot.writer = slot.writer, None
        if slot.env is not None:
            slot.env._slot.on_frame = slot.env._slot.on_tick = None
        metrics, slot.metrics = slot.metrics, None
        if writer is not None and slot.target is not None:
            if episode.reason == "crash":
                writer.discard()
            else:
                try:
                    writer.close()
                except Exception as exc:
                    raise TrialFailedError(spec, exc) from exc
                video = slot.target[1]
        if episode.reason == "crash":
            slot.errors.append(episode.error or "the world crashed")
            self._discard(slot)  # a crashed world is replaced, not reused
            if slot.tries_left > 0:
                _log.warning(
                    "trial %s: the world crashed (%s); running it again (%d tries left)",
                    spec.key, slot.errors[-1], slot.tries_left,
                )  # fmt: skip
                self._start_try(slot, finished, on_steps)
                return
        duration = time.perf_counter() - slot.started
        values = None if metrics is None else metrics.values
        finished.append(
            trial_record(spec, episode, slot.errors, duration, self.worker, video, values)
        )
        slot.spec = None

    # ------------------------------------------------------------------ videos
    def _writer_for(self, slot: _WorldSlot) -> VideoWriter | None:
        if slot.target is None:
            return None
        return VideoWriter(slot.target[0], overlay=self.settings.overlay, thumbnail=True)

    def _frame_observer(self, slot: _WorldSlot) -> Callable[[np.ndarray], None] | None:
        writer = slot.writer
        if writer is None or not writer.overlay:
            return None if writer is None else writer.write
        return lambda frame: writer.write(frame, self._caption(slot))

    def _caption(self, slot: _WorldSlot) -> FrameCaption:
        # What the engine's slot holds now: read at each frame, before the policy acts on it.
        engine = slot.env._slot
        start = {} if engine.attempt_start is None else engine.attempt_start.get("inventory", {})
        now = {} if engine.obs is None else engine.obs.get("inventory", {})
        return FrameCaption(
            instruction=engine.instruction or "",
            tick=engine.total_steps,
            outcome=slot.outcome,
            inventory_changes=inventory_changes(start, now),
            mineclip_score=engine.score,
        )

    def _abandon_trial(self, slot: _WorldSlot) -> None:
        # An interrupt or an error: the trial is not recorded, its video not kept.
        writer, slot.writer = slot.writer, None
        if writer is not None:
            writer.discard()
        slot.metrics = None
        if slot.env is not None:
            slot.env._slot.on_frame = slot.env._slot.on_tick = None
            slot.env._engine.abort([0])
        slot.spec = None

    def _pinned_goal(self, spec: TrialSpec) -> Goal | None:
        # The goal a trial pursues instead of its instruction's own embedding: the zero goal of
        # the unconditional baseline, or the text embedded with its sampled prompt latent.
        if spec.condition == "unconditional":
            zeros = np.zeros(GOAL_DIM, np.float32)
            return Goal(spec.instruction, zeros, cond_scale=spec.cond_scale, unconditional=True)
        if spec.prompt_latent != "sampled":
            return None
        assert spec.prompt_seed is not None
        key = (spec.instruction, spec.prompt_seed)
        if key not in self._sampled:
            encode = getattr(self._encoder, "encode_sampled", None)
            if not callable(encode):
                raise ConfigurationError(sampled_latent_unsupported(self.settings.prompt_encoder))
            self._sampled[key] = np.asarray(encode(spec.instruction, spec.prompt_seed))
        return Goal(spec.instruction, self._sampled[key], cond_scale=spec.cond_scale)

    # ------------------------------------------------------------------ worlds
    @staticmethod
    def _key(world_options: Mapping[str, Any]) -> str:
        return json.dumps(dict(world_options), sort_keys=True, default=repr)

    def _world_for(self, slot: _WorldSlot, world_options: Mapping[str, Any]) -> None:
        key = self._key(world_options)
        if slot.env is not None and slot.key == key:
            return
        # Trials run task by task, so each world is rebuilt only when the task changes: a
        # real one (a Minecraft server) is too heavy to keep idle while another task runs.
        self._discard(slot)
        from steve1_env.env import Steve1SkillEnv

        settings = self.settings
        if self._encoder is None:
            self._encoder = PROMPT_ENCODERS.make(
                settings.prompt_encoder, device=settings.device, **settings.prompt_encoder_kwargs
            )
        world = WORLDS.make(settings.world, **{**settings.world_kwargs, **world_options})
        policy = None
        try:
            policy = self._policy_for(world)
            slot.env = Steve1SkillEnv(
                world=world,
                policy=policy,
                prompt_encoder=self._encoder,
                k=settings.k,
                terminate_on_success=True,
                render_mode="rgb_array",
                pov_shape=(64, 64),
                device=settings.device,
                # Visual goals read their video tower and paper prompts from the run's weights.
                mineclip_kwargs={"weights": self._mineclip_weights()},
            )
        except BaseException:
            if policy is not None and policy is not self._policy:
                policy.close()
            world.close()
            raise
        slot.env._video_source = self._video_tower
        slot.world, slot.key = world, key
        slot.policy = None if policy is self._policy else policy

    def _mineclip_scorer(self) -> Any:
        # One scorer for all the worker's worlds, built when a task's detector first needs it,
        # from the steve1 stack's weights directory (attn.pth sits beside the other files).
        if self._scorer is None:
            from steve1_env.prompt.mineclip_score import build_mineclip_scorer

            self._scorer = build_mineclip_scorer(
                weights=self._mineclip_weights(), device=self.settings.device
            )
        return self._scorer

    def _video_tower(self) -> Any:
        # One MineCLIP video tower for all the worker's visual goals: the scorer's if built.
        if self._scorer is not None:
            return self._scorer.video
        if self._video is None:
            from steve1_env.prompt.mineclip_video import load_mineclip_video

            self._video = load_mineclip_video(
                self._mineclip_weights(), device=self.settings.device, with_text=False
            )
        return self._video

    def _mineclip_weights(self) -> str | None:
        # The steve1 stack's weights directory (attn.pth and the paper's visual prompts sit
        # beside the other files), or None for the default one.
        settings = self.settings
        weights = settings.prompt_encoder_kwargs.get("weights")
        weights = weights or settings.policy_kwargs.get("weights")
        if weights == "random" or (weights is not None and not Path(weights).is_dir()):
            return None
        return None if weights is None else str(weights)

    def _policy_for(self, world: Any) -> Any:
        # One policy for all worlds when it batches (STEVE-1); one per world otherwise (the
        # scripted oracle reads the world it was built for).
        if self._policy is not None:
            return self._policy
        settings = self.settings
        policy = POLICIES.make(
            settings.policy, world=world, device=settings.device, **settings.policy_kwargs
        )
        if callable(getattr(policy, "act_batch", None)):
            self._policy = policy
        return policy

    def _discard(self, slot: _WorldSlot) -> None:
        with contextlib.suppress(Exception):  # it may have crashed; closing is best effort
            slot.close()

    def _video_path(self, spec: TrialSpec) -> tuple[Path, str] | None:
        if self.settings.video_dir is None:
            return None
        # Recorded relative to the folder holding video_dir (the run's output directory), so
        # the record stays valid wherever the directory is moved.
        folder = Path(self.settings.video_dir)
        # A baseline trial shares its prompt trial's index: its own file, not an overwrite.
        condition = "" if spec.condition == "prompt" else f"-{spec.condition}"
        name = f"{spec.task}/{spec.instruction_index}-{spec.trial}{condition}.mp4"
        return folder / name, f"{folder.name}/{name}"
