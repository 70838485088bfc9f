"""`toelab run`'s output: a lab that fails to build is one scenario's error, and the report keeps the rest."""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pytest
from scapy.utils import RawPcapReader

import scenarios
from scenarios.cli import run_scenarios
from scenarios.framework import RunContext

pytestmark = pytest.mark.root


def _ping_and_capture(ctx: RunContext):  # type: ignore[no-untyped-def]
    """A quick real scenario: capture a big ping on the client, judge that it came back."""
    capture = ctx.capture(ctx.client, ctx.iface(ctx.client), "icmp", name="ping.pcap")
    done = ctx.lab.node(ctx.client).run(["ping", "-c2", "-i0.05", "-s", "1400", ctx.address(ctx.server)])
    pcap = capture.stop()
    yield ctx.check("ping-answered", "RFC792", done.returncode == 0, f"ping exited {done.returncode}", pcaps=[pcap])


def test_run_all_reports_every_finished_scenario_when_a_later_one_fails_to_build(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    base = scenarios.get("checksum")
    quick = dataclasses.replace(base, name="quick_ping", run=_ping_and_capture, covers=("RFC792",),
                                topology="two_hosts", topology_params=lambda _p: {})
    broken = dataclasses.replace(quick, name="broken_build", topology="no_such_topology")
    later = dataclasses.replace(quick, name="after_broken")
    monkeypatch.setattr(scenarios, "all", lambda: [quick, broken, later])
    report = tmp_path / "report"
    args = argparse.Namespace(scenario="all", target="kernel", seed=1, param=[], report=report, json=None,
                              verbose=False, full_pcaps=False)
    assert run_scenarios(args) == 1  # the build failure is an error, so the run fails
    out = " ".join(capsys.readouterr().out.split())
    assert "[1/3] quick_ping on kernel: 1 passed, 0 failed" in out
    assert "[2/3] broken_build on kernel: 0 passed, 0 failed, 0 skipped" in out and "the lab did not build" in out
    assert "[3/3] after_broken on kernel: 1 passed" in out
    data = json.loads((report / "results.json").read_text())
    by_name = {r["scenario"]: r for r in data["results"]}
    assert set(by_name) == {"quick_ping", "broken_build", "after_broken"}
    assert "unknown topology" in by_name["broken_build"]["error"]
    assert by_name["quick_ping"]["checks"][0]["verdict"] == "pass"
    html = (report / "index.html").read_text()
    assert "the lab did not build" in html and "RFC 9293 MUSTs no check covers yet" in html
    pcap = report / by_name["quick_ping"]["checks"][0]["evidence"]["pcaps"][0]
    assert pcap.name == "ping.pcap.gz" and pcap.is_file() and not pcap.with_suffix("").exists()
    assert f'href="{by_name["quick_ping"]["checks"][0]["evidence"]["pcaps"][0]}"' in html  # the link works
    lengths = [(len(data), meta.wirelen) for data, meta in RawPcapReader(str(pcap))]
    assert lengths and all(kept <= 178 for kept, _ in lengths)  # cut by default (ICMP keeps up to 178)
    assert max(wire for _, wire in lengths) >= 1400  # the original length is kept in the record


def test_full_pcaps_keeps_whole_packets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    quick = dataclasses.replace(scenarios.get("checksum"), name="quick_ping", run=_ping_and_capture,
                                covers=("RFC792",), topology="two_hosts", topology_params=lambda _p: {})
    monkeypatch.setattr(scenarios, "get", lambda name: quick)
    report = tmp_path / "report"
    args = argparse.Namespace(scenario="quick_ping", target="kernel", seed=1, param=[], report=report, json=None,
                              verbose=True, full_pcaps=True)
    assert run_scenarios(args) == 0
    data = json.loads((report / "results.json").read_text())
    pcap = report / data["results"][0]["checks"][0]["evidence"]["pcaps"][0]
    assert max(len(d) for d, _ in RawPcapReader(str(pcap))) >= 1400
