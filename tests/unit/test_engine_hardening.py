"""Reproducers of what fuzzing found in the endpoint engine, each pinned to the fixed behaviour."""
from __future__ import annotations

import gc
import tracemalloc

import pytest

from toe_engine.apps import App
from toe_engine.codec import build_ip_frame, build_tcp_frame, parse_frame
from toe_engine.codec.arp import ArpPacket, build_arp
from toe_engine.codec.ethernet import build_ethernet
from toe_engine.codec.icmp import build_frag_needed, build_packet_too_big
from toe_engine.endpoint import EndpointConfig, EndpointCore
from toe_engine.fuzz.peer import PeerFlow, WirePeer
from toe_engine.resources import ResourceConfig
from toe_engine.segment import ACK, FIN, PSH, RST, SYN, Segment, TcpOptions
from toe_engine.testing import IP_A, IP_B, MAC_A, MAC_B

IP6_A = bytes.fromhex("20010db8000000000000000000000001")
IP6_B = bytes.fromhex("20010db8000000000000000000000002")
EVIL_MAC = bytes.fromhex("02000000bad0")
ROUTER = bytes([192, 0, 2, 254])


def engine(services: dict | None = None, resources: ResourceConfig | None = None, v6: bool = False) -> EndpointCore:
    return EndpointCore(EndpointConfig(MAC_B, (IP6_B,) if v6 else (IP_B,),
                                       services=services or {7: "echo", 19: "chargen", 80: "http"},
                                       resources=resources or ResourceConfig(), secret=b"hardening"))


def peer_of(core: EndpointCore, v6: bool = False) -> WirePeer:
    return WirePeer(core, MAC_A, IP6_A if v6 else IP_A, MAC_B, IP6_B if v6 else IP_B)


def pump(peer: WirePeer, flow: PeerFlow, until: "callable[[], bool]", rounds: int = 5000) -> None:
    """ACK what arrives; run the engine's timers when nothing does."""
    for _ in range(rounds):
        if until():
            return
        before = len(flow.received)
        peer.ack(flow)
        if len(flow.received) == before:
            deadline = peer.core.next_deadline()
            if deadline is not None:
                peer.now = max(peer.now, deadline)
                peer.core.on_timer(peer.now)
                peer.collect()


# --- an application's exception never leaves from_wire ------------------------------------------

