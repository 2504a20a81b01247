import re
from pathlib import Path

import pytest

from steve1_env.errors import DependencyNotInstalledError
from steve1_env.optional import import_optional, install_command, require_installed


def test_present_module_is_returned():
    assert import_optional("json", "dev", "a test").__name__ == "json"


def test_missing_module_names_the_install_command():
    with pytest.raises(DependencyNotInstalledError) as caught:
        import_optional(
            "no_such_module_xyz", "minerl", "world='minerl'", hint="It also needs Java 8."
        )
    message = str(caught.value)
    assert 'pip install "steve1-env[minerl]"' in message
    assert "world='minerl'" in message and message.endswith("It also needs Java 8.")
    assert isinstance(caught.value, ImportError)
    assert isinstance(caught.value.__cause__, ImportError)


def test_the_hint_works_from_an_index_and_from_a_clone():
    with pytest.raises(DependencyNotInstalledError) as caught:
        require_installed("no_such_module_xyz", "minestudio", "world='minestudio'")
    message = str(caught.value)
    assert "Install the 'minestudio' extra:" in message
    assert 'pip install "steve1-env[minestudio]"' in message
    assert 'pip install -e ".[minestudio]"' in message
    with pytest.raises(DependencyNotInstalledError) as caught:
        import_optional("no_such_module_xyz", "sb3", "The SB3 example")
    assert install_command("sb3") in str(caught.value)


def test_a_module_no_extra_brings_gets_its_own_hint_only():
    with pytest.raises(DependencyNotInstalledError) as caught:
        import_optional("no_such_module_xyz", None, "policy='x'", hint="Clone it and pip install.")
    message = str(caught.value)
    assert "steve1-env[" not in message and "extra" not in message
    assert message.endswith(
        "failed to import (No module named 'no_such_module_xyz'). Clone it and pip install."
    )


ROOT = Path(__file__).resolve().parents[1]


def declared_extras():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


CALL = re.compile(r'(?:import_optional|require_installed)\(\s*"([\w.]+)",\s*(?:"(\w+)"|None)')


def test_every_extra_named_in_a_hint_exists_and_brings_the_module():
    extras = declared_extras()
    sources = [*ROOT.joinpath("steve1_env").rglob("*.py"), *ROOT.joinpath("examples").glob("*.py")]
    calls = {match.groups() for path in sources for match in CALL.finditer(path.read_text())}
    assert ("ray", "ray") in calls and ("stable_baselines3", "sb3") in calls
    for module, extra in calls:
        if extra is None:
            continue
        assert extra in extras, f"{module!r} is hinted with the extra {extra!r}, which is missing"
        top = module.split(".")[0]
        # The minerl extra brings gym only: MineRL itself installs from git (the hint says so).
        if top != "minerl":
            names = [re.split(r"[<>=!~;\[ ]", req)[0].replace("-", "_") for req in extras[extra]]
            assert top in names, f"the {extra!r} extra does not install {top!r}"


def test_each_extra_installs_something_the_package_uses():
    extras = declared_extras()
    assert all(extras.values()), "an empty extra installs nothing"
    assert "steve1" not in extras  # the official package is not on an index
    assert not any("shimmy" in req for reqs in extras.values() for req in reqs)  # unused
    code = "".join(p.read_text() for p in ROOT.joinpath("steve1_env").rglob("*.py"))
    assert 'import_optional("gym", "minerl"' in code  # what the minerl extra is for
