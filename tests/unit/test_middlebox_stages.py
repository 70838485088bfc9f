"""Middlebox stages on synthetic frames: GRO/LRO/TSO/impairment adapters and the router's rules.

No root and no network: frames are built with the engine's codec and read back with Scapy
where an independent reading matters (ICMP errors, ARP requests). The middlebox's ports are
datagram socket pairs, so its forwarder reads and writes real descriptors.
"""
from __future__ import annotations

import ipaddress
import socket

from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, TCP
from scapy.layers.inet6 import ICMPv6ND_NS, ICMPv6PacketTooBig, IPv6
from scapy.layers.l2 import ARP, Ether

from toe_engine.checksum import ones_sum
from toe_engine.codec.frame import build_tcp_frame, build_tcp_frame_partial, parse_frame
from toe_engine.counters import Counters
from toe_engine.impair import ImpairmentSpec
from toe_engine.io.driver import FrameDriver
from toe_engine.io.vnet import (
    PLAIN_VNET_HEADER,
    VNET_F_NEEDS_CSUM,
    VNET_GSO_NONE,
    VNET_GSO_TCPV4,
    VNET_GSO_TCPV6,
    VNET_HDR_LEN,
    VnetHeader,
)
from toe_engine.offload.csum import complete_partial_checksum
from toe_engine.runtime.middlebox import (
    DirectionConfig,
    Middlebox,
    MiddleboxConfig,
    MiddleboxConfigError,
    update_direction,
)
from toe_engine.runtime.router import Port, Router, RouterStage, decrease_ttl
from toe_engine.runtime.stages import GroStage, ImpairStage, Item, LroStage, Pipeline, TsoStage
from toe_engine.segment import ACK, PSH, Segment

MSS = 1448
H1_MAC, MB0_MAC, MB1_MAC, H2_MAC = (bytes([2, 0, 0, 0, 0, i]) for i in (1, 2, 3, 4))
H1, MB0, MB1, H2 = (ipaddress.ip_address(a).packed for a in ("10.0.1.2", "10.0.1.1", "10.0.2.1", "10.0.2.2"))
H1_6, H2_6 = (ipaddress.ip_address(a).packed for a in ("fd00:1::2", "fd00:2::2"))


def payload(offset: int, length: int) -> bytes:
    return bytes((offset + i) % 251 for i in range(length))


def tcp_frame(seq: int, length: int, *, src: bytes = H1, dst: bytes = H2, ttl: int = 64, ip_id: int = 1,
              flags: int = ACK, dst_mac: bytes = MB0_MAC, partial: bool = False) -> tuple[VnetHeader, bytes]:
    segment = Segment(40000, 5201, 1000 + seq, 7, flags, 512, payload(seq, length))
    if partial:
        built = build_tcp_frame_partial(H1_MAC, dst_mac, src, dst, segment, ttl=ttl, ip_id=ip_id)
        return VnetHeader(VNET_F_NEEDS_CSUM, 0, 0, 0, built.csum_start, built.csum_offset), bytes(built.data)
    return PLAIN_VNET_HEADER, bytes(build_tcp_frame(H1_MAC, dst_mac, src, dst, segment, ttl=ttl, ip_id=ip_id))


def super_frame(length: int, gso_size: int = MSS, **kwargs: object) -> tuple[VnetHeader, bytes]:
    """A GSO super-frame as AF_PACKET shows one from a TSO sender: partial checksum, gso_size."""
    header, frame = tcp_frame(0, length, partial=True, **kwargs)  # type: ignore[arg-type]
    return header._replace(gso_type=VNET_GSO_TCPV4, gso_size=gso_size, hdr_len=54), frame


def tcp_payload(frame: bytes | bytearray) -> bytes:
    parsed = parse_frame(frame, verify_csum=False)
    return bytes(frame[parsed.payload_offset:parsed.frame_end])


def checksums_ok(frame: bytes | bytearray) -> bool:
    return parse_frame(frame).drop_reason is None


def completed(item: Item) -> bytearray:
    header, frame = item
    buf = bytearray(frame)
    if header.needs_csum:
        complete_partial_checksum(buf, header.csum_start, header.csum_offset)
    return buf


# --- coalescing and TSO -------------------------------------------------------------------------

