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
        max_steps: 2000                   # low-level steps per trial
        seeds: [0, 1, 2]                  # optional; else trial i uses seed + i
        seed: 0                           # optional base seed (default 0)
        trials: 3                         # optional default number of trials
        world_options: {tree_density: 0.05}

Errors name the file, the task, the field and its line. ``success`` takes the detector configs
of `steve1_env.tasks.detectors`; omitted, each instruction gets its skill's default detector.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from steve1_env.errors import DetectorError, InvalidInstructionError, TaskSpecError
from steve1_env.evaluation.records import TrialSpec
from steve1_env.instructions import validate_instruction
from steve1_env.tasks.detectors import DetectorConfigError, FieldPath, build_detector, format_path
from steve1_env.validation import positive_int

DEFAULT_TRIALS = 3
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
)
_DEFAULT_FIELDS = tuple(f for f in _TASK_FIELDS if f not in ("name", "instruction", "instructions"))


@dataclass(frozen=True)
class TaskSpec:
    """One task: instructions to pursue, how success is judged, and the trial budget.

    Attributes:
        name: Unique within its set; letters, digits, ``_``, ``.``, ``-``.
        instructions: The texts evaluated; each runs the same seeds.
        success: Detector config (see `steve1_env.tasks.detectors`), None for the defaults.
        max_steps: Low-level step budget of one trial.
        seeds: Explicit episode seeds, one per trial, or None for ``seed + trial``.
        seed: Base seed when `seeds` is None.
        trials: Default number of trials, or None for the run's default.
        world_options: Keyword arguments for the world.
        description: Free text for reports.
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

    def trial_specs(
        self, trials: int | None = None, max_steps: int | None = None
    ) -> list[TrialSpec]:
        """Returns this task's trials: every instruction times `trials` seeds.

        Args:
            trials: Trials per instruction; default the task's `trials`, else the number of
                its `seeds`, else `DEFAULT_TRIALS`.
            max_steps: Overrides the task's step budget.

        Raises:
            TaskSpecError: If more trials are asked than the task lists seeds.
        """
        if trials is not None:
            count = positive_int(trials, "trials", error=TaskSpecError)
        elif self.trials is not None:
            count = self.trials
        else:
            count = len(self.seeds) if self.seeds else DEFAULT_TRIALS
        if self.seeds is not None and count > len(self.seeds):
            raise TaskSpecError(
                f"Task {self.name!r} lists {len(self.seeds)} seeds but {count} trials were "
                "asked; add seeds to the task or ask for fewer trials."
            )
        seeds = (
            self.seeds[:count]
            if self.seeds is not None
            else tuple(self.seed + i for i in range(count))
        )
        budget = (
            self.max_steps
            if max_steps is None
            else positive_int(max_steps, "max_steps", error=TaskSpecError)
        )
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
            )
            for index, instruction in enumerate(self.instructions)
            for trial, seed in enumerate(seeds)
        ]


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
        self, trials: int | None = None, max_steps: int | None = None
    ) -> list[TrialSpec]:
        """Returns every task's trials, task by task (see `TaskSpec.trial_specs`)."""
        try:
            return [spec for task in self.tasks for spec in task.trial_specs(trials, max_steps)]
        except TaskSpecError as exc:
            raise TaskSpecError(f"{self.source}: {exc}") from None


def builtin_task_sets() -> list[str]:
    """Returns the names of the task sets shipped with the package."""
    folder = resources.files("steve1_env.tasks") / "sets"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_task_set(source: str | os.PathLike[str]) -> TaskSet:
    """Loads a built-in task set by name or a task set file by path.

    Args:
        source: A built-in name (``"quick_harvest"``, ``"early_game"``) or a ``.yaml`` path.

    Raises:
        TaskSpecError: If the set is unknown or malformed; the message names the file, task,
            field and line.
    """
    text_source = str(source)
    path = Path(text_source).expanduser()
    if path.is_file():
        return parse_task_set(path.read_text(encoding="utf-8"), str(path), path.stem)
    if not isinstance(source, str) or text_source.endswith((".yaml", ".yml")) or "/" in text_source:
        raise TaskSpecError(f"Task set file {text_source!r} does not exist.")
    names = builtin_task_sets()
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


