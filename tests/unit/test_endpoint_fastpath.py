"""The endpoint's fast receive path and one-pack transmit frames: the same bytes, counters and
data as the general path, fewer calls per frame, and a driver's reused buffer never leaks in."""
from __future__ import annotations

import cProfile
import pstats
from dataclasses import dataclass, field

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from toe_engine.apps.base import App
from toe_engine.codec import build_ip_frame, build_tcp_frame, build_tcp_frame_partial, parse_frame
from toe_engine.codec.icmp import build_frag_needed
from toe_engine.endpoint import EndpointConfig, EndpointCore, TxFrame
from toe_engine.impair import ImpairmentSpec
from toe_engine.offload.csum import complete_partial_checksum
from toe_engine.resources import ResourceConfig
from toe_engine.segment import ACK, FIN, PSH, RST, SYN, Segment, TcpOptions
from toe_engine.tcp.config import TcpConfig
from toe_engine.testing import IP_A, IP_B, MAC_A, MAC_B, FrameHarness

DISCARD = 9
PEER_PORT = 40000
ISN = 1000


# --- transmit: one pack of Ethernet + IPv4 + TCP ---------------------------------------

@pytest.mark.parametrize("options", [TcpOptions(), TcpOptions(timestamp=(0xDEADBEEF, 7)),
                                     TcpOptions(mss=1460, sack_permitted=True), TcpOptions(sack_blocks=((5, 9),))])
