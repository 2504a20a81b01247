"""The skill engine: N skill attempts over N worlds, one batched policy call per tick.

Every caller runs skills through it: `Steve1SkillEnv` is the engine with one slot,
`Steve1SkillVectorEnv` with one slot per env, and an evaluation worker with one slot per world
it hosts. A slot is one world with its episode: the last observation, the policy's recurrent
state, the instruction pursued (its goal, detector and baseline) and the step counters.

A high-level step of a slot (`SkillEngine.begin` ... `SkillEngine.end`) runs up to its budget
of low-level ticks. Each `SkillEngine.tick` serves every slot still inside its high-level step:

1. one policy call per policy for its slots (`act_batch` where the policy has it: a STEVE-1
   network serves all slots in one forward pass, with guidance rows and each frame encoded
   once; ``act`` per slot otherwise),
2. every world gets its action before any answer is awaited (`AsyncWorld`), so worlds in
   processes step at the same time,
3. each slot's detector and budget are checked, and a world crash (`WorldCrashError`, the one
   crash channel) ends that slot's step only.

Nothing here is public API: the envs' Gymnasium surface and the evaluation API are.
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from steve1_env import precision
from steve1_env.agent.base import Goal, SkillPolicy
from steve1_env.errors import (
    InvalidActionError,
    ResetNeededError,
    WorldCrashError,
    warn_caller,
)
from steve1_env.prompt.goals import GoalEncoder
from steve1_env.prompt.mineclip_score import FrameWindow, MineCLIPScorer, dense_reward
from steve1_env.skill_kinds import matching_kinds
from steve1_env.success import MAX_SUSTAIN, DetectorLookup, SuccessDetector, fired
from steve1_env.worlds.base import AsyncWorld, World, WorldObs, WorldStep, as_async
from steve1_env.worlds.world_process import WorldProcess, abandon_all

SEED_BOUND = 2**31 - 1
"""Episode seeds (world, policy, prompt) are drawn below this from the slot's RNG."""

FrameObserver = Callable[[np.ndarray], None]
"""Called with every frame a slot's policy sees (a video writer's ``write``)."""
TickObserver = Callable[[WorldObs], None]
"""Called with every low-level tick's world observation of a slot (an episode's metrics)."""


@dataclass
class StepOutcome:
    """How a slot's high-level step ended.

    Attributes:
        reason: ``"success"``, ``"budget"``, ``"world_done"`` or ``"crash"``.
        steps: Low-level ticks it took.
        detector: The detector that fired, on success.
        error: The crash's message, on a crash.
        world_done: The world's episode ended.
        mineclip_score: The MineCLIP score at its end (None without a scorer, or before a
            tick was scored).
        mineclip_max: The highest MineCLIP score of its ticks.
        mineclip_reward: MineDojo's dense reward summed over its ticks (0 without a scorer).
    """

    reason: str
    steps: int
    detector: str | None = None
    error: str | None = None
    world_done: bool = False
    mineclip_score: float | None = None
    mineclip_max: float | None = None
    mineclip_reward: float = 0.0


@dataclass
class _HighLevelStep:
    budget: int
    steps: int = 0
    outcome: StepOutcome | None = None
    world_done: bool = False
    score: float | None = None
    max_score: float | None = None
    reward: float = 0.0

    def finish(self, reason: str, **details: Any) -> None:
        self.outcome = StepOutcome(
            reason,
            self.steps,
            mineclip_score=self.score,
            mineclip_max=self.max_score,
            mineclip_reward=self.reward,
            **details,
        )

    def scored(self, score: float, reward: float) -> None:
        self.score = score
        self.max_score = score if self.max_score is None else max(self.max_score, score)
        self.reward += reward


