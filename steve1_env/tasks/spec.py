"""Task specs and task sets, loaded from YAML and checked field by field.

A task set file::

    name: quick_harvest
    description: Gather basic resources.
    defaults:              # optional; every task inherits these fields
      max_steps: 2000
    tasks:
      - name: logs
        instruction: chop a tree          # or instructions: [..., ...] (each is evaluated)
        success: {type: inventory, items: "*_log", count: 1}
        max_steps: 2000                   # low-level steps per trial, ending at success
        # horizon: 3000                   # or: run exactly 3000 steps, success or not
        seeds: [0, 1, 2]                  # optional; else trial i uses seed + i
        seed: 0                           # optional base seed (default 0)
        trials: 3                         # optional default number of trials
        world_options: {tree_density: 0.05}
        metrics: {planks: {type: inventory, items: "*_planks"}}   # tracked over the episode
        prompt_latent: sampled            # embed the text with a latent drawn from prompt_seed
        prompt_seed: 7
        cond_scale: 6.0                   # the goal's guidance scale

Errors name the file, the task, the field and its line. ``success`` takes the detector configs
of `steve1_env.tasks.detectors`; omitted, each instruction gets its skill's default detector.
``metrics`` takes the metric configs of `steve1_env.tasks.metrics`.

A task either stops at its first success within ``max_steps`` low-level steps, or (with
``horizon``, the STEVE-1 paper's protocol) runs exactly ``horizon`` steps, success or not,
recording its first success step and the paper's metrics (`PAPER_METRICS`) with its own.
One mapping (the defaults, or one task) gives one of the two; a task's own choice replaces
the defaults' (``max_steps`` in a task turns a ``horizon`` default off).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from steve1_env.errors import (
    DetectorError,
    InvalidInstructionError,
    TaskFileError,
    TaskSpecError,
)
from steve1_env.files import read_regular_file
from steve1_env.instructions import validate_instruction
from steve1_env.prompt.visual_goals import VIDEO_SUFFIXES
from steve1_env.prompt.visual_prompts import (
    PAPER_SPEC_PREFIX,
    PAPER_VISUAL_PROMPT_NAMES,
    is_paper_spec,
)
from steve1_env.tasks.detectors import DetectorConfigError, FieldPath, build_detector, format_path
from steve1_env.tasks.metrics import MetricConfigError, check_metric_configs, trial_metrics
from steve1_env.tasks.trials import CONDITIONS, PROMPT_LATENTS, TrialSpec
from steve1_env.validation import MAX_SEED, boolean, positive_int

DEFAULT_TRIALS = 3
MAX_TRIALS = 10_000
"""Most trials of one task instruction (``trials``, ``--trials``, the length of ``seeds``)."""
MAX_PLANNED_TRIALS = 100_000
"""Most trials one run may plan, over every task and instruction of its set."""
MAX_TASK_FILE_BYTES = 4 * 2**20
"""Largest task file read (4 MiB); real ones are a few kilobytes."""
MAX_TASK_FILE_VALUES = 100_000
"""Most YAML values (scalars, lists, mappings) a task file may hold, each alias counted as all
the values it repeats, so a few bytes of nested aliases ("billion laughs") cannot expand into
billions of values."""
MAX_TASK_FILE_DEPTH = 100
"""Most levels of lists and mappings inside one another in a task file, aliases followed."""
TASK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SET_FIELDS = ("name", "description", "defaults", "tasks")
_TASK_FIELDS = (
    "name",
    "description",
    "instruction",
    "instructions",
    "success",
    "max_steps",
    "seeds",
    "seed",
    "trials",
    "world_options",
    "visual_goal",
    "cond_scale",
    "horizon",
    "metrics",
    "prompt_latent",
    "prompt_seed",
)
_DEFAULT_FIELDS = tuple(f for f in _TASK_FIELDS if f not in ("name", "instruction", "instructions"))
BASELINES = ("none", "unconditional", "both")
"""Which trials a plan holds: the prompts' only, their unconditional baselines (the zero goal,
on the same seeds) only, or both."""


@dataclass(frozen=True)
class TaskSpec:
    """One task: instructions to pursue, how success is judged, and the trial budget.

    Attributes:
        name: Unique within its set; letters, digits, ``_``, ``.``, ``-``.
        instructions: The texts evaluated; each runs the same seeds.
        success: Detector config (see `steve1_env.tasks.detectors`), None for the defaults.
        max_steps: Low-level step budget of one trial (its horizon, with `horizon`).
        seeds: Explicit episode seeds, one per trial, or None for ``seed + trial``.
        seed: Base seed when `seeds` is None.
        trials: Default number of trials, or None for the run's default.
        world_options: Keyword arguments for the world.
        description: Free text for reports.
        visual_goal: A clip pursued instead of the text: ``paper:<name>`` or a video file
            (relative paths are read from the task file's folder); the instructions name it
            and pick its detector.
        cond_scale: The goal's guidance scale (default: the policy's for text, the paper's
            7.0 for a visual goal; the paper used 6.0 for text).
        horizon: Run exactly this many low-level steps, not stopping at success (the paper's
            protocol); None stops at the first success.
        metrics: The task's own metric configs (name -> config, `steve1_env.tasks.metrics`),
            tracked in every trial; fixed-horizon trials add `PAPER_METRICS`.
        prompt_latent: ``"zeros"`` (default) or ``"sampled"``: the text goal is embedded by
            STEVE-1's prior with a latent drawn from `prompt_seed`, once per instruction, as
            the paper embeds its prompts.
        prompt_seed: The seed of the sampled latent (None with ``"zeros"``).
    """

    name: str
    instructions: tuple[str, ...]
    max_steps: int
    success: Any = None
    seeds: tuple[int, ...] | None = None
    seed: int = 0
    trials: int | None = None
    world_options: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    visual_goal: str | None = None
    cond_scale: float | None = None
    horizon: int | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    prompt_latent: str = "zeros"
    prompt_seed: int | None = None

    def trial_specs(
        self,
        trials: int | None = None,
        max_steps: int | None = None,
        *,
        horizon: int | None = None,
        baseline: str = "none",
    ) -> list[TrialSpec]:
        """Returns this task's trials: every instruction times `trials` seeds.

        Args:
            trials: Trials per instruction; default the task's `trials`, else the number of
                its `seeds`, else `DEFAULT_TRIALS`.
            max_steps: Overrides the task's number of low-level steps (a fixed-horizon task
                keeps running all of them).
            horizon: Makes the task a fixed-horizon one of this many low-level steps (the
                paper's protocol); not together with `max_steps`.
            baseline: ``"none"``, ``"unconditional"`` or ``"both"`` (see `BASELINES`): the
                unconditional trials pursue the zero goal on the same seeds, each right after
                its prompt trial with ``"both"``.

        Raises:
            TaskSpecError: If more trials are asked than the task lists seeds, more than
                `MAX_TRIALS`, or more than `MAX_PLANNED_TRIALS` over all instructions; if
                both `max_steps` and `horizon` are given, or `baseline` is unknown.
        """
        seeds = self._seeds(trials)
        conditions = _conditions(baseline)
        _check_planned(len(self.instructions) * len(seeds) * len(conditions))
        fixed = self.horizon
        if horizon is not None:
            if max_steps is not None:
                raise TaskSpecError(
                    "Give max_steps (a step budget that ends at the first success) or horizon "
                    "(exactly that many steps, success or not), not both."
                )
            fixed = positive_int(horizon, "horizon", error=TaskSpecError)
            budget = fixed
        elif max_steps is not None:
            budget = positive_int(max_steps, "max_steps", error=TaskSpecError)
            fixed = None if fixed is None else budget
        else:
            budget = self.max_steps
        metrics = trial_metrics(self.metrics, fixed_horizon=fixed is not None)
        return [
            TrialSpec(
                task=self.name,
                instruction=instruction,
                instruction_index=index,
                trial=trial,
                seed=seed,
                max_steps=budget,
                detector=self.success,
                world_options=dict(self.world_options),
                visual_goal=self.visual_goal,
                cond_scale=self.cond_scale,
                horizon=fixed,
                condition=condition,
                # The baseline pursues the zero goal: no prompt is embedded, with any latent.
                prompt_latent=self.prompt_latent if condition == "prompt" else "zeros",
                prompt_seed=self.prompt_seed if condition == "prompt" else None,
                metrics=metrics,
            )
            for index, instruction in enumerate(self.instructions)
            for trial, seed in enumerate(seeds)
            for condition in conditions
        ]

    def _seeds(self, trials: int | None) -> tuple[int, ...]:
        """Returns the seeds of `trials` trials per instruction (see `trial_specs`)."""
        if trials is not None:
            count = positive_int(trials, "trials", error=TaskSpecError)
        elif self.trials is not None:
            count = self.trials
        else:
            count = len(self.seeds) if self.seeds else DEFAULT_TRIALS
        if count > MAX_TRIALS:
            # Refused before anything is built: a typo such as 10**9 would otherwise fill
            # memory with trial specs and end in a MemoryError.
            raise TaskSpecError(
                f"Task {self.name!r}: {count} trials per instruction were asked; at most "
                f"{MAX_TRIALS} are supported (MAX_TRIALS). Ask for fewer trials."
            )
        if self.seeds is not None and count > len(self.seeds):
            raise TaskSpecError(
                f"Task {self.name!r} lists {len(self.seeds)} seeds but {count} trials were "
                "asked; add seeds to the task or ask for fewer trials."
            )
        if self.seeds is not None:
            return self.seeds[:count]
        return tuple(self.seed + i for i in range(count))


def _conditions(baseline: Any) -> tuple[str, ...]:
    """Returns the conditions of each trial's runs that `baseline` asks for (see `BASELINES`)."""
    if baseline == "none":
        return CONDITIONS[:1]
    if baseline == "unconditional":
        return CONDITIONS[1:]
    if baseline == "both":
        return CONDITIONS
    raise TaskSpecError(f"baseline must be one of {', '.join(BASELINES)}, got {baseline!r}.")


def _check_planned(count: int) -> None:
    if count > MAX_PLANNED_TRIALS:
        raise TaskSpecError(
            f"{count} trials were planned (tasks x instructions x trials); one run may plan at "
            f"most {MAX_PLANNED_TRIALS} (MAX_PLANNED_TRIALS). Ask for fewer trials, or run "
            "the tasks in several runs (tasks=)."
        )


@dataclass(frozen=True)
class TaskSet:
    """A named list of tasks, as loaded from one file.

    Attributes:
        name: The set's name.
        tasks: The tasks, in file order.
        source: Where it came from (a path, or ``builtin:<name>``).
        sha256: Digest of the file's text, recorded with results so a resumed run can tell
            whether the tasks changed.
        description: Free text for reports.
    """

    name: str
    tasks: tuple[TaskSpec, ...]
    source: str
    sha256: str
    description: str = ""

    def task(self, name: str) -> TaskSpec:
        """Returns the task called `name`.

        Raises:
            TaskSpecError: If there is none; the message lists the tasks.
        """
        for task in self.tasks:
            if task.name == name:
                return task
        raise TaskSpecError(
            f"Task set {self.name!r} has no task {name!r}; its tasks: "
            f"{', '.join(t.name for t in self.tasks)}."
        )

    def select(self, names: Sequence[str]) -> TaskSet:
        """Returns a set holding only the named tasks, in the order given.

        Raises:
            TaskSpecError: If a name is unknown or given twice.
        """
        repeated = sorted({name for name in names if list(names).count(name) > 1})
        if repeated:
            raise TaskSpecError(f"Task(s) {', '.join(repeated)} named more than once.")
        return TaskSet(
            self.name, tuple(self.task(n) for n in names), self.source, self.sha256,
            self.description,
        )  # fmt: skip

    def trial_specs(
        self,
        trials: int | None = None,
        max_steps: int | None = None,
        *,
        horizon: int | None = None,
        baseline: str = "none",
    ) -> list[TrialSpec]:
        """Returns every task's trials, task by task (see `TaskSpec.trial_specs`).

        Args:
            trials: Trials per task instruction (default: each task's own).
            max_steps: Overrides every task's number of low-level steps.
            horizon: Makes every task a fixed-horizon one of this many low-level steps.
            baseline: ``"none"``, ``"unconditional"`` or ``"both"`` (see `BASELINES`).

        Raises:
            TaskSpecError: As `TaskSpec.trial_specs` does, and if the set's trials add up to
                more than `MAX_PLANNED_TRIALS`; checked before any trial is built.
        """
        try:
            runs = len(_conditions(baseline))
            _check_planned(
                sum(len(t.instructions) * len(t._seeds(trials)) * runs for t in self.tasks)
            )
            return [
                spec
                for task in self.tasks
                for spec in task.trial_specs(trials, max_steps, horizon=horizon, baseline=baseline)
            ]
        except TaskSpecError as exc:
            raise TaskSpecError(f"{self.source}: {exc}") from None


def builtin_task_sets() -> list[str]:
    """Returns the names of the task sets shipped with the package."""
    folder = resources.files("steve1_env.tasks") / "sets"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_task_set(source: str | os.PathLike[str], *, allow_imports: bool = False) -> TaskSet:
    """Loads a built-in task set by name or a task set file by path.

    Args:
        source: A built-in name (``"quick_harvest"``, ``"early_game"``) or a ``.yaml`` path.
        allow_imports: Accept ``custom`` detectors, whose import paths are imported (their
            code runs) when the set is checked and in every worker. A file that names one is
            refused without it, before anything is imported: pass True only for files you
            trust as code. The built-in sets import nothing.

    Raises:
        TaskSpecError: If the set is unknown, unreadable, not UTF-8 text, or malformed (see
            `parse_task_set`); the message names the file, task, field and line.
    """
    text_source = str(source)
    path = Path(text_source).expanduser()
    names = builtin_task_sets()
    if path.is_file():
        return parse_task_set(
            _read_task_file(path), str(path), path.stem, allow_imports=allow_imports
        )
    if path.exists() and text_source not in names:
        kind = "a directory" if path.is_dir() else "not a regular file"
        raise TaskFileError(
            f"Task set file {text_source!r} is {kind}; give the path of a .yaml task file."
        )
    if not isinstance(source, str) or text_source.endswith((".yaml", ".yml")) or "/" in text_source:
        raise TaskSpecError(f"Task set file {text_source!r} does not exist.")
    if text_source not in names:
        close = difflib.get_close_matches(text_source, names, n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise TaskSpecError(
            f"Unknown task set {text_source!r}.{hint} Built-in sets: {', '.join(names)}; or "
            "pass the path of your own .yaml file."
        )
    text = (resources.files("steve1_env.tasks") / "sets" / f"{text_source}.yaml").read_text(
        encoding="utf-8"
    )
    return parse_task_set(text, f"builtin:{text_source}", text_source)


def _read_task_file(path: Path) -> str:
    try:
        data = read_regular_file(
            path, MAX_TASK_FILE_BYTES, "task set file", error=TaskFileError,
            limit_name="MAX_TASK_FILE_BYTES",
        )  # fmt: skip
    except OSError as exc:
        raise TaskFileError(
            f"Cannot read the task set file {str(path)!r} ({type(exc).__name__}: "
            f"{exc.strerror or exc}); check that it exists and that you may read it."
        ) from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise TaskFileError(
            f"{path}, line {line}: a task file must be UTF-8 text, but byte "
            f"0x{data[exc.start]:02x} (offset {exc.start}) is not valid UTF-8. Save the file "
            "as UTF-8."
        ) from None


# ----------------------------------------------------------------------------- parsing


class _TooBig(Exception):
    """A task file's YAML passes a limit; carries the line where it did."""

    def __init__(self, message: str, mark: Any) -> None:
        super().__init__(message)
        self.line = mark.line + 1


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that stops composing past the file limits.

    PyYAML composes nested lists and mappings recursively, so 20,000 ``[`` end in a
    `RecursionError`; counting here stops such a file at once.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._composed = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        mark = self.peek_event().start_mark
        self._composed += 1
        if self._composed > MAX_TASK_FILE_VALUES:
            raise _TooBig(_too_many(), mark)
        if self._depth >= MAX_TASK_FILE_DEPTH:
            raise _TooBig(_too_deep(), mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _too_many() -> str:
    return (
        f"the file holds more than {MAX_TASK_FILE_VALUES} YAML values (MAX_TASK_FILE_VALUES), "
        "counting each alias as all the values it repeats; task files are small, so nested "
        "aliases or a generated file are the likely cause."
    )


def _too_deep() -> str:
    return (
        f"lists and mappings nest more than {MAX_TASK_FILE_DEPTH} deep (MAX_TASK_FILE_DEPTH), "
        "aliases followed; no task field needs that."
    )


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_size(root: yaml.Node) -> None:
    """Refuses a node graph whose expansion passes the file limits, or that contains itself.

    Aliases make the composed nodes a graph whose expansion (what the line walk, the data's
    digest and the field checks go through) can be exponentially larger than the file. Each
    distinct node is measured once, without recursion, so this costs what the file holds.

    Raises:
        _TooBig: At the node where a limit is passed, or that contains itself.
    """
    measured: dict[int, tuple[int, int]] = {}  # id -> (values expanded, depth)
    open_nodes: set[int] = set()  # on the current path: reaching one again is a cycle
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            open_nodes.discard(key)
            sizes = [measured[id(child)] for child in _children(node)]
            values = 1 + sum(size for size, _ in sizes)
            depth = 1 + max((depth for _, depth in sizes), default=0)
            if values > MAX_TASK_FILE_VALUES:
                raise _TooBig(_too_many(), node.start_mark)
            if depth > MAX_TASK_FILE_DEPTH:
                raise _TooBig(_too_deep(), node.start_mark)
            measured[key] = (values, depth)
        elif key in open_nodes:
            raise _TooBig(
                "a YAML alias refers to a node that contains it; task files cannot be recursive.",
                node.start_mark,
            )
        elif key not in measured:
            open_nodes.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in _children(node))


class _Lines:
    """Field path -> line number of a parsed YAML document, for error messages."""

    def __init__(self, root: Any, where: str) -> None:
        self.where = where
        self.lines: dict[FieldPath, int] = {}
        if root is not None:
            self._walk(root, ())

    def _walk(self, node: Any, path: FieldPath) -> None:
        # `_check_size` ran first: no cycles, and the walk's size and depth are bounded.
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in node.value:
                key = str(key_node.value)
                if key in seen:
                    raise TaskSpecError(
                        f"{self.where}, line {key_node.start_mark.line + 1}: the key {key!r} "
                        f"appears twice{self._under(path)}; keep one."
                    )
                seen.add(key)
                field_path = (*path, key)
                self._walk(value_node, field_path)
                # A field's errors point at its key's line, where a reader looks for it.
                self.lines[field_path] = key_node.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self._walk(item, (*path, index))

    @staticmethod
    def _under(path: FieldPath) -> str:
        return f" under {format_path(path)}" if path else ""

    def line(self, path: FieldPath) -> int | None:
        while path not in self.lines and path:
            path = path[:-1]
        return self.lines.get(path)


class _Parser:
    def __init__(self, text: str, where: str, allow_imports: bool) -> None:
        self.where = where
        self.allow_imports = boolean(allow_imports, "allow_imports", error=TaskSpecError)
        if len(text) > MAX_TASK_FILE_BYTES:
            raise TaskFileError(
                f"{where}: {len(text)} characters; a task file may have at most "
                f"{MAX_TASK_FILE_BYTES} (MAX_TASK_FILE_BYTES). Is this the right file?"
            )
        loader = _BoundedLoader(text)
        try:
            root = loader.get_single_node()
            if root is not None:
                _check_size(root)
            self.lines = _Lines(root, where)
            # Built from the checked nodes, so the data is no bigger than what was counted.
            self.data = None if root is None else loader.construct_document(root)
        except _TooBig as exc:
            raise TaskFileError(f"{where}, line {exc.line}: {exc}") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f", line {mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise TaskFileError(f"{where}{at}: not valid YAML ({problem}).") from exc
        finally:
            loader.dispose()
        self.task_name: str | None = None

    def fail(self, path: FieldPath, message: str) -> TaskSpecError:
        line = self.lines.line(path)
        at = f", line {line}" if line is not None else ""
        task = f", task {self.task_name!r}" if self.task_name is not None else ""
        inside_task = path[:1] == ("tasks",) and len(path) > 2
        shown = format_path(path[2:] if inside_task else path)
        field = f", field {shown!r}" if shown else ""
        return TaskSpecError(f"{self.where}{task}{field}{at}: {message}")

    def parse(self, default_name: str) -> TaskSet:
        data = self.data
        if data is None:
            raise TaskSpecError(
                f"{self.where}: the file is empty; it needs 'tasks:' with a list of tasks."
            )
        if not isinstance(data, Mapping):
            raise TaskSpecError(
                f"{self.where}: expected a mapping with 'tasks' (and optionally 'name', "
                f"'description', 'defaults'), got {type(data).__name__}."
            )
        self._known(data, _SET_FIELDS, ())
        name = data.get("name", default_name)
        if not isinstance(name, str) or not name:
            raise self.fail(("name",), f"expected the set's name as text, got {name!r}.")
        description = self._text(data, "description", ())
        defaults = data.get("defaults", {})
        if not isinstance(defaults, Mapping):
            raise self.fail(("defaults",), f"expected a mapping of task fields, got {defaults!r}.")
        self._known(defaults, _DEFAULT_FIELDS, ("defaults",))
        tasks = data.get("tasks")
        if not isinstance(tasks, list) or not tasks:
            raise self.fail(("tasks",), "expected a non-empty list of tasks.")
        specs: list[TaskSpec] = []
        for index, entry in enumerate(tasks):
            spec = self._task(entry, index, defaults)
            if any(s.name == spec.name for s in specs):
                raise self.fail(
                    ("tasks", index, "name"), f"the name {spec.name!r} is used by two tasks."
                )
            specs.append(spec)
        # The parsed content, not the raw text: comments and formatting do not change a set.
        # Keys as text first: YAML allows `{1: a, b: c}`, whose mixed keys cannot be sorted.
        content = json.dumps(_text_keys(data), sort_keys=True, default=str)
        digest = hashlib.sha256(content.encode()).hexdigest()
        return TaskSet(name, tuple(specs), self.where, digest, description)

    def _known(self, mapping: Mapping[Any, Any], allowed: Sequence[str], path: FieldPath) -> None:
        for key in mapping:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), list(allowed), n=1, cutoff=0.6)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise self.fail(
                    (*path, str(key)),
                    f"unknown field.{hint} Allowed here: {', '.join(allowed)}.",
                )

    def _text(self, mapping: Mapping[str, Any], key: str, path: FieldPath) -> str:
        value = mapping.get(key, "")
        if not isinstance(value, str):
            raise self.fail((*path, key), f"expected text, got {value!r}.")
        return value

    def _task(self, entry: Any, index: int, defaults: Mapping[str, Any]) -> TaskSpec:
        path: FieldPath = ("tasks", index)
        self.task_name = f"#{index + 1}"
        if not isinstance(entry, Mapping):
            raise self.fail(
                path, f"expected a task mapping with name and instruction, got {entry!r}."
            )
        name = entry.get("name")
        if not isinstance(name, str) or not TASK_NAME.match(name):
            raise self.fail(
                (*path, "name"),
                f"expected a name of letters, digits, '_', '.' or '-' (at most 64), got {name!r}.",
            )
        self.task_name = name
        self._known(entry, _TASK_FIELDS, path)
        merged = {**defaults, **entry}

        def where(key: str) -> FieldPath:
            # Errors point at the task's own field, or at the default it inherited.
            return ("defaults", key) if key in defaults and key not in entry else (*path, key)

        instructions = self._instructions(entry, path)
        max_steps, horizon = self._budget(entry, defaults, path)
        seeds = merged.get("seeds")
        if seeds is not None:
            if not isinstance(seeds, list) or not seeds:
                raise self.fail(where("seeds"), f"expected a list of seeds, got {seeds!r}.")
            if len(seeds) > MAX_TRIALS:
                raise self.fail(
                    where("seeds"),
                    f"lists {len(seeds)} seeds; at most {MAX_TRIALS} trials per instruction "
                    "are supported (MAX_TRIALS).",
                )
            seeds = tuple(
                self._int(s, (*where("seeds"), i), minimum=0) for i, s in enumerate(seeds)
            )
            if len(set(seeds)) != len(seeds):
                raise self.fail(where("seeds"), "lists a seed twice; each trial needs its own.")
        seed = self._int(merged.get("seed", 0), where("seed"), minimum=0)
        trials = merged.get("trials")
        trials = (
            None
            if trials is None
            else self._int(trials, where("trials"), minimum=1, maximum=MAX_TRIALS)
        )
        world_options = merged.get("world_options", {})
        if not isinstance(world_options, Mapping) or not all(
            isinstance(k, str) for k in world_options
        ):
            raise self.fail(
                where("world_options"),
                "expected a mapping of world arguments (tree_density: 0.05), got "
                f"{world_options!r}.",
            )
        not_text = _first_non_text_key(world_options)
        if not_text is not None:
            inner, key = not_text
            raise self.fail(
                (*where("world_options"), *inner),
                f"the key {key!r} is not text; world arguments are recorded as JSON, whose "
                "keys are text: quote it.",
            )
        visual_goal = self._visual_goal(merged.get("visual_goal"), where("visual_goal"))
        cond_scale = merged.get("cond_scale")
        if cond_scale is not None:
            if isinstance(cond_scale, bool) or not isinstance(cond_scale, int | float):
                raise self.fail(where("cond_scale"), f"expected a number, got {cond_scale!r}.")
            if not math.isfinite(cond_scale) or cond_scale < 0:
                raise self.fail(where("cond_scale"), f"expected a number >= 0, got {cond_scale}.")
            cond_scale = float(cond_scale)
        success = merged.get("success")
        for instruction in instructions:
            try:
                build_detector(success, instruction, allow_imports=self.allow_imports)
            except DetectorConfigError as exc:
                raise self.fail((*where("success"), *exc.path), exc.message) from None
            except DetectorError as exc:
                raise self.fail(where("success"), str(exc)) from None
        metrics = merged.get("metrics", {})
        try:
            check_metric_configs(metrics)
        except MetricConfigError as exc:
            raise self.fail((*where("metrics"), *exc.path), exc.message) from None
        prompt_latent, prompt_seed = self._prompt_latent(merged, where, visual_goal)
        return TaskSpec(
            name=name,
            instructions=instructions,
            max_steps=max_steps,
            success=success,
            seeds=seeds,
            seed=seed,
            trials=trials,
            world_options=dict(world_options),
            description=self._text(entry, "description", path),
            visual_goal=visual_goal,
            cond_scale=cond_scale,
            horizon=horizon,
            metrics=dict(metrics),
            prompt_latent=prompt_latent,
            prompt_seed=prompt_seed,
        )

    def _budget(
        self, entry: Mapping[str, Any], defaults: Mapping[str, Any], path: FieldPath
    ) -> tuple[int, int | None]:
        # (max_steps, horizon): one mapping gives one of the two; the task's own choice
        # replaces the defaults' (so max_steps in a task turns a horizon default off).
        for mapping, at in ((defaults, ("defaults",)), (entry, path)):
            if "max_steps" in mapping and "horizon" in mapping:
                raise self.fail(
                    (*at, "horizon"),
                    "give max_steps (a step budget that ends at the first success) or horizon "
                    "(exactly that many steps, success or not), not both.",
                )
        own = "max_steps" in entry or "horizon" in entry
        source, at = (entry, path) if own else (defaults, ("defaults",))
        if "horizon" in source:
            horizon = self._int(source["horizon"], (*at, "horizon"), minimum=1)
            return horizon, horizon
        if "max_steps" in source:
            return self._int(source["max_steps"], (*at, "max_steps"), minimum=1), None
        raise self.fail(
            (*path, "max_steps"),
            "missing; give the low-level step budget (e.g. 2000), or a fixed horizon "
            "(horizon: 3000) to run that many steps whatever happens.",
        )

    def _prompt_latent(
        self, merged: Mapping[str, Any], where: Any, visual_goal: str | None
    ) -> tuple[str, int | None]:
        latent = merged.get("prompt_latent", PROMPT_LATENTS[0])
        if latent not in PROMPT_LATENTS:
            raise self.fail(
                where("prompt_latent"),
                f"expected one of {', '.join(PROMPT_LATENTS)} (how STEVE-1's prior embeds the "
                f"text), got {latent!r}.",
            )
        seed = merged.get("prompt_seed")
        if latent == "zeros":
            if seed is not None:
                raise self.fail(
                    where("prompt_seed"),
                    "applies to prompt_latent: sampled only (the zero latent draws nothing).",
                )
            return latent, None
        if visual_goal is not None:
            raise self.fail(
                where("prompt_latent"),
                "a visual goal is embedded from its clip, not by the prior: drop prompt_latent.",
            )
        seed = 0 if seed is None else seed
        return latent, self._int(seed, where("prompt_seed"), minimum=0, maximum=MAX_SEED)

    def _visual_goal(self, value: Any, path: FieldPath) -> str | None:
        # "paper:<name>" as it is; a video file resolved against the task file's folder.
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.fail(
                path, f"expected 'paper:<name>' or a video file such as goal.mp4, got {value!r}."
            )
        if is_paper_spec(value):
            name = value[len(PAPER_SPEC_PREFIX) :]
            if name not in PAPER_VISUAL_PROMPT_NAMES:
                raise self.fail(
                    path,
                    f"the paper has no visual prompt {name!r}; choose one of "
                    f"{', '.join(PAPER_VISUAL_PROMPT_NAMES)}.",
                )
            return value
        video = Path(value).expanduser()
        if video.suffix.lower() not in VIDEO_SUFFIXES:
            raise self.fail(
                path,
                f"expected 'paper:<name>' or a video file ({', '.join(VIDEO_SUFFIXES)}), got "
                f"{value!r}.",
            )
        if not video.is_absolute():
            source = Path(self.where)
            video = (source.parent if source.is_file() else Path.cwd()) / video
        if not video.is_file():
            raise self.fail(path, f"the video {video} does not exist.")
        return str(video.resolve())

    def _instructions(self, entry: Mapping[str, Any], path: FieldPath) -> tuple[str, ...]:
        if ("instruction" in entry) == ("instructions" in entry):
            raise self.fail(
                (*path, "instruction"),
                "give exactly one of 'instruction' (text) or 'instructions' (a list of texts).",
            )
        if "instruction" in entry:
            values, key = [entry["instruction"]], "instruction"
        else:
            values, key = entry["instructions"], "instructions"
            if not isinstance(values, list) or not values:
                raise self.fail(
                    (*path, key), f"expected a non-empty list of texts, got {values!r}."
                )
        result = []
        for i, value in enumerate(values):
            at = (*path, key) if key == "instruction" else (*path, key, i)
            try:
                value = validate_instruction(value)
            except InvalidInstructionError as exc:
                raise self.fail(at, str(exc)) from None
            if value in result:
                raise self.fail(at, f"{value!r} is listed twice.")
            result.append(value)
        return tuple(result)

    def _int(self, value: Any, path: FieldPath, minimum: int, maximum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(path, f"expected an integer >= {minimum}, got {value!r}.")
        if maximum is not None and value > maximum:
            raise self.fail(path, f"expected an integer <= {maximum}, got {value!r}.")
        return value


def _text_keys(value: Any) -> Any:
    """Returns `value` with every mapping key as text (JSON's own conversion, done first).

    Text keys stay as they are, so the digests of existing task files do not change.
    """
    if isinstance(value, Mapping):
        return {
            key if isinstance(key, str) else str(key): _text_keys(v) for key, v in value.items()
        }
    if isinstance(value, list):
        return [_text_keys(item) for item in value]
    return value


def _first_non_text_key(value: Any, path: FieldPath = ()) -> tuple[FieldPath, Any] | None:
    """Returns where the first mapping key that is not text sits in `value`, and the key."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                return path, key
            found = _first_non_text_key(item, (*path, key))
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _first_non_text_key(item, (*path, index))
            if found is not None:
                return found
    return None


def parse_detector(
    text: str, instruction: str, where: str = "success", *, allow_imports: bool = False
) -> Any:
    """Builds the detector a YAML (or JSON) text describes, as a task's ``success`` field would.

    Args:
        text: A detector config as YAML or JSON, e.g. ``{type: inventory, items: dirt}`` or a
            skill kind such as ``wood``; see `steve1_env.tasks.detectors`.
        instruction: The instruction judged (for ``default``).
        where: Names the text in error messages.
        allow_imports: Accept ``custom`` detectors, whose functions are imported (their code
            runs): as for `parse_task_set`.

    Returns:
        The `steve1_env.success.SuccessDetector`.

    Raises:
        TaskFileError: If the text is not valid YAML or passes the task file limits.
        TaskSpecError: If the config is empty or invalid; the message names the field.
    """
    parser = _Parser(text, where, allow_imports)
    if parser.data is None:
        raise TaskSpecError(
            f"{where}: no detector config was given; give one such as "
            "{type: inventory, items: '*_log'} or a skill kind such as 'wood'."
        )
    try:
        return build_detector(parser.data, instruction, allow_imports=parser.allow_imports)
    except DetectorConfigError as exc:
        raise parser.fail(exc.path, exc.message) from None
    except DetectorError as exc:
        raise TaskSpecError(f"{where}: {exc}") from None


def parse_task_set(
    text: str,
    where: str = "<string>",
    default_name: str = "tasks",
    *,
    allow_imports: bool = False,
) -> TaskSet:
    """Parses a task set from YAML text.

    Args:
        text: The YAML document.
        where: Names the source in error messages (a path).
        default_name: The set's name when the file gives none.
        allow_imports: Accept ``custom`` detectors, whose import paths are imported when the
            set is checked and in every worker. Importing runs the module's code, so pass True
            only for text you trust as code.

    Raises:
        TaskFileError: If the text is not valid YAML or passes `MAX_TASK_FILE_BYTES`,
            `MAX_TASK_FILE_VALUES` (aliases expanded) or `MAX_TASK_FILE_DEPTH`; nothing else
            is looked at then.
        TaskSpecError: Naming the file, task, field and line of the first problem; also if
            the text names an import path and `allow_imports` is False (nothing is imported
            then), or passes `MAX_TRIALS` or ``success.MAX_DETECTOR_DEPTH``.
    """
    return _Parser(text, where, allow_imports).parse(default_name)
