"""`icmp_errors`: how a TCP treats ICMP errors that quote one of its own established connections.

Each case opens a fresh connection to the echo service, sends data and leaves the target's
echo unacknowledged, so the target has a segment in flight (SND.UNA < SND.NXT). The peer then
sends the ICMP error a router (an unused address on the link) or the peer host would send
about that segment: the target's IPv4 header and TCP header exactly as they came off the wire,
so the quoted sequence number is SND.UNA. Only after that does the peer acknowledge.

- Soft errors (destination unreachable codes 0, 1, 5, time exceeded, parameter problem) must
  not abort the connection (MUST-56): echo keeps returning every byte afterwards.
- Source quench must be discarded silently (MUST-55): beyond surviving, the target must not
  slow down: an echoed burst of three segments, small enough for any initial window, comes
  back whole before any ACK, after the quench as before it.
- Fragmentation needed is acted upon (MUST-54): with a next-hop MTU of 1000 the target's
  retransmission and every later segment carry at most 960 bytes, where they carried 1400.
  It runs last: the lowered path MTU stays in the target's route cache for the peer's address.

The link runs with TSO off, so the peer reads the segment sizes the target really sent.
"""
from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pydantic import Field
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.utils import checksum

from .framework import Check, RunContext, ScenarioParams, scenario
from .peer import Peer, PeerTimeout, seq_add, tcp_payload

ICMP_DEST_UNREACH, ICMP_SOURCE_QUENCH, ICMP_TIME_EXCEEDED, ICMP_PARAMETER_PROBLEM = 3, 4, 11, 12
CODE_FRAG_NEEDED = 4
#: The quoted segment's payload: more than 960 bytes, so a lowered segment size shows.
UNACKED_BYTES = 1400
#: 3 x 1400 bytes fit in the smallest initial window RFC 5681 allows for a 1460-byte SMSS (4380 bytes), so every
#: TCP sends the whole burst without waiting; one that took a quench as a signal to slow down sends one segment.
BURST_SEGMENTS = 3
#: A frag-needed MTU of 1000 leaves at most 1000 - 20 (IPv4) - 20 (TCP) bytes for data.
PMTU = 1000
MAX_SEGMENT_AFTER = PMTU - 40


class IcmpParams(ScenarioParams):
    after_bytes: int = Field(6000, ge=1000, le=60000, description="bytes echoed after each ICMP error to show the "
                             "connection carries on")


@dataclass(frozen=True)
class SoftError:
    """An ICMP error that must not abort a connection."""

    id: str
    type: int
    code: int
    what: str
    from_router: bool = True


SOFT_ERRORS = (
    SoftError("net-unreachable", ICMP_DEST_UNREACH, 0, "destination unreachable (net)"),
    SoftError("host-unreachable", ICMP_DEST_UNREACH, 1, "destination unreachable (host)"),
    SoftError("source-route-failed", ICMP_DEST_UNREACH, 5, "destination unreachable (source route failed)"),
    SoftError("time-exceeded", ICMP_TIME_EXCEEDED, 0, "time exceeded in transit"),
    SoftError("parameter-problem", ICMP_PARAMETER_PROBLEM, 0, "parameter problem", from_router=False),
)


@scenario("icmp_errors", purpose="ICMP errors quoting an established connection: soft errors do not abort it, "
          "source quench is ignored, fragmentation needed lowers the segment size.",
          topology="two_hosts", params=IcmpParams, topology_params={"mtu": 1500, "tso": "false"},
          covers=("MUST-54", "MUST-55", "MUST-56"), claims=("TOE-5",))
def run(ctx: RunContext) -> Iterator[Check]:
    for error in SOFT_ERRORS:
        ctx.progress(f"ICMP {error.what}")
        yield _soft_error(ctx, error)
    ctx.progress("ICMP source quench")
    yield _source_quench(ctx)
    ctx.progress("ICMP fragmentation needed")
    yield _frag_needed(ctx)


# --- crafting -----------------------------------------------------------------------------------------
def router_address(ctx: RunContext) -> str:
    """An unused address on the link's subnet, standing for a router there: on-link, so no source filter drops it."""
    network = ctx.lab.spec.addresses(ctx.server)[ctx.iface(ctx.server)][0].network
    used = {ctx.address(ctx.server), ctx.address(ctx.client)}
    return str(next(a for a in reversed(list(network.hosts())) if str(a) not in used))


