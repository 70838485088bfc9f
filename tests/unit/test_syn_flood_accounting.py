"""syn_flood's SYN accounting: every SYN that reached the engine's interface is answered or counted.

The judge fails on the empty case (no flood, nothing reached) and on a count that misses more
than the legitimate client's frames; the counters it sums add up exactly for a flood fed to an
engine core whose half-open table fills and whose flows repeat, as the flood generator's pool does.
"""
from __future__ import annotations

import ipaddress
import random

import pytest

from scenarios.flood import SYN_FRAME_LEN, build_syn_pool
from scenarios.syn_flood import SYN_ACCOUNTING, ring_holds, syn_accounting, syns_accounted
from toe_engine.endpoint import EndpointConfig, EndpointCore
from toe_engine.io.ring import RingSettings
from toe_engine.resources import ExhaustionPolicy, ResourceConfig
from toe_engine.tcp.config import TcpConfig


def test_the_accounting_fails_without_a_flood_or_with_frames_unaccounted() -> None:
    assert syns_accounted(arrived=True, reached=600_000, accounted=599_800, slack=700)
    assert syns_accounted(arrived=True, reached=600_000, accounted=600_300, slack=700), "late legitimate retries"
    assert not syns_accounted(arrived=False, reached=600_000, accounted=600_000, slack=700), "no flood"
    assert not syns_accounted(arrived=True, reached=0, accounted=0, slack=700), "nothing reached the interface"
    assert not syns_accounted(arrived=True, reached=600_000, accounted=400_000, slack=700), "SYNs lost uncounted"


@pytest.mark.parametrize("policy", ["syncookie", "fallback", "deny:drop"])
def test_the_counters_add_up_to_every_syn_of_a_repeating_flood(policy: str) -> None:
    """64 half-open entries fill, their flows come back every pool round (repeated or rate-limited
    SYN-ACKs), the rest meets the policy: the sum is exactly the SYNs fed."""
    config = EndpointConfig(bytes.fromhex("020000000503"), (bytes([10, 0, 5, 3]),), services={7: "echo"},
                            secret=b"toelab-accounting", tcp=TcpConfig(synack_retries=1),
                            resources=ResourceConfig(embryonic_limit=64, policy=ExhaustionPolicy.parse(policy)))
    core = EndpointCore(config)
    pool = build_syn_pool(512, src_mac="02:00:00:00:05:01", dst_mac="02:00:00:00:05:03", dst="10.0.5.3", dport=7,
                          spoof=ipaddress.IPv4Network("10.99.0.0/16"), rng=random.Random(7))
    now, fed = 100.0, 6000
    for i in range(fed):
        now += 1 / 200_000
        core.from_wire(pool[i % len(pool)], now, False)
        core.poll_wire()
    counters = core.counters.snapshot()
    assert counters["conn_offloaded"] == 64 and counters["synack_repeated"] + counters["synack_rtx_limited"] > 0
    assert syn_accounting(counters) == fed, {name: counters.get(name, 0) for name in SYN_ACCOUNTING}


def test_the_rings_hold_many_flood_syns_per_mtu_slot_and_each_queue_has_its_own() -> None:
    one = ring_holds(256, 0)
    assert ring_holds(0, 0) == ring_holds(0, 2) == 0  # no ring: one read per frame, the socket's queue
    assert one == RingSettings(256).frames_held(SYN_FRAME_LEN) > 10 * 256 and ring_holds(256, 2) == 2 * one
