"""ACK deferral on a live engine: h1's kernel streams per-MSS frames (offloads off) to t1's discard
service faster than the engine takes them, so its reads reach the budget and, with ack_defer on,
each draws one ACK per connection (Linux's socket backlog); with it off the engine ACKs every second
segment. The other side of the rule, an engine that keeps up ACKing every second full-sized segment,
is the rfc9293 scenario's ack-every-second-segment check against a paced Scapy peer."""
from __future__ import annotations

import json
import sys

import pytest

from lab.engine_nodes import EngineHandle
from lab.lab import Lab
from lab.pytest_plugin import MakeLab

pytestmark = pytest.mark.root

ENGINE_IP, DISCARD = "10.0.7.2", 9
SECONDS = 1.0
#: With every second segment ACKed the engine receives two frames per frame it sends (a little
#: less with the window updates the discard reads cause); deferring per full read, many more.
EVERY_SECOND_MAX, DEFERRED_MIN = 2.2, 8.0


def frames_per_ack(lab: Lab, engine: EngineHandle) -> tuple[float, int]:
    """One bulk stream of SECONDS: frames the engine received per frame it sent, and bytes sent."""
    before = engine.stats()["counters"]
    done = lab.node("h1").run([sys.executable, "-m", "toelab.benches.loadgen", "bulk", ENGINE_IP, str(DISCARD),
                               str(SECONDS)], timeout=SECONDS + 60, check=True)
    after = engine.stats()["counters"]
    received = after.get("rx_frames", 0) - before.get("rx_frames", 0)
    sent = after.get("tx_frames", 0) - before.get("tx_frames", 0)
    return received / max(sent, 1), json.loads(done.stdout.strip().splitlines()[-1])["bytes"]


def test_a_stream_that_keeps_the_engine_behind_is_acked_once_per_read_only_with_ack_defer(make_lab: MakeLab) -> None:
    lab = make_lab("toe_pair", offloads=False)
    engine = lab.engine("t1")
    assert engine.config()["ack_defer"] is True  # the default
    deferred, sent_on = frames_per_ack(lab, engine)
    assert engine.set(ack_defer="off")["ack_defer"] is False
    every_second, sent_off = frames_per_ack(lab, engine)
    assert sent_on > 0 and sent_off > 0
    assert every_second <= EVERY_SECOND_MAX, f"ack_defer off: {every_second:.1f} frames per ACK"
    assert deferred >= DEFERRED_MIN, f"ack_defer on, engine behind: only {deferred:.1f} frames per ACK"
