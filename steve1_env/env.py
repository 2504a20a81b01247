"""`Steve1SkillEnv`: STEVE-1 as a goal-conditioned skill behind the Gymnasium API.

One high-level `step` runs the skill policy in the world for up to ``k`` low-level ticks,
stopping early when the success detector fires or the world ends. The env composes a `World`,
a `SkillPolicy` and a `PromptEncoder` (see `steve1_env.registry`); it owns no model code.

Skill attempts: an attempt starts when an instruction is pursued that differs from the current
one, or when the current one has already succeeded. Success is measured from the attempt's
first observation (an inventory *gain*, not a count), so continuing an unfinished attempt keeps
its baseline while asking for the same skill again after a success starts afresh.
"""

from __future__ import annotations

import copy
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from steve1_env import precision
from steve1_env.agent.base import Goal, SkillPolicy
from steve1_env.closing import close_all
from steve1_env.errors import (
    ClosedError,
    ConfigurationError,
    InvalidActionError,
    InvalidInstructionError,
    ResetNeededError,
    Steve1EnvWarning,
    WorldCrashError,
)
from steve1_env.instructions import (
    MAX_INSTRUCTION_LENGTH,
    InstructionSpace,
    as_text,
    validate_instruction,
)
from steve1_env.observations import (
    DEFAULT_INVENTORY_ITEMS,
    env_observation,
    inventory_counts,
    observation_space,
    validate_items,
)
from steve1_env.prompt.base import PromptEncoder
from steve1_env.registry import POLICIES, PROMPT_ENCODERS, WORLDS, Registry
from steve1_env.skill_kinds import PAPER_PROMPTS, matching_kinds
from steve1_env.success import (
    DetectorLookup,
    DetectorSpec,
    SuccessDetector,
    fired,
    resolve_detectors,
)
from steve1_env.validation import (
    boolean,
    frame_shape,
    keyword_arguments,
    non_empty_list,
    positive_int,
    reset_options,
    reset_seed,
)
from steve1_env.worlds.base import World, WorldObs

EMBEDDING_CACHE_SIZE = 1024
RESET_OPTIONS = ("instruction", "success")
REASONS = ("success", "budget", "world_done", "crash")
"""Why a high-level step ended (``info["reason"]``; None after `reset`)."""


def _protocol_members(protocol: type) -> list[str]:
    names = set(getattr(protocol, "__annotations__", {}))
    names.update(
        name
        for name, value in vars(protocol).items()
        if not name.startswith("_") and (callable(value) or isinstance(value, property))
    )
    return sorted(names)


def _check_device(device: Any) -> Any:
    # "cpu" needs no torch; anything else is checked by torch itself, imported only then.
    if device == "cpu":
        return device
    try:
        import torch

        torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"device must be a torch device such as 'cpu', 'cuda' or 'cuda:1', got {device!r} "
            f"({exc})."
        ) from exc
    return device


_KEEP: Any = object()  # advance(): keep the policy state `step` set
_STEP: Any = object()  # advance(): step the world here


@dataclass
class _HighLevelStep:
    """The high-level step in progress: its budget and, once finished, why it ended."""

    budget: int
    steps: int = 0
    finished: bool = False
    reason: str = "budget"
    detector: str | None = None
    error: str | None = None
    world_done: bool = False

    def finish(self, reason: str, detector: str | None = None, error: str | None = None) -> None:
        self.finished, self.reason, self.detector, self.error = True, reason, detector, error


def _baseline(obs: WorldObs) -> WorldObs:
    # A deep copy without the frame: detectors compare against it for the whole attempt, and a
    # world may reuse its observation buffers.
    return {key: copy.deepcopy(value) for key, value in obs.items() if key != "pov"}


