"""`steve1-env doctor`: what is installed and usable, and how to fix what is not."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from steve1_env.download import CHECKSUMS_FILE, check_file, read_checksums, with_mirror
from steve1_env.errors import ConfigurationError, WeightsError
from steve1_env.optional import install_command
from steve1_env.prompt.visual_prompts import check_visual_prompts
from steve1_env.weights import OFFICIAL_FILES, FileSpec, file_digests, weights_dir


@dataclass(frozen=True)
class Check:
    """One line of the report.

    Attributes:
        name: What was checked.
        ok: Whether it is installed and usable.
        detail: What was found.
        fix: How to fix it ("" when ok).
        broken: Something present is damaged or unsafe (a weight file that fails its checks,
            an unreadable ``checksums.json``), not merely missing: ``doctor`` then exits 1.
        piece: The piece of `PIECES` this check belongs to.
    """

    name: str
    ok: bool
    detail: str
    fix: str = ""
    broken: bool = False
    piece: str = ""


PIECES: dict[str, str] = {
    "cuda": "a CUDA build of torch with a GPU",
    "minerl": "the MineRL world: MineRL, Java 8 and xvfb-run",
    "minestudio": "the MineStudio world",
    "steve1-official": "the official STEVE-1 package",
    "weights": "the four official weight files",
    "visual-prompts": "the paper's visual prompts (visual_prompts.npz)",
}
"""The pieces a user can require (``steve1-env doctor --require``), with what each is."""


def missing_pieces(checks: list[Check], required: Sequence[str]) -> list[str]:
    """Returns the pieces of `required` that some check finds missing or broken, in order.

    Raises:
        ConfigurationError: If `required` names a piece not in `PIECES`.
    """
    unknown = [piece for piece in required if piece not in PIECES]
    if unknown:
        raise ConfigurationError(
            f"Unknown pieces {', '.join(unknown)}; the pieces to require are {', '.join(PIECES)}."
        )
    return [p for p in required if any(c.piece == p and not c.ok for c in checks)]


def java_version() -> str | None:
    """Returns the version ``java -version`` reports, or None without Java."""
    java = shutil.which("java")
    if java is None:
        return None
    try:
        result = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "([^"]+)"', result.stderr + result.stdout)
    return match.group(1) if match else "unknown"


def _module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def run_checks(
    directory: str | Path | None = None, *, specs: Mapping[str, FileSpec] | None = None
) -> list[Check]:
    """Checks the pieces each backend needs.

    Each weight file gets the checks of ``steve1-env weights verify`` (`check_file`):
    checksums and content (size, not markup, loads safely as what it is). An unchanged file
    that passed before is not read again: its digests and its content verdict are remembered
    in the user cache. `specs` overrides `steve1_env.weights.OFFICIAL_SPECS`.
    """
    import torch

    checks = []
    cuda = torch.cuda.is_available()
    gpu = f"available: {torch.cuda.get_device_name(0)}" if cuda else "not available"
    checks.append(Check("torch", True, torch.__version__))
    checks.append(Check(
        "CUDA", cuda, gpu,
        "" if cuda else "for a GPU install a CUDA build of torch (the CPU works, slowly)",
        piece="cuda",
    ))  # fmt: skip
    version = java_version()
    java8 = version is not None and (version.startswith("1.8") or version == "8")
    checks.append(Check(
        "java (MineRL)", java8,
        "not found" if version is None else f"version {version}",
        "" if java8 else "MineRL 1.0 needs Java 8 (e.g. Eclipse Temurin 8; Debian 12 has none): "
        "install it and put it first on PATH", piece="minerl",
    ))  # fmt: skip
    xvfb = shutil.which("xvfb-run")
    checks.append(Check(
        "xvfb-run (MineRL)", xvfb is not None, xvfb or "not found",
        "" if xvfb else "install xvfb (`apt-get install xvfb`) and run MineRL under `xvfb-run`",
        piece="minerl",
    ))  # fmt: skip
    for name, module, piece, fix in (
        ("MineRL", "minerl", "minerl",
         "pip install git+https://github.com/minerllabs/minerl@v1.0.2 (Java 8 first on PATH), "
         f"then {install_command('minerl')}"),
        ("gym (MineRL's API)", "gym", "minerl", install_command("minerl")),
        ("MineStudio", "minestudio", "minestudio", install_command("minestudio")),
        ("official steve1 package", "steve1", "steve1-official",
         "git clone https://github.com/Shalev-Lifshitz/STEVE-1 && pip install -e STEVE-1"),
    ):  # fmt: skip
        found = _module(module)
        problem = _import_problem(module) if found else "not installed"
        checks.append(Check(name, problem is None, problem or "installed and importable",
                            "" if problem is None else fix, piece=piece))  # fmt: skip
    checks.extend(_weight_checks(weights_dir(directory), specs))
    return checks


def _weight_checks(folder: Path, specs: Mapping[str, FileSpec] | None) -> list[Check]:
    checks = []
    try:
        recorded = read_checksums(folder)
    except WeightsError as exc:  # reported; the files still get their content checks
        recorded = {}
        fix = f"correct or delete {folder / CHECKSUMS_FILE}"
        checks.append(
            Check(f"weights: {CHECKSUMS_FILE}", False, str(exc), fix, broken=True, piece="weights")
        )
    # Memoised digests and content verdicts: a second run reads no unchanged weight file.
    statuses = [
        check_file(folder / name, recorded, hasher=file_digests, specs=specs,
                   reuse_content_check=True)
        for name in OFFICIAL_FILES.values()
    ]  # fmt: skip
    # A file the Hub mirror holds is not missing: the loaders read it from there.
    for status in with_mirror(folder, statuses):
        name, path = status.name, folder / status.name
        if status.ok and not status.present:
            checks.append(Check(f"weights: {name}", True, status.detail, piece="weights"))
        elif not status.present:
            checks.append(Check(f"weights: {name}", False, f"missing from {folder}",
                                "steve1-env weights download", piece="weights"))  # fmt: skip
        elif status.ok:
            detail = f"{path}: {status.detail}"
            checks.append(Check(f"weights: {name}", True, detail, piece="weights"))
        else:
            fix = f"delete {path} and run `steve1-env weights download`"
            checks.append(
                Check(f"weights: {name}", False, status.detail, fix, broken=True, piece="weights")
            )
    checks.append(_visual_prompts_check(folder))
    return checks


def _visual_prompts_check(folder: Path) -> Check:
    """The paper's visual prompts: optional, so only a damaged file is broken."""
    status = check_visual_prompts(folder, memoised=True)
    name = f"weights: {status.name}"
    fetch = "steve1_env.prompt.visual_prompts.download_visual_prompts()"  # the CLI rewords it
    piece = "visual-prompts"
    if not status.present:
        detail = f"missing from {folder} (optional: paper:<name> goals)"
        return Check(name, False, detail, fetch, piece=piece)
    if status.ok:
        return Check(name, True, f"{folder / status.name}: {status.detail}", piece=piece)
    fix = f"delete {folder / status.name} and run {fetch}"
    return Check(name, False, status.detail, fix, broken=True, piece=piece)


def _import_problem(module: str) -> str | None:
    """Imports `module` in a fresh interpreter; returns the error's last line, or None."""
    try:
        result = subprocess.run(
            [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120
        )
    except subprocess.TimeoutExpired:
        return "importing it took over 2 minutes"
    if result.returncode == 0:
        return None
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    return f"installed but fails to import: {lines[-1] if lines else 'unknown error'}"


def report(checks: list[Check], required: Sequence[str] = ()) -> str:
    """Formats the checks as the command prints them, ending with the `required` pieces missing.

    Raises:
        ConfigurationError: If `required` names a piece not in `PIECES`.
    """
    lines = []
    for check in checks:
        mark = "ok " if check.ok else "-- "
        lines.append(f"{mark}{check.name:26} {check.detail}")
        if check.fix:
            lines.append(f"{'':30}fix: {check.fix}")
    lines.append(
        "The synthetic world with policy='scripted' (or weights='random') needs none of the above."
    )
    missing = missing_pieces(checks, required)
    if required:
        lines.append(
            f"required but missing: {', '.join(missing)} (see the fixes above)"
            if missing
            else f"every required piece is there: {', '.join(required)}"
        )
    return "\n".join(lines)