class Slot:
    """One world and its episode inside the engine (read by the envs for their infos).

    Attributes:
        world: The world, stepped through the `AsyncWorld` protocol.
        policy: The policy acting in it (one object may serve several slots).
        goals: Where its instructions become goals.
        obs: The last world observation (None before the first reset).
        state: The policy's recurrent state.
        goal: The goal pursued, or None before the first instruction.
        detector: The success detector of the current attempt, if one is known.
        attempt_start: The observation the current attempt started from (no frame).
        attempt_steps: Ticks of the current attempt.
        attempt_succeeded: The current attempt has succeeded.
        total_steps: Ticks of the episode.
        high_level_steps: High-level steps of the episode.
        on_frame: Shown every frame the policy sees, if set.
        on_tick: Shown every tick's world observation (after the world stepped, before the
            detector judges it), if set; a world crash shows none.
        scorer: The MineCLIP scorer judging its frames, or None.
        window: Its last MineCLIP frame features (with a scorer).
        score: The MineCLIP score of the last tick (None before the first scored tick).
        attempt_scores: The current attempt's latest scores, oldest first (what the MineCLIP
            detector reads, as ``obs["mineclip_scores"]``).
    """

    def __init__(
        self,
        world: World | AsyncWorld,
        policy: SkillPolicy,
        goals: GoalEncoder,
        scorer: MineCLIPScorer | None = None,
    ) -> None:
        self.world: AsyncWorld = as_async(world)
        self.scorer = scorer
        self.window: FrameWindow | None = None if scorer is None else scorer.window()
        self.score: float | None = None
        self.attempt_scores: deque[float] = deque(maxlen=MAX_SUSTAIN)
        self.policy = policy
        self.goals = goals
        self.obs: WorldObs | None = None
        self.state: Any = None
        self.goal: Goal | None = None
        self.detector: SuccessDetector | None = None
        self.detector_for: DetectorLookup = _no_detectors
        self.attempt_start: WorldObs | None = None
        self.attempt_steps = 0
        self.attempt_succeeded = False
        self.total_steps = 0
        self.high_level_steps = 0
        self.on_frame: FrameObserver | None = None
        self.on_tick: TickObserver | None = None
        self._step: _HighLevelStep | None = None

    @property
    def instruction(self) -> str | None:
        """The instruction pursued, or None before the first."""
        return None if self.goal is None else self.goal.instruction

    @property
    def stepping(self) -> bool:
        """True while the slot's high-level step wants another tick."""
        return self._step is not None and self._step.outcome is None


def _no_detectors(instruction: str) -> SuccessDetector | None:
    return None


