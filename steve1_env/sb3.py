"""`Steve1VecEnv`: stable-baselines3's `VecEnv` API over one `Steve1SkillVectorEnv`.

``PPO("MultiInputPolicy", Steve1VecEnv(4, policy="steve1"))`` trains on 4 envs whose skill
policy is called once per low-level tick for all of them (one batched STEVE-1 call), where
SB3's own `DummyVecEnv` would step 4 separate envs one after another.

It follows SB3's conventions where they differ from Gymnasium's vector API:

- **Same-step autoreset.** When an env's episode ends, `step_wait` returns ``done=True``, the
  final observation in that env's ``info["terminal_observation"]``, and, as that env's
  observation, the first one of its next episode (its reset info goes to `reset_infos`).
  The next episode starts the same task (the options of the env's last reset) with a seed from
  the env's own RNG, as `DummyVecEnv`'s reset of a `Steve1SkillEnv` does.
- **Infos** are a list with one dict per env: the `Steve1SkillEnv` info (``is_success``,
  ``reason``, ``inventory``, ...) plus ``"TimeLimit.truncated"`` (truncated and not terminated).
- **Seeds and options** given by `seed` and `set_options` apply at the next `reset`.

Only the discrete face (``Steve1SkillLibrary-v0``: the action indexes a skill list) is
supported: SB3's policies output numbers, not the text face's instructions.

Needs stable-baselines3 (``pip install "steve1-env[sb3]"``); importing this module without it
raises `DependencyNotInstalledError` with that command.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from steve1_env import MAX_EPISODE_STEPS
from steve1_env.errors import ConfigurationError, ResetNeededError, WorldCrashError
from steve1_env.optional import import_optional
from steve1_env.vector.env import Steve1SkillVectorEnv

if TYPE_CHECKING:
    from stable_baselines3.common.vec_env import VecEnv
else:  # imported here so that a missing stable-baselines3 says how to install it
    VecEnv = import_optional(
        "stable_baselines3.common.vec_env", "sb3", "steve1_env.sb3 (SB3 on the vector env)"
    ).VecEnv

RENDER_MODES = (None, "rgb_array")
"""`Steve1VecEnv` render modes: none, or every env's observation frame, tiled."""
VECTOR_OWN_METHODS = ("reset", "step", "close")
"""Env methods `env_method` refuses: they would bypass the batch (use the VecEnv's own)."""
PER_ENV_OPTIONS = ("instruction", "visual_goal")
"""Reset options that may differ between envs (the vector env takes a list of them)."""


