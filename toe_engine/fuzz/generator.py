"""Structure-aware frames for fuzzing an EndpointCore: one function per family.

Each family builds one frame from a FuzzTarget: most aim at a live connection of one of the
target's peers (its real sequence numbers, its window edges, a segment it really sent) so
the frame reaches deep into the state machine rather than dying at the first check. Payload
bytes a frame carries inside a flow's stream are always the flow's pattern at that stream
offset, so whatever the engine delivers can be checked as a prefix of one stream.
"""
from __future__ import annotations

import random
import struct
from collections.abc import Callable
from dataclasses import dataclass

from toe_engine.checksum import IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, internet_checksum, pseudo_header_sum
from toe_engine.codec import build_ip_frame, build_tcp_frame
from toe_engine.codec.arp import ArpPacket, build_arp
from toe_engine.codec.ethernet import build_ethernet
from toe_engine.codec.icmp import build_icmpv4, build_icmpv6
from toe_engine.codec.ipv4 import build_ipv4_header
from toe_engine.codec.ipv6 import build_ipv6_header
from toe_engine.endpoint import EndpointCore
from toe_engine.fuzz.peer import MASK, PeerFlow, WirePeer
from toe_engine.codec.tcp import build_tcp_segment
from toe_engine.segment import ACK, FIN, PSH, RST, SYN, URG, FourTuple, Segment, TcpOptions
from toe_engine.tcp.connection import Connection

PATTERN_LEN = 65521  # prime, so flows' streams do not line up
FUZZ_PORTS = range(20000, 30000)  # source ports of connection-churn frames, never a peer flow's
SERVICE_PORTS = (7, 9, 19, 80)
ETH_IPV4, ETH_IPV6, ETH_ARP, ETH_VLAN, ETH_QINQ = 0x0800, 0x86DD, 0x0806, 0x8100, 0x88A8
MTUS = (0, 1, 67, 68, 296, 551, 552, 576, 1000, 1279, 1280, 1499, 1500, 9000, 65535)
_TCP = struct.Struct("!HHIIBBHHH")


@dataclass
class FuzzTarget:
    """What a family may aim at: the engine, its peers and their flows, and a random source."""

    rng: random.Random
    core: EndpointCore
    peers: list[WirePeer]
    pattern: bytes  # twice PATTERN_LEN random bytes

    def stream(self, flow: PeerFlow, offset: int, n: int) -> bytes:
        """The flow's bytes at stream offset `offset` (0 is the byte after its SYN)."""
        start = (offset + flow.sport * 7919) % PATTERN_LEN
        n = min(n, PATTERN_LEN)
        return self.pattern[start:start + n]

    def live(self) -> tuple[WirePeer, PeerFlow, Connection | None] | None:
        """A random established-looking flow and the engine's TCB for it."""
        rng = self.rng
        peer = rng.choice(self.peers)
        flows = [f for f in peer.flows.values() if f.rcv_nxt is not None]
        if not flows:
            return None
        flow = rng.choice(flows)
        return peer, flow, self.conn(peer, flow)

    def conn(self, peer: WirePeer, flow: PeerFlow) -> Connection | None:
        return self.core.stack.connection(FourTuple(peer.server_ip, flow.dport, peer.ip, flow.sport))


Family = Callable[[FuzzTarget], bytes]


# --- helpers -------------------------------------------------------------------------------------

def stream_offset(flow: PeerFlow, seq32: int) -> int:
    """Where `seq32` falls in the flow's stream, signed (-1 is its SYN), as the receiver unwraps it."""
    d = (seq32 - flow.iss - 1) & MASK
    return d - (1 << 32) if d >= 1 << 31 else d


def _window_edges(t: FuzzTarget, flow: PeerFlow, conn: Connection | None) -> list[int]:
    """Sequence numbers at and around the engine's receive window."""
    rcv_nxt = flow.snd_nxt if conn is None else conn.rcv_nxt & MASK
    wnd = 65535 if conn is None else max(0, conn.rcv_adv - conn.rcv_nxt)
    return [rcv_nxt, rcv_nxt - 1, rcv_nxt + 1, rcv_nxt + wnd - 1, rcv_nxt + wnd, rcv_nxt + wnd + 1,
            rcv_nxt + (1 << 31), rcv_nxt - (1 << 31), 0, MASK, flow.iss, flow.iss + 1,
            rcv_nxt + t.rng.randrange(max(wnd, 1))]


