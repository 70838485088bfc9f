"""The shell's `scenario NAME` refuses, in one sentence, a lab that is not the one the scenario builds (no root)."""
from __future__ import annotations

from types import SimpleNamespace

import scenarios
from lab.render import load_topology
from toelab.shell_scenario import lab_mismatch, shell_for


def _lab(topology: str, **params: str) -> SimpleNamespace:
    """What lab_mismatch reads of a lab: its rendered spec."""
    return SimpleNamespace(spec=load_topology(topology, params))


def test_the_lab_the_scenario_builds_is_accepted_and_any_other_named() -> None:
    handshake = scenarios.get("handshake")
    defaults = handshake.parse_params({})
    assert lab_mismatch(handshake, defaults, _lab("two_hosts", tso="false")) is None
    assert lab_mismatch(handshake, defaults, _lab("two_hosts")) == (
        "scenario handshake runs on topology two_hosts with mtu=1500, tso=false, and this lab is two_hosts built otherwise")
    assert lab_mismatch(handshake, defaults, _lab("router_path")).endswith("and this lab is router_path")
    assert shell_for(handshake, defaults) == "toelab shell two_hosts -p mtu=1500 -p tso=false"


def test_a_scenario_parameter_that_shapes_the_topology_changes_the_lab_it_needs() -> None:
    handshake = scenarios.get("handshake")
    jumbo = handshake.parse_params({"mtu": "9000"})
    assert lab_mismatch(handshake, jumbo, _lab("two_hosts", tso="false")) is not None
    assert lab_mismatch(handshake, jumbo, _lab("two_hosts", tso="false", mtu="9000")) is None
    assert shell_for(handshake, jumbo) == "toelab shell two_hosts -p mtu=9000 -p tso=false"
