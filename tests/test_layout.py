"""The package's layout: no import cycles, the layers of pyproject.toml, one home per name."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "steve1_env"

# import-linter 2.16 (the dev extra) needs Python 3.11 (it reads tomllib); CI runs 3.11+.
needs_import_linter = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="import-linter 2.16 needs Python 3.11"
)


def lint_imports(cwd: Path, *contracts: str) -> subprocess.CompletedProcess[str]:
    """Runs import-linter's CLI on the pyproject.toml and the steve1_env package in `cwd`."""
    script = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert script, "lint-imports is missing: pip install -e '.[dev]' installs import-linter"
    selected = [arg for contract in contracts for arg in ("--contract", contract)]
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run(
        [script, "--no-cache", *selected],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def contract(contract_id: str) -> dict:
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    (found,) = [c for c in config["tool"]["importlinter"]["contracts"] if c["id"] == contract_id]
    return found


def fake_package(tmp_path: Path, modules: dict[str, str]) -> Path:
    """Writes a package named steve1_env under `tmp_path`, beside a copy of pyproject.toml.

    The copy carries the real contracts, so the tests below run exactly what CI runs, on a
    package whose imports they choose.
    """
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for name, source in {"__init__": "", **modules}.items():
        path = tmp_path / "steve1_env" / (name.replace(".", "/") + ".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
    return tmp_path


@needs_import_linter
def test_the_package_keeps_its_import_contracts():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


@needs_import_linter
@pytest.mark.parametrize("cyclic", [True, False])
def test_the_acyclic_contract_fails_on_a_cycle_between_packages(tmp_path, cyclic):
    # worlds/ imports agent/ and, when cyclic, agent/ imports worlds/ back: a package cycle
    # without any module cycle, the kind that tasks/ and evaluation/ had.
    modules = {
        "agent.__init__": "",
        "agent.policy": "import steve1_env.worlds.base\n" if cyclic else "",
        "worlds.__init__": "",
        "worlds.base": "",
        "worlds.synthetic": "import steve1_env.agent.policy\n",
    }
    result = lint_imports(fake_package(tmp_path, modules), "acyclic")
    assert result.returncode == (1 if cyclic else 0), result.stdout + result.stderr
    if cyclic:
        assert "No cycles are allowed in steve1_env." in result.stdout


@needs_import_linter
def test_the_acyclic_contract_looks_inside_subpackages(tmp_path):
    modules = {
        "worlds.__init__": "",
        "worlds.minerl.__init__": "",
        "worlds.minerl.launch": "from steve1_env.worlds import protocol\n",
        "worlds.protocol": "from steve1_env.worlds.minerl import launch\n",
    }
    result = lint_imports(fake_package(tmp_path, modules), "acyclic")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "No cycles are allowed in steve1_env.worlds." in result.stdout


def layer_modules() -> list[str]:
    names = []
    for layer in contract("layers")["layers"]:
        for name in re.split(r"[|:]", layer):
            name = name.strip()
            if not name.startswith("("):  # optional layers may be absent
                names.append(name)
    return names


@needs_import_linter
@pytest.mark.parametrize("upward", [True, False])
def test_the_layers_contract_fails_on_an_upward_import(tmp_path, upward):
    names = layer_modules()
    assert names[0] == "cli" and names[-1] == "errors"
    modules = {name: "" for name in names}
    modules["env"] = "import steve1_env.errors\n"
    if upward:
        modules["errors"] = "import steve1_env.env\n"
    result = lint_imports(fake_package(tmp_path, modules), "layers")
    assert result.returncode == (1 if upward else 0), result.stdout + result.stderr
    if upward:
        assert "steve1_env.errors is not allowed to import steve1_env.env" in result.stdout


@needs_import_linter
def test_the_layers_contract_places_every_module(tmp_path):
    # exhaustive: a new top-level module has to be given its layer.
    modules = {name: "" for name in layer_modules()}
    modules["helpers"] = ""
    result = lint_imports(fake_package(tmp_path, modules), "layers")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "steve1_env.helpers" in result.stdout


@needs_import_linter
def test_every_module_of_the_package_is_in_a_layer():
    declared = {
        re.sub(r"[()]", "", n).strip()
        for c in contract("layers")["layers"]
        for n in re.split(r"[|:]", c)
    }
    present = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    present |= {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert present <= declared, sorted(present - declared)


def test_moved_names_keep_their_earlier_import_paths():
    from steve1_env import instructions, skill_kinds
    from steve1_env.evaluation import records
    from steve1_env.tasks import prompts, trials

    assert records.TrialSpec is trials.TrialSpec
    assert records.trial_key is trials.trial_key
    assert prompts.skill_kind is skill_kinds.skill_kind
    assert prompts.matching_kinds is skill_kinds.matching_kinds
    assert prompts.PAPER_PROMPTS is skill_kinds.PAPER_PROMPTS
    assert prompts.PAPER_COND_SCALE == skill_kinds.PAPER_COND_SCALE
    assert prompts.normalize_instruction is instructions.normalize_instruction


def loaded_after(statement: str, prefixes: tuple[str, ...]) -> list[str]:
    listed = f"sorted(m for m in sys.modules if m.startswith({prefixes!r}))"
    code = f"import sys; {statement}; print({listed})"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return ast.literal_eval(result.stdout.strip())


def test_success_loads_no_task_module_and_task_sets_load_no_evaluation():
    # The two cycles that were: success <-> tasks, tasks <-> evaluation.
    assert loaded_after("import steve1_env.success", ("steve1_env.tasks",)) == []
    assert (
        loaded_after("import steve1_env.tasks.spec", ("steve1_env.evaluation", "steve1_env.env"))
        == []
    )


def test_closed_error_is_gymnasiums_closed_error_and_not_reset_needed():
    import gymnasium

    import steve1_env
    from steve1_env.errors import ClosedError, ResetNeededError, Steve1EnvError

    assert steve1_env.ClosedError is ClosedError and "ClosedError" in steve1_env.__all__
    assert issubclass(ClosedError, Steve1EnvError)
    assert issubclass(ClosedError, gymnasium.error.ClosedEnvironmentError)
    assert not issubclass(ClosedError, ResetNeededError)
    assert not issubclass(ResetNeededError, gymnasium.error.ClosedEnvironmentError)


def test_no_library_message_reports_a_closed_object_as_another_error():
    # "closed" messages are raised as ClosedError; the package's other errors keep their
    # meaning (a builtin such as OSError for a closed connection is not about our objects).
    from steve1_env import errors

    raised_as = re.compile(r"raise (\w+)\(\s*f?\"[^\"]*\bclosed\b", re.S)
    found = []
    for path in PACKAGE.rglob("*.py"):
        for error in raised_as.findall(path.read_text(encoding="utf-8")):
            if hasattr(errors, error):
                found.append((path.relative_to(ROOT).as_posix(), error))
    assert found and {error for _, error in found} == {"ClosedError"}, found


def cli_flags() -> set[str]:
    """Every option the ``steve1-env`` parser and its subcommands define."""
    import argparse

    from steve1_env.cli import build_parser

    flags, parsers = set(), [build_parser()]
    while parsers:
        parser = parsers.pop()
        for action in parser._actions:
            flags.update(s for s in action.option_strings if s.startswith("--"))
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
    return flags


def flags_in_messages(source: str, flags: set[str]) -> list[tuple[int, str]]:
    """The `flags` that `source`'s string literals spell out, docstrings left out."""
    tree = ast.parse(source)
    docstrings = {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }
    return [
        (node.lineno, flag)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        if id(node) not in docstrings
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", node.value)
        if flag in flags
    ]


def test_library_messages_name_python_arguments_not_cli_flags():
    # Flags live in cli.py, which rewords library messages for the command line (another
    # program's flags, such as `ray start --head`, may be quoted).
    flags = cli_flags()
    assert {"--resume", "--out", "--dir", "--world-option", "--executor"} <= flags
    found = [
        f"{path.relative_to(ROOT)}:{line}: {flag}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != PACKAGE / "cli.py"
        for line, flag in flags_in_messages(path.read_text(encoding="utf-8"), flags)
    ]
    assert found == []


def test_the_flag_scan_sees_messages_and_skips_docstrings():
    source = (
        '"""Run with --resume."""\n\ndef f():\n    """--out DIR."""\n'
        '    raise E(f"pass --resume {x}, or `ray start --head`")\n'
    )
    assert flags_in_messages(source, {"--resume", "--out"}) == [(5, "--resume")]