def _ack_edges(t: FuzzTarget, flow: PeerFlow, conn: Connection | None) -> list[int]:
    if conn is None:
        base = flow.rcv_nxt or 0
        return [base, base - 1, base + 1, t.rng.getrandbits(32)]
    una, nxt = conn.snd_una & MASK, conn.snd_nxt & MASK
    return [una, una - 1, nxt, nxt + 1, una - conn.max_snd_wnd - 1, una - conn.max_snd_wnd,
            una + (1 << 31), nxt + 65536, t.rng.getrandbits(32)]


def _payload_at(t: FuzzTarget, flow: PeerFlow, seq32: int, n: int, syn: bool = False) -> bytes:
    """The flow's bytes for a segment at `seq32` (a SYN's data starts one later)."""
    return t.stream(flow, stream_offset(flow, seq32) + (1 if syn else 0), n) if n else b""


def _live_segment(t: FuzzTarget, flags: int | None = None, *, max_payload: int = 1448,
                  options: TcpOptions | None = None) -> tuple[WirePeer, PeerFlow, Segment] | None:
    live = t.live()
    if live is None:
        return None
    peer, flow, conn = live
    rng = t.rng
    seq = rng.choice(_window_edges(t, flow, conn)) & MASK
    ack = rng.choice(_ack_edges(t, flow, conn)) & MASK
    n = rng.choice((0, 0, 1, rng.randrange(1, max_payload + 1)))
    flags = (ACK | rng.choice((0, PSH))) if flags is None else flags
    seg = Segment(flow.sport, flow.dport, seq, ack, flags, rng.choice((0, 1, 512, 65535, rng.randrange(65536))),
                  _payload_at(t, flow, seq, n, bool(flags & SYN)), options or TcpOptions())
    return peer, flow, seg


def _live_frame(t: FuzzTarget, **kw: object) -> bytes:
    """A frame of `_live_segment`, or a truncated frame when no flow is live yet."""
    made = _live_segment(t, **kw)  # type: ignore[arg-type]
    if made is None:
        return truncated(t)
    return made[0].frame(made[2])