@pytest.mark.parametrize("partial", [False, True])
def test_gro_stage_merges_and_emits_gso_metadata(partial: bool) -> None:
    counters = Counters(())
    stage = GroStage(counters)
    frames = [tcp_frame(i * MSS, MSS, ip_id=1 + i, partial=partial) for i in range(8)]
    out = [item for header, frame in frames for item in stage.process(header, frame, 0.0)]
    assert out == [] and stage.next_deadline() == 0.0
    out = stage.poll(0.0)
    assert len(out) == 1 and stage.next_deadline() is None
    header, frame = out[0]
    assert header.gso_type == VNET_GSO_TCPV4 and header.gso_size == MSS
    assert header.flags == VNET_F_NEEDS_CSUM and (header.csum_start, header.csum_offset) == (34, 16)
    assert header.hdr_len == 54
    assert checksums_ok(completed(out[0]))
    assert tcp_payload(frame) == payload(0, 8 * MSS)
    assert counters["gro_merged"] == 7


def test_gro_stage_passes_super_frames_after_held_flows() -> None:
    stage = GroStage(Counters(()))
    first = tcp_frame(0, MSS)
    assert stage.process(*first, 0.0) == []
    header, frame = super_frame(20 * MSS)
    out = stage.process(header, frame, 0.0)
    assert [h for h, _ in out] == [PLAIN_VNET_HEADER, header]
    assert out[0][1] == first[1] and out[1][1] is frame


def test_lro_stage_emits_no_gso_metadata() -> None:
    counters = Counters(())
    stage = LroStage(counters)
    for i in range(5):
        stage.process(*tcp_frame(i * MSS, MSS, flags=ACK | PSH, partial=True), 0.0)
    (header, frame), = stage.poll(0.0)
    assert header == PLAIN_VNET_HEADER
    assert checksums_ok(frame) and tcp_payload(frame) == payload(0, 5 * MSS)
    assert counters["lro_merged"] == 4


def test_lro_stage_turns_super_frame_into_plain_aggregate() -> None:
    counters = Counters(())
    header, frame = super_frame(30 * MSS + 100)
    (out_header, out_frame), = LroStage(counters).process(header, frame, 0.0)
    assert out_header.gso_type == VNET_GSO_NONE and out_header.flags == 0
    assert checksums_ok(out_frame) and tcp_payload(out_frame) == payload(0, 30 * MSS + 100)
    assert counters["lro_merged"] == 30


def test_tso_stage_segments_super_frames() -> None:
    counters = Counters(())
    header, frame = super_frame(10 * MSS + 7)
    out = TsoStage(counters).process(header, frame, 0.0)
    assert len(out) == 11 and counters["tso_segments"] == 11
    assert all(h == PLAIN_VNET_HEADER and checksums_ok(f) for h, f in out)
    assert [len(tcp_payload(f)) for _, f in out] == [MSS] * 10 + [7]
    assert b"".join(tcp_payload(f) for _, f in out) == payload(0, 10 * MSS + 7)
    small = tcp_frame(0, 100, partial=True)
    assert TsoStage(counters).process(*small, 0.0) == [small]


# --- impairments --------------------------------------------------------------------------------

def replay(seed: int, frames: list[tuple[VnetHeader, bytes]]) -> tuple[list[Item], bytes, dict[str, int]]:
    spec = ImpairmentSpec(loss=2, reorder=2, duplicate=1, delay_ms=1)
    stage = ImpairStage(spec, seed, counters=Counters(()), record=True)
    pipeline = Pipeline([stage])
    out: list[Item] = []
    for index, (header, frame) in enumerate(frames):
        now = index * 1e-4
        out.extend(pipeline(header, frame, now))
        out.extend(pipeline.poll(now))
    out.extend(pipeline.poll(1e9))
    return out, stage.impairer.log_codes.tobytes(), stage.stats()


def test_impairment_stage_is_deterministic_and_keeps_headers() -> None:
    frames = [tcp_frame(i * 100, 100, partial=bool(i % 2)) for i in range(3000)]
    out1, log1, stats1 = replay(7, frames)
    out2, log2, stats2 = replay(7, frames)
    assert log1 == log2 and stats1 == stats2 and out1 == out2
    _, log3, _ = replay(8, frames)
    assert log3 != log1
    assert stats1["dropped"] > 0 and stats1["duplicated"] > 0 and stats1["reordered"] > 0
    assert len(out1) == 3000 - stats1["dropped"] + stats1["duplicated"]
    by_frame = dict((frame, header) for header, frame in frames)
    assert all(by_frame[frame] == header for header, frame in out1)


