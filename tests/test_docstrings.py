"""Every public name of the package has a docstring (the API reference is built from them)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import steve1_env


def _public_modules():
    for info in pkgutil.walk_packages(steve1_env.__path__, "steve1_env."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            yield importlib.import_module(info.name)


def _undocumented():
    missing, checked = [], 0
    for module in [steve1_env, *_public_modules()]:
        if not inspect.getdoc(module):
            missing.append(module.__name__)
        for name, value in vars(module).items():
            if name.startswith("_") or getattr(value, "__module__", None) != module.__name__:
                continue
            if not (inspect.isclass(value) or inspect.isfunction(value)):
                continue
            checked += 1
            if not (value.__doc__ or "").strip():
                missing.append(f"{module.__name__}.{name}")
            if inspect.isclass(value):
                for attribute, member in vars(value).items():
                    if attribute.startswith("_"):
                        continue
                    if isinstance(member, staticmethod | classmethod):
                        member = member.__func__
                    function = member.fget if isinstance(member, property) else member
                    checked += inspect.isfunction(function)
                    if inspect.isfunction(function) and not (function.__doc__ or "").strip():
                        # An override documented by its base class is documented.
                        inherited = any(
                            (getattr(getattr(base, attribute, None), "__doc__", None) or "").strip()
                            for base in value.__mro__[1:]
                        )
                        if not inherited:
                            missing.append(f"{module.__name__}.{name}.{attribute}")
    return missing, checked


def test_every_public_name_has_a_docstring():
    missing, checked = _undocumented()
    assert missing == []
    assert checked > 200  # the walk really covered the package


CODE_WIDTH = 88
"""Characters a docs code block shows before it scrolls (Material's column, roughly)."""


def commented_lines_too_wide(text: str) -> list[str]:
    """The lines of fenced code blocks that carry a comment and pass `CODE_WIDTH`."""
    wide, in_code = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            in_code = not in_code
        elif in_code and len(line) > CODE_WIDTH and re.search(r"(^|\s)#\s", line):
            wide.append(f"{number}: {line}")
    return wide


def test_docs_code_blocks_do_not_hide_their_comments_past_the_edge():
    root = Path(__file__).resolve().parents[1]
    pages = [root / "README.md", *sorted((root / "docs").rglob("*.md"))]
    wide = {
        str(page.relative_to(root)): lines
        for page in pages
        if (lines := commented_lines_too_wide(page.read_text(encoding="utf-8")))
    }
    assert wide == {}, "put these comments on the line above"
    assert commented_lines_too_wide("```\n" + "x = 1" + " " * 80 + "# why\n```") != []
    assert commented_lines_too_wide("x" * 100 + "  # prose, not code") == []