class Steve1VecEnv(VecEnv):
    """SB3's `VecEnv` over one `Steve1SkillVectorEnv` (discrete face), with same-step autoreset.

    Args:
        num_envs: The number of envs of a new vector env, or a `Steve1SkillVectorEnv` to
            adapt (its discrete face; the adapter closes it on `close`).
        render_mode: None, or ``"rgb_array"``: `render` tiles every env's ``obs["pov"]``.
        **vector_kwargs: For a new vector env, the arguments of `Steve1SkillVectorEnv`
            (``world``, ``policy``, ``prompt_encoder``, ``skills``, ``k``, ...). As with
            ``Steve1SkillLibrary-v0``, ``face`` is ``"discrete"`` and ``max_episode_steps`` is
            `steve1_env.MAX_EPISODE_STEPS` unless given.

    Raises:
        ConfigurationError: For the text face, arguments given with a vector env, or an
            unknown render mode.
    """

    def __init__(
        self,
        num_envs: int | Steve1SkillVectorEnv,
        *,
        render_mode: str | None = None,
        **vector_kwargs: Any,
    ) -> None:
        if render_mode not in RENDER_MODES:
            raise ConfigurationError(
                f"render_mode must be None or 'rgb_array', got {render_mode!r}."
            )
        if isinstance(num_envs, Steve1SkillVectorEnv):
            if vector_kwargs:
                raise ConfigurationError(
                    f"Steve1VecEnv adapts the vector env given as it is; arguments "
                    f"{sorted(vector_kwargs)} apply to a new one only: pass them to "
                    f"Steve1SkillVectorEnv, or give Steve1VecEnv a number of envs instead."
                )
            vector = num_envs
        else:
            vector_kwargs.setdefault("face", "discrete")
            vector_kwargs.setdefault("max_episode_steps", MAX_EPISODE_STEPS)
            if vector_kwargs["face"] != "discrete":
                raise self._text_face_error(vector_kwargs["face"])
            vector = Steve1SkillVectorEnv(num_envs, **vector_kwargs)
        face = vector.envs[0].face
        if face != "discrete":
            vector.close()
            raise self._text_face_error(face)
        self.vector_env = vector
        super().__init__(
            vector.num_envs, vector.single_observation_space, vector.single_action_space
        )
        # The single envs render nothing (a vector env takes no render_mode); frames come from
        # the observations.
        self.render_mode = render_mode
        self.metadata = {"render_modes": [] if render_mode is None else ["human", "rgb_array"]}
        self._actions: Any = None

    @staticmethod
    def _text_face_error(face: Any) -> ConfigurationError:
        return ConfigurationError(
            f"Steve1VecEnv supports the discrete face only (face='discrete', as "
            f"Steve1SkillLibrary-v0: the action indexes the skills list), got face={face!r}: "
            f"SB3's policies output numbers, not instructions. Give the skills to choose "
            f"from as skills=[...]."
        )

    # ------------------------------------------------------------------ VecEnv API
    def reset(self) -> dict[str, np.ndarray]:
        """Resets every env with the seeds of `seed` and the options of `set_options`.

        Both apply once. Options may differ between envs only in ``"instruction"`` and
        ``"visual_goal"``; the others (``"success"``, ``"cond_scale"``) must be the same.

        Returns:
            The stacked first observations; the reset infos are in `reset_infos`.
        """
        seeds = None if all(s is None for s in self._seeds) else list(self._seeds)
        observations, env_infos = self.vector_env._reset_each(seeds, self._merged_options())
        for i, info in env_infos:
            self.reset_infos[i] = info
        self._reset_seeds()
        self._reset_options()
        return self.vector_env._stack(observations)

    def step_async(self, actions: np.ndarray) -> None:
        """Stores one skill index per env for `step_wait`."""
        self._actions = actions

    def step_wait(
        self,
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, list[dict[str, Any]]]:
        """Runs every env's skill, the policy batched per tick, and resets the envs that ended.

        Returns:
            Stacked observations (an env that ended shows its next episode's first), float32
            rewards, dones and one info dict per env (see the module docstring).
        """
        if self._actions is None:
            raise ConfigurationError("step_wait() needs the actions of step_async() first.")
        actions, self._actions = self._actions, None
        observations, rewards, terminated, truncated, env_infos = self.vector_env._step_each(
            actions
        )
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for i, info in env_infos:
            infos[i] = dict(info)
        dones = terminated | truncated
        for i in range(self.num_envs):
            infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            if dones[i]:
                infos[i]["terminal_observation"] = observations[i]
                try:
                    observations[i], self.reset_infos[i] = self.vector_env._restart(i)
                except WorldCrashError as exc:
                    # The env keeps its final observation; the vector env retries the reset at
                    # the next step (reporting the crash there if it fails again).
                    infos[i]["restart_error"] = str(exc)
        return (
            self.vector_env._stack(observations),
            rewards.astype(np.float32),
            dones,
            infos,
        )

    def reset_envs(self, indices: Any) -> dict[str, np.ndarray]:
        """Ends the chosen envs' episodes now and starts their next ones, as autoreset does.

        For a `VecEnvWrapper` that ends episodes by a rule of its own (a goal spanning several
        skills): the next episodes start the same task with seeds from the envs' own RNGs;
        their reset infos go to `reset_infos`.

        Args:
            indices: An env index or a list of them.

        Returns:
            The stacked current observations, the chosen envs' first ones among them.

        Raises:
            WorldCrashError: If a world fails to restart; that env then restarts at the next
                step, which reports the crash if it fails again.
        """
        for i in self._indices(indices):
            _, self.reset_infos[i] = self.vector_env._restart(i)
        return self.vector_env._stack(list(self.vector_env._last_observations))

    def close(self) -> None:
        """Closes the vector env (its worlds, policy and encoder). Safe to call twice."""
        self.vector_env.close()

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        """Returns attribute `attr_name` of each chosen `Steve1SkillEnv` (all by default)."""
        return [getattr(env, attr_name) for env in self._targets(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        """Sets attribute `attr_name` of each chosen `Steve1SkillEnv` (``k`` between episodes)."""
        for env in self._targets(indices):
            setattr(env, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: Any = None, **method_kwargs: Any
    ) -> list[Any]:
        """Calls `method_name` of each chosen `Steve1SkillEnv` and returns the results.

        Raises:
            ConfigurationError: For ``reset``, ``step`` and ``close``, which only the VecEnv's
                own methods may call (they keep the batch consistent).
        """
        if method_name in VECTOR_OWN_METHODS:
            raise ConfigurationError(
                f"env_method({method_name!r}) would bypass the batch; call the VecEnv's own "
                f"{method_name}() instead."
            )
        return [
            getattr(env, method_name)(*method_args, **method_kwargs)
            for env in self._targets(indices)
        ]

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
        """Says, per env, whether it is wrapped in `wrapper_class`: never (they are bare envs).

        The episode limit (``max_episode_steps``) is the vector env's, not a `TimeLimit`.
        """
        return [isinstance(env, wrapper_class) for env in self._targets(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        """Returns each env's current ``obs["pov"]`` frame (for ``render_mode="rgb_array"``).

        Raises:
            ResetNeededError: Before the first `reset` (no frame yet; SB3's `render` would
                fail to tile the missing frames with a bare ValueError).
        """
        observations = self.vector_env._last_observations
        if any(obs is None for obs in observations):
            raise ResetNeededError("Call reset() before render(): no env has a frame yet.")
        return [np.array(obs["pov"], dtype=np.uint8) for obs in observations]

    # ------------------------------------------------------------------ helpers
    def _indices(self, indices: Any) -> list[int]:
        chosen = list(self._get_indices(indices))
        for i in chosen:
            if isinstance(i, bool) or not isinstance(i, int | np.integer):
                raise ConfigurationError(f"Env indices must be ints, got {i!r}.")
            if not 0 <= i < self.num_envs:
                raise ConfigurationError(
                    f"Env index {i} is out of range: there are {self.num_envs} envs "
                    f"(0..{self.num_envs - 1})."
                )
        return [int(i) for i in chosen]

    def _targets(self, indices: Any) -> list[Any]:
        return [self.vector_env.envs[i] for i in self._indices(indices)]

    def _merged_options(self) -> dict[str, Any] | None:
        # SB3 keeps one options dict per env; the vector env takes one dict whose
        # instruction and visual goal may be lists with one entry per env.
        per_env = [dict(options or {}) for options in self._options]
        try:
            alike = all(options == per_env[0] for options in per_env)
        except ValueError:  # arrays among the values (visual-goal clips): compare key by key
            alike = False
        if alike:
            return per_env[0] or None
        keys = {key for options in per_env for key in options}
        merged: dict[str, Any] = {}
        for key in sorted(keys):
            values = [options.get(key) for options in per_env]
            if key in PER_ENV_OPTIONS:
                merged[key] = values
            elif all(value == values[0] for value in values):
                merged[key] = values[0]
            else:
                raise ConfigurationError(
                    f"set_options gave the envs different {key!r} options; only "
                    f"{', '.join(PER_ENV_OPTIONS)} may differ between the envs of one vector "
                    f"env. Use one {key!r} for every env."
                )
        return merged