def test_impairment_spec_change_keeps_queued_frames() -> None:
    stage = ImpairStage(ImpairmentSpec(delay_ms=10), 1, counters=Counters(()))
    frames = [tcp_frame(i * 10, 10) for i in range(5)]
    for header, frame in frames:
        assert stage.process(header, frame, 0.0) == []
    stage.set_spec(ImpairmentSpec(loss=100), 1)
    assert stage.process(*tcp_frame(999, 10), 0.001) == []
    assert stage.poll(0.011) == frames
    assert stage.stats()["dropped"] == 1 and stage.stats()["submitted"] == 6


def test_direction_update_merges_impairments_and_names_bad_fields() -> None:
    config = DirectionConfig(impairments=ImpairmentSpec(loss=2, duplicate=1))
    updated = update_direction(config, {"impairments": {"loss": 30}, "coalesce": "gro"})
    assert updated.impairments.loss == 30 and updated.impairments.duplicate == 1 and updated.coalesce == "gro"
    with pytest.raises(MiddleboxConfigError, match="loss"):
        update_direction(config, {"impairments": {"loss": 300}})
    with pytest.raises(MiddleboxConfigError, match="coalesce"):
        update_direction(config, {"coalesce": "tso"})


# --- router -------------------------------------------------------------------------------------