# ----------------------------------------------------------------------------- parsing


class _Lines:
    """Field path -> line number of a parsed YAML document, for error messages."""

    def __init__(self, root: Any, where: str) -> None:
        self.where = where
        self.lines: dict[FieldPath, int] = {}
        if root is not None:
            self._walk(root, ())

    def _walk(self, node: Any, path: FieldPath, parents: frozenset[int] = frozenset()) -> None:
        if id(node) in parents:
            raise TaskSpecError(
                f"{self.where}, line {node.start_mark.line + 1}: a YAML alias refers to a node "
                f"that contains it{self._under(path)}; task files cannot be recursive."
            )
        parents = parents | {id(node)}
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
                self._walk(value_node, field_path, parents)
                # A field's errors point at its key's line, where a reader looks for it.
                self.lines[field_path] = key_node.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self._walk(item, (*path, index), parents)

    @staticmethod
    def _under(path: FieldPath) -> str:
        return f" under {format_path(path)}" if path else ""

    def line(self, path: FieldPath) -> int | None:
        while path not in self.lines and path:
            path = path[:-1]
        return self.lines.get(path)


class _Parser:
    def __init__(self, text: str, where: str) -> None:
        self.where = where
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
            self.data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f", line {mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise TaskSpecError(f"{where}{at}: not valid YAML ({problem}).") from exc
        self.lines = _Lines(root, where)
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
        content = json.dumps(data, sort_keys=True, default=str)
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
        max_steps = merged.get("max_steps")
        if max_steps is None:
            raise self.fail(
                (*path, "max_steps"), "missing; give the low-level step budget (e.g. 2000)."
            )
        max_steps = self._int(max_steps, where("max_steps"), minimum=1)
        seeds = merged.get("seeds")
        if seeds is not None:
            if not isinstance(seeds, list) or not seeds:
                raise self.fail(where("seeds"), f"expected a list of seeds, got {seeds!r}.")
            seeds = tuple(
                self._int(s, (*where("seeds"), i), minimum=0) for i, s in enumerate(seeds)
            )
            if len(set(seeds)) != len(seeds):
                raise self.fail(where("seeds"), "lists a seed twice; each trial needs its own.")
        seed = self._int(merged.get("seed", 0), where("seed"), minimum=0)
        trials = merged.get("trials")
        trials = None if trials is None else self._int(trials, where("trials"), minimum=1)
        world_options = merged.get("world_options", {})
        if not isinstance(world_options, Mapping) or not all(
            isinstance(k, str) for k in world_options
        ):
            raise self.fail(
                where("world_options"),
                "expected a mapping of world arguments (tree_density: 0.05), got "
                f"{world_options!r}.",
            )
        success = merged.get("success")
        for instruction in instructions:
            try:
                build_detector(success, instruction)
            except DetectorConfigError as exc:
                raise self.fail((*where("success"), *exc.path), exc.message) from None
            except DetectorError as exc:
                raise self.fail(where("success"), str(exc)) from None
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
        )

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

    def _int(self, value: Any, path: FieldPath, minimum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(path, f"expected an integer >= {minimum}, got {value!r}.")
        return value


def parse_task_set(text: str, where: str = "<string>", default_name: str = "tasks") -> TaskSet:
    """Parses a task set from YAML text.

    Args:
        text: The YAML document.
        where: Names the source in error messages (a path).
        default_name: The set's name when the file gives none.

    Raises:
        TaskSpecError: Naming the file, task, field and line of the first problem.
    """
    return _Parser(text, where).parse(default_name)