class Steve1SkillEnv(gym.Env):
    """STEVE-1 (or another skill policy) as a goal-conditioned Gymnasium environment.

    Args:
        world: A registered world name (``"synthetic"``) or a `World` instance.
        policy: A registered policy name (``"steve1"``, the default: our STEVE-1 network with
            the official weights; ``"scripted"``, ``"random"``) or a `SkillPolicy`.
        prompt_encoder: A registered encoder name (``"steve1"``, the default: MineCLIP + prior;
            ``"precomputed"``, ``"hash"``) or a `PromptEncoder`.
        face: ``"text"``: the action is the instruction to pursue (``""`` keeps the current
            one). ``"discrete"``: the action indexes `skills`.
        instruction: Instruction used by `reset` when its options carry none.
        instructions: Instructions `reset` samples from (with the env's seeded RNG) when
            neither its options nor `instruction` give one.
        skills: The discrete face's skill list (default: the paper's 11 prompts). On the text
            face, the instructions ``action_space.sample()`` draws from when neither
            `instructions` nor `instruction` is given.
        k: Low-level step budget of one high-level step.
        max_low_level_steps: Episode cap on low-level steps (truncates); None for no cap.
            Both `k` and this are read at every step, so they may be changed between
            episodes (the evaluation runner sets each task's budget this way).
        success: Success detectors: None for the defaults of the paper's tasks, one detector
            (or callable ``(start_obs, obs, steps) -> bool``) for all instructions, or a mapping
            instruction -> detector (falling back to the defaults).
        terminate_on_success: End the episode when a skill attempt succeeds.
        inventory_items: Items counted in the observation's ``inventory`` vector.
        pov_shape: ``(height, width)`` of the observation's ``pov``, each side at most
            `steve1_env.validation.MAX_FRAME_SIDE` pixels.
        render_mode: None or ``"rgb_array"`` (the last full-resolution frame).
        device: Torch device for the policy and encoder (``"cpu"``, ``"cuda"``).
        world_kwargs: Keyword arguments for the world factory.
        policy_kwargs: Keyword arguments for the policy factory.
        prompt_encoder_kwargs: Keyword arguments for the encoder factory.
        max_instruction_length: Longest accepted instruction in characters.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}  # noqa: RUF012 (gym.Env API)

    def __init__(
        self,
        world: str | World = "synthetic",
        policy: str | SkillPolicy = "steve1",
        prompt_encoder: str | PromptEncoder = "steve1",
        *,
        face: Literal["text", "discrete"] = "text",
        instruction: str | None = None,
        instructions: Sequence[str] | None = None,
        skills: Sequence[str] | None = None,
        k: int = 200,
        max_low_level_steps: int | None = 12_000,
        success: DetectorSpec = None,
        terminate_on_success: bool = False,
        inventory_items: Sequence[str] = DEFAULT_INVENTORY_ITEMS,
        pov_shape: Sequence[int] = (128, 128),
        render_mode: str | None = None,
        device: Any = "cpu",
        world_kwargs: Mapping[str, Any] | None = None,
        policy_kwargs: Mapping[str, Any] | None = None,
        prompt_encoder_kwargs: Mapping[str, Any] | None = None,
        max_instruction_length: int = MAX_INSTRUCTION_LENGTH,
    ) -> None:
        if face not in ("text", "discrete"):
            raise ConfigurationError(f"face must be 'text' or 'discrete', got {face!r}.")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ConfigurationError(
                f"render_mode must be None or one of {self.metadata['render_modes']}, "
                f"got {render_mode!r}."
            )
        self.max_instruction_length = positive_int(max_instruction_length, "max_instruction_length")
        self.k = positive_int(k, "k")
        self.max_low_level_steps = (
            None
            if max_low_level_steps is None
            else positive_int(max_low_level_steps, "max_low_level_steps")
        )
        self.pov_shape = frame_shape(pov_shape, "pov_shape")
        self.face = face
        self.render_mode = render_mode
        self.terminate_on_success = boolean(terminate_on_success, "terminate_on_success")
        self.inventory_items = validate_items(inventory_items)
        self.instruction = None if instruction is None else self._checked(instruction)
        self.instructions = (
            None if instructions is None else self._checked_list(instructions, "instructions")
        )
        if skills is not None:
            self.skills = self._checked_list(skills, "skills")
        elif face == "discrete":
            self.skills = list(PAPER_PROMPTS.values())
        else:  # only sampling examples: drop what the length limit forbids
            limit = self.max_instruction_length
            self.skills = [s for s in PAPER_PROMPTS.values() if len(s) <= limit]
        self._detector_for = resolve_detectors(success)
        self._episode_detector_for = self._detector_for
        self.device = _check_device(device)
        world_args = keyword_arguments(world_kwargs, "world_kwargs")
        policy_args = keyword_arguments(policy_kwargs, "policy_kwargs", "{'weights': 'random'}")
        encoder_args = keyword_arguments(
            prompt_encoder_kwargs, "prompt_encoder_kwargs", "{'weights': 'random'}"
        )

        if face == "text":
            examples = self.instructions or (
                [self.instruction] if self.instruction else self.skills
            )
            self.action_space: spaces.Space = InstructionSpace(
                self.max_instruction_length, examples
            )
        else:
            self.action_space = spaces.Discrete(len(self.skills))
        self.observation_space = observation_space(self.pov_shape, self.inventory_items)

        self._closed = False
        # Components built here from names are closed by close(); objects passed in stay the
        # caller's (a policy instance may serve several envs).
        self._owned: list[Any] = []
        try:
            self.world = self._build(WORLDS, world, World, world_args)
            self.policy: SkillPolicy = self._build(
                POLICIES,
                policy,
                SkillPolicy,
                {"world": self.world, "device": device, **policy_args},
            )
            self.prompt_encoder: PromptEncoder = self._build(
                PROMPT_ENCODERS,
                prompt_encoder,
                PromptEncoder,
                {"device": device, **encoder_args},
            )
        except BaseException:
            self._close_owned()
            raise

        self._embeddings: OrderedDict[str, np.ndarray] = OrderedDict()
        self._warned_undetectable: set[str] = set()
        self._needs_reset = True
        self._world_obs: WorldObs | None = None
        self._policy_state: Any = None
        self._goal: Goal | None = None
        self._detector: SuccessDetector | None = None
        self._attempt_start: WorldObs | None = None
        self._attempt_steps = 0
        self._attempt_succeeded = False
        self._total_steps = 0
        self._high_level_steps = 0
        self._current: _HighLevelStep | None = None

    # ------------------------------------------------------------------ setup
    def _build(self, registry: Registry, spec: Any, protocol: type, kwargs: dict[str, Any]) -> Any:
        if isinstance(spec, str):
            component = registry.make(spec, **kwargs)
            self._owned.append(component)
            return component
        if isinstance(spec, protocol):
            return spec
        missing = [name for name in _protocol_members(protocol) if not hasattr(spec, name)]
        raise ConfigurationError(
            f"{registry.kind} must be a registered name ({', '.join(registry.names())}) or an "
            f"object implementing the {protocol.__name__} protocol; the "
            f"{type(spec).__name__} given lacks: {', '.join(missing) or '(see the protocol)'}."
        )

    def _checked(self, instruction: Any) -> str:
        return validate_instruction(instruction, self.max_instruction_length)

    def _checked_list(self, values: Any, name: str) -> list[str]:
        return [self._checked(value) for value in non_empty_list(values, name)]

    # ------------------------------------------------------------ public API
    def goal_embedding(self, instruction: str) -> np.ndarray:
        """Returns the float32 ``(512,)`` goal embedding of `instruction`, computed once.

        The encoder runs with autocast disabled; whatever it returns is converted to finite
        float32 by `steve1_env.precision.as_goal_embedding`. The result is read-only.
        """
        cached = self._embeddings.get(instruction)
        if cached is not None:
            self._embeddings.move_to_end(instruction)
            return cached
        with precision.autocast_disabled(self.device):
            embedding = precision.as_goal_embedding(self.prompt_encoder.encode(instruction))
        embedding.flags.writeable = False
        self._embeddings[instruction] = embedding
        if len(self._embeddings) > EMBEDDING_CACHE_SIZE:
            self._embeddings.popitem(last=False)
        return embedding

    @property
    def current_instruction(self) -> str | None:
        """The instruction being pursued, or None before the first skill is chosen."""
        return None if self._goal is None else self._goal.instruction

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Starts a new episode in a new world.

        Args:
            seed: Seeds the env's RNG, from which the world seed, the policy's sampling seed and
                any sampled instruction are drawn.
            options: ``"instruction"``: the text to pursue from the start. ``"success"``:
                success detectors for this episode only, in any form the ``success=``
                argument takes (one detector for every instruction, or a mapping instruction
                -> detector); instructions it does not cover keep the env's detectors.

        Returns:
            The first observation and an info dict with the same keys `step` reports.

        Raises:
            ConfigurationError: If `seed` is not None or an integer >= 0, or `options` is not a
                dict of known options.
            InvalidInstructionError: If the text face has no instruction to pursue, or the
                given one is invalid.
            DetectorError: If ``options["success"]`` is not a detector spec.
            WorldCrashError: If the world fails to start.
        """
        self._ensure_open()
        # Everything is checked before anything changes: a bad argument leaves the env as it was.
        seed, given, detector_for = self._checked_reset(seed, options)
        # Whatever fails below, the previous episode is over.
        self._needs_reset = True
        self._episode_detector_for = detector_for
        super().reset(seed=seed)
        instruction = self._initial_instruction(given)
        world_seed = int(self.np_random.integers(2**31 - 1))
        policy_seed = int(self.np_random.integers(2**31 - 1))
        prompt_seed = int(self.np_random.integers(2**31 - 1))
        start_episode = getattr(self.prompt_encoder, "start_episode", None)
        if start_episode is not None:
            start_episode(prompt_seed)
            if getattr(self.prompt_encoder, "varies_per_episode", False):
                self._embeddings.clear()  # this episode's latent gives new goal embeddings
        try:
            self._world_obs = self.world.reset(seed=world_seed)
        except Exception as exc:
            raise WorldCrashError(
                f"The world failed to reset ({type(exc).__name__}: {exc}). Check that its "
                "backend is installed and working, then reset again."
            ) from exc
        self._policy_state = self.policy.initial_state(policy_seed)
        self._current = None
        self._goal, self._detector, self._attempt_start = None, None, None
        self._attempt_succeeded = False
        self._attempt_steps = self._total_steps = self._high_level_steps = 0
        if instruction is not None:
            self._start_attempt(instruction)
        observation = self._observation()
        self._needs_reset = False
        return observation, self._info(steps=0, reason=None, detector=None, world_done=False)

    def step(
        self, action: str | int | np.integer
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Pursues the chosen instruction for up to ``k`` low-level steps.

        Returns:
            ``(observation, reward, terminated, truncated, info)``. The reward is 1.0 when the
            skill attempt succeeded in this step, else 0.0. ``terminated``: the world ended
            (or the skill succeeded, with ``terminate_on_success``). ``truncated``: the
            low-level cap was reached or the world crashed.
        """
        self.begin_step(action)
        with precision.autocast_disabled(self.policy.device):
            while self.wants_low_level_action():
                world_obs, goal, state = self.policy_inputs()
                low_action, self._policy_state = self.policy.act(world_obs, goal, state)
                self.advance(low_action)
        return self.end_step()

    def check_reset(self, *, seed: Any = None, options: Any = None) -> None:
        """Raises what `reset` would raise for these arguments, without changing anything.

        Only the arguments are checked; the world may still fail to reset.
        """
        self._ensure_open()
        self._checked_reset(seed, options)

    # The four methods below are one high-level step taken apart, so that a vector env can
    # interleave many envs' low-level ticks and batch their policy calls. `step` is their
    # composition; use them only in that order: begin, (inputs, advance)*, end.
    def check_action(self, action: str | int | np.integer) -> None:
        """Raises what `step` would raise for `action`, without changing anything."""
        self._ensure_open()
        if self._needs_reset:
            raise ResetNeededError(
                "Call reset() before step(): the episode has not started or has ended."
            )
        self._instruction_from_action(action)

    @property
    def policy_state(self) -> Any:
        """This env's recurrent policy state (a vector env may swap in a compact copy)."""
        return self._policy_state

    @policy_state.setter
    def policy_state(self, state: Any) -> None:
        self._policy_state = state

    def begin_step(self, action: str | int | np.integer) -> None:
        """Starts a high-level step pursuing `action` (see `step`); low-level ticks follow.

        Raises:
            ResetNeededError: If the episode has not started or has ended.
            InvalidActionError: If the action is malformed.
        """
        self._ensure_open()
        if self._needs_reset:
            raise ResetNeededError(
                "Call reset() before step(): the episode has not started or has ended."
            )
        instruction = self._instruction_from_action(action)
        if self._goal is None or instruction != self._goal.instruction or self._attempt_succeeded:
            self._start_attempt(instruction)
        if self._goal is None or self._attempt_start is None or self._world_obs is None:
            raise ResetNeededError("The episode state is incomplete; call reset().")
        budget = self.k
        if self.max_low_level_steps is not None:
            budget = min(budget, self.max_low_level_steps - self._total_steps)
        # A policy exception leaves the episode half-stepped: it then needs a reset.
        self._needs_reset = True
        self._current = _HighLevelStep(budget=budget, finished=budget <= 0)

    def wants_low_level_action(self) -> bool:
        """True while the current high-level step needs another low-level action."""
        return self._current is not None and not self._current.finished

    def policy_inputs(self) -> tuple[WorldObs, Goal, Any]:
        """Returns ``(world_obs, goal, policy_state)``: the next low-level action's inputs."""
        if self._current is None or self._goal is None or self._world_obs is None:
            raise ResetNeededError("No high-level step is in progress; call begin_step().")
        return self._world_obs, self._goal, self._policy_state

    def advance(self, low_action: Any, policy_state: Any = _KEEP, result: Any = _STEP) -> None:
        """Applies one low-level action and checks for success and the world's end.

        Args:
            low_action: The MineRL action.
            policy_state: The policy's new state for this env (default: as set by `step`).
            result: The world's `WorldStep` for this action when the caller stepped the world
                itself (a vector env stepping worlds in parallel), or the exception it raised;
                by default the world is stepped here.
        """
        current = self._current
        if current is None or current.finished or self._attempt_start is None:
            raise ResetNeededError("No high-level step wants an action; call begin_step().")
        if policy_state is not _KEEP:
            self._policy_state = policy_state
        if result is _STEP:
            try:
                result = self.world.step(low_action)
            except InvalidActionError:
                raise
            except Exception as exc:  # a world failure ends the episode, not the program
                result = exc
        if isinstance(result, InvalidActionError):
            raise result
        if isinstance(result, BaseException):
            current.finish("crash", error=f"{type(result).__name__}: {result}")
            return
        if result.info.get("error"):
            # MineRL returns a random observation with a socket error: never pass it on.
            current.finish("crash", error=str(result.info["error"]))
            return
        self._world_obs = result.obs
        current.steps += 1
        self._attempt_steps += 1
        self._total_steps += 1
        current.world_done = bool(result.done)
        if self._detector is not None:
            detector = fired(self._detector, self._attempt_start, result.obs, self._attempt_steps)
            if detector is not None:
                current.finish("success", detector=detector)
                return
        if current.world_done:
            current.finish("world_done")
        elif current.steps >= current.budget:
            current.finish("budget")

    def end_step(self) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Ends the high-level step and returns what `step` returns."""
        current = self._current
        if current is None or not current.finished:
            raise ResetNeededError(
                "No finished high-level step to end: call begin_step() and advance() until "
                "wants_low_level_action() is False."
            )
        self._current = None
        reason = current.reason
        self._high_level_steps += 1
        success = reason == "success"
        self._attempt_succeeded = self._attempt_succeeded or success
        terminated = current.world_done or (success and self.terminate_on_success)
        capped = (
            self.max_low_level_steps is not None and self._total_steps >= self.max_low_level_steps
        )
        truncated = not terminated and (reason == "crash" or capped)
        self._needs_reset = terminated or truncated
        info = self._info(
            steps=current.steps,
            reason=reason,
            detector=current.detector,
            world_done=current.world_done,
        )
        if current.error is not None:
            info["error"] = current.error
        return self._observation(), float(success), terminated, truncated, info

    def render(self) -> np.ndarray | None:
        """Returns the last full-resolution frame for ``render_mode="rgb_array"``, else None.

        Raises:
            ResetNeededError: Before the first `reset` (as gymnasium's order enforcer would).
        """
        if self._world_obs is None:
            raise ResetNeededError("Call reset() before render(): there is no frame yet.")
        if self.render_mode != "rgb_array":
            return None
        return np.array(self._world_obs["pov"], dtype=np.uint8)

    def close(self) -> None:
        """Closes the world, policy and prompt encoder this env built from names.

        Objects passed in as instances are left open: they belong to the caller. Safe to call
        more than once.
        """
        if getattr(self, "_closed", True):
            return
        self._closed = True
        self._close_owned()

    def _close_owned(self) -> None:
        owned, self._owned = self._owned, []
        close_all(component.close for component in reversed(owned))

    # -------------------------------------------------------------- internals
    def _ensure_open(self) -> None:
        if self._closed:
            raise ClosedError("This env is closed; create a new one with gym.make().")

    def _checked_reset(
        self, seed: Any, options: Any
    ) -> tuple[int | None, str | None, DetectorLookup]:
        # Returns the seed, the given instruction and this episode's detectors: the option's
        # first, then the env's own.
        seed = reset_seed(seed)
        options = reset_options(options)
        unknown = sorted(map(str, set(options) - set(RESET_OPTIONS)))
        if unknown:
            raise ConfigurationError(
                f"Unknown reset option(s) {unknown}; the options are {', '.join(RESET_OPTIONS)}."
            )
        given = options.get("instruction")
        given = None if given is None else self._checked(given)
        unset = given is None and self.instruction is None and not self.instructions
        if unset and self.face == "text":
            raise InvalidInstructionError(
                "No instruction to pursue: pass reset(options={'instruction': 'chop a tree'}), "
                "or create the env with instruction='...' or instructions=[...]."
            )
        return seed, given, resolve_detectors(options.get("success"), self._detector_for)

    def _initial_instruction(self, given: str | None) -> str | None:
        if given is not None:
            return given
        if self.instruction is not None:
            return self.instruction
        if self.instructions:
            return self.instructions[int(self.np_random.integers(len(self.instructions)))]
        return None  # the discrete face starts without one

    def _instruction_from_action(self, action: Any) -> str:
        if self.face == "discrete":
            array = np.asarray(action)
            if array.shape != () or array.dtype.kind not in "iu":
                raise InvalidActionError(
                    f"The skill-library action must be an int index into skills "
                    f"(0..{len(self.skills) - 1}), got {action!r}."
                )
            index = int(array)
            if not 0 <= index < len(self.skills):
                raise InvalidActionError(
                    f"Skill index {index} is out of range: there are {len(self.skills)} skills "
                    f"(0..{len(self.skills) - 1})."
                )
            return self.skills[index]
        action = as_text(action)
        if isinstance(action, str) and action == "":
            if self._goal is None:
                raise InvalidInstructionError(
                    "The action '' keeps the current instruction, but there is none yet; "
                    "send an instruction such as 'chop a tree'."
                )
            return self._goal.instruction
        return self._checked(action)

    def _start_attempt(self, instruction: str) -> None:
        if self._world_obs is None:
            raise ResetNeededError("Call reset() before pursuing an instruction.")
        self._goal = Goal(instruction, self.goal_embedding(instruction))
        self._detector = self._episode_detector_for(instruction)
        if self._detector is None and instruction not in self._warned_undetectable:
            self._warned_undetectable.add(instruction)
            kinds = matching_kinds(instruction)
            why = (
                f"it mentions several skills ({', '.join(kinds)})"
                if kinds
                else "it matches none of the known skills"
            )
            warnings.warn(
                f"No success detector is known for {instruction!r}: {why}, so is_success stays "
                "False for it. Pass success={instruction: detector} (see steve1_env.success).",
                Steve1EnvWarning,
                stacklevel=3,
            )
        self._attempt_start = _baseline(self._world_obs)
        self._attempt_steps = 0
        self._attempt_succeeded = False

    def _observation(self) -> dict[str, np.ndarray]:
        if self._world_obs is None:
            raise ResetNeededError("Call reset() first.")
        goal = self._goal.embedding if self._goal is not None else np.zeros(precision.GOAL_DIM)
        return env_observation(self._world_obs, goal, self.pov_shape, self.inventory_items)

    def _info(
        self, *, steps: int, reason: str | None, detector: str | None, world_done: bool
    ) -> dict[str, Any]:
        inventory = {} if self._world_obs is None else self._world_obs.get("inventory", {})
        return {
            "is_success": reason == "success",
            "steps": steps,
            "reason": reason,
            "detector": detector,
            "detector_spec": None if self._detector is None else self._detector.name,
            "instruction": self.current_instruction,
            "inventory": inventory_counts(inventory),
            "world_done": world_done,
            "attempt_steps": self._attempt_steps,
            "total_steps": self._total_steps,
            "high_level_steps": self._high_level_steps,
        }