class Wire:
    """Collects what the router transmits itself (ICMP errors, ARP requests)."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, bytes]] = []

    def __call__(self, port: int, frame: bytes) -> None:
        self.sent.append((port, frame))


def make_router(egress_mtu: int = 1400, *, resolved: bool = True) -> tuple[Router, Wire]:
    wire = Wire()
    ports = (
        Port("eth0", MB0_MAC, 1500, [ipaddress.ip_interface("10.0.1.1/24"), ipaddress.ip_interface("fd00:1::1/64")]),
        Port("eth1", MB1_MAC, egress_mtu, [ipaddress.ip_interface("10.0.2.1/24"), ipaddress.ip_interface("fd00:2::1/64")]),
    )
    router = Router(ports, wire, counters=[Counters(()), Counters(())])
    if resolved:
        router.learn(H2, H2_MAC)
        router.learn(H2_6, H2_MAC)
    return router, wire


def test_forwarding_rewrites_macs_and_decrements_ttl() -> None:
    router, wire = make_router()
    header, frame = tcp_frame(0, 1000, ttl=64)
    (out_header, out), = router.forward(0, header, frame, 0.0)
    assert out_header == header and out[0:6] == H2_MAC and out[6:12] == MB1_MAC
    assert out[14 + 8] == 63 and checksums_ok(out)
    assert out[14:] != frame[14:] and out[14 + 20:] == frame[14 + 20:]
    assert wire.sent == []


@pytest.mark.parametrize("check", [0x0000, 0x00FF, 0xFEFF, 0xFF00, 0xFFFE, 0x1234])
def test_ttl_decrement_updates_checksum_incrementally(check: int) -> None:
    header = bytearray(bytes.fromhex("4500 0054 abcd 4000 4006 0000 0a000102 0a000202"))
    # choose the ID so that the header checksum takes the value under test
    header[10:12] = b"\0\0"
    base = ones_sum(header)
    wanted_sum = ~check & 0xFFFF
    delta = (wanted_sum - base) % 0xFFFF
    ident = (0xABCD + delta) % 0xFFFF
    header[4:6] = ident.to_bytes(2, "big")
    header[10:12] = (~ones_sum(header) & 0xFFFF).to_bytes(2, "big")
    assert ones_sum(header) == 0xFFFF
    buf = bytearray(14) + header
    decrease_ttl(buf, 14)
    assert buf[14 + 8] == 63
    assert ones_sum(buf[14:]) == 0xFFFF
    recomputed = IP(bytes(buf[14:]))
    del recomputed.chksum
    ours, scapys = IP(bytes(buf[14:])).chksum, IP(bytes(recomputed)).chksum
    assert ours == scapys or {ours, scapys} == {0x0000, 0xFFFF}  # +0 and -0 in one's complement


def test_oversize_df_frame_gets_frag_needed_with_egress_mtu() -> None:
    router, wire = make_router(1400)
    header, frame = tcp_frame(0, 1448, ttl=64)
    assert router.forward(0, header, frame, 0.0) == []
    assert router.counters[0]["mtu_drops"] == 1 and router.counters[0]["icmp_frag_needed_sent"] == 1
    (port, sent), = wire.sent
    assert port == 0
    packet = Ether(sent)
    assert packet.src == MB0_MAC.hex(":") and packet.dst == H1_MAC.hex(":")
    ip = packet[IP]
    assert (ip.src, ip.dst, ip.proto, ip.flags.DF) == ("10.0.1.1", "10.0.1.2", 1, False)
    icmp = packet[ICMP]
    assert (icmp.type, icmp.code, icmp.nexthopmtu) == (3, 4, 1400)
    rebuilt = Ether(bytes(packet))
    del rebuilt[IP].chksum, rebuilt[ICMP].chksum
    assert Ether(bytes(rebuilt))[IP].chksum == ip.chksum and Ether(bytes(rebuilt))[ICMP].chksum == icmp.chksum
    quoted = sent[14 + 20 + 8:]
    assert len(quoted) == 548 and quoted == frame[14:14 + 548]
    assert icmp.payload.ttl == 64 and icmp.payload.len == len(frame) - 14


def test_gso_aggregate_is_checked_per_segment() -> None:
    router, wire = make_router(1400)
    fits = super_frame(40 * 1348, gso_size=1348)
    out = router.forward(0, *fits, 0.0)
    assert len(out) == 1 and out[0][0] == fits[0] and wire.sent == []
    too_big = super_frame(40 * MSS, gso_size=MSS)
    assert router.forward(0, *too_big, 0.0) == []
    (_, sent), = wire.sent
    assert Ether(sent)[ICMP].nexthopmtu == 1400


def test_lro_aggregate_is_oversize_even_when_its_segments_were_small() -> None:
    router, wire = make_router(1400)
    lro_header, aggregate = LroStage(Counters(())).process(*super_frame(40 * 1348, gso_size=1348), 0.0)[0]
    assert router.forward(0, lro_header, aggregate, 0.0) == []
    (_, sent), = wire.sent
    assert Ether(sent)[ICMP].nexthopmtu == 1400
    assert router.counters[0]["mtu_drops"] == 1


def test_ttl_expiry_sends_time_exceeded() -> None:
    router, wire = make_router()
    assert router.forward(0, *tcp_frame(0, 100, ttl=1), 0.0) == []
    (_, sent), = wire.sent
    assert (Ether(sent)[ICMP].type, Ether(sent)[ICMP].code) == (11, 0)
    assert router.counters[0]["ttl_expired"] == 1


def test_ipv6_oversize_gets_packet_too_big() -> None:
    router, wire = make_router(1400)
    header, frame = tcp_frame(0, 1400, src=H1_6, dst=H2_6)
    assert router.forward(0, header, frame, 0.0) == []
    (_, sent), = wire.sent
    packet = Ether(sent)
    assert packet[IPv6].src == "fd00:1::1" and packet[IPv6].dst == "fd00:1::2"
    assert packet[ICMPv6PacketTooBig].mtu == 1400
    rebuilt = packet.copy()
    del rebuilt[ICMPv6PacketTooBig].cksum
    assert Ether(bytes(rebuilt))[ICMPv6PacketTooBig].cksum == packet[ICMPv6PacketTooBig].cksum


def test_unknown_next_hop_is_resolved_with_arp_and_frames_released() -> None:
    router, wire = make_router(resolved=False)
    stage = RouterStage(router, 0)
    frames = [tcp_frame(i * 100, 100) for i in range(3)]
    for header, frame in frames:
        assert stage.process(header, frame, 0.0) == []
    (port, request), = wire.sent
    arp = Ether(request)[ARP]
    assert port == 1 and Ether(request).dst == "ff:ff:ff:ff:ff:ff"
    assert (arp.op, arp.psrc, arp.pdst, arp.hwsrc) == (1, "10.0.2.1", "10.0.2.2", MB1_MAC.hex(":"))
    assert stage.next_deadline() is None
    reply = bytes(Ether(src=H2_MAC.hex(":"), dst=MB1_MAC.hex(":")) /
                  ARP(op=2, hwsrc=H2_MAC.hex(":"), psrc="10.0.2.2", hwdst=MB1_MAC.hex(":"), pdst="10.0.2.1"))
    assert RouterStage(router, 1).process(PLAIN_VNET_HEADER, reply, 0.1) == []
    assert stage.next_deadline() == 0.0
    released = stage.poll(0.1)
    assert [f[14 + 20:] for _, f in released] == [f[14 + 20:] for _, f in frames]
    assert all(f[0:6] == H2_MAC and f[6:12] == MB1_MAC for _, f in released)
    assert router.counters[0]["arp_requests_sent"] == 1


def test_frames_for_the_node_or_other_macs_are_not_forwarded() -> None:
    router, wire = make_router()
    assert router.forward(0, *tcp_frame(0, 100, dst=MB1), 0.0) == []
    assert router.forward(0, *tcp_frame(0, 100, dst_mac=H2_MAC), 0.0) == []
    assert router.forward(0, *tcp_frame(0, 100, dst=ipaddress.ip_address("192.0.2.1").packed), 0.0) == []
    assert router.counters[0]["no_route"] == 1 and wire.sent == []
    tcp = Ether(bytes(router.forward(0, *tcp_frame(0, 100), 0.0)[0][1]))[TCP]
    assert tcp.dport == 5201


# --- the router's in-place path -----------------------------------------------------------------

RX_BUFFER = 256 * 1024


def received(header: VnetHeader, frame: bytes) -> tuple[bytearray, int]:
    """A driver's receive buffer after reading (header, frame): header first, room to spare."""
    raw = header.pack() + frame
    buf = bytearray(RX_BUFFER)
    buf[:len(raw)] = raw
    return buf, len(raw)


