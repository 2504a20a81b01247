"""`Steve1SkillVectorEnv`: N skill envs, one batched policy call per low-level tick.

A GPU serves one STEVE-1 step for many envs about as fast as for one, while each Minecraft world
steps at 20-60 ticks per second; so the worlds are stepped side by side and the policy is called
once per tick for every env still inside its high-level step, with guidance (2N rows, each frame
encoded once for both branches). Each env keeps its own instruction, detector, step budget and
recurrent state. An env whose high-level step has ended (success, budget, world end) waits for
the others; the batch goes on with those still running. Ticks are in lockstep: each waits for
the slowest world of the batch.

Autoreset follows Gymnasium's "next step" mode: when an env's episode ends, its `step` result
carries the final observation; the *next* `step` resets that env (its action is ignored) and
returns the first observation of the new episode with reward 0 and both flags False. The new
episode gets the options of that env's last `reset` (its instruction and detectors) and a seed
drawn from the env's own RNG, so a seeded run stays reproducible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array

from steve1_env.closing import close_all
from steve1_env.engine import SkillEngine
from steve1_env.env import Steve1SkillEnv
from steve1_env.errors import (
    ClosedError,
    ConfigurationError,
    InvalidActionError,
    ResetNeededError,
    Steve1EnvError,
    WorldCrashError,
)
from steve1_env.prompt.base import PromptEncoder
from steve1_env.prompt.mineclip_score import reads_mineclip, scorer_for
from steve1_env.registry import POLICIES, PROMPT_ENCODERS, WORLDS
from steve1_env.validation import (
    boolean,
    bounded_int,
    keyword_arguments,
    positive_int,
    reset_options,
    reset_seed,
    short_repr,
)
from steve1_env.worlds.world_process import WorldProcess

MAX_NUM_ENVS = 1024
"""Most envs one vector env holds: each has its own world (and process, for real Minecraft)."""
IN_PROCESS_WORLDS = ("synthetic",)
WORLD_PROCESS_OPTIONS = ("step_timeout", "reset_timeout")
"""Worlds cheap and safe enough to run in the caller's process by default."""


def _naming_env(exc: Steve1EnvError, i: int) -> Steve1EnvError:
    """Returns `exc` with ``env i:`` before its message.

    It keeps the class (and attributes) of `exc` where the class takes a message alone and shows
    it unchanged; otherwise (a class with a constructor of its own) it is a
    `ConfigurationError`. Raised ``from`` `exc`, which stays reachable as ``__cause__``.
    """
    message = f"env {i}: {exc}"
    try:
        renamed = type(exc)(message)
    except Exception:  # a constructor taking other arguments
        renamed = None
    if renamed is None or str(renamed) != message or renamed.args != (message,):
        return ConfigurationError(message)
    renamed.__dict__.update(vars(exc))
    return renamed


