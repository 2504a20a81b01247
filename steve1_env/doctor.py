"""`steve1-env doctor`: what is installed and usable, and how to fix what is not."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from steve1_env.weights import OFFICIAL_FILES, weights_dir


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    name: str
    ok: bool
    detail: str
    fix: str = ""


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


def run_checks(directory: str | Path | None = None) -> list[Check]:
    """Checks the pieces each backend needs."""
    import torch

    checks = []
    cuda = torch.cuda.is_available()
    gpu = f"available: {torch.cuda.get_device_name(0)}" if cuda else "not available"
    checks.append(Check(
        "torch", True, f"{torch.__version__}; CUDA {gpu}",
        "" if cuda else "for a GPU install a CUDA build of torch (the CPU works, slowly)",
    ))  # fmt: skip
    version = java_version()
    java8 = version is not None and (version.startswith("1.8") or version == "8")
    checks.append(Check(
        "java (MineRL)", java8,
        "not found" if version is None else f"version {version}",
        "" if java8 else "MineRL 1.0 needs Java 8 (e.g. Eclipse Temurin 8; Debian 12 has none): "
        "install it and put it first on PATH",
    ))  # fmt: skip
    xvfb = shutil.which("xvfb-run")
    checks.append(Check(
        "xvfb-run (MineRL)", xvfb is not None, xvfb or "not found",
        "" if xvfb else "install xvfb (`apt-get install xvfb`) and run MineRL under `xvfb-run`",
    ))  # fmt: skip
    for name, module, fix in (
        ("MineRL", "minerl", "pip install git+https://github.com/minerllabs/minerl@v1.0.2"),
        ("MineStudio", "minestudio", 'pip install "steve1-env[minestudio]"'),
        ("official steve1 package", "steve1",
         "git clone https://github.com/Shalev-Lifshitz/STEVE-1 && pip install -e STEVE-1"),
    ):  # fmt: skip
        found = _module(module)
        checks.append(Check(name, found, "installed" if found else "not installed",
                            "" if found else fix))  # fmt: skip
    folder = weights_dir(directory)
    recorded_path = folder / "checksums.json"
    for name in OFFICIAL_FILES.values():
        present = (folder / name).is_file()
        detail = f"{folder / name}" if present else f"missing from {folder}"
        if present and not recorded_path.is_file() and name != "attn.pth":
            detail += " (no recorded checksum: `steve1-env weights verify` checks what it can)"
        checks.append(Check(f"weights: {name}", present, detail,
                            "" if present else "steve1-env weights download"))  # fmt: skip
    return checks


def report(checks: list[Check]) -> str:
    """Formats the checks as the command prints them."""
    lines = []
    for check in checks:
        mark = "ok " if check.ok else "-- "
        lines.append(f"{mark}{check.name:26} {check.detail}")
        if check.fix:
            lines.append(f"{'':30}fix: {check.fix}")
    lines.append(
        "The synthetic world with policy='scripted' (or weights='random') needs none of the above."
    )
    return "\n".join(lines)
