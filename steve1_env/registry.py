"""Name -> factory registries for worlds, skill policies and prompt encoders.

Built-in entries are registered as ``"module:attribute"`` strings and imported only when
used, so importing `steve1_env` never imports an optional backend.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from steve1_env.errors import ConfigurationError, UnknownNameError

_log = logging.getLogger(__name__)

Factory = Callable[..., Any]
_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class Registry:
    """Maps names to factories that build instances of one kind of component.

    Args:
        kind: What the registry holds, as users say it ("world", "policy"); used in errors.
        plural: The plural of `kind`.
        register_hint: The function users call to add their own entry; used in errors.
    """

    def __init__(self, kind: str, plural: str, register_hint: str) -> None:
        self.kind = kind
        self.plural = plural
        self.register_hint = register_hint
        self._factories: dict[str, Factory | str] = {}

    def register(self, name: str, factory: Factory | str, *, overwrite: bool = False) -> None:
        """Adds a factory under `name`.

        Args:
            name: The name users pass (for example ``world="synthetic"``).
            factory: A callable returning an instance, or a ``"module:attribute"`` path to one,
                imported on first use.
            overwrite: Replace an existing entry instead of raising.

        Raises:
            ConfigurationError: If the name is taken and `overwrite` is False, or is not a
                non-empty string.
        """
        if not isinstance(name, str) or not name.strip():
            raise ConfigurationError(
                f"A {self.kind} name must be a non-empty string, got {name!r}."
            )
        if name in self._factories and not overwrite:
            raise ConfigurationError(
                f"A {self.kind} named {name!r} is already registered; pass overwrite=True "
                "to replace it or choose another name."
            )
        self._factories[name] = factory

    def names(self) -> list[str]:
        """Returns the registered names, sorted."""
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def factory(self, name: str) -> Factory:
        """Returns the factory registered under `name`, importing it if needed.

        A name that is not registered but reads ``"package.module:factory"`` is imported.

        Raises:
            UnknownNameError: If the name is not registered; the message suggests close names.
        """
        if name not in self._factories:
            if isinstance(name, str) and _IMPORT_PATH.match(name):
                # "package.module:factory" needs no registration, so worker processes and Ray
                # actors, which start without the caller's registrations, can build it.
                return self._imported(name)
            raise UnknownNameError(self._unknown_message(name))
        entry = self._factories[name]
        if isinstance(entry, str):
            module_name, _, attribute = entry.partition(":")
            entry = getattr(importlib.import_module(module_name), attribute)
            self._factories[name] = entry
        return entry

    def _imported(self, path: str) -> Factory:
        module_name, _, attribute = path.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise UnknownNameError(
                f"The {self.kind} {path!r} looks like an import path but cannot be imported "
                f"({type(exc).__name__}: {exc}). Check the module is importable here: "
                "installed, or on PYTHONPATH (the current directory is searched only with "
                "`python -m steve1_env.cli`, not the `steve1-env` script)."
            ) from exc
        if not callable(factory):
            raise ConfigurationError(f"The {self.kind} factory {path!r} is not callable.")
        return factory

    def check_arguments(
        self, name: str, arguments: Mapping[str, Any], /, *, partial: bool = False
    ) -> None:
        """Checks that the factory of `name` accepts `arguments`, without calling it.

        Only the factory's signature is checked (the names of the arguments, not their
        values), so nothing is built or started; a factory taking ``**kwargs`` accepts any
        name.

        Args:
            name: The registered name or import path.
            arguments: The keyword arguments the factory would get.
            partial: Accept required arguments left out (others may add them later).

        Raises:
            UnknownNameError: If the name is not registered.
            ConfigurationError: If the factory does not accept `arguments`; the message lists
                the parameters it takes.
        """
        self._bind(name, self.factory(name), dict(arguments), partial)

    def check_backend(self, name: str, arguments: Mapping[str, Any], /) -> None:
        """Checks that what the component of `name` needs is installed, without building it.

        A factory may offer ``check_backend(arguments)`` (the MineRL and MineStudio worlds
        do); others need nothing checked.

        Raises:
            UnknownNameError: If the name is not registered.
            DependencyNotInstalledError: If a backend the component needs is missing.
        """
        check = getattr(self.factory(name), "check_backend", None)
        if callable(check):
            check(dict(arguments))

    def make(self, name: str, /, **kwargs: Any) -> Any:
        """Builds the component registered under `name` with `kwargs`.

        Raises:
            UnknownNameError: If the name is not registered.
            ConfigurationError: If the factory does not accept `kwargs`; the message lists the
                parameters it takes.
        """
        factory = self.factory(name)
        self._bind(name, factory, kwargs)
        _log.debug("building the %s %r (arguments: %s)", self.kind, name, sorted(kwargs))
        started = time.perf_counter()
        component = factory(**kwargs)
        _log.info("built the %s %r in %.2f s", self.kind, name, time.perf_counter() - started)
        return component

    def _bind(
        self, name: str, factory: Factory, kwargs: dict[str, Any], partial: bool = False
    ) -> None:
        try:
            signature = inspect.signature(factory)
        except (TypeError, ValueError):  # some builtins have no signature: the call decides
            return
        try:
            (signature.bind_partial if partial else signature.bind)(**kwargs)
        except TypeError as exc:
            accepted = ", ".join(
                p.name for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD
            )
            raise ConfigurationError(
                f"The {self.kind} {name!r} cannot take these arguments ({exc}). It accepts: "
                f"{accepted or '(nothing)'}."
            ) from exc

    def _unknown_message(self, name: object) -> str:
        known = self.names()
        close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        return (
            f"Unknown {self.kind} {name!r}.{hint} Known {self.plural}: "
            f"{', '.join(known) or '(none)'}. Register your own with "
            f"{self.register_hint}(name, factory), or pass an import path "
            "'package.module:factory'."
        )


WORLDS = Registry("world", "worlds", "steve1_env.register_world")
POLICIES = Registry("policy", "policies", "steve1_env.register_policy")
PROMPT_ENCODERS = Registry(
    "prompt encoder", "prompt encoders", "steve1_env.register_prompt_encoder"
)

WORLDS.register("synthetic", "steve1_env.worlds.synthetic:SyntheticWorld")
WORLDS.register("minerl", "steve1_env.worlds.minerl:MineRLWorld")
WORLDS.register("minestudio", "steve1_env.worlds.minestudio:MineStudioWorld")
POLICIES.register("scripted", "steve1_env.agent.scripted:ScriptedPolicy")
POLICIES.register("random", "steve1_env.agent.random_policy:RandomPolicy")
POLICIES.register("steve1", "steve1_env.agent.native:NativeSteve1Policy")
POLICIES.register("steve1-official", "steve1_env.agent.official:OfficialSteve1Policy")
PROMPT_ENCODERS.register("hash", "steve1_env.prompt.hash_encoder:HashPromptEncoder")
PROMPT_ENCODERS.register("steve1", "steve1_env.prompt.steve1_encoder:Steve1PromptEncoder")
PROMPT_ENCODERS.register("precomputed", "steve1_env.prompt.precomputed:PrecomputedPromptEncoder")
PROMPT_ENCODERS.register("steve1-official", "steve1_env.prompt.official:OfficialPromptEncoder")


def register_world(name: str, factory: Factory | str, *, overwrite: bool = False) -> None:
    """Registers a world factory; it receives the env's ``world_kwargs`` as keyword arguments."""
    WORLDS.register(name, factory, overwrite=overwrite)


def register_policy(name: str, factory: Factory | str, *, overwrite: bool = False) -> None:
    """Registers a skill-policy factory.

    The factory receives ``world=`` (the world instance), ``device=`` and the env's
    ``policy_kwargs`` as keyword arguments.
    """
    POLICIES.register(name, factory, overwrite=overwrite)


def register_prompt_encoder(name: str, factory: Factory | str, *, overwrite: bool = False) -> None:
    """Registers a prompt-encoder factory; it receives ``device=`` and ``prompt_encoder_kwargs``."""
    PROMPT_ENCODERS.register(name, factory, overwrite=overwrite)
