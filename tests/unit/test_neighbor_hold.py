"""Frames for a neighbour being resolved are held, not dropped: an active open's first SYN, built
while the engine's ARP request is out, leaves as soon as the reply comes, with the MAC it names
(Linux queues a few frames per unresolved neighbour, unres_qlen). The queue is bounded per
neighbour and in neighbours, and what it drops is counted as tx_no_neighbor."""
from __future__ import annotations

from toe_engine.apps import App
from toe_engine.codec import parse_frame
from toe_engine.codec.arp import ARP_REPLY, ArpPacket, build_arp
from toe_engine.codec.ethernet import ETHERTYPE_ARP, build_ethernet
from toe_engine.endpoint import HELD_FRAMES, HELD_NEIGHBORS, EndpointConfig, EndpointCore
from toe_engine.resources import ResourceConfig
from toe_engine.segment import SYN
from toe_engine.testing import IP_A, IP_B, MAC_A, MAC_B


def engine() -> EndpointCore:
    return EndpointCore(EndpointConfig(MAC_B, (IP_B,), services={}, resources=ResourceConfig(), secret=b"hold"))


def arp_reply(ip: bytes, mac: bytes) -> bytes:
    return build_ethernet(MAC_B, mac, ETHERTYPE_ARP) + build_arp(ArpPacket(ARP_REPLY, mac, ip, MAC_B, IP_B))


def sent(core: EndpointCore) -> list[bytes]:
    frames = [bytes(tx.frame) for tx in core.tx]
    core.tx.clear()
    return frames


def test_an_active_opens_first_syn_waits_for_the_arp_reply_and_leaves_with_its_mac() -> None:
    core = engine()
    key = core.connect(IP_B, IP_A, 80, App, now=1.0)
    first = [parse_frame(f) for f in sent(core)]
    assert [p.arp is not None for p in first] == [True], "only the ARP request leaves before the reply"
    assert first[0].arp.target_ip == IP_A and core.counters["tx_neighbor_held"] == 1

    core.from_wire(arp_reply(IP_A, MAC_A), now=1.0001)
    (syn,) = [parse_frame(f, verify_csum=False) for f in sent(core)]  # the device completes the TCP checksum
    assert syn.tcp is not None and syn.tcp.flags & SYN and syn.tcp.src_port == key.local_port
    assert (syn.eth_dst, syn.ip_dst) == (MAC_A, IP_A) and syn.drop_reason is None
    assert core.counters["tx_no_neighbor"] == 0 and core.counters["tx_frames"] == 1  # the SYN, counted as it left
    assert core.next_deadline() is not None  # its retransmission timer still runs


def test_a_full_queue_drops_its_oldest_and_too_many_neighbours_drop_the_longest_waiting() -> None:
    core = engine()
    for _ in range(HELD_FRAMES + 3):
        core.connect(IP_B, IP_A, 80, App, now=1.0)
    assert core.counters["tx_no_neighbor"] == 3 and core.counters["tx_neighbor_held"] == HELD_FRAMES + 3
    for n in range(HELD_NEIGHBORS):  # as many other neighbours: the first one's frames go
        core.connect(IP_B, bytes([198, 51, 100, n + 1]), 80, App, now=1.0)
    assert core.counters["tx_no_neighbor"] == 3 + HELD_FRAMES
    sent(core)
    core.from_wire(arp_reply(IP_A, MAC_A), now=1.1)
    assert [f for f in sent(core) if parse_frame(f).tcp is not None] == []  # nothing of IP_A's was left