def v6_super_frame(length: int, gso_size: int = MSS) -> tuple[VnetHeader, bytes]:
    header, frame = tcp_frame(0, length, src=H1_6, dst=H2_6, partial=True)
    return header._replace(gso_type=VNET_GSO_TCPV6, gso_size=gso_size, hdr_len=74), frame


COMMON_FRAMES = {
    "ipv4": lambda: tcp_frame(0, 1000),
    "ipv4 partial checksum": lambda: tcp_frame(0, 1000, partial=True),
    "ipv4 pure ACK": lambda: tcp_frame(0, 0),
    "ipv4 super-frame": lambda: super_frame(40 * 1348, gso_size=1348),
    "ipv6": lambda: tcp_frame(0, 1000, src=H1_6, dst=H2_6),
    "ipv6 super-frame": lambda: v6_super_frame(40 * 1328, gso_size=1328),
}


@pytest.mark.parametrize("kind", COMMON_FRAMES)
def test_in_place_path_writes_the_bytes_forward_writes(kind: str) -> None:
    router, wire = make_router(1400)
    header, frame = COMMON_FRAMES[kind]()
    (slow_header, slow), = router.forward(0, header, frame, 0.0)
    buf, n = received(header, frame)
    assert RouterStage(router, 0).forward_in_place(buf, n)
    assert buf[:VNET_HDR_LEN] == slow_header.pack() == header.pack()
    assert buf[VNET_HDR_LEN:n] == slow and buf[n:] == bytes(RX_BUFFER - n)
    assert wire.sent == [] and not any(router.counters[0].snapshot().values())


def test_in_place_ttl_update_matches_forward_for_every_checksum() -> None:
    router, _ = make_router()
    stage = RouterStage(router, 0)
    for ip_id in range(0, 65536, 37):
        header, frame = tcp_frame(0, 20, ttl=2 + ip_id % 250, ip_id=ip_id)
        buf, n = received(header, frame)
        assert stage.forward_in_place(buf, n)
        assert buf[VNET_HDR_LEN:n] == router.forward(0, header, frame, 0.0)[0][1]
        assert checksums_ok(buf[VNET_HDR_LEN:n])


ARP_REQUEST_FRAME = bytes(Ether(src=H1_MAC.hex(":"), dst="ff:ff:ff:ff:ff:ff") /
                          ARP(op=1, hwsrc=H1_MAC.hex(":"), psrc="10.0.1.2", pdst="10.0.1.1"))
ND_SOLICIT_FRAME = bytes(Ether(src=H1_MAC.hex(":"), dst=MB0_MAC.hex(":")) / IPv6(src="fd00:1::2", dst="fd00:2::2") /
                         ICMPv6ND_NS(tgt="fd00:2::2"))
DECLINED = {
    "TTL 1": lambda: tcp_frame(0, 100, ttl=1),
    "over the egress MTU": lambda: tcp_frame(0, 1448),
    "super-frame of segments over the MTU": lambda: super_frame(40 * MSS),
    "for the node": lambda: tcp_frame(0, 100, dst=MB1),
    "no route": lambda: tcp_frame(0, 100, dst=ipaddress.ip_address("192.0.2.1").packed),
    "back where it came from": lambda: tcp_frame(0, 100, dst=ipaddress.ip_address("10.0.1.9").packed),
    "another MAC": lambda: tcp_frame(0, 100, dst_mac=H2_MAC),
    "multicast": lambda: tcp_frame(0, 100, dst=ipaddress.ip_address("224.0.0.5").packed),
    "next hop unknown": lambda: tcp_frame(0, 100, dst=ipaddress.ip_address("10.0.2.7").packed),
    "ipv6 link-local": lambda: tcp_frame(0, 100, src=H1_6, dst=ipaddress.ip_address("fe80::1").packed),
    "ipv6 neighbour discovery": lambda: (PLAIN_VNET_HEADER, ND_SOLICIT_FRAME),
    "ARP": lambda: (PLAIN_VNET_HEADER, ARP_REQUEST_FRAME),
    "truncated": lambda: (PLAIN_VNET_HEADER, tcp_frame(0, 100)[1][:30]),
    "csum_start past the end": lambda: (super_frame(4 * MSS)[0]._replace(csum_start=60000), super_frame(4 * MSS)[1]),
}