class Steve1SkillVectorEnv(gym.vector.VectorEnv):
    """`num_envs` skill envs sharing one batched policy and one prompt encoder.

    Args:
        num_envs: Number of envs, 1 to `MAX_NUM_ENVS`.
        world: World name for every env (``"synthetic"``, ``"minerl"``, ``"minestudio"``).
        policy: Policy name. A policy with ``act_batch`` (``"steve1"``) is built once and
            called once per tick for all envs; others (``"scripted"``) get one instance per env.
        prompt_encoder: Prompt encoder name, built once and shared.
        world_processes: Run each world in its own process (default: yes for every world but
            the synthetic one); worlds then step in parallel and crash independently.
        device: Torch device of policy and encoder.
        world_kwargs: Arguments of every world.
        policy_kwargs: Arguments of the policy.
        prompt_encoder_kwargs: Arguments of the encoder.
        max_episode_steps: High-level steps after which an env's episode is truncated (the
            registered ``max_episode_steps`` arrives here through ``gym.make_vec``).
        world_process_kwargs: Arguments of each `WorldProcess` (``step_timeout``,
            ``reset_timeout`` in seconds: a world that takes longer counts as hung, is killed
            and restarts, and its env records a crash).
        **env_kwargs: Everything else `Steve1SkillEnv` takes (``face``, ``k``, ``skills``,
            ``instruction``, ``instructions``, ``success``, ...), the same for every env.
    """

    metadata = {  # noqa: RUF012 (gymnasium.VectorEnv API)
        "autoreset_mode": AutoresetMode.NEXT_STEP,
        "render_modes": [],
    }

    def __init__(
        self,
        num_envs: int,
        world: str = "synthetic",
        policy: str = "steve1",
        prompt_encoder: str = "steve1",
        *,
        world_processes: bool | None = None,
        device: Any = "cpu",
        world_kwargs: Mapping[str, Any] | None = None,
        policy_kwargs: Mapping[str, Any] | None = None,
        prompt_encoder_kwargs: Mapping[str, Any] | None = None,
        max_episode_steps: int | None = None,
        world_process_kwargs: Mapping[str, Any] | None = None,
        **env_kwargs: Any,
    ) -> None:
        self.num_envs = bounded_int(
            num_envs,
            "num_envs",
            1,
            MAX_NUM_ENVS,
            limit_name="MAX_NUM_ENVS",
            hint="run several vector envs in separate processes or machines for more",
        )
        for name, value in (
            ("world", world),
            ("policy", policy),
            ("prompt_encoder", prompt_encoder),
        ):
            if not isinstance(value, str):
                raise ConfigurationError(
                    f"The vector env builds its components itself: {name} must be a registered "
                    f"name or import path, got {type(value).__name__}."
                )
        if "render_mode" in env_kwargs:
            raise ConfigurationError(
                "render_mode is not supported by the vector env; read the frames from the "
                "observations (obs['pov'])."
            )
        self.max_episode_steps = (
            None
            if max_episode_steps is None
            else positive_int(max_episode_steps, "max_episode_steps")
        )
        self.world_processes = (
            world not in IN_PROCESS_WORLDS
            if world_processes is None
            else boolean(world_processes, "world_processes")
        )
        world_args = keyword_arguments(world_kwargs, "world_kwargs")
        policy_args = keyword_arguments(policy_kwargs, "policy_kwargs", "{'weights': 'random'}")
        encoder_args = keyword_arguments(
            prompt_encoder_kwargs, "prompt_encoder_kwargs", "{'weights': 'random'}"
        )
        process_kwargs = keyword_arguments(
            world_process_kwargs, "world_process_kwargs", "{'step_timeout': 60.0}"
        )
        self.render_mode = None
        self._owned: list[Any] = []
        self._closed = False
        WORLDS.factory(world)  # an unknown name fails here, not in a child process later
        WORLDS.check_backend(world, world_args)  # so does a missing simulator
        unknown = sorted(map(str, set(process_kwargs) - set(WORLD_PROCESS_OPTIONS)))
        if unknown:
            raise ConfigurationError(
                f"Unknown world_process_kwargs {unknown}; the options are "
                f"{', '.join(WORLD_PROCESS_OPTIONS)}."
            )
        try:
            worlds = [
                WorldProcess(world, world_args, **process_kwargs)
                if self.world_processes
                else WORLDS.make(world, **world_args)
                for _ in range(self.num_envs)
            ]  # fmt: skip
            self._owned.extend(worlds)
            self.encoder: PromptEncoder = PROMPT_ENCODERS.make(
                prompt_encoder, device=device, **encoder_args
            )
            self._owned.append(self.encoder)
            # One MineCLIP scorer for every env: each tick's new frames are encoded in one batch.
            scorer = scorer_for(env_kwargs, device)
            self._scoring = (device, env_kwargs.get("mineclip_kwargs"))
            if scorer is not None:
                if scorer is not env_kwargs.get(
                    "mineclip_score"
                ):  # a scorer passed in stays the caller's
                    self._owned.append(scorer)
                env_kwargs = {**env_kwargs, "mineclip_score": scorer}
            encoders = [self.encoder]
            if getattr(self.encoder, "varies_per_episode", False):
                # A sampling encoder holds one episode's latent: each env needs its own.
                for _ in range(self.num_envs - 1):
                    encoders.append(
                        PROMPT_ENCODERS.make(prompt_encoder, device=device, **encoder_args)
                    )
                    self._owned.append(encoders[-1])
            first = POLICIES.make(policy, world=worlds[0], device=device, **policy_args)
            self._owned.append(first)
            self.batched = callable(getattr(first, "act_batch", None))
            self.policies = [first]
            if not self.batched:  # per-world policies (the scripted oracle reads its world)
                for other in worlds[1:]:
                    instance = POLICIES.make(policy, world=other, device=device, **policy_args)
                    self._owned.append(instance)
                    self.policies.append(instance)
            self.envs = [
                Steve1SkillEnv(
                    world=worlds[i],
                    policy=first if self.batched else self.policies[i],
                    prompt_encoder=encoders[i] if len(encoders) > 1 else self.encoder,
                    device=device,
                    **env_kwargs,
                )
                for i in range(self.num_envs)
            ]
            self._owned.extend(self.envs)
            for env in self.envs[1:]:  # one MineCLIP video tower for every env's visual goals
                env._video_source = self.envs[0]._video_tower
        except BaseException:
            self._close_owned()
            raise
        self.policy = first
        # One engine over every env's slot: one batched policy call per tick for all of them.
        self._engine = SkillEngine([env._slot for env in self.envs])
        self.single_observation_space = self.envs[0].observation_space
        self.single_action_space = self.envs[0].action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        # The last observation of each env: envs that are not reset keep theirs.
        self._last_observations: list[Any] = [None] * self.num_envs
        self._autoreset = np.zeros(self.num_envs, dtype=np.bool_)
        self._episode_steps = np.zeros(self.num_envs, dtype=np.int64)
        self._reset_options: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        self._started = False

    # ------------------------------------------------------------------ Gymnasium API
    def reset(
        self,
        *,
        seed: int | Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Resets every env (or those in ``options["reset_mask"]``).

        Args:
            seed: One int (env i gets ``seed + i``), a list with one seed per env, or None.
            options: ``"instruction"``: one text for all envs or a list with one per env;
                ``"visual_goal"``: one clip, video file or ``"paper:<name>"`` for all envs, or a
                list with one per env (None for a text goal), with ``"cond_scale"`` (applied to
                the envs given a visual goal);
                ``"success"``: detectors for this episode, as `Steve1SkillEnv.reset` takes;
                ``"reset_mask"``: a boolean array choosing the envs to reset.

        Returns:
            The stacked observations and the vector info dict.
        """
        observations, env_infos = self._reset_each(seed, options)
        infos: dict[str, Any] = {}
        for i, info in env_infos:
            infos = self._add_info(infos, info, i)
        return self._stack(observations), infos

    def _reset_each(
        self, seed: Any, options: dict[str, Any] | None
    ) -> tuple[list[Any], list[tuple[int, dict[str, Any]]]]:
        # reset() before batching: every env's observation, and (env, info) of those reset,
        # for callers that keep one info dict per env (the SB3 adapter).
        self._ensure_open()
        # Every env's arguments are checked before any env is reset: a bad one changes nothing.
        options = reset_options(options)
        mask = options.pop("reset_mask", None)
        mask = np.ones(self.num_envs, dtype=np.bool_) if mask is None else self._mask(mask)
        if not self._started and not mask.all():
            raise ConfigurationError(
                "The first reset must reset every env (no reset_mask), and so must the one "
                "after a reset that failed part-way."
            )
        seeds = self._seeds(seed)
        instruction = options.pop("instruction", None)
        instructions = self._per_env(instruction, "instruction")
        visual = options.pop("visual_goal", None)
        # A list or tuple holds one visual goal per env; anything else (a clip array, a file,
        # "paper:<name>") is every env's.
        visual_per_env = isinstance(visual, list | tuple)
        visuals = (
            self._per_env(visual, "visual_goal") if visual_per_env else [visual] * self.num_envs
        )
        # Every other argument is the same for all envs (the seeds are checked above).
        per_env = not (instruction is None or isinstance(instruction, str)) or visual_per_env
        plans = []
        failures: list[tuple[int, Steve1EnvError]] = []
        for index in np.flatnonzero(mask):
            i = int(index)
            env_options = dict(options)
            if instructions[i] is not None:
                env_options["instruction"] = instructions[i]
            if visuals[i] is not None:
                env_options["visual_goal"] = visuals[i]
            elif visual_per_env and any(v is not None for v in visuals):
                # The scale is that of the listed visual goals; an env given None pursues text.
                env_options.pop("cond_scale", None)
            try:
                checked = self.envs[i]._checked_reset(seeds[i], env_options)
            except Steve1EnvError as exc:
                failures.append((i, exc))
                if not per_env:
                    break  # every env would fail the same way
            else:
                plans.append((i, env_options, checked))
        if failures:
            i, first = failures[0]
            # An env is named only when its own value is at fault, not when all fail alike.
            all_alike = not plans and len(failures) > 1 and len({str(e) for _, e in failures}) == 1
            if not per_env or all_alike:
                raise first
            raise _naming_env(first, i) from first
        if self.envs[0].scorer is None and reads_mineclip(options.get("success")):
            # This episode's detectors judge by the score: one scorer for every env, as when
            # they are given to the constructor (an env would otherwise build its own).
            device, mineclip_kwargs = self._scoring
            wanted = {"mineclip_score": True, "mineclip_kwargs": mineclip_kwargs}
            shared = scorer_for(wanted, device)
            assert shared is not None
            self._owned.append(shared)
            for env in self.envs:
                env._use_scorer(shared)
        one_seed = seed is not None and not isinstance(seed, Sequence | np.ndarray)
        super().reset(seed=seeds[0] if one_seed else None)
        env_infos: list[tuple[int, dict[str, Any]]] = []
        observations = self._current_observations()
        try:
            for i, env_options, checked in plans:
                self._reset_options[i] = env_options  # autoreset starts the same task again
                # Checked above (a visual goal encoded there): the env resets without again.
                observations[i], info = self.envs[i]._reset_checked(checked, env_options)
                env_infos.append((i, info))
                self._autoreset[i] = False
                self._episode_steps[i] = 0
        except BaseException:
            # Some envs have new episodes, others not (a world failed, or Ctrl-C): the batch
            # is inconsistent, so step() refuses until a full reset.
            self._started = False
            raise
        self._started = True
        self._last_observations = list(observations)
        return observations, env_infos

    def step(
        self, actions: Any
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Pursues each env's action for up to ``k`` low-level ticks, batching the policy.

        Args:
            actions: One action per env: instructions (text face) or skill indices (discrete).

        Returns:
            Stacked observations, rewards, terminations, truncations and the vector info dict.
            Envs reset by autoreset return their first observation, reward 0 and no flags.
        """
        observations, rewards, terminated, truncated, env_infos = self._step_each(actions)
        infos: dict[str, Any] = {}
        for i, info in env_infos:
            infos = self._add_info(infos, info, i)
        return self._stack(observations), rewards, terminated, truncated, infos

    def _step_each(
        self, actions: Any
    ) -> tuple[list[Any], np.ndarray, np.ndarray, np.ndarray, list[tuple[int, dict[str, Any]]]]:
        # step() before batching: every env's observation, the flags, and (env, info) pairs in
        # the order the infos came (the batched info's arrays take the type of the first).
        self._ensure_open()
        if not self._started:
            raise ResetNeededError(
                "Call reset() before step(): the vector env has not been reset, or its last "
                "reset failed part-way."
            )
        actions = self._actions(actions)
        for i, env in enumerate(self.envs):
            if not self._autoreset[i]:
                env._check_action(actions[i])  # a bad action raises before any env moves
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        terminated = np.zeros(self.num_envs, dtype=np.bool_)
        truncated = np.zeros(self.num_envs, dtype=np.bool_)
        observations = self._current_observations()
        env_infos: list[tuple[int, dict[str, Any]]] = []
        running: list[int] = []
        try:
            for i, env in enumerate(self.envs):
                if self._autoreset[i]:
                    try:
                        observations[i], info = self._restart(i)
                    except WorldCrashError as exc:
                        # Only this env is affected: it reports the crash and tries again next
                        # step.
                        truncated[i] = True
                        info = {"reason": "crash", "error": str(exc), "is_success": False}
                    env_infos.append((i, info))
                else:
                    env._begin_step(actions[i])
                    running.append(i)
            self._engine.run(running)
        except BaseException:
            # Envs whose step began are half-stepped (a later env's begin or reset failed, a
            # policy raised, Ctrl-C): they start new episodes at the next step, so the vector
            # env stays usable.
            self._engine.abort(running)
            self._autoreset[running] = True
            raise
        for i in running:
            observations[i], reward, term, trunc, info = self.envs[i]._end_step()
            self._episode_steps[i] += 1
            if self.max_episode_steps is not None:
                # As gymnasium's TimeLimit: the limit truncates even an episode that terminated.
                trunc = trunc or bool(self._episode_steps[i] >= self.max_episode_steps)
            rewards[i], terminated[i], truncated[i] = reward, term, trunc
            env_infos.append((i, info))
            self._autoreset[i] = term or trunc
        self._last_observations = list(observations)
        return observations, rewards, terminated, truncated, env_infos

    def _restart(self, i: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        # Starts env i's next episode now, as autoreset does: the options of its last reset, a
        # seed from its own RNG. Until it succeeds the env stays due for autoreset, so a world
        # that fails to restart is tried again at the next step.
        self._autoreset[i] = True
        observation, info = self.envs[i].reset(options=self._reset_options[i])
        self._autoreset[i] = False
        self._episode_steps[i] = 0
        self._last_observations[i] = observation
        return observation, info

    def close_extras(self, **kwargs: Any) -> None:
        """Closes every env, world, policy and the encoder."""
        if not self._closed:
            self._closed = True
            self._close_owned()

    # ------------------------------------------------------------------ helpers
    def _ensure_open(self) -> None:
        if self._closed:
            raise ClosedError("This vector env is closed; create a new one.")

    def _close_owned(self) -> None:
        owned, self._owned = self._owned, []
        close_all(component.close for component in reversed(owned))

    def _mask(self, mask: Any) -> np.ndarray:
        array = np.asarray(mask)
        if array.shape != (self.num_envs,) or array.dtype != np.bool_:
            raise ConfigurationError(
                f"reset_mask must be a boolean array of shape ({self.num_envs},), got {mask!r}."
            )
        return array

    def _seeds(self, seed: Any) -> list[int | None]:
        if seed is None:
            return [None] * self.num_envs
        if not isinstance(seed, Sequence | np.ndarray) or isinstance(seed, str | bytes):
            first = int(reset_seed(seed) or 0)  # not None: that case returned above
            return [first + i for i in range(self.num_envs)]
        seeds = list(seed)
        if len(seeds) != self.num_envs:
            raise ConfigurationError(
                f"seed must be an int or a list of {self.num_envs} seeds, got {len(seeds)}."
            )
        return [reset_seed(s, f"seed[{i}]") for i, s in enumerate(seeds)]

    def _per_env(self, value: Any, name: str) -> list[Any]:
        if value is None or isinstance(value, str):
            return [value] * self.num_envs
        if not isinstance(value, Sequence | np.ndarray) or isinstance(value, bytes):
            raise ConfigurationError(
                f"options[{name!r}] must be one text or a list of {self.num_envs}, got "
                f"{type(value).__name__} {short_repr(value)}."
            )
        values = list(value)
        if len(values) != self.num_envs:
            raise ConfigurationError(
                f"options[{name!r}] must be one text or a list of {self.num_envs}, got "
                f"{len(values)}."
            )
        return values

    def _actions(self, actions: Any) -> list[Any]:
        if isinstance(actions, str):
            raise InvalidActionError(
                f"step() takes one action per env ({self.num_envs}), got a single text; pass "
                f"a list such as [{actions!r}] * {self.num_envs}."
            )
        values = list(actions)
        if len(values) != self.num_envs:
            raise InvalidActionError(
                f"step() takes one action per env, {self.num_envs} in all, got {len(values)}."
            )
        return values

    def _current_observations(self) -> list[Any]:
        return list(self._last_observations)

    def _stack(self, observations: list[Any]) -> dict[str, np.ndarray]:
        self._last_observations = list(observations)
        fresh: Any = create_empty_array(self.single_observation_space, self.num_envs)
        stacked = concatenate(self.single_observation_space, observations, fresh)
        return dict(stacked)