def quote(frame: Ether) -> bytes:
    """The target's IPv4 and TCP headers exactly as they were on the wire.

    RFC 792 asks for the first 8 bytes of the TCP header; routers quote more (RFC 1812), so the whole header goes.
    """
    return bytes(frame.original)[14:14 + frame[IP].ihl * 4 + frame[TCP].dataofs * 4]


def icmp_error(peer: Peer, src: str, type: int, code: int, quoted: bytes, rest: bytes = bytes(4)) -> Ether:
    """An ICMP error from `src` to the target about `quoted`, on the peer's link; `rest` is the header's second word."""
    body = struct.pack("!BBH", type, code, 0) + rest + quoted
    body = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
    link = peer.segment("A")
    return Ether(bytes(Ether(src=link.src, dst=link.dst) / IP(src=src, dst=peer.dst, proto=1) / body))


# --- a connection with a segment in flight --------------------------------------------------------
@contextmanager
def echo_peer(ctx: RunContext) -> Iterator[Peer]:
    with Peer(ctx.lab, ctx.client, ctx.address(ctx.server), ctx.port("echo"), rng=ctx.rng, timeout_s=2.0) as peer:
        try:
            yield peer
        finally:
            if peer.peer_isn is not None:
                peer.abort()


def leave_unacknowledged(peer: Peer, payload: bytes) -> list[Ether]:
    """Send `payload` to echo and read the echo unacknowledged: the target's SND.UNA stays at its first byte."""
    peer.send_data(payload)
    start, data, segments = peer.rcv_nxt, b"", []
    while len(data) < len(payload):
        frame = peer.expect(payload=True, seq=seq_add(start, len(data)))
        data += tcp_payload(frame)
        segments.append(frame)
    return segments


def echo_roundtrip(peer: Peer, payload: bytes, segment_size: int = 1400) -> tuple[bytes, list[Ether]]:
    """Send `payload` in segments and read back as many bytes, acknowledging: what echo returned, and its segments."""
    for offset in range(0, len(payload), segment_size):
        peer.send_data(payload[offset:offset + segment_size])
    return peer.receive(len(payload))


def disruptions(peer: Peer, since: int) -> list[Ether]:
    """Segments received after index `since` that end or reset the connection."""
    return [f for f in peer.received[since:] if set(str(f[TCP].flags)) & {"R", "F"}]


def pattern(n: int, salt: int) -> bytes:
    return bytes((i * 7 + salt) % 251 for i in range(n))


# --- the cases ------------------------------------------------------------------------------------------
def _soft_error(ctx: RunContext, error: SoftError) -> Check:
    src = router_address(ctx) if error.from_router else ctx.address(ctx.client)
    payload = pattern(ctx.params.after_bytes, error.type + error.code)
    with echo_peer(ctx) as peer:
        peer.handshake()
        in_flight = leave_unacknowledged(peer, pattern(UNACKED_BYTES, 1))
        mark = len(peer.received)
        peer.send(icmp_error(peer, src, error.type, error.code, quote(in_flight[0])))
        peer.rcv_nxt = seq_add(peer.rcv_nxt, UNACKED_BYTES)
        peer.send(peer.segment("A"))
        try:
            echoed, _ = echo_roundtrip(peer, payload)
        except PeerTimeout:
            echoed = b""
        ended = disruptions(peer, mark)
    ok = echoed == payload and not ended
    return ctx.check(f"icmp-{error.id}-not-aborted", "MUST-56", ok,
                     f"after ICMP {error.what} from {src} quoting its segment at SND.UNA, the target echoed "
                     f"{len(echoed)} of {len(payload)} bytes {'exactly' if echoed == payload else 'wrongly'} and sent "
                     f"{len(ended)} segments with FIN or RST",
                     numbers={"icmp_type": error.type, "icmp_code": error.code, "echoed": len(echoed),
                              "fin_or_rst": len(ended)})