@pytest.mark.parametrize("kind", DECLINED)
def test_in_place_path_leaves_to_forward_what_needs_judging(kind: str) -> None:
    router, _ = make_router(1400)
    header, frame = DECLINED[kind]()
    buf, n = received(header, frame)
    before = bytes(buf)
    assert not RouterStage(router, 0).forward_in_place(buf, n)
    assert buf == before


def test_in_place_path_follows_neighbour_changes() -> None:
    router, _ = make_router(resolved=False)
    stage = RouterStage(router, 0)
    header, frame = tcp_frame(0, 100)
    buf, n = received(header, frame)
    assert not stage.forward_in_place(buf, n)
    for mac in (H2_MAC, bytes([2, 0, 0, 0, 0, 9])):
        router.learn(H2, mac)
        buf, n = received(header, frame)
        assert stage.forward_in_place(buf, n) and buf[VNET_HDR_LEN:VNET_HDR_LEN + 12] == mac + MB1_MAC


class DriverCalls(FrameDriver):
    """A FrameDriver whose reads and writes are its own methods, so the forwarder calls them per frame
    instead of reading and writing the descriptor itself."""

    def read_raw(self) -> int:
        return super().read_raw()

    def write_raw(self, header_and_frame: bytes | bytearray | memoryview) -> bool:
        return super().write_raw(header_and_frame)


class SocketPort:
    """A FrameDriver on one end of a datagram socket pair; the test holds the other end (the wire)."""

    def __init__(self, name: str, driver: type[FrameDriver] = FrameDriver) -> None:
        self.ours, self.wire = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.ours.setblocking(False)
        self.wire.setblocking(False)
        self.driver = driver(self.ours.fileno(), name, None, RX_BUFFER)

    def put(self, item: tuple[VnetHeader, bytes]) -> None:
        self.wire.send(item[0].pack() + item[1])

    def taken(self) -> list[tuple[VnetHeader, bytes]]:
        out = []
        while True:
            try:
                raw = self.wire.recv(RX_BUFFER)
            except BlockingIOError:
                return out
            out.append((VnetHeader.unpack(raw), raw[VNET_HDR_LEN:]))


def router_middlebox(egress_mtu: int = 1400, driver: type[FrameDriver] = FrameDriver,
                     budget: int = 64) -> tuple[Middlebox, SocketPort, SocketPort]:
    a, b = SocketPort("eth0", driver), SocketPort("eth1", driver)
    router, _ = make_router(egress_mtu, resolved=False)
    box = Middlebox(MiddleboxConfig(mode="router", budget=budget), a.driver, b.driver,
                    (router.ports[0], router.ports[1]))
    assert box.router is not None
    for address, mac in ((H2, H2_MAC), (H2_6, H2_MAC), (H1, H1_MAC)):
        box.router.learn(address, mac)
    return box, a, b


def test_router_middlebox_forwards_common_frames_in_place_and_the_rest_through_the_router() -> None:
    box, a, b = router_middlebox()
    assert box.router is not None
    reference, _ = make_router(1400)
    frames = [super_frame(40 * 1348, gso_size=1348), tcp_frame(0, 0), tcp_frame(0, 100, ttl=1),
              tcp_frame(0, 500, src=H1_6, dst=H2_6)]
    for item in frames:
        a.put(item)
    box.forwarder.a_to_b.pump(0.0)
    expected = [out for item in frames for out in reference.forward(0, *item, 0.0)]
    assert b.taken() == [(h, bytes(f)) for h, f in expected]
    (_, icmp), = a.taken()
    assert (Ether(icmp)[ICMP].type, Ether(icmp)[IP].dst) == (11, "10.0.1.2")
    counters = box.stats()["directions"]["a_to_b"]
    assert (counters["fwd_frames"], counters["fwd_in_place"], counters["ttl_expired"]) == (3, 3, 1)