def raw_tcp_segment(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int, window: int,
             options: bytes, payload: bytes, *, data_offset: int | None = None, csum: bool = True) -> bytes:
    """A TCP header built by hand, so options and the data offset can be anything."""
    hlen = 20 + len(options)
    offset = (hlen // 4) if data_offset is None else data_offset
    header = bytearray(_TCP.pack(sport, dport, seq & MASK, ack & MASK, (offset & 0xF) << 4, flags & 0xFF,
                                 window & 0xFFFF, 0, 0))
    out = header + options + payload
    if csum:
        struct.pack_into("!H", out, 16, internet_checksum(out, pseudo_header_sum(src, dst, IPPROTO_TCP, len(out))))
    return bytes(out)


def _any_frame(t: FuzzTarget) -> bytes:
    made = _live_segment(t)
    if made is None:
        peer = t.rng.choice(t.peers)
        return peer.frame(Segment(t.rng.choice(FUZZ_PORTS), 7, t.rng.getrandbits(32), 0, SYN, 65535))
    peer, _flow, seg = made
    return peer.frame(seg)


# --- families --------------------------------------------------------------------------------------

def truncated(t: FuzzTarget) -> bytes:
    """Any frame cut anywhere: short Ethernet, IP, TCP headers and options."""
    frame = _any_frame(t)
    return frame[:t.rng.randrange(len(frame))]


def ipv4_header(t: FuzzTarget) -> bytes:
    """Inconsistent IPv4 fields: version, IHL, total length, protocol, TTL; checksum fixed or not."""
    rng = t.rng
    frame = bytearray(_any_frame(t))
    if frame[12:14] != b"\x08\x00":
        return bytes(frame)
    field = rng.randrange(5)
    if field == 0:
        frame[14] = (rng.randrange(16) << 4) | (frame[14] & 0xF)
    elif field == 1:
        frame[14] = 0x40 | rng.randrange(16)
    elif field == 2:
        struct.pack_into("!H", frame, 16, rng.choice((0, 1, 19, 20, 39, 40, len(frame) - 13, 65535, rng.randrange(65536))))
    elif field == 3:
        frame[23] = rng.randrange(256)
    else:
        frame[22] = rng.choice((0, 1, 255))
    if rng.random() < 0.7:
        ihl = (frame[14] & 0xF) * 4
        if 20 <= ihl <= len(frame) - 14:
            struct.pack_into("!H", frame, 24, 0)
            struct.pack_into("!H", frame, 24, internet_checksum(frame[14:14 + ihl]))
    return bytes(frame)


def ipv4_options(t: FuzzTarget) -> bytes:
    """IPv4 options of any kind and length (record route, timestamps, garbage, EOL, NOP)."""
    rng = t.rng
    made = _live_segment(t)
    if made is None:
        return truncated(t)
    peer, _flow, seg = made
    n = rng.choice((4, 8, 12, 40))
    options = bytes(rng.choice((0, 1, 7, 68, 130, 131, 137, 148, rng.randrange(256))) if i % 2 == 0 else
                    rng.randrange(256) for i in range(n))
    tcp = build_tcp_segment(seg, peer.ip, peer.server_ip)
    ip = build_ipv4_header(peer.ip, peer.server_ip, IPPROTO_TCP, len(tcp), options=options)
    return build_ethernet(peer.server_mac, peer.mac, ETH_IPV4) + bytes(ip) + bytes(tcp)


def ipv4_fragment(t: FuzzTarget) -> bytes:
    """A TCP segment as the first, a middle or the last fragment of a datagram."""
    rng = t.rng
    made = _live_segment(t)
    if made is None:
        return truncated(t)
    peer, _flow, seg = made
    tcp = build_tcp_segment(seg, peer.ip, peer.server_ip)
    mf, offset = rng.choice(((True, 0), (True, 8 * rng.randrange(1, 100)), (False, 8 * rng.randrange(1, 8000))))
    ip = build_ipv4_header(peer.ip, peer.server_ip, IPPROTO_TCP, len(tcp), df=False, mf=mf, frag_offset=offset)
    return build_ethernet(peer.server_mac, peer.mac, ETH_IPV4) + bytes(ip) + bytes(tcp)


def tcp_data_offset(t: FuzzTarget) -> bytes:
    """A data offset below 5, past the segment's end, or over option bytes placed before the
    payload (so what the receiver takes as data is still the flow's stream)."""
    made = _live_segment(t)
    if made is None:
        return truncated(t)
    peer, _flow, seg = made
    offset = t.rng.randrange(16)
    over_options = t.rng.random() < 0.7
    filler = t.rng.randbytes(max(0, 4 * offset - 20)) if over_options else b""
    payload = bytes(seg.payload) if over_options or offset <= 5 else b""  # else: the offset runs past the end
    tcp = raw_tcp_segment(peer.ip, peer.server_ip, seg.src_port, seg.dst_port, seg.seq, seg.ack, seg.flags,
                          seg.window, filler, payload, data_offset=offset)
    return _wrap_ip(peer, IPPROTO_TCP, tcp)


TCP_OPTION_KINDS = (0, 1, 2, 3, 4, 5, 8, 19, 27, 28, 29, 30, 34, 69, 253, 254)


def tcp_options(t: FuzzTarget) -> bytes:
    """Every option kind at bad lengths: 0, 1, too short, too long, past the header's end."""
    rng = t.rng
    made = _live_segment(t)
    if made is None:
        return truncated(t)
    peer, _flow, seg = made
    options = bytearray()
    for _ in range(rng.randrange(1, 6)):
        kind = rng.choice(TCP_OPTION_KINDS + (rng.randrange(256),))
        if kind in (0, 1) and rng.random() < 0.7:
            options.append(kind)
            continue
        length = rng.choice((0, 1, 2, 3, 4, 6, 8, 10, 12, 18, 34, 40, 255, rng.randrange(256)))
        body = bytes(rng.randrange(256) for _ in range(max(0, min(length, 40) - 2)))
        options += bytes((kind, length)) + body
    options = options[:40]
    options += b"\x00" * (-len(options) % 4)
    flags = seg.flags | (SYN if rng.random() < 0.1 else 0)
    tcp = raw_tcp_segment(peer.ip, peer.server_ip, seg.src_port, seg.dst_port, seg.seq, seg.ack, flags, seg.window,
                   bytes(options), bytes(seg.payload))
    return _wrap_ip(peer, IPPROTO_TCP, tcp)


def bad_checksum(t: FuzzTarget) -> bytes:
    """A good live segment with one bit flipped in its TCP header, checksum or payload."""
    frame = bytearray(_any_frame(t))
    if len(frame) > 34:
        i = t.rng.randrange(34, len(frame))
        frame[i] ^= 1 << t.rng.randrange(8)
    return bytes(frame)


def ipv6_extensions(t: FuzzTarget) -> bytes:
    """IPv6 extension-header chains: hop-by-hop, routing, fragment, destination, AH, bad lengths, loops."""
    rng = t.rng
    peer = _peer6(t)
    if peer is None:
        return truncated(t)
    made = _live_segment(t)
    tcp = b""
    if made is not None and made[0] is peer:
        _p, _flow, seg = made
        tcp = bytes(build_tcp_segment(seg, peer.ip, peer.server_ip))
    else:
        tcp = raw_tcp_segment(peer.ip, peer.server_ip, rng.choice(FUZZ_PORTS), rng.choice(SERVICE_PORTS),
                       rng.getrandbits(32), 0, SYN, 65535, b"", b"")
    chain = [rng.choice((0, 43, 44, 60, 51, 59, 135, rng.randrange(256))) for _ in range(rng.randrange(1, 5))]
    body = bytearray()
    for i, header in enumerate(chain):
        nxt = chain[i + 1] if i + 1 < len(chain) else IPPROTO_TCP
        if header == 44:
            body += struct.pack("!BBHI", nxt, 0, (8 * rng.randrange(0, 4)) | rng.randrange(2), rng.getrandbits(32))
        else:
            units = rng.choice((0, 0, 1, 2, 255))
            body += bytes((nxt, units)) + bytes(rng.randrange(256) for _ in range(6 + 8 * min(units, 3)))
    first = chain[0]
    ip = build_ipv6_header(peer.ip, peer.server_ip, first, len(body) + len(tcp))
    return build_ethernet(peer.server_mac, peer.mac, ETH_IPV6) + ip + bytes(body) + tcp


def flag_combinations(t: FuzzTarget) -> bytes:
    """Any of the 256 flag bytes on a live flow, at its real or edge sequence numbers."""
    rng = t.rng
    made = _live_segment(t, flags=rng.randrange(256))
    if made is None:
        return truncated(t)
    peer, _flow, seg = made
    if seg.flags & URG:
        seg.urg_ptr = rng.randrange(65536)
    return peer.frame(seg)


def seq_ack_edges(t: FuzzTarget) -> bytes:
    """ACK (and data) at the window's edges and across the 2**31 and 2**32 boundaries."""
    return _live_frame(t)


def in_window_data(t: FuzzTarget) -> bytes:
    """The flow's own bytes anywhere in the window: holes, overlaps, out of order, one byte."""
    rng = t.rng
    live = t.live()
    if live is None:
        return truncated(t)
    peer, flow, conn = live
    if conn is None:
        return seq_ack_edges(t)
    wnd = max(1, conn.rcv_adv - conn.rcv_nxt)
    start = (conn.rcv_nxt + rng.randrange(-64, wnd)) & MASK
    n = rng.choice((1, 2, rng.randrange(1, 1449)))
    seg = Segment(flow.sport, flow.dport, start, conn.snd_una & MASK, ACK | (FIN if rng.random() < 0.05 else 0),
                  65535, _payload_at(t, flow, start, n))
    return peer.frame(seg)


def fin_anywhere(t: FuzzTarget) -> bytes:
    return _live_frame(t, flags=FIN | t.rng.choice((0, ACK, ACK | PSH)))


def rst_edges(t: FuzzTarget) -> bytes:
    """RST at exactly RCV.NXT, inside the window (challenge ACK), outside it; with ACK or not."""
    return _live_frame(t, flags=RST | t.rng.choice((0, ACK)))


def syn_on_live(t: FuzzTarget) -> bytes:
    """SYN, SYN-ACK or SYN+FIN on an existing connection (RFC 5961 4.2 challenge ACK)."""
    return _live_frame(t, flags=SYN | t.rng.choice((0, ACK, FIN, RST)))


def connection_churn(t: FuzzTarget) -> bytes:
    """New SYNs to services and closed ports with any options, data, SYN+FIN, spoofed sources:
    they fill the table, so the exhaustion policy answers."""
    rng = t.rng
    peer = rng.choice(t.peers)
    opts = TcpOptions(mss=rng.choice((None, 0, 1, 88, 536, 1460, 65535)),
                      wscale=rng.choice((None, 0, 7, 14, 15, 255)), sack_permitted=rng.random() < 0.5,
                      timestamp=(rng.getrandbits(32), rng.choice((0, rng.getrandbits(32)))) if rng.random() < 0.5 else None)
    flags = SYN | rng.choice((0, 0, 0, FIN, PSH, URG, ACK))
    payload = b"GET /1000 HTTP/1.1\r\n\r\n" if rng.random() < 0.1 else b""
    dport = rng.choice(SERVICE_PORTS + (22, 443, rng.randrange(1, 65536)))
    seg = Segment(rng.choice(FUZZ_PORTS), dport, rng.getrandbits(32), 0, flags, rng.randrange(65536), payload, opts)
    src_mac = peer.mac if rng.random() < 0.7 else bytes([2, 0, 0, 0, rng.randrange(256), rng.randrange(256)])
    if rng.random() < 0.3 and len(peer.ip) == 4:
        src_ip = rng.choice((bytes([198, 51, 100, rng.randrange(256)]), bytes([224, 0, 0, 1]), bytes(4),
                             bytes([255] * 4), bytes([127, 0, 0, 1])))
        return bytes(build_tcp_frame(src_mac, peer.server_mac, src_ip, peer.server_ip, seg))
    return bytes(build_tcp_frame(src_mac, peer.server_mac, peer.ip, peer.server_ip, seg))


def cookie_guess(t: FuzzTarget) -> bytes:
    """Bare ACKs to a service from ports with no connection: forged SYN-cookie answers."""
    rng = t.rng
    peer = rng.choice(t.peers)
    seg = Segment(rng.choice(FUZZ_PORTS), rng.choice(SERVICE_PORTS), rng.getrandbits(32), rng.getrandbits(32),
                  ACK | rng.choice((0, PSH, FIN)), rng.randrange(65536), b"x" * rng.choice((0, 0, 10)),
                  TcpOptions(timestamp=(rng.getrandbits(32), rng.getrandbits(32))) if rng.random() < 0.5 else TcpOptions())
    return peer.frame(seg)


def icmp_errors(t: FuzzTarget) -> bytes:
    """ICMP and ICMPv6 errors quoting a live flow's segment: any type and code, MTUs at the
    floors, quoted sequence numbers at SND.UNA, SND.NXT and anywhere, quotes cut short."""
    rng = t.rng
    live = t.live()
    if live is None:
        return truncated(t)
    peer, flow, conn = live
    una = conn.snd_una & MASK if conn is not None else 0
    nxt = conn.snd_nxt & MASK if conn is not None else 0
    seq = rng.choice((una, nxt, (una + 1) & MASK, (nxt + 1) & MASK, rng.getrandbits(32)))
    quoted_seg = Segment(flow.dport, flow.sport, seq, flow.rcv_nxt or 0, ACK, 65535, b"q" * 8)
    quoted = bytes(build_tcp_frame(peer.server_mac, peer.mac, peer.server_ip, peer.ip, quoted_seg))[14:]
    quoted = quoted[:rng.choice((len(quoted), 28, 24, 20, 48, 44, 40, 10))]
    mtu = rng.choice(MTUS + (rng.randrange(65536),))
    if len(peer.ip) == 4:
        icmp_type, code = rng.choice(((3, 4), (3, 4), (3, 0), (3, 1), (3, 2), (3, 3), (3, 13), (11, 0), (12, 0),
                                      (4, 0), (5, 0), (3, rng.randrange(16))))
        rest = mtu & 0xFFFF if (icmp_type, code) == (3, 4) else rng.getrandbits(32) if rng.random() < 0.2 else 0
        body = build_icmpv4(icmp_type, code, rest, quoted)
        return bytes(build_ip_frame(peer.mac, peer.server_mac, rng.choice((peer.ip, bytes([192, 0, 2, 254]))),
                                    peer.server_ip, IPPROTO_ICMP, body))
    icmp_type, code = rng.choice(((2, 0), (2, 0), (1, 0), (1, 1), (1, 3), (1, 4), (3, 0), (4, 0), (4, 1)))
    rest = mtu if icmp_type == 2 else rng.getrandbits(32) if rng.random() < 0.2 else 0
    body = build_icmpv6(peer.ip, peer.server_ip, icmp_type, code, rest, quoted)
    return bytes(build_ip_frame(peer.mac, peer.server_mac, peer.ip, peer.server_ip, IPPROTO_ICMPV6, body))


def arp_garbage(t: FuzzTarget) -> bytes:
    """ARP of any op from any sender (broadcast and zero MACs, our own address), cut short, for other types."""
    rng = t.rng
    peer = next((p for p in t.peers if len(p.ip) == 4), t.peers[0])
    sender_ip = rng.choice((bytes([192, 0, 2, rng.randrange(3, 250)]), peer.server_ip, bytes(4),
                            bytes([198, 51, 100, rng.randrange(256)])))  # never a peer's own address
    sender_mac = rng.choice((b"\xff" * 6, bytes(6), bytes([1, 0, 0x5E, 0, 0, 1]),
                             bytes([2, 0, 0, 0, rng.randrange(256), rng.randrange(256)])))
    target_ip = rng.choice((peer.server_ip, sender_ip, bytes([192, 0, 2, rng.randrange(256)])))
    body = build_arp(ArpPacket(rng.choice((1, 2, 0, 3, rng.randrange(65536))), sender_mac, sender_ip,
                               rng.choice((bytes(6), peer.server_mac)), target_ip))
    if rng.random() < 0.2:
        body = bytearray(body)
        body[rng.randrange(8)] = rng.randrange(256)
        body = bytes(body)
    if rng.random() < 0.2:
        body = body[:rng.randrange(len(body))]
    return build_ethernet(rng.choice((b"\xff" * 6, peer.server_mac)), sender_mac, ETH_ARP) + body


def neighbour_discovery(t: FuzzTarget) -> bytes:
    """NS/NA with zero-length, overlong and repeated link-layer options, at any hop limit."""
    rng = t.rng
    peer = _peer6(t)
    if peer is None:
        return arp_garbage(t)
    icmp_type = rng.choice((135, 136))
    target = rng.choice((peer.server_ip, bytes.fromhex("20010db80000000000000000000000") + bytes([rng.randrange(256)])))
    options = bytearray()
    for _ in range(rng.randrange(0, 3)):
        units = rng.choice((0, 1, 1, 2, 40))
        options += bytes((rng.choice((1, 2, 3, 14)), units)) + bytes([2, 0, 0, 0, 0xBA, rng.randrange(256)]) + bytes(
            max(0, 8 * units - 8))
    rest = rng.choice((0, 0x20000000, 0x40000000, 0x60000000, 0xE0000000))
    body = build_icmpv6(peer.ip, peer.server_ip, icmp_type, rng.choice((0, 0, 1)), rest, target + bytes(options))
    src = rng.choice((bytes(16), bytes.fromhex("20010db8000000000000000000000077")))  # never a peer's own
    return bytes(build_ip_frame(bytes([2, 0, 0, 0, 0xBA, 1]), peer.server_mac, src, peer.server_ip, IPPROTO_ICMPV6, body,
                                ttl=rng.choice((255, 255, 64, 1))))


def vlan_tags(t: FuzzTarget) -> bytes:
    """A valid frame behind one or two 802.1Q/802.1ad tags, or a tag cut short."""
    rng = t.rng
    frame = _any_frame(t)
    tags = b"".join(struct.pack("!HH", rng.choice((ETH_VLAN, ETH_QINQ)), rng.randrange(65536))
                    for _ in range(rng.choice((1, 1, 2, 3))))
    out = frame[:12] + tags[:2] + tags[2:] + frame[12:]
    return out[:rng.choice((len(out), 14, 16, 18))]


def jumbo(t: FuzzTarget) -> bytes:
    """Jumbo and super-sized frames of the flow's own bytes, up to a 64 KiB datagram."""
    made = _live_segment(t, max_payload=1)
    if made is None:
        return truncated(t)
    peer, flow, seg = made
    seg.payload = _payload_at(t, flow, seg.seq, t.rng.choice((8960, 9000, 16000, 65000)))
    return peer.frame(seg)


def random_bytes(t: FuzzTarget) -> bytes:
    rng = t.rng
    peer = rng.choice(t.peers)
    ethertype = rng.choice((ETH_IPV4, ETH_IPV6, ETH_ARP, ETH_VLAN, rng.randrange(65536)))
    n = rng.choice((0, 1, 20, 40, 60, rng.randrange(1500)))
    return build_ethernet(peer.server_mac, peer.mac, ethertype) + rng.randbytes(n)


def timestamps(t: FuzzTarget) -> bytes:
    """Timestamp options at the PAWS edges: TS.Recent - 1, + 2**31, 0, and TSecr anywhere."""
    rng = t.rng
    live = t.live()
    if live is None:
        return truncated(t)
    _peer, _flow, conn = live
    recent = conn.ts_recent if conn is not None else 0
    tsval = rng.choice((recent, recent - 1, recent + 1, recent + (1 << 31), recent - (1 << 31), 0, MASK)) & MASK
    return _live_frame(t, options=TcpOptions(timestamp=(tsval, rng.getrandbits(32))))


def sack_blocks(t: FuzzTarget) -> bytes:
    """SACK blocks reversed, beyond SND.NXT, below SND.UNA, empty, four of them."""
    rng = t.rng
    live = t.live()
    if live is None:
        return truncated(t)
    _peer, _flow, conn = live
    una = conn.snd_una & MASK if conn is not None else 0
    nxt = conn.snd_nxt & MASK if conn is not None else 0
    points = (una, nxt, una + 1, nxt + 1, una - 1000, nxt + 100000, rng.getrandbits(32))
    blocks = tuple((rng.choice(points) & MASK, rng.choice(points) & MASK) for _ in range(rng.randrange(1, 5)))
    return _live_frame(t, flags=ACK, options=TcpOptions(sack_blocks=blocks))


def windows(t: FuzzTarget) -> bytes:
    """Window 0, 1, shrinking and huge on live ACKs: zero-window probing and persist."""
    made = _live_segment(t, flags=ACK)
    if made is None:
        return truncated(t)
    peer, _flow, seg = made
    seg.window = t.rng.choice((0, 0, 1, 2, 65535))
    return peer.frame(seg)


FAMILIES: dict[str, Family] = {f.__name__: f for f in (
    truncated, ipv4_header, ipv4_options, ipv4_fragment, tcp_data_offset, tcp_options, bad_checksum,
    ipv6_extensions, flag_combinations, seq_ack_edges, in_window_data, fin_anywhere, rst_edges, syn_on_live,
    connection_churn, cookie_guess, icmp_errors, arp_garbage, neighbour_discovery, vlan_tags, jumbo,
    random_bytes, timestamps, sack_blocks, windows,
)}


def _peer6(t: FuzzTarget) -> WirePeer | None:
    return next((p for p in t.peers if len(p.ip) == 16), None)


def _wrap_ip(peer: WirePeer, proto: int, l4: bytes) -> bytes:
    return bytes(build_ip_frame(peer.mac, peer.server_mac, peer.ip, peer.server_ip, proto, l4))
