"""Two endpoint cores through seeded impairments: 10 MB echoed back byte-exact.

Echo covers both directions at once: A sends 10 MB to B, B returns the same 10 MB.
Frames cross as real bytes (codec, checksums completed by the "device", TSO applied),
and each impairment comes from toe_engine.impair, seeded.
"""
from __future__ import annotations

import pytest

from toe_engine.impair import ImpairmentSpec
from toe_engine.resources import ResourceConfig
from toe_engine.tcp.config import TcpConfig
from toe_engine.testing import FrameHarness

MB10 = 10 * 1024 * 1024
IMPAIRMENTS = {
    "clean": {},
    "loss": {"loss": 2.0},
    "reorder": {"reorder": 5.0, "reorder_gap": 0, "delay_ms": 4.0},
    "duplicate": {"duplicate": 2.0},
    "delay_jitter": {"delay_ms": 20.0, "jitter_ms": 5.0},
    "all": {"loss": 1.0, "reorder": 3.0, "duplicate": 1.0, "delay_ms": 10.0, "jitter_ms": 2.0},
}


def spec(**fields: float) -> ImpairmentSpec:
    fields.setdefault("delay_ms", 1.0)
    if fields.get("reorder_gap") == 0:
        fields.pop("reorder_gap")
    return ImpairmentSpec.parse(fields)


@pytest.mark.parametrize("congestion", ["newreno", "cubic"])
@pytest.mark.parametrize("impairment", list(IMPAIRMENTS))
def test_10mb_echo_is_byte_exact(impairment: str, congestion: str) -> None:
    fields = IMPAIRMENTS[impairment]
    harness = FrameHarness(a_to_b=spec(**fields), b_to_a=spec(**fields), seed=7,
                           tcp=TcpConfig(congestion=congestion, tso_segments=8, rcv_buf=512 * 1024, snd_buf=512 * 1024))
    intact, app = harness.echo_transfer(MB10)
    assert intact, f"{len(app.echoed)} of {MB10} bytes came back"
    counters = harness.b.counters.snapshot()
    assert counters["conn_offloaded"] == 1
    assert counters["rx_malformed"] == 0
    if "loss" in fields:
        dropped = harness.wire_ab.stats["dropped"] + harness.wire_ba.stats["dropped"]
        assert dropped > 0
        assert counters["retransmits"] + harness.a.counters["retransmits"] > 0
    if "duplicate" in fields:
        assert harness.wire_ab.stats["duplicated"] > 0


def test_capacity_is_enforced_through_frames() -> None:
    """Capacity 1: the second concurrent connection is handed to the host (fallback)."""
    harness = FrameHarness(resources=ResourceConfig(capacity=1))
    from toe_engine.testing import ECHO_PORT, IP_A, IP_B, BulkEchoClient
    first = harness.a.connect(IP_A, IP_B, ECHO_PORT, BulkEchoClient, harness.now)
    harness.run_until(lambda: harness.b.stack.connection(first._replace(local_ip=IP_B, local_port=ECHO_PORT,
                                                                         remote_ip=IP_A, remote_port=first.local_port)) is not None)
    harness.a.connect(IP_A, IP_B, ECHO_PORT, BulkEchoClient, harness.now)
    harness.run_until(lambda: harness.b.counters["conn_fallback"] > 0, limit_s=5)
    assert harness.b.counters["conn_offloaded"] == 1
    assert harness.b.counters["conn_fallback"] == 1
    assert harness.b.counters["rx_to_host"] >= 1