MIXED_FRAMES = [super_frame(40 * 1348, gso_size=1348), tcp_frame(0, 0), tcp_frame(0, 100, ttl=1),
                tcp_frame(0, 500, src=H1_6, dst=H2_6), (super_frame(4 * MSS)[0]._replace(gso_size=0), super_frame(4 * MSS)[1]),
                tcp_frame(0, 1448), tcp_frame(0, 100, dst_mac=H2_MAC), (PLAIN_VNET_HEADER, ARP_REQUEST_FRAME)]


def forwarded(driver: type[FrameDriver], change: dict[str, object], frames: list[tuple[VnetHeader, bytes]],
              egress_buffer: int = 0) -> tuple[list[tuple[VnetHeader, bytes]], list[tuple[VnetHeader, bytes]], dict[str, Any]]:
    """What a router middlebox with `driver`s sent on b and back on a for `frames` put on a, and its stats;
    `egress_buffer` sets b's send buffer, so the kernel refuses what does not fit."""
    box, a, b = router_middlebox(driver=driver)
    if egress_buffer:
        b.ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, egress_buffer)
    box.update("a_to_b", change, 0.0)
    for item in frames:
        a.put(item)
    box.forwarder.a_to_b.pump(0.0)
    return b.taken(), a.taken(), box.stats()


@pytest.mark.parametrize("change", [{}, {"coalesce": "gro"}, {"tso": True}, {"impairments": {"loss": 30.0}}],
                         ids=["router", "gro, router", "router, tso", "router, loss"])
def test_plain_drivers_forward_as_the_drivers_own_reads_and_writes_do(change: dict[str, object]) -> None:
    plain = forwarded(FrameDriver, change, MIXED_FRAMES)
    assert plain == forwarded(DriverCalls, change, MIXED_FRAMES)
    out, back, stats = plain
    assert out and back  # forwarded frames, and ICMP errors or the ARP reply back to h1
    drivers = stats["drivers"]
    assert drivers["eth0"]["rx_frames"] == len(MIXED_FRAMES)
    assert drivers["eth0"]["rx_bytes"] == sum(len(f) for _, f in MIXED_FRAMES)
    assert drivers["eth1"]["tx_bytes"] == sum(len(f) for _, f in out)


def test_plain_pump_stops_at_the_budget_and_leaves_the_rest_queued() -> None:
    frames = [tcp_frame(i * 100, 100, ip_id=i) for i in range(9)]
    box, a, b = router_middlebox(budget=4)
    for item in frames:
        a.put(item)
    box.forwarder.a_to_b.pump(0.0)
    assert [tcp_payload(f) for _, f in b.taken()] == [payload(i * 100, 100) for i in range(4)]
    box.forwarder.a_to_b.pump(0.0)
    box.forwarder.a_to_b.pump(0.0)
    assert [tcp_payload(f) for _, f in b.taken()] == [payload(i * 100, 100) for i in range(4, 9)]
    counters = box.stats()["directions"]["a_to_b"]
    assert (counters["fwd_frames"], counters["fwd_in_place"]) == (9, 9)


def test_plain_pump_counts_what_a_full_egress_queue_refused() -> None:
    frames = [tcp_frame(i * 100, 100, ip_id=i) for i in range(40)]
    plain_out, _, plain = forwarded(FrameDriver, {}, frames, egress_buffer=4096)
    calls_out, _, calls = forwarded(DriverCalls, {}, frames, egress_buffer=4096)
    assert plain_out == calls_out and plain["drivers"] == calls["drivers"]
    egress = plain["drivers"]["eth1"]
    assert 0 < egress["tx_frames"] == len(plain_out) < 40 and egress["tx_dropped"] == 40 - len(plain_out)
    assert plain["directions"]["a_to_b"]["fwd_in_place"] == 40


def test_in_place_path_behind_gro_only_while_gro_holds_nothing() -> None:
    box, a, b = router_middlebox(1500)
    box.update("a_to_b", {"coalesce": "gro"}, 0.0)
    first = super_frame(20 * MSS)
    held = [tcp_frame(i * MSS, MSS, ip_id=10 + i) for i in range(3)]
    behind = super_frame(20 * MSS)
    for item in (first, *held, behind):
        a.put(item)
    box.forwarder.a_to_b.pump(0.0)
    out = b.taken()
    assert [h.gso_size for h, _ in out] == [MSS, MSS, MSS]  # the held segments leave as one GRO aggregate
    assert [tcp_payload(f) for _, f in out] == [payload(0, 20 * MSS), payload(0, 3 * MSS), payload(0, 20 * MSS)]
    assert all(f[0:6] == H2_MAC and f[14 + 8] == 63 for _, f in out)
    counters = box.stats()["directions"]["a_to_b"]
    assert counters["fwd_in_place"] == 1 and counters["gro_merged"] == 2