def test_http_finishes_its_response_after_the_client_half_closes() -> None:
    """SYN; ACK + GET /1000000; FIN; ACK used to raise "cannot send in state LAST_ACK" out of
    from_wire, after cutting the response at the send buffer's size."""
    core = engine()
    peer = peer_of(core)
    flow = peer.open(80, 40000)
    peer.send(flow, ACK | PSH, b"GET /1000000 HTTP/1.1\r\nHost: t\r\n\r\n")
    peer.send(flow, ACK | FIN)
    pump(peer, flow, lambda: flow.fin_received)
    head, _, body = bytes(flow.received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Content-Length: 1000000" in head
    assert body == b"x" * 1_000_000
    assert flow.fin_received and not flow.reset
    assert core.counters["app_errors"] == 0


class Raising(App):
    def on_data(self, data: bytes | memoryview) -> None:
        raise RuntimeError("application bug")


def test_a_raising_application_is_counted_and_reset_and_the_engine_goes_on() -> None:
    core = engine({7: Raising, 9: "discard"})
    peer = peer_of(core)
    bad = peer.open(7, 40001)
    assert peer.send(bad, ACK | PSH, b"boom") is True  # no exception out of from_wire
    assert core.counters["app_errors"] == 1
    assert bad.reset
    assert core.stack.connections() == [] and core.apps == {}
    good = peer.open(9, 40002)
    peer.send(good, ACK | PSH, b"still served")
    assert core.stack.connection(core.stack.connections()[0]).rcv_nxt == good.iss + 1 + 12


def test_http_does_not_materialise_huge_or_pipelined_bodies() -> None:
    """Sixteen pipelined requests for 16 MiB each must not become 256 MiB of Python bytes."""
    core = engine()
    peer = peer_of(core)
    flow = peer.open(80, 40003)
    tracemalloc.start()
    try:
        peer.send(flow, ACK | PSH, b"GET /16777216 HTTP/1.1\r\n\r\n" * 16)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024
    assert flow.received.startswith(b"HTTP/1.1 200 OK")


def test_http_with_a_path_of_too_many_digits_answers_instead_of_raising() -> None:
    core = engine()
    peer = peer_of(core)
    flow = peer.open(80, 40004)
    peer.send(flow, ACK | PSH, b"GET /" + b"9" * 5000 + b" HTTP/1.1\r\n\r\n")
    assert core.counters["app_errors"] == 0
    assert flow.received.startswith(b"HTTP/1.1 ")


# --- ICMP cannot shrink a connection below the path MTU floor ------------------------------------

def _quoted(core: EndpointCore, flow: PeerFlow, v6: bool) -> bytes:
    """The IP + TCP header of a segment the engine sent on `flow`, quoting SND.UNA."""
    conn = core.stack.connection(core.stack.connections()[0])
    seg = Segment(flow.dport, flow.sport, conn.snd_una & 0xFFFFFFFF, flow.rcv_nxt or 0, ACK, 65535, b"x" * 64)
    src, dst = (IP6_B, IP6_A) if v6 else (IP_B, IP_A)
    return bytes(build_tcp_frame(MAC_B, MAC_A, src, dst, seg))[14:]


def _mss_after_icmp(mtu: int, v6: bool) -> tuple[int, int]:
    core = engine(v6=v6)
    peer = peer_of(core, v6)
    flow = peer.open(19, 40010)  # chargen: data in flight at once
    conn = core.stack.connection(core.stack.connections()[0])
    before = conn.snd_mss
    quoted = _quoted(core, flow, v6)
    if v6:
        l4 = build_packet_too_big(IP6_A, IP6_B, mtu, quoted)
        frame = build_ip_frame(MAC_A, MAC_B, IP6_A, IP6_B, 58, l4)
    else:
        frame = build_ip_frame(MAC_A, MAC_B, ROUTER, IP_B, 1, build_frag_needed(mtu, quoted))
    peer.deliver(bytes(frame))
    return before, conn.snd_mss


@pytest.mark.parametrize("mtu", [0, 1, 67, 68, 300, 551])
def test_frag_needed_below_min_pmtu_is_floored_at_552(mtu: int) -> None:
    """Linux raises a reported MTU below net.ipv4.route.min_pmtu (552) to 552."""
    before, after = _mss_after_icmp(mtu, v6=False)
    assert (before, after) == (1460, 552 - 40)


def test_frag_needed_above_the_floor_is_taken() -> None:
    assert _mss_after_icmp(1000, v6=False) == (1460, 960)


@pytest.mark.parametrize("mtu", [0, 1, 68, 1279])
def test_packet_too_big_below_1280_is_ignored(mtu: int) -> None:
    """RFC 8201 section 4 and Linux since 4.x/5.14: a PTB below the IPv6 minimum MTU is discarded."""
    before, after = _mss_after_icmp(mtu, v6=True)
    assert after == before == 1460


def test_packet_too_big_at_1280_is_taken() -> None:
    assert _mss_after_icmp(1280, v6=True) == (1460, 1220)


# --- buffers: released at once, bounded per connection and for the engine -------------------------

def _fill_and_reset(core: EndpointCore, conns: int, per_conn: int) -> tuple[WirePeer, list[PeerFlow]]:
    peer = WirePeer(core, MAC_A, IP_A, MAC_B, IP_B, record=False)
    flows = [peer.open(7, 41000 + i, options=TcpOptions(mss=1460, wscale=7)) for i in range(conns)]
    chunk = b"z" * 1448
    for flow in flows:
        for _ in range(per_conn // len(chunk)):
            peer.send(flow, ACK, chunk, advance=0.0, window=0)  # reads nothing back: everything piles up
    return peer, flows


def _reset_all(core: EndpointCore, peer: WirePeer, flows: list[PeerFlow]) -> None:
    """RST each flow at exactly RCV.NXT (the engine dropped some of what the peer sent)."""
    for flow in flows:
        conn = core.stack.connection(next(k for k in core.stack.connections() if k.remote_port == flow.sport))
        peer.send(flow, RST | ACK, seq=conn.rcv_nxt)


def _traced_after_gc() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def test_reset_connections_release_their_buffers_at_once() -> None:
    core = engine(resources=ResourceConfig(capacity=64))
    tracemalloc.start()
    try:
        base = _traced_after_gc()
        peer, flows = _fill_and_reset(core, 24, 600_000)
        full = _traced_after_gc() - base
        _reset_all(core, peer, flows)
        assert core.stack.connections() == []
        left = _traced_after_gc() - base  # no timer has run since
    finally:
        tracemalloc.stop()
    assert full > 24 * 300_000
    assert left < full / 20, f"{left} of {full} bytes still held after every connection was reset"
    assert core.buffer_memory.total == 0


def test_buffer_memory_is_bounded_per_connection_and_for_the_engine() -> None:
    limit, per_conn = 4 * 1024 * 1024, 512 * 1024
    core = engine(resources=ResourceConfig(capacity=64, buffer_memory_bytes=limit, conn_memory_bytes=per_conn))
    tracemalloc.start()
    try:
        base = _traced_after_gc()
        peer, flows = _fill_and_reset(core, 24, 700_000)
        held = _traced_after_gc() - base
        accounted = core.buffer_memory.total
        peak = core.buffer_memory.peak
        biggest = max(core.buffer_memory.held(k) for k in core.stack.connections())
        _reset_all(core, peer, flows)
    finally:
        tracemalloc.stop()
    assert accounted <= limit and peak <= limit + 1448
    assert biggest <= per_conn + 1448
    assert held < 2 * limit
    assert core.counters["rx_mem_dropped"] > 0
    assert core.counters["buffer_memory_high_water"] == peak
    assert core.buffer_memory.total == 0 and core.resources.gauges()["buffer_memory_bytes"] == 0


# --- neighbours come from ARP and ND, not from any frame's source MAC -----------------------------

def test_a_spoofed_source_mac_does_not_redirect_a_connection() -> None:
    core = engine()
    peer = peer_of(core)
    flow = peer.open(19, 40020)  # chargen: the engine keeps sending on its own
    spoof = Segment(50000, 23, 1, 0, SYN, 65535)  # a closed port: draws a RST back to its sender
    peer.deliver(bytes(build_tcp_frame(EVIL_MAC, MAC_B, IP_A, IP_B, spoof)))
    before = peer.frames_to_us
    while peer.frames_to_us == before and peer.now < 10:
        peer.now = core.next_deadline()
        core.on_timer(peer.now)  # the retransmission timer: nothing from the peer in between
        peer.collect()
    assert peer.frames_to_us > before
    assert peer.wrong_mac == 0


def _arp(op: int, sender_mac: bytes, sender_ip: bytes, target_ip: bytes) -> bytes:
    body = build_arp(ArpPacket(op, sender_mac, sender_ip, b"\x00" * 6 if op == 1 else MAC_B, target_ip))
    return build_ethernet(b"\xff" * 6 if op == 1 else MAC_B, sender_mac, 0x0806) + body


def test_neighbours_are_learned_from_arp_aimed_at_us_only() -> None:
    core = engine()
    stranger = bytes([192, 0, 2, 9])
    core.from_wire(_arp(1, MAC_A, IP_A, bytes([192, 0, 2, 77])), 1.0)  # asks for someone else
    core.from_wire(_arp(2, EVIL_MAC, stranger, IP_B), 1.0)  # a reply nobody asked for
    assert core.neighbors.lookup(IP_A) is None and core.neighbors.lookup(stranger) is None
    core.from_wire(_arp(1, MAC_A, IP_A, IP_B), 1.0)  # asks for us
    assert core.neighbors.lookup(IP_A) == MAC_A
    core.from_wire(_arp(2, EVIL_MAC, IP_A, IP_B), 1.2)  # a second answer within the lock time
    assert core.neighbors.lookup(IP_A) == MAC_A
    core.from_wire(_arp(2, EVIL_MAC, IP_A, IP_B), 3.0)  # ... and after it, as Linux does
    assert core.neighbors.lookup(IP_A) == EVIL_MAC


def test_neighbours_are_learned_from_a_neighbour_solicitation_for_us() -> None:
    from toe_engine.codec.icmp import build_icmpv6

    core = engine(v6=True)
    body = IP6_B + bytes([1, 1]) + MAC_A  # target, then the source link-layer address option
    ns = build_icmpv6(IP6_A, IP6_B, 135, 0, 0, body)
    core.from_wire(bytes(build_ip_frame(MAC_A, MAC_B, IP6_A, IP6_B, 58, ns, ttl=255)), 1.0)
    assert core.neighbors.lookup(IP6_A) == MAC_A
    other = build_icmpv6(IP6_A, IP6_B, 135, 0, 0, bytes(15) + b"\x05" + bytes([1, 1]) + EVIL_MAC)
    core.from_wire(bytes(build_ip_frame(EVIL_MAC, MAC_B, IP6_A, IP6_B, 58, other, ttl=255)), 5.0)
    assert core.neighbors.lookup(IP6_A) == MAC_A  # solicits someone else: not learned


# --- connection requests ---------------------------------------------------------------------------

def test_duplicate_syns_draw_rate_limited_syn_acks() -> None:
    """tcpreq's 30 copies of one SYN: Linux answers the first and one retransmission (tcp_check_req
    with tcp_invalid_ratelimit 500 ms), the engine used to answer all 30."""
    core = engine()
    peer = peer_of(core)
    flow = PeerFlow(40030, 7, 5000)
    peer.flows[(40030, 7)] = flow
    syn = peer.frame(Segment(40030, 7, 5000, 0, SYN, 65535, b"", TcpOptions(mss=1460)))
    for _ in range(30):
        peer.deliver(syn, advance=0.005)
    assert flow.synacks == 2
    assert core.counters["synack_rtx_limited"] == 28
    peer.deliver(syn, advance=0.6)
    assert flow.synacks == 3


def test_syn_fin_is_dropped_and_counted() -> None:
    core = engine()
    peer = peer_of(core)
    flow = PeerFlow(40040, 7, 7000)
    peer.flows[(40040, 7)] = flow
    assert peer.deliver(peer.frame(Segment(40040, 7, 7000, 0, SYN | FIN, 65535))) is True
    assert flow.synacks == 0 and core.stack.connections() == []
    assert core.counters["rx_syn_fin_dropped"] == 1


def test_syn_fin_may_be_accepted_by_setting() -> None:
    from toe_engine.tcp.config import TcpConfig

    core = EndpointCore(EndpointConfig(MAC_B, (IP_B,), services={7: "echo"}, tcp=TcpConfig(drop_synfin=False)))
    frame = build_tcp_frame(MAC_A, MAC_B, IP_A, IP_B, Segment(40041, 7, 7000, 0, SYN | FIN, 65535))
    core.from_wire(bytes(frame), 1.0)
    (reply,) = core.poll_wire()
    assert parse_frame(bytes(reply.frame), verify_csum=False).tcp.flags == SYN | ACK


def test_memory_bounds_and_synfin_are_engine_settings() -> None:
    from toe_engine.runtime.endpoint import EndpointSettings, EndpointSettingsError

    settings = EndpointSettings.parse({"addresses": ["192.0.2.2"], "buffer_memory": 8 << 20, "conn_memory": 1 << 20,
                                       "tcp": {"drop_synfin": False, "min_pmtu": 576}})
    core = EndpointCore(settings.endpoint_config(MAC_B, 1500))
    assert (core.buffer_memory.total_limit, core.buffer_memory.conn_limit) == (8 << 20, 1 << 20)
    assert core.stack.config.drop_synfin is False and core.stack.config.min_pmtu == 576
    with pytest.raises(EndpointSettingsError, match="buffer_memory"):
        EndpointSettings.parse({"addresses": ["192.0.2.2"], "buffer_memory": 10})


def test_an_application_that_closes_with_bytes_unread_is_reset_without_an_error() -> None:
    """Found by the fuzzer: HTTP, busy with a large response while pipelined requests fill its
    header buffer, the rest waits in the receive buffer and the peer's FIN is in; once the
    response is out it reads on, answers 431 to what is no header and closes with bytes
    unread. The connection is reset (SHLD-3) and nothing raises out of from_wire."""
    core = engine()
    peer = peer_of(core)
    flow = peer.open(80, 40050, options=TcpOptions(mss=1460, wscale=7))
    stream = b"GET /1000000 HTTP/1.1\r\n\r\n" + b"GET /1 HTTP/1.1\r\n\r\n" * 820 + b"z" * 20000
    for i in range(0, len(stream), 1448):
        peer.send(flow, ACK, stream[i:i + 1448], advance=0.0, window=0)  # reads nothing back yet
    peer.send(flow, ACK | FIN, window=0)
    pump(peer, flow, lambda: flow.reset or flow.fin_received)
    assert core.counters["app_errors"] == 0
    assert flow.reset and core.stack.connections() == []  # its close with bytes unread reset it, as Linux does
    assert flow.received.startswith(b"HTTP/1.1 200 OK") and core.counters["app_tx_bytes"] > 1_040_000


def test_the_reset_of_an_expired_embryonic_connection_reaches_its_peer() -> None:
    """The RST a timer sends as it drops a connection goes to the connection's next hop, which is
    forgotten only after that last segment is out (no ARP request instead of it)."""
    core = engine(resources=ResourceConfig(embryonic_timeout=5.0))
    peer = peer_of(core)
    flow = PeerFlow(40060, 7, 9000)
    peer.flows[(40060, 7)] = flow
    peer.deliver(peer.frame(Segment(40060, 7, 9000, 0, SYN, 65535, b"", TcpOptions(mss=1460))))
    peer.now = 5.0
    core.on_timer(peer.now)
    peer.collect()
    assert flow.reset and core.stack.connections() == []
    assert core.counters["tx_no_neighbor"] == 0 and core._next_hop == {}