def _source_quench(ctx: RunContext) -> Check:
    """The same burst before and after the quench.

    A TCP that slowed down on it (RFC 1122's old advice, withdrawn by RFC 6633) sends less of
    the burst before waiting for an ACK afterwards. The burst fits any initial window, so
    measuring it before the quench does not itself time out and shrink the window.
    """
    burst = pattern(BURST_SEGMENTS * UNACKED_BYTES, 3)
    with echo_peer(ctx) as peer:
        peer.handshake()
        echo_roundtrip(peer, pattern(ctx.params.after_bytes, 2))
        before, before_exact = _unacked_flight(peer, burst)
        in_flight = leave_unacknowledged(peer, pattern(UNACKED_BYTES, 1))
        mark = len(peer.received)
        peer.send(icmp_error(peer, ctx.address(ctx.client), ICMP_SOURCE_QUENCH, 0, quote(in_flight[0])))
        peer.rcv_nxt = seq_add(peer.rcv_nxt, UNACKED_BYTES)
        peer.send(peer.segment("A"))
        after, after_exact = _unacked_flight(peer, burst)
        ended = disruptions(peer, mark)
    ok = before == after == len(burst) and before_exact and after_exact and not ended
    return ctx.check("icmp-source-quench-ignored", "MUST-55", ok,
                     f"of an echoed {BURST_SEGMENTS}-segment burst the target sent {before} bytes before waiting for an "
                     f"ACK, and {after} bytes after an ICMP source quench quoting its segment at SND.UNA; the echoes "
                     f"were {'exact' if before_exact and after_exact else 'wrong'}, with {len(ended)} FIN or RST "
                     "segments after the quench",
                     numbers={"flight_before": before, "flight_after": after, "fin_or_rst": len(ended)})


def _unacked_flight(peer: Peer, burst: bytes) -> tuple[int, bool]:
    """Send `burst` to echo: how much of the echo came before the target waited for an ACK, and whether
    the whole echo, read on with acknowledgments, was exact."""
    for offset in range(0, len(burst), UNACKED_BYTES):
        peer.send_data(burst[offset:offset + UNACKED_BYTES])
    flight = _one_flight(peer, len(burst))
    peer.rcv_nxt = seq_add(peer.rcv_nxt, len(flight))
    peer.send(peer.segment("A"))
    try:
        rest, _ = peer.receive(len(burst) - len(flight)) if len(flight) < len(burst) else (b"", [])
    except PeerTimeout:
        return len(flight), False
    return len(flight), flight + rest == burst


def _one_flight(peer: Peer, nbytes: int, timeout_s: float = 2.0) -> bytes:
    """In-order data read without acknowledging, until `nbytes`, a retransmission (the sender waited) or the deadline."""
    data = b""
    deadline = time.monotonic() + timeout_s
    while len(data) < nbytes and (frame := peer.next_frame(deadline)) is not None:
        chunk = tcp_payload(frame)
        offset = (frame[TCP].seq - peer.rcv_nxt) % (1 << 32)
        if chunk and offset < len(data):
            break
        if chunk and offset == len(data):
            data += chunk
    return data


def _frag_needed(ctx: RunContext) -> Check:
    src = router_address(ctx)
    payload = pattern(ctx.params.after_bytes, 5)
    with echo_peer(ctx) as peer:
        peer.handshake()
        in_flight = leave_unacknowledged(peer, pattern(UNACKED_BYTES, 1))
        before = max(len(tcp_payload(f)) for f in in_flight)
        mark = len(peer.received)
        peer.send(icmp_error(peer, src, ICMP_DEST_UNREACH, CODE_FRAG_NEEDED, quote(in_flight[0]),
                             rest=struct.pack("!HH", 0, PMTU)))
        try:
            resent, resent_segments = peer.receive(UNACKED_BYTES)
            echoed, echo_segments = echo_roundtrip(peer, payload)
        except PeerTimeout:
            resent, resent_segments, echoed, echo_segments = b"", [], b"", []
        sizes = [len(tcp_payload(f)) for f in peer.received[mark:] if tcp_payload(f)]
        ended = disruptions(peer, mark)
    after = max(sizes, default=0)
    ok = (before > MAX_SEGMENT_AFTER and resent == pattern(UNACKED_BYTES, 1) and echoed == payload
          and 0 < after <= MAX_SEGMENT_AFTER and not ended)
    return ctx.check("icmp-frag-needed-lowers-segment-size", "MUST-54", ok,
                     f"the target's segments carried up to {before} bytes; after ICMP fragmentation needed with MTU "
                     f"{PMTU} from {src} it resent {len(resent)} bytes in {len(resent_segments)} segments and echoed "
                     f"{len(echoed)} of {len(payload)} bytes in {len(echo_segments)}, the largest carrying {after} "
                     f"bytes (limit {MAX_SEGMENT_AFTER})",
                     numbers={"largest_before": before, "largest_after": after, "pmtu": PMTU,
                              "segments_after": len(sizes), "fin_or_rst": len(ended)})