class SkillEngine:
    """Runs skill attempts in several slots, batching their policy calls tick by tick.

    Args:
        slots: The slots, each with its world, policy and goal encoder.
        warned: Instructions already warned about as undetectable (shared with the caller, so
            each is warned about once per env).

    Attributes:
        failed_slot: After a tick raised, the slot whose own code failed (its detector, its
            frame observer, a policy or world serving it alone); None when the failure was
            the batch's (a batched policy call).
    """

    def __init__(self, slots: Sequence[Slot], warned: set[str] | None = None) -> None:
        self.slots = list(slots)
        self._warned = set() if warned is None else warned
        self.failed_slot: int | None = None

    def __len__(self) -> int:
        return len(self.slots)

    # ------------------------------------------------------------------ episodes
    def reset(
        self,
        i: int,
        rng: np.random.Generator,
        instruction: str | None,
        detector_for: DetectorLookup,
        goal: Goal | None = None,
    ) -> WorldObs:
        """Starts a new episode in slot `i`, its seeds drawn from `rng`.

        A `goal` given (a visual goal) is the goal of its instruction for this episode.

        The world, policy and prompt seeds are drawn in that order, so a seeded env, vector
        env and evaluation trial play the same episode.

        Raises:
            WorldCrashError: If the world fails to start.
        """
        slot = self.slots[i]
        world_seed = int(rng.integers(SEED_BOUND))
        policy_seed = int(rng.integers(SEED_BOUND))
        prompt_seed = int(rng.integers(SEED_BOUND))
        slot._step = None
        slot.goal, slot.detector, slot.attempt_start = None, None, None
        slot.obs = None
        slot.detector_for = detector_for
        slot.goals.start_episode(prompt_seed)
        if goal is not None:
            slot.goals.pin(goal)
        slot.obs = slot.world.reset(seed=world_seed)
        slot.score = None
        if slot.scorer is not None and slot.window is not None:
            slot.window.clear()
            slot.scorer.push([slot.window], [slot.obs["pov"]])
        slot.state = slot.policy.initial_state(policy_seed)
        slot.attempt_steps = slot.total_steps = slot.high_level_steps = 0
        slot.attempt_succeeded = False
        if instruction is not None:
            self._start_attempt(slot, instruction)
        return slot.obs

    def begin(self, i: int, instruction: str, budget: int) -> None:
        """Starts a high-level step of slot `i` pursuing `instruction` for `budget` ticks.

        A new attempt starts when the instruction differs from the current one or the current
        one has succeeded.
        """
        slot = self.slots[i]
        if slot.obs is None:
            raise ResetNeededError("Call reset() before pursuing an instruction.")
        if slot.goal is None or instruction != slot.goal.instruction or slot.attempt_succeeded:
            self._start_attempt(slot, instruction)
        slot._step = _HighLevelStep(budget)
        if budget <= 0:
            slot._step.finish("budget")

    def end(self, i: int) -> StepOutcome:
        """Ends slot `i`'s finished high-level step and returns how it ended."""
        slot = self.slots[i]
        current = slot._step
        if current is None or current.outcome is None:
            raise ResetNeededError("No finished high-level step to end; call begin() first.")
        slot._step = None
        slot.high_level_steps += 1
        slot.attempt_succeeded = slot.attempt_succeeded or current.outcome.reason == "success"
        return current.outcome

    def abort(self, slots: Iterable[int]) -> None:
        """Drops the high-level steps of `slots` (after an error or an interrupt)."""
        for i in slots:
            self.slots[i]._step = None

    # ------------------------------------------------------------------ ticks
    def run(self, slots: Iterable[int] | None = None) -> None:
        """Ticks until no slot (of `slots`, default all) is inside its high-level step."""
        chosen = range(len(self.slots)) if slots is None else list(slots)
        while self.tick(chosen):
            pass

    def tick(self, slots: Iterable[int] | None = None) -> list[int]:
        """Runs one low-level tick for every stepping slot (of `slots`, default all).

        Returns:
            The slots that were stepping, in order (empty when none was).
        """
        chosen = range(len(self.slots)) if slots is None else slots
        active = [i for i in chosen if self.slots[i].stepping]
        self.failed_slot = None
        if not active:
            return []
        actions = self._act(active)
        results = self._step_worlds(active, actions)
        observed = []
        for i, result in zip(active, results, strict=True):
            self.failed_slot = i
            if self._observe(self.slots[i], result):
                observed.append(i)
        self.failed_slot = None
        self._score(observed)
        for i in observed:
            self.failed_slot = i
            self._judge(self.slots[i])
        self.failed_slot = None
        return active

    def _act(self, active: list[int]) -> list[Any]:
        # One call per policy object: slots sharing a batching policy share one forward pass.
        groups: dict[int, list[int]] = {}
        for i in active:
            groups.setdefault(id(self.slots[i].policy), []).append(i)
        actions: dict[int, Any] = {}
        for members in groups.values():
            slots = [self.slots[i] for i in members]
            for i, slot in zip(members, slots, strict=True):
                if slot.on_frame is not None:
                    self.failed_slot = i
                    slot.on_frame(slot.obs["pov"])  # type: ignore[index]
            self.failed_slot = members[0] if len(members) == 1 else None
            low, states = _call_policy(slots[0].policy, slots)
            self.failed_slot = None
            for i, slot, action, state in zip(members, slots, low, states, strict=True):
                slot.state = state
                actions[i] = action
        return [actions[i] for i in active]

    def _step_worlds(self, active: list[int], actions: list[Any]) -> list[Any]:
        results: list[Any] = [None] * len(active)
        sent: list[int] = []
        # A refused action is the caller's mistake, raised once every answer is read: the
        # other worlds (a Minecraft server each) keep running instead of being killed.
        refused: list[tuple[int, InvalidActionError]] = []
        try:
            for position, (i, action) in enumerate(zip(active, actions, strict=True)):
                try:
                    self.slots[i].world.step_async(action)
                except InvalidActionError as exc:
                    refused.append((i, exc))
                except Exception as exc:  # the world is gone: that slot crashed
                    results[position] = exc
                else:
                    sent.append(position)
            for position in sent:
                try:
                    results[position] = self.slots[active[position]].world.step_wait()
                except InvalidActionError as exc:  # only the world in its process could tell
                    refused.append((active[position], exc))
                except Exception as exc:
                    results[position] = exc
        except BaseException:
            # An interrupt between sending and reading: answers still on their way are never
            # read, so those worlds drop them now (a world process is killed) instead of
            # making close() wait.
            _abandon_waiting(self.slots[i].world for i in active)
            raise
        if refused:
            self.failed_slot, error = refused[0]
            raise error
        return results

    def _observe(self, slot: Slot, result: WorldStep | Exception) -> bool:
        # Takes in a world's answer; False when the world crashed (its step is over).
        current = slot._step
        if current is None or slot.attempt_start is None:
            raise ResetNeededError("No high-level step is in progress; call begin().")
        if isinstance(result, BaseException):
            # A crash's own message says what happened; anything else is named by its type.
            error = (
                str(result)
                if isinstance(result, WorldCrashError)
                else f"{type(result).__name__}: {result}"
            )
            current.finish("crash", error=error)
            _compact(slot)
            return False
        slot.obs = result.obs
        current.steps += 1
        slot.attempt_steps += 1
        slot.total_steps += 1
        current.world_done = bool(result.done)
        if slot.on_tick is not None:
            slot.on_tick(result.obs)
        return True

    def _score(self, observed: list[int]) -> None:
        # Each scorer encodes its slots' new frames in one batch, then scores all windows.
        groups: dict[int, list[Slot]] = {}
        for i in observed:
            slot = self.slots[i]
            if slot.scorer is not None:
                groups.setdefault(id(slot.scorer), []).append(slot)
        for slots in groups.values():
            scorer = slots[0].scorer
            assert scorer is not None
            windows = [slot.window for slot in slots]
            scorer.push(windows, [slot.obs["pov"] for slot in slots])  # type: ignore[arg-type,index]
            instructions = [slot.instruction or "" for slot in slots]
            for slot, score in zip(slots, scorer.scores(windows, instructions), strict=True):  # type: ignore[arg-type]
                slot.score = score
                slot.attempt_scores.append(score)
                prompts = 1 + sum(n != slot.instruction for n in scorer.negatives)
                slot._step.scored(score, dense_reward(score, prompts))  # type: ignore[union-attr]

    def _judge(self, slot: Slot) -> None:
        current = slot._step
        assert current is not None and slot.attempt_start is not None and slot.obs is not None
        if slot.detector is not None:
            obs = slot.obs
            if slot.scorer is not None:
                # Derived observations for the MineCLIP detector; the world's dict is untouched.
                obs = {
                    **obs,
                    "mineclip_score": slot.score,
                    "mineclip_scores": tuple(slot.attempt_scores),
                }
            detector = fired(slot.detector, slot.attempt_start, obs, slot.attempt_steps)
            if detector is not None:
                current.finish("success", detector=detector, world_done=current.world_done)
        if current.outcome is None:
            if current.world_done:
                current.finish("world_done", world_done=True)
            elif current.steps >= current.budget:
                current.finish("budget")
        if current.outcome is not None:
            _compact(slot)

    # ------------------------------------------------------------------ attempts
    def _start_attempt(self, slot: Slot, instruction: str) -> None:
        if slot.obs is None:
            raise ResetNeededError("Call reset() before pursuing an instruction.")
        slot.goal = slot.goals.goal(instruction)
        slot.detector = slot.detector_for(instruction)
        if slot.detector is None and instruction not in self._warned:
            self._warned.add(instruction)
            kinds = matching_kinds(instruction)
            why = (
                f"it mentions several skills ({', '.join(kinds)})"
                if kinds
                else "it matches none of the known skills"
            )
            warn_caller(
                f"No success detector is known for {instruction!r}: {why}, so is_success stays "
                "False for it. Pass success={instruction: detector} (see steve1_env.success).",
            )
        slot.attempt_start = _baseline(slot.obs)
        slot.attempt_scores.clear()
        slot.attempt_steps = 0
        slot.attempt_succeeded = False


