"""toelab scenarios: RFC compliance and resource checks, run against the kernel and the engine.

Every module of this package that is not part of the framework is a scenario module and is
imported on first use of `get` or `all`, so adding a scenario is adding a file.
"""
from __future__ import annotations

import importlib
import pkgutil

from .framework import Check, RunContext, Scenario, ScenarioError, ScenarioParams, Verdict, registered, scenario

__all__ = ["Check", "RunContext", "Scenario", "ScenarioError", "ScenarioParams", "Verdict", "scenario", "get", "all"]

#: Framework modules; every other module here holds scenarios.
FRAMEWORK_MODULES = frozenset({"bench", "cli", "framework", "kernel_services", "peer", "plots", "report",
                               "requirements", "runner", "targets", "toe_target", "transfer", "wire", "flood"})
_loaded = False


def _load() -> None:
    global _loaded
    if _loaded:
        return
    for info in pkgutil.iter_modules(__path__):
        if info.name not in FRAMEWORK_MODULES and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
    _loaded = True


def all() -> list[Scenario]:  # noqa: A001 - the registry's public name
    """Every registered scenario, by name."""
    _load()
    return [registered()[name] for name in sorted(registered())]


def get(name: str) -> Scenario:
    _load()
    try:
        return registered()[name]
    except KeyError:
        raise ScenarioError(f"no scenario {name!r} (there are: {', '.join(sorted(registered())) or 'none'})") from None