@pytest.mark.parametrize("payload_len", [0, 1, 1448, 70000])
def test_a_built_frame_has_the_checksums_and_fields_scapy_computes(options: TcpOptions, payload_len: int) -> None:
    payload = memoryview(bytes(range(256)) * (payload_len // 256 + 1))[:payload_len]
    seg = Segment(PEER_PORT, DISCARD, 0x1_0000_0005, 77, ACK | PSH, 513, payload, options, 3)
    frame = bytes(build_tcp_frame(MAC_A, MAC_B, IP_A, IP_B, seg, ttl=17, tos=0x28, ip_id=0x1_2345, df=False))
    pkt = Ether(frame)
    ip, tcp = pkt[IP], pkt[TCP]
    assert (pkt.src, pkt.dst) == ("02:00:00:00:00:01", "02:00:00:00:00:02")
    assert (ip.ttl, ip.tos, ip.id, ip.flags.DF, ip.len) == (17, 0x28, 0x2345, False,
                                                          0 if payload_len > 65000 else len(frame) - 14)
    assert (tcp.seq, tcp.ack, tcp.window, tcp.urgptr, int(tcp.flags)) == (5, 77, 513, 3, ACK | PSH)
    assert bytes(tcp.payload)[:payload_len] == bytes(payload)
    parsed = parse_frame(frame)  # verifies both checksums, whatever the length field says
    assert parsed.drop_reason is None and parsed.tcp is not None and parsed.tcp.options == options
    if payload_len <= 65000:  # scapy's own sums, for what its length field can describe
        ip.chksum = tcp.chksum = None
        assert bytes(Ether(bytes(pkt))) == frame


@pytest.mark.parametrize("options", [TcpOptions(), TcpOptions(timestamp=(1, 2)), TcpOptions(mss=536)])
def test_a_partial_checksum_frame_completes_to_the_full_one(options: TcpOptions) -> None:
    seg = Segment(PEER_PORT, DISCARD, 9, 10, ACK, 100, b"x" * 1001, options)
    partial = build_tcp_frame_partial(MAC_A, MAC_B, IP_A, IP_B, seg, ip_id=4)
    assert (partial.csum_start, partial.csum_offset) == (34, 16)
    complete_partial_checksum(partial.data, partial.csum_start, partial.csum_offset)
    assert partial.data == build_tcp_frame(MAC_A, MAC_B, IP_A, IP_B, seg, ip_id=4)


# --- receive: the fast path against the general one -------------------------------------

class Recording:
    """An endpoint core that keeps every frame and timer it is given, and what each made it send
    (a wrapper: a class of the compiled engine cannot be subclassed from here)."""

    def __init__(self, config: EndpointConfig) -> None:
        self.core = EndpointCore(config)
        self.trace: list[tuple[str, float, bytes, bool]] = []
        self.sent: list[list[tuple[bytes, int, int, int]]] = []

    def from_wire(self, frame: bytes | bytearray | memoryview, now: float, csum_ok: bool = False,
                  gso_size: int = 0) -> bool:
        self.trace.append(("frame", now, bytes(frame), csum_ok))
        pending = len(self.core.tx)  # the harness carries what is sent later: record only what is new
        consumed = self.core.from_wire(frame, now, csum_ok, gso_size)
        self.sent.append(_frames(self.core.tx[pending:]))
        return consumed

    def on_timer(self, now: float) -> None:
        self.trace.append(("timer", now, b"", False))
        pending = len(self.core.tx)
        self.core.on_timer(now)
        self.sent.append(_frames(self.core.tx[pending:]))

    def poll_wire(self) -> list[TxFrame]:
        return self.core.poll_wire()

    def next_deadline(self) -> float | None:
        return self.core.next_deadline()


def _frames(out: list[TxFrame]) -> list[tuple[bytes, int, int, int]]:
    return [(bytes(tx.frame), tx.gso_size, tx.csum_start, tx.csum_offset) for tx in out]


def _replay(config: EndpointConfig, trace: list[tuple[str, float, bytes, bool]]) -> tuple[EndpointCore, list]:
    core = EndpointCore(config)
    core.fast_path = False  # every frame through parse_frame
    sent = []
    for kind, now, frame, csum_ok in trace:
        if kind == "frame":
            core.from_wire(frame, now, csum_ok)
        else:
            core.on_timer(now)
        sent.append(_frames(core.poll_wire()))
    return core, sent


IMPAIRMENTS = {
    "clean": ImpairmentSpec(delay_ms=1),
    "loss, reordering, duplicates": ImpairmentSpec(delay_ms=1, loss=3, reorder=5, gap=3, duplicate=2),
    "corruption past the IP header": ImpairmentSpec(delay_ms=1, corrupt=3, corrupt_offset=34),
    "corruption anywhere": ImpairmentSpec(delay_ms=1, corrupt=3),
}


@pytest.mark.parametrize(("impairment", "rx_csum_offload"), [
    ("clean", False), ("clean", True), ("loss, reordering, duplicates", False), ("loss, reordering, duplicates", True),
    ("corruption past the IP header", False), ("corruption anywhere", False)])  # a device vouching drops corruption
def test_the_fast_path_sends_and_counts_exactly_what_the_general_path_does(impairment: str,
                                                                        rx_csum_offload: bool) -> None:
    spec = IMPAIRMENTS[impairment]
    harness = FrameHarness(a_to_b=spec, b_to_a=spec, rx_csum_offload=rx_csum_offload, seed=3,
                           tcp=TcpConfig(rcv_buf=256 * 1024, snd_buf=256 * 1024))
    config = harness.b.config
    recording = Recording(config)
    harness.b = recording  # type: ignore[assignment]
    intact, _ = harness.echo_transfer(300_000)
    assert intact
    frames = sum(1 for kind, *_ in recording.trace if kind == "frame")
    assert frames > 200 and recording.core.counters["rx_frames"] == frames
    general, sent = _replay(config, recording.trace)
    assert sent == recording.sent  # frame for frame, byte for byte, after every frame and timer
    fast_counters, general_counters = recording.core.counters.snapshot(), general.counters.snapshot()
    assert fast_counters == general_counters
    if impairment.startswith("corruption"):  # the fast path met frames it had to refuse
        assert fast_counters["rx_csum_errors"] > 0


# --- receive: a driver's buffer, reused -------------------------------------------------

class Holding(App):
    """Reads nothing until told to: what arrives stays in the receive buffer."""

    reading = False

    def receive_room(self) -> int:
        return 1 << 20 if self.reading else 0

    def on_data(self, data: bytes | memoryview) -> None:
        super().on_data(data)
        self.got = getattr(self, "got", b"") + bytes(data)


@dataclass
class Peer:
    """A crafted client of one engine core: frames in, the core's replies parsed."""

    core: EndpointCore
    seq: int = ISN + 1
    ack: int = 0
    options: TcpOptions = field(default_factory=TcpOptions)

    def frame(self, flags: int, payload: bytes = b"", seq: int | None = None) -> bytearray:
        seg = Segment(PEER_PORT, DISCARD, self.seq if seq is None else seq, self.ack, flags, 65535, payload,
                      TcpOptions(timestamp=self.options.timestamp))
        return build_tcp_frame(MAC_A, MAC_B, IP_A, IP_B, seg)

    def replies(self) -> list[Segment]:
        out = []
        for tx in self.core.poll_wire():
            frame = bytearray(tx.frame)
            if tx.csum_start:
                complete_partial_checksum(frame, tx.csum_start, tx.csum_offset)
            parsed = parse_frame(bytes(frame))
            assert parsed.drop_reason is None and parsed.tcp is not None
            out.append(parsed.tcp)
        return out


def connected(app: type[App] | str = "discard", timestamps: bool = False) -> Peer:
    core = EndpointCore(EndpointConfig(MAC_B, (IP_B,), services={DISCARD: app}, secret=b"fast",
                                       tcp=TcpConfig(delayed_ack=0.04)))
    core.neighbors.learn(IP_A, MAC_A)
    opts = TcpOptions(mss=1460, sack_permitted=True, timestamp=(5, 0) if timestamps else None)
    core.from_wire(build_tcp_frame(MAC_A, MAC_B, IP_A, IP_B, Segment(PEER_PORT, DISCARD, ISN, 0, SYN, 65535, b"",
                                                                      opts)), 1.0)
    peer = Peer(core, options=TcpOptions(timestamp=(6, 0)) if timestamps else TcpOptions())
    (synack,) = peer.replies()
    peer.ack = synack.seq + 1
    if timestamps:
        peer.options = TcpOptions(timestamp=(6, synack.options.timestamp[0]))
    assert core.from_wire(peer.frame(ACK), 1.0) and core.apps
    return peer


def test_a_reused_receive_buffer_changes_nothing_already_taken() -> None:
    """The fast path hands TCP a view of the frame, not a copy: what TCP keeps it must copy itself,
    in order (the receive buffer) and out of order (the reassembly queue)."""
    peer = connected(Holding)
    core = peer.core
    ring = bytearray(2000)  # one slot of a driver's ring, refilled for every frame
    first, second, third = b"a" * 100, b"b" * 100, b"c" * 100
    for payload, seq in ((first, peer.seq), (third, peer.seq + 200), (second, peer.seq + 100)):
        frame = peer.frame(ACK, payload, seq=seq)
        ring[:len(frame)] = frame
        assert core.from_wire(memoryview(ring)[:len(frame)], 1.1) is True
        ring[:] = bytes(len(ring))  # the driver overwrites the slot
    app = next(iter(core.apps.values()))
    assert isinstance(app, Holding)
    app.reading = True
    core.from_wire(peer.frame(ACK, b"d", seq=peer.seq + 300), 1.2)  # more data: the app reads it all now
    assert app.got == first + second + third + b"d"


def test_counters_read_at_any_moment_are_exact() -> None:
    peer = connected()
    core = peer.core
    base = core.counters.snapshot()
    for k in range(1, 6):
        core.from_wire(peer.frame(ACK | PSH, b"x" * 1000, seq=peer.seq + 1000 * (k - 1)), 1.0 + k / 1000)
        assert core.counters["rx_frames"] == base["rx_frames"] + k
        assert core.counters.snapshot()["rx_segments"] == base["rx_segments"] + k
        peer.replies()
    sent = core.counters["tx_frames"] - base["tx_frames"]
    assert sent >= 2 and core.counters["tx_segments"] - base.get("tx_segments", 0) == sent
    core.counters.reset()
    assert core.counters["rx_frames"] == 0
    core.from_wire(peer.frame(ACK, seq=peer.seq + 5000), 2.0)
    assert core.counters["rx_frames"] == 1


@pytest.mark.parametrize("timestamps", [False, True])
def test_an_in_order_frame_costs_few_calls_and_no_parse(timestamps: bool) -> None:
    """Python calls per in-order data frame in the endpoint's own code (endpoint, codec, counters,
    checksum), as cProfile counts them: 25 before the fast path (parse_frame and its five helpers,
    a ParsedFrame, three counter updates, two accountings, the frame builder's nine per ACK), 8.5 now."""
    peer = connected(timestamps=timestamps)
    core = peer.core
    frames = [peer.frame(ACK, bytes(1448), seq=peer.seq + 1448 * k) for k in range(200)]
    profile = cProfile.Profile()
    profile.enable()
    for frame in frames:
        core.from_wire(frame, 1.5, csum_ok=True)
        core.poll_wire()
    profile.disable()
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    own = {name: calls for (path, _, name), (_, calls, *_) in stats.items()
           if any(part in path for part in ("toe_engine/endpoint.py", "toe_engine/codec/", "toe_engine/counters.py",
                                            "toe_engine/checksum.py"))}
    if not own:
        pytest.skip("the compiled build runs: its calls are invisible to cProfile")
    assert own.get("from_wire") == len(frames)
    assert "parse_frame" not in own and "parse_tcp" not in own
    assert sum(own.values()) / len(frames) <= 8.5, own
    assert sum(a.received for a in core.apps.values()) == 1448 * len(frames)


def test_a_segment_the_fast_path_cannot_vouch_for_is_left_to_the_general_path() -> None:
    """Bad checksums, a truncated datagram, a bad data offset, an IP header cut short: the same
    verdict and the same count per reason as the general path gives them."""
    fast, general = connected(), connected()
    general.core.fast_path = False
    good = fast.frame(ACK, b"y" * 50)
    bad_tcp_csum, bad_ip_csum, bad_offset, short_ihl = (bytearray(good) for _ in range(4))
    bad_tcp_csum[-1] ^= 0xFF
    bad_ip_csum[24] ^= 0xFF
    bad_offset[46] = 0xF0  # a 60-byte header in a 70-byte segment: past the payload
    short_ihl[14] = 0x44  # IHL 4: shorter than an IPv4 header may be
    bad = [bytes(bad_tcp_csum), bytes(bad_ip_csum), bytes(good[:60]), bytes(bad_offset), bytes(short_ihl)]
    verdicts = [[peer.core.from_wire(frame, 1.1) for frame in bad] for peer in (fast, general)]
    assert verdicts[0] == verdicts[1] == [True, False, False, True, False]
    counts = [peer.core.counters.snapshot() for peer in (fast, general)]
    assert counts[0] == counts[1]
    assert (counts[0]["rx_csum_errors"], counts[0]["rx_malformed"]) == (2, 3)
    segments = counts[0]["rx_segments"]
    assert fast.core.from_wire(bytes(good), 1.1) is True  # the good one still goes in
    assert fast.core.counters["rx_segments"] == segments + 1


@pytest.mark.parametrize("flags", [FIN | ACK, RST, RST | ACK])
def test_fin_and_rst_of_a_known_connection_take_the_fast_path_to_the_same_end(flags: int) -> None:
    fast, general = connected(), connected()
    general.core.fast_path = False
    for peer in (fast, general):
        peer.core.from_wire(peer.frame(flags), 1.1)
    assert [bytes(t.frame) for t in fast.core.poll_wire()] == [bytes(t.frame) for t in general.core.poll_wire()]
    assert fast.core.stack.connections() == general.core.stack.connections()
    assert fast.core.counters.snapshot() == general.core.counters.snapshot()


def test_data_over_the_memory_limit_keeps_only_its_ack() -> None:
    results = []
    for fast_path in (True, False):
        core = EndpointCore(EndpointConfig(MAC_B, (IP_B,), services={DISCARD: Holding}, secret=b"fast",
                                           resources=ResourceConfig(conn_memory_bytes=3000)))
        core.fast_path = fast_path
        core.neighbors.learn(IP_A, MAC_A)
        core.from_wire(build_tcp_frame(MAC_A, MAC_B, IP_A, IP_B, Segment(PEER_PORT, DISCARD, ISN, 0, SYN, 65535)), 1.0)
        peer = Peer(core)
        (synack,) = peer.replies()
        peer.ack = synack.seq + 1
        core.from_wire(peer.frame(ACK), 1.0)
        for k in range(4):
            core.from_wire(peer.frame(ACK, b"z" * 1000, seq=peer.seq + 1000 * k), 1.0 + k / 100)
        conn = core.stack.connection(next(iter(core.apps)))
        assert conn is not None
        results.append((len(conn.rcv_buf), core.counters["rx_mem_dropped"], [s.ack for s in peer.replies()]))
    assert results[0] == results[1]
    assert results[0][0] < 4000 and results[0][1] >= 1


# --- one copy each way ---------------------------------------------------------------------

class Keeping(App):
    """Keeps what it is handed, to see what kind of buffer that is; takes `room` bytes at a time."""

    room = 1 << 20

    def receive_room(self) -> int:
        return self.room

    def on_data(self, data: bytes | bytearray | memoryview) -> None:
        super().on_data(data)
        self.kept = [*getattr(self, "kept", []), data]


def test_the_application_is_handed_the_receive_buffer_itself_when_it_takes_it_all() -> None:
    peer = connected(Keeping)
    core = peer.core
    for k in range(3):
        core.from_wire(peer.frame(ACK, bytes([65 + k]) * 100, seq=peer.seq + 100 * k), 1.1)
    app = next(iter(core.apps.values()))
    assert isinstance(app, Keeping)
    assert [type(d) for d in app.kept] == [bytearray] * 3  # no copy made for the application
    assert b"".join(app.kept) == b"A" * 100 + b"B" * 100 + b"C" * 100
    app.room = 60  # a partial read copies only what it takes; the rest then fits and is handed over
    core.from_wire(peer.frame(ACK, b"D" * 100, seq=peer.seq + 300), 1.2)
    assert [type(d) for d in app.kept[3:]] == [bytes, bytearray] and b"".join(app.kept[3:]) == b"D" * 100


@pytest.mark.parametrize("impairment", ["clean", "loss, reordering, duplicates"])
def test_a_bulk_echo_never_pins_a_send_buffer_with_the_views_its_frames_are_built_from(impairment: str) -> None:
    """Data segments carry views of the send buffer (TcpStack.payload_views); the endpoint copies
    each into its frame and lets it go before the application can write to that buffer again,
    so the stack never has to turn a view into a copy (or copy the buffer)."""
    spec = IMPAIRMENTS[impairment]
    harness = FrameHarness(a_to_b=spec, b_to_a=spec, seed=4, tcp=TcpConfig(rcv_buf=512 * 1024, snd_buf=512 * 1024))
    intact, _ = harness.echo_transfer(2_000_000)
    assert intact
    for core in (harness.a, harness.b):
        assert core.stack.payload_views
        assert core.counters["tx_segments"] > 1000
        assert (core.counters["snd_buf_views_copied"], core.counters["snd_buf_pinned"]) == (0, 0)
    if impairment != "clean":
        assert harness.a.counters["retransmits"] + harness.b.counters["retransmits"] > 0


def test_no_view_of_a_drivers_buffer_outlives_its_frame() -> None:
    """A ring slot the frame came in must be free again when from_wire returns (a held view
    would stop a bytearray from resizing and an mmap'd ring from closing), whichever path took it."""
    peer = connected(Holding)
    core = peer.core
    frames = [peer.frame(ACK, b"q" * 10),  # fast path, kept in the receive buffer
              build_tcp_frame(MAC_A, MAC_B, IP_A, IP_B, Segment(PEER_PORT + 1, DISCARD, 5, 0, SYN, 65535)),  # a SYN
              build_tcp_frame(MAC_A, MAC_B, IP_A, IP_B, Segment(PEER_PORT + 2, 22, 5, 0, SYN, 65535)),  # to the host
              build_tcp_frame(MAC_A, MAC_B, IP_A, IP_B, Segment(PEER_PORT + 3, DISCARD, 5, 9, ACK, 65535))]  # a stray ACK
    for frame in frames:
        ring = bytearray(frame)
        core.from_wire(memoryview(ring), 1.1)
        ring.extend(b"\x00")  # BufferError if a view of it were still held
    assert core.counters["rx_frames"] >= len(frames)


@pytest.mark.parametrize("cut", [20, 22])  # the quote ends before the ports, or between them
def test_an_icmp_error_quoting_too_little_of_a_tcp_header_is_ignored_not_raised(cut: int) -> None:
    """A quote without both ports names no flow: it reaches no TCB and raises nothing (the
    compiled build checks a key's field types, so a None port must never become a key)."""
    peer = connected()
    core = peer.core
    sent = bytes(build_tcp_frame(MAC_B, MAC_A, IP_B, IP_A, Segment(DISCARD, PEER_PORT, 1, 1, ACK, 100, b"x" * 8)))
    frame = build_ip_frame(MAC_A, MAC_B, bytes([192, 0, 2, 254]), IP_B, 1, build_frag_needed(600, sent[14:14 + cut]))
    conn = core.stack.connection(next(iter(core.apps)))
    assert conn is not None
    mss = conn.snd_mss
    assert core.from_wire(bytes(frame), 1.2) is False  # the host gets it too
    assert conn.snd_mss == mss and core.counters["rx_malformed"] == 0


# --- receive: a SYN of no connection yet ------------------------------------------------

def _syn_frame(flags: int = SYN, *, src: bytes = IP_A, dport: int = DISCARD, payload: bytes = b"",
               options: TcpOptions | None = None, spoil: int | None = None) -> bytes:
    seg = Segment(PEER_PORT, dport, ISN, 0, flags, 64240, payload,
                  options or TcpOptions(mss=1460, sack_permitted=True, timestamp=(5, 0), wscale=7))
    frame = bytearray(build_tcp_frame(MAC_A, MAC_B, src, IP_B, seg))
    if spoil is not None:
        frame[spoil] ^= 0xFF
    return bytes(frame)


NEW_SYNS = {
    "linux": lambda: _syn_frame(),
    "bare": lambda: _syn_frame(options=TcpOptions()),
    "with-data": lambda: _syn_frame(payload=b"early"),
    "syn-fin": lambda: _syn_frame(SYN | FIN),
    "syn-rst": lambda: _syn_frame(SYN | RST),
    "multicast-source": lambda: _syn_frame(src=bytes([224, 0, 0, 5])),
    "port-not-served": lambda: _syn_frame(dport=22),
    "bad-tcp-checksum": lambda: _syn_frame(spoil=50),
    "bad-ip-checksum": lambda: _syn_frame(spoil=24),
    "bad-option": lambda: _syn_frame(options=TcpOptions(mss=1460), spoil=55),  # the MSS option's length byte
}


@pytest.mark.parametrize("reused_buffer", [False, True], ids=["bytes", "driver-buffer"])
@pytest.mark.parametrize("csum_ok", [False, True], ids=["checked-here", "device-checked"])
@pytest.mark.parametrize("case", NEW_SYNS, ids=list(NEW_SYNS))
def test_a_new_connections_syn_is_taken_as_the_general_path_takes_it(case: str, csum_ok: bool,
                                                                      reused_buffer: bool) -> None:
    """A SYN to no TCB in a plain IPv4 frame has its options parsed alone (EndpointCore._new_syn), not
    the whole frame: what it answers, counts, keeps and hands to the host is the general path's."""
    results = []
    for fast in (True, False):
        core = EndpointCore(EndpointConfig(MAC_B, (IP_B,), services={DISCARD: "discard"}, secret=b"syn"))
        core.syn_path = None  # the flood path's SYNs are its own tests'; this is what reaches the general path
        core.fast_path = fast
        frame = _syn_frame() if case == "linux" else NEW_SYNS[case]()
        buffer = bytearray(frame) if reused_buffer else frame
        taken = core.from_wire(memoryview(buffer) if reused_buffer else buffer, 1.0, csum_ok)
        if reused_buffer:
            buffer[:] = bytes(len(buffer))  # the driver's next frame: nothing of the SYN may be kept in it
        sent = [bytes(tx.frame) for tx in core.poll_wire()]
        conns = [(conn.key, conn.state, conn.irs, conn.peer_mss, conn.snd_wscale, conn.sack_ok, conn.ts_ok,
                  bytes(conn.rcv_buf), conn.ooo.bytes_held)
                 for conn in (core.stack.connection(key) for key in core.stack.connections()) if conn is not None]
        results.append((taken, sent, conns, core.counters.snapshot(), core.next_hops()))
    assert results[0] == results[1]
    if case == "linux":
        taken, sent, conns, counters, _ = results[0]
        assert taken is True and len(sent) == 1 and len(conns) == 1 and counters["rx_segments"] == 1
    if case == "bad-tcp-checksum" and not csum_ok:
        assert results[0][3]["rx_csum_errors"] == 1 and results[0][2] == []
