"""The source_route scenario on real namespaces: what each target did with a source route, and that its checks fail.

tests/lab/test_scenarios_kernel.py judges the scenario's default run against the known findings;
here the evidence behind the verdicts is asserted (the kernel drops source-routed datagrams as
shipped and reverses the route once allowed, the engine answers directly and refuses IP_OPTIONS),
and the kernel judged as shipped shows that the checks fail when no route comes back.
"""
from __future__ import annotations

from pathlib import Path

import pytest

import scenarios
from lab.pytest_plugin import host_state, leftovers_since
from scenarios.framework import Check, Verdict
from scenarios.runner import run_scenario

pytestmark = pytest.mark.root


def run(target: str, tmp_path: Path, **params: str) -> dict[str, Check]:
    scenario = scenarios.get("source_route")
    before = host_state()
    result = run_scenario(scenario, target, params=scenario.parse_params(params), seed=3, outdir=tmp_path)
    assert leftovers_since(before) == [], "the scenario left lab state behind"
    assert result.error is None, result.error
    return {c.id: c for c in result.checks}


def test_the_kernel_reverses_a_received_route_and_keeps_its_own(tmp_path: Path) -> None:
    checks = run("kernel", tmp_path)
    synack = checks["return-route[syn-ack]"]
    assert synack.verdict is Verdict.PASS, synack.sentence
    assert synack.evidence.numbers["as_shipped_answered"] is False  # accept_source_route=0: dropped
    assert synack.evidence.numbers["syn_arrived"] == 1 and synack.evidence.numbers["checksum_over_ultimate"] is True
    assert "accept_source_route=1 (all and eth0)" in synack.sentence
    data = checks["return-route[data]"]
    assert data.verdict is Verdict.PASS
    assert data.evidence.numbers["segments"] == data.evidence.numbers["segments_routed"] >= 3
    assert checks["source-routed-echo-byte-exact"].verdict is Verdict.PASS
    strict = checks["return-route[ssrr]"]
    assert strict.verdict is Verdict.PASS and strict.evidence.numbers["segments_routed"] >= 4, strict.sentence
    later = checks["later-route-overrides"]  # Linux keeps the route of the SYN: a pinned finding
    assert later.verdict is Verdict.FAIL and later.evidence.numbers["segments_on_later_route"] == 0
    assert later.evidence.numbers["segments_on_first_route"] == later.evidence.numbers["segments"] >= 2
    first = checks["application-route-first"]
    assert first.verdict is Verdict.PASS and first.evidence.numbers["syn_routed"] is True, first.sentence
    assert first.evidence.numbers["plain_open"] is True
    assert checks["application-routed-data-byte-exact"].verdict is Verdict.PASS


def test_the_kernel_as_shipped_fails_every_route_check(tmp_path: Path) -> None:
    """With accept_source_route=0 IP drops the routed SYN (seen arriving) and the routed SYN-ACK: nothing comes back."""
    checks = run("kernel", tmp_path, accept_source_route="false")
    synack = checks["return-route[syn-ack]"]
    assert synack.verdict is Verdict.FAIL and "as shipped" in synack.sentence
    assert synack.evidence.numbers["syn_arrived"] == 1 and synack.evidence.numbers["synack"] is False
    assert synack.evidence.numbers["plain_echoed"] is True
    assert checks["return-route[data]"].verdict is Verdict.FAIL
    assert checks["return-route[ssrr]"].verdict is Verdict.FAIL
    assert checks["return-route[ssrr]"].evidence.numbers["synack"] is False
    assert checks["source-routed-echo-byte-exact"].verdict is Verdict.FAIL
    first = checks["application-route-first"]
    assert first.verdict is Verdict.FAIL and first.evidence.numbers["syn_routed"] is True
    assert first.evidence.numbers["plain_open"] is True  # the same path works without routes
    assert first.evidence.numbers["ack"] is False, first.sentence  # the routed SYN-ACK was dropped


def test_the_engine_answers_directly_and_refuses_ip_options(tmp_path: Path) -> None:
    checks = run("toe", tmp_path)
    synack = checks["return-route[syn-ack]"]
    assert synack.verdict is Verdict.FAIL and "to 10.0.0.1 with no source route" in synack.sentence
    assert synack.evidence.numbers["as_shipped_answered"] is True and synack.evidence.numbers["synack_routed"] == 0
    assert checks["return-route[data]"].evidence.numbers["segments_routed"] == 0
    assert checks["return-route[ssrr]"].verdict is Verdict.FAIL
    assert checks["return-route[ssrr]"].evidence.numbers["segments_routed"] == 0
    assert checks["source-routed-echo-byte-exact"].verdict is Verdict.PASS  # the data still arrives exactly
    for skipped in ("application-route-first", "application-routed-data-byte-exact"):
        assert checks[skipped].verdict is Verdict.SKIP and "ENOPROTOOPT" in checks[skipped].sentence