def test_a_stage_after_the_router_turns_the_in_place_path_off() -> None:
    box, a, b = router_middlebox(1500)
    box.update("a_to_b", {"tso": True}, 0.0)
    a.put(super_frame(10 * MSS))
    box.forwarder.a_to_b.pump(0.0)
    assert len(b.taken()) == 10 and box.stats()["directions"]["a_to_b"]["fwd_in_place"] == 0
    box.update("a_to_b", {"tso": False}, 0.0)
    a.put(super_frame(10 * MSS))
    box.forwarder.a_to_b.pump(0.0)
    assert len(b.taken()) == 1 and box.stats()["directions"]["a_to_b"]["fwd_in_place"] == 1


CONTRADICTIONS = {  # pipeline change -> (malformed, in place, payload of the last frame out)
    "router": ({}, (2, 1, payload(0, 4 * MSS))),
    "LRO, router": ({"coalesce": "lro"}, (2, 0, payload(0, 4 * MSS))),
    "router, TSO": ({"tso": True}, (2, 0, payload(3 * MSS, MSS))),
}


@pytest.mark.parametrize("pipeline", CONTRADICTIONS)
def test_frames_whose_headers_contradict_themselves_are_counted_not_fatal(pipeline: str) -> None:
    change, (malformed, in_place, last) = CONTRADICTIONS[pipeline]
    box, a, b = router_middlebox(9000)  # an LRO aggregate of the good frame fits
    box.update("a_to_b", change, 0.0)
    header, frame = super_frame(4 * MSS)
    a.put((header._replace(csum_start=60000), frame))  # the TCP header past the end
    a.put((header._replace(gso_size=0), frame))  # GSO with no segment size
    a.put((header, frame))
    box.forwarder.a_to_b.pump(0.0)
    counters = box.stats()["directions"]["a_to_b"]
    assert (counters["rx_malformed"], counters["fwd_in_place"]) == (malformed, in_place)
    assert tcp_payload(b.taken()[-1][1]) == last


PLAIN_PAST_GRO = {
    "ipv4 pure ACK, partial checksum": lambda: tcp_frame(0, 0, partial=True),
    "ipv4 pure ACK": lambda: tcp_frame(0, 0),
    "ipv6 pure ACK, partial checksum": lambda: tcp_frame(0, 0, src=H1_6, dst=H2_6, partial=True),
    "ipv4 FIN": lambda: tcp_frame(0, 0, flags=ACK | 1, partial=True),
}


@pytest.mark.parametrize("kind", PLAIN_PAST_GRO)
def test_segments_without_payload_pass_gro_in_place_as_gro_would_hand_them_on(kind: str) -> None:
    header, frame = PLAIN_PAST_GRO[kind]()
    reference, _ = make_router(1400)
    (slow_header, slow), = Pipeline([GroStage(Counters(())), RouterStage(reference, 0)])(header, frame, 0.0)
    box, a, b = router_middlebox()
    box.update("a_to_b", {"coalesce": "gro"}, 0.0)
    a.put((header, frame))
    box.forwarder.a_to_b.pump(0.0)
    assert b.taken() == [(slow_header, bytes(slow))] and slow_header == PLAIN_VNET_HEADER
    assert checksums_ok(slow) and box.stats()["directions"]["a_to_b"]["fwd_in_place"] == 1


def test_gro_sees_what_it_may_merge_or_must_flush() -> None:
    stage = GroStage(Counters(()))
    data = received(*tcp_frame(0, MSS, partial=True))
    ack = received(*tcp_frame(0, 0, partial=True))
    assert not stage.passes_plain(*data) and stage.passes_plain(*ack)
    stage.process(*tcp_frame(0, MSS), 0.0)
    assert stage.coalescer.held_flows == 1
    assert not stage.passes_plain(*ack) and not stage.passes_untouched(received(*super_frame(20 * MSS))[0])


def test_bench_router_cost_routes_its_frames_and_in_place_costs_less() -> None:
    from toelab.benches.middlebox import ROUTER_FRAME_KINDS, router_frame_cost_us

    label, payload_bytes, gso_size = ROUTER_FRAME_KINDS[0]
    in_place, pipeline = router_frame_cost_us(payload_bytes, gso_size, frames=2000)
    assert 0 < in_place < pipeline / 2, (label, in_place, pipeline)  # the pipeline copies 64 KiB; in place copies none
