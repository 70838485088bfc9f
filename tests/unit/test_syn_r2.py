"""The syn_r2 scenario's verdict and how long scenarios are chosen, without root.

The verdict passes only a connection attempt seen alive after 180 s, so each way of not being
alive (a connect() that failed early, a RST to the probe, a peer that never stayed silent, no
SYN at all) is fed to it. `toelab run all` leaves long scenarios out unless asked, and the
suite marks them so that only pytest --long runs them.
"""
from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

import scenarios
from scenarios.cli import plan
from scenarios.syn_r2 import R2_SYN_S, SynWatch, judge

REPO = Path(__file__).resolve().parents[2]
LINUX_6 = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 11.0, 19.0, 35.0, 67.0]


def test_an_attempt_alive_after_three_minutes_passes() -> None:
    ok, sentence = judge(SynWatch(syn_times=LINUX_6 + [131.0], watched_s=182.0), "ack")
    assert ok and "182.0 s after the first" in sentence and "the handshake's ACK" in sentence


def test_a_connect_that_fails_before_three_minutes_fails_whatever_the_probe() -> None:
    for probe in ("rst", "nothing", "ack"):
        ok, sentence = judge(SynWatch(syn_times=LINUX_6, gave_up_s=131.1, error="ETIMEDOUT", watched_s=131.1), probe)
        assert not ok and "failed with ETIMEDOUT 131.1 s" in sentence and f"{R2_SYN_S:.0f} s" in sentence


def test_a_silent_give_up_fails_on_the_probes_rst() -> None:
    ok, sentence = judge(SynWatch(syn_times=LINUX_6, watched_s=182.0), "rst")
    assert not ok and "drew a RST" in sentence and "given up before 180 s" in sentence
    assert not judge(SynWatch(syn_times=LINUX_6, watched_s=182.0), "nothing")[0]


def test_an_unwatched_or_unretransmitted_attempt_proves_nothing() -> None:
    assert judge(SynWatch(), "nothing") == (False, "the target sent no SYN to the silent peer")
    ok, sentence = judge(SynWatch(syn_times=[0.0], watched_s=182.0), "ack")
    assert not ok and "never put to the test" in sentence
    assert not judge(SynWatch(syn_times=LINUX_6, watched_s=R2_SYN_S - 1), "ack")[0]


def run_args(**kw: object) -> argparse.Namespace:
    return argparse.Namespace(scenario="all", target="kernel", seed=1, param=[], **kw)


def test_run_all_leaves_long_scenarios_out_unless_asked() -> None:
    long = {s.name for s in scenarios.all() if s.long}
    assert long == {"syn_r2"}
    assert not long & {s.name for s, _ in plan(run_args(long=False))}
    assert not long & {s.name for s, _ in plan(run_args())}  # callers without the flag (the demo)
    assert long <= {s.name for s, _ in plan(run_args(long=True))}
    assert [s.name for s, _ in plan(argparse.Namespace(scenario="syn_r2", param=["syn_retries=7"]))] == ["syn_r2"]


def test_the_long_marker_is_declared() -> None:
    markers = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]
    assert any(m.startswith("long:") for m in markers)