def _call_policy(policy: SkillPolicy, slots: list[Slot]) -> tuple[list[Any], list[Any]]:
    # The policy boundary: whatever autocast region the caller holds stays outside, for any
    # policy (a user's torch policy would otherwise see the float16 goal upstream crashes on).
    with precision.autocast_disabled(policy.device):
        act_batch = getattr(policy, "act_batch", None)
        if callable(act_batch):
            actions, states = act_batch(
                [slot.obs for slot in slots],
                [slot.goal for slot in slots],
                [slot.state for slot in slots],
            )
            return list(actions), list(states)
        pairs = [policy.act(slot.obs, slot.goal, slot.state) for slot in slots]  # type: ignore[arg-type]
        return [action for action, _ in pairs], [state for _, state in pairs]


def _baseline(obs: WorldObs) -> WorldObs:
    # A deep copy without the frame: detectors compare against it for the whole attempt, and a
    # world may reuse its observation buffers.
    return {key: copy.deepcopy(value) for key, value in obs.items() if key != "pov"}


def _compact(slot: Slot) -> None:
    # A slot leaving the batch must not keep the whole batch's tensors alive through its state.
    compact = getattr(slot.policy, "compact_state", None)
    if compact is not None and slot.state is not None:
        slot.state = compact(slot.state)


def _abandon_waiting(worlds: Iterable[AsyncWorld]) -> None:
    # World processes are dropped together: one grace period for all, not one each.
    abandon_all(w for w in worlds if isinstance(w, WorldProcess) and w.waiting)
