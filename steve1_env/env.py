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

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from steve1_env import precision
from steve1_env.agent.base import Goal, SkillPolicy
from steve1_env.closing import close_all
from steve1_env.engine import SkillEngine, Slot, StepOutcome
from steve1_env.errors import (
    ClosedError,
    ConfigurationError,
    InvalidActionError,
    InvalidInstructionError,
    ResetNeededError,
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
    validate_obs_keys,
)
from steve1_env.prompt.base import PromptEncoder
from steve1_env.prompt.goals import GoalEncoder
from steve1_env.prompt.mineclip_score import (
    MineCLIPScorer,
    build_mineclip_scorer,
    reads_mineclip,
)
from steve1_env.prompt.visual_goals import visual_goal
from steve1_env.registry import POLICIES, PROMPT_ENCODERS, WORLDS, Registry
from steve1_env.skill_kinds import PAPER_PROMPTS
from steve1_env.success import (
    DetectorLookup,
    DetectorSpec,
    MineCLIPScore,
    SuccessDetector,
    as_detector,
    needs_mineclip,
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
from steve1_env.world_state import attempt_delta, world_state
from steve1_env.worlds.base import World

CheckedReset = tuple[int | None, str | None, DetectorLookup, Goal | None]
"""A reset's checked arguments: its seed, instruction, detectors and visual goal."""

RESET_OPTIONS = ("instruction", "success", "visual_goal", "cond_scale")
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


def _fallback_detector(spec: Any, threshold: Any) -> SuccessDetector | None:
    if spec is None:
        if threshold is not None:
            raise ConfigurationError(
                "mineclip_threshold applies to fallback_detector='mineclip' only; pass both."
            )
        return None
    if isinstance(spec, str) and spec == "mineclip":
        if threshold is None:
            raise ConfigurationError(
                "fallback_detector='mineclip' needs mineclip_threshold=: no threshold is shipped "
                "as tuned. Calibrate one on labelled clips (steve1_env.evaluation.calibration)."
            )
        return MineCLIPScore(threshold, name="mineclip")
    return as_detector(spec)


def _folder(weights: Any) -> Any:
    # The paper's visual prompts sit in the weights directory: the one given, or the folder
    # of the checkpoint file given.
    if weights is None:
        return None
    return weights if os.path.isdir(weights) else os.path.dirname(os.fspath(weights)) or "."


def _with_fallback(lookup: DetectorLookup, fallback: SuccessDetector) -> DetectorLookup:
    def detector_for(instruction: str) -> SuccessDetector | None:
        found = lookup(instruction)
        return fallback if found is None else found

    return detector_for


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
        mineclip_score: Score every tick with MineCLIP (`steve1_env.prompt.mineclip_score`):
            True builds a scorer from `mineclip_kwargs`; a `MineCLIPScorer` is used as given
            (one scorer may serve many envs). ``info["mineclip"]`` then holds the score at the
            end of the high-level step and its maximum over it. Turned on by ``reward=
            "mineclip"`` and ``fallback_detector="mineclip"``.
        mineclip_kwargs: Arguments of the scorer (``weights``, ``negatives``, ``dtype``).
        reward: ``"success"`` (1.0 when the attempt succeeded in the step) or ``"mineclip"``
            (MineDojo's dense reward, ``max(score - 1/prompts, 0)`` per tick, summed over the
            high-level step).
        fallback_detector: The detector of instructions no other detector covers: a detector,
            or ``"mineclip"`` for a `steve1_env.success.MineCLIPScore` at
            `mineclip_threshold`. ``info["detector"]`` names it when it fires.
        mineclip_threshold: The threshold of ``fallback_detector="mineclip"``; no default is
            shipped, since a threshold must be calibrated on real weights.
        obs_keys: Opt-in float32 vectors added to the observation for RL:
            ``"position"`` (x, y, z, pitch, yaw) and ``"life"`` (health, food, saturation,
            air); see `steve1_env.observations.STATE_VECTORS` for their bounds. A world that
            does not report one raises `InvalidObservationError` at reset.
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
        mineclip_score: bool | MineCLIPScorer = False,
        mineclip_kwargs: Mapping[str, Any] | None = None,
        reward: Literal["success", "mineclip"] = "success",
        fallback_detector: Any = None,
        mineclip_threshold: float | None = None,
        obs_keys: Sequence[str] = (),
    ) -> None:
        if face not in ("text", "discrete"):
            raise ConfigurationError(f"face must be 'text' or 'discrete', got {face!r}.")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ConfigurationError(
                f"render_mode must be None or one of {self.metadata['render_modes']}, "
                f"got {render_mode!r}."
            )
        self.max_instruction_length = positive_int(max_instruction_length, "max_instruction_length")
        self.k = k
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
        self.obs_keys = validate_obs_keys(obs_keys)
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
        if reward not in ("success", "mineclip"):
            raise ConfigurationError(f"reward must be 'success' or 'mineclip', got {reward!r}.")
        self.reward = reward
        fallback = _fallback_detector(fallback_detector, mineclip_threshold)
        own = resolve_detectors(success)
        self._detector_for = own if fallback is None else _with_fallback(own, fallback)
        wants_score = (
            reward == "mineclip"
            or fallback_detector == "mineclip"
            or reads_mineclip(success)
            or needs_mineclip(fallback)
        )
        if not isinstance(mineclip_score, MineCLIPScorer):
            mineclip_score = boolean(mineclip_score, "mineclip_score") or wants_score
        mineclip_args = keyword_arguments(
            mineclip_kwargs, "mineclip_kwargs", "{'weights': 'weights/'}"
        )
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
        self.observation_space = observation_space(
            self.pov_shape, self.inventory_items, self.obs_keys
        )

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
            self.scorer: MineCLIPScorer | None = None
            if isinstance(mineclip_score, MineCLIPScorer):
                self.scorer = mineclip_score
            elif mineclip_score:
                self.scorer = build_mineclip_scorer(device=device, **mineclip_args)
                self._owned.append(self.scorer)
        except BaseException:
            self._close_owned()
            raise

        self._mineclip_args = mineclip_args
        self._video: Any = None
        # Where visual goals get their video tower when this env loads none itself: a vector
        # env's envs, or an evaluation worker's worlds, share one instead of loading one each.
        self._video_source: Callable[[], Any] | None = None
        self._warned_undetectable: set[str] = set()
        self._goals = GoalEncoder(self.prompt_encoder, device)
        # The engine with one slot: this env's world, policy and goals, and its episode.
        self._slot = Slot(self.world, self.policy, self._goals, self.scorer)
        self._engine = SkillEngine([self._slot], self._warned_undetectable)
        self._needs_reset = True

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
        return self._goals.embedding(instruction)

    @property
    def k(self) -> int:
        """The most low-level ticks one high-level step runs (settable between steps).

        Raises:
            ConfigurationError: When set to anything but a positive integer (SB3's
                ``set_attr("k", ...)`` and ``env.unwrapped.k = ...`` set it directly).
        """
        return self._k

    @k.setter
    def k(self, value: int) -> None:
        # Checked here, not only in __init__: 0 or -5 made every later step run no tick,
        # and 2.5 three.
        self._k = positive_int(value, "k")

    @property
    def current_instruction(self) -> str | None:
        """The instruction being pursued, or None before the first skill is chosen."""
        return self._slot.instruction

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
                ``"visual_goal"``: a clip to pursue instead of text (16 uint8 RGB frames, a
                video file, or ``"paper:<name>"``; see `steve1_env.prompt.visual_goals`),
                with ``"cond_scale"`` (default 7.0, the paper's); an ``"instruction"`` given
                with it is its label, which picks its detector.

        Returns:
            The first observation and an info dict with the same keys `step` reports.

        Raises:
            ConfigurationError: If `seed` is not None or an integer >= 0, or `options` is not a
                dict of known options.
            InvalidInstructionError: If the text face has no instruction to pursue, or the
                given one is invalid.
            DetectorError: If ``options["success"]`` is not a detector spec.
            WorldCrashError: If the world fails to start.
            InvalidObservationError: If the world does not report what `obs_keys` asks for.
        """
        self._ensure_open()
        # Everything is checked before anything changes: a bad argument leaves the env as it was.
        return self._reset_checked(self._checked_reset(seed, options), options)

    def _reset_checked(
        self, checked: CheckedReset, options: dict[str, Any] | None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        # reset() once its arguments are checked (a vector env checks every env's first, and
        # encodes each visual goal once).
        seed, given, detector_for, visual = checked
        # Whatever fails below, the previous episode is over.
        self._needs_reset = True
        if self.scorer is None and reads_mineclip((options or {}).get("success")):
            # This episode's detectors judge by the MineCLIP score: score from now on.
            scorer = build_mineclip_scorer(device=self.device, **self._mineclip_args)
            self._owned.append(scorer)
            self._use_scorer(scorer)
        super().reset(seed=seed)
        instruction = visual.instruction if visual else self._initial_instruction(given)
        self._engine.reset(0, self.np_random, instruction, detector_for, goal=visual)
        observation = self._observation()
        self._needs_reset = False
        return observation, self._info(None)

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
        self._begin_step(action)
        self._engine.run()
        return self._end_step()

    def check_reset(self, *, seed: Any = None, options: Any = None) -> None:
        """Raises what `reset` would raise for these arguments, without changing anything.

        Only the arguments are checked; the world may still fail to reset.
        """
        self._ensure_open()
        self._checked_reset(seed, options)

    # A high-level step in halves, for callers that tick many envs' slots in one engine (the
    # vector env, an evaluation worker): begin, then the engine's ticks, then end.
    def _check_action(self, action: str | int | np.integer) -> str:
        self._ensure_open()
        if self._needs_reset:
            raise ResetNeededError(
                "Call reset() before step(): the episode has not started or has ended."
            )
        return self._instruction_from_action(action)

    def _begin_step(self, action: str | int | np.integer) -> None:
        instruction = self._check_action(action)
        budget = self.k
        if self.max_low_level_steps is not None:
            budget = min(budget, self.max_low_level_steps - self._slot.total_steps)
        # An encoder error in begin() changes nothing; from here on, a policy exception leaves
        # the episode half-stepped: it then needs a reset.
        self._engine.begin(0, instruction, budget)
        self._needs_reset = True

    def _end_step(self) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        outcome = self._engine.end(0)
        success = outcome.reason == "success"
        reward = outcome.mineclip_reward if self.reward == "mineclip" else float(success)
        terminated = outcome.world_done or (success and self.terminate_on_success)
        capped = (
            self.max_low_level_steps is not None
            and self._slot.total_steps >= self.max_low_level_steps
        )
        truncated = not terminated and (outcome.reason == "crash" or capped)
        self._needs_reset = terminated or truncated
        info = self._info(outcome)
        if outcome.error is not None:
            info["error"] = outcome.error
        return self._observation(), reward, terminated, truncated, info

    def render(self) -> np.ndarray | None:
        """Returns the last full-resolution frame for ``render_mode="rgb_array"``, else None.

        Raises:
            ResetNeededError: Before the first `reset` (as gymnasium's order enforcer would).
        """
        obs = self._slot.obs
        if obs is None:
            raise ResetNeededError("Call reset() before render(): there is no frame yet.")
        if self.render_mode != "rgb_array":
            return None
        return np.array(obs["pov"], dtype=np.uint8)

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

    def _checked_reset(self, seed: Any, options: Any) -> CheckedReset:
        # Returns the seed, the given instruction, this episode's detectors (the option's first,
        # then the env's own) and the visual goal, computed here so that a bad clip changes
        # nothing.
        seed = reset_seed(seed)
        options = reset_options(options)
        unknown = sorted(map(str, set(options) - set(RESET_OPTIONS)))
        if unknown:
            raise ConfigurationError(
                f"Unknown reset option(s) {unknown}; the options are {', '.join(RESET_OPTIONS)}."
            )
        given = options.get("instruction")
        given = None if given is None else self._checked(given)
        visual = None
        if options.get("visual_goal") is not None:
            visual = visual_goal(
                options["visual_goal"],
                self._video_tower,
                label=given,
                cond_scale=options.get("cond_scale"),
                weights_dir=_folder(self._mineclip_args.get("weights")),
            )
        elif options.get("cond_scale") is not None:
            raise ConfigurationError(
                "The reset option cond_scale applies to a visual_goal only; a text goal uses the "
                "policy's cond_scale."
            )
        unset = given is None and visual is None and self.instruction is None
        unset = unset and not self.instructions
        if unset and self.face == "text":
            raise InvalidInstructionError(
                "No instruction to pursue: pass reset(options={'instruction': 'chop a tree'}), "
                "or create the env with instruction='...' or instructions=[...]."
            )
        detectors = resolve_detectors(options.get("success"), self._detector_for)
        return seed, given, detectors, visual

    def _use_scorer(self, scorer: MineCLIPScorer | None) -> None:
        # From the next reset on, ticks are scored by `scorer`, or not at all with None (an
        # evaluation worker's world, scored for the tasks whose detector needs it only).
        if self.scorer is not scorer:
            self.scorer = scorer
            self._slot.scorer = scorer
            self._slot.window = None if scorer is None else scorer.window()

    def _video_tower(self) -> Any:
        # MineCLIP's video tower for visual goals: the scorer's, or one loaded on first use.
        if self.scorer is not None:
            return self.scorer.video
        if self._video_source is not None:
            return self._video_source()
        if self._video is None:
            from steve1_env.prompt.mineclip_video import load_mineclip_video

            args = self._mineclip_args
            self._video = load_mineclip_video(
                args.get("weights"),
                device=self.device,
                dtype=args.get("dtype"),
                config=args.get("config"),
                text_config=args.get("text_config"),
                with_text=False,
            )
        return self._video

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
            current = self._slot.instruction
            if current is None:
                raise InvalidInstructionError(
                    "The action '' keeps the current instruction, but there is none yet; "
                    "send an instruction such as 'chop a tree'."
                )
            return current
        return self._checked(action)

    def _observation(self) -> dict[str, np.ndarray]:
        slot = self._slot
        if slot.obs is None:
            raise ResetNeededError("Call reset() first.")
        goal = slot.goal.embedding if slot.goal is not None else np.zeros(precision.GOAL_DIM)
        return env_observation(slot.obs, goal, self.pov_shape, self.inventory_items, self.obs_keys)

    def _info(self, outcome: StepOutcome | None) -> dict[str, Any]:
        # After reset there is no outcome: reason None, no steps.
        slot = self._slot
        inventory = {} if slot.obs is None else slot.obs.get("inventory", {})
        reason = None if outcome is None else outcome.reason
        info: dict[str, Any] = {
            "is_success": reason == "success",
            "steps": 0 if outcome is None else outcome.steps,
            "reason": reason,
            "detector": None if outcome is None else outcome.detector,
            "detector_spec": None if slot.detector is None else slot.detector.name,
            "instruction": slot.instruction,
            "inventory": inventory_counts(inventory),
            "world_done": False if outcome is None else outcome.world_done,
            "attempt_steps": slot.attempt_steps,
            "total_steps": slot.total_steps,
            "high_level_steps": slot.high_level_steps,
            # What the world reports (steve1_env.world_state), and the attempt's gains.
            "state": {
                **world_state(slot.obs or {}),
                "attempt_delta": attempt_delta(slot.attempt_start, slot.obs),
            },
        }
        if self.scorer is not None:
            info["mineclip"] = {
                "score": None if outcome is None else outcome.mineclip_score,
                "max": None if outcome is None else outcome.mineclip_max,
            }
        return info
