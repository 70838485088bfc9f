"""toelab scenarios: RFC compliance and resource checks, run against the kernel and the engine.

The scenario modules are listed in SCENARIO_MODULES and imported on first use of `get` or
`all`; a module declares its scenarios with `@scenario(...)`. Adding a scenario module is
adding its name to that list.
"""
from __future__ import annotations

import importlib

from .framework import Check, RunContext, Scenario, ScenarioError, ScenarioParams, Verdict, registered, scenario

__all__ = ["Check", "RunContext", "Scenario", "ScenarioError", "ScenarioParams", "Verdict", "scenario", "get", "all",
           "SCENARIO_MODULES"]

#: Every module of scenarios, in no particular order (they are listed by name).
SCENARIO_MODULES: tuple[str, ...] = (
    "addresses",
    "cc_share",
    "checksum",
    "chimney",
    "failover",
    "fingerprint",
    "handshake",
    "host_bypass",
    "host_cpu",
    "host_view",
    "icmp_errors",
    "loss",
    "lro_router",
    "mtu_mismatch",
    "pkt.scenario",
    "pmtu_path",
    "queues",
    "reordering",
    "rfc9293",
    "rfc9293_more",
    "source_route",
    "syn_flood",
    "syn_r2",
)
_loaded = False


def _load() -> None:
    global _loaded
    if _loaded:
        return
    for name in SCENARIO_MODULES:
        importlib.import_module(f"{__name__}.{name}")
    _loaded = True


def all() -> list[Scenario]:  # noqa: A001 - the registry's public name
    """Every scenario, by name."""
    _load()
    return [registered()[name] for name in sorted(registered())]


def get(name: str) -> Scenario:
    _load()
    try:
        return registered()[name]
    except KeyError:
        raise ScenarioError(f"no scenario {name!r} (there are: {', '.join(sorted(registered())) or 'none'})") from None
