import pytest

from steve1_env.errors import DependencyNotInstalledError
from steve1_env.optional import import_optional


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
