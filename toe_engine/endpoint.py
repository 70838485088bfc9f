"""The engine as an endpoint, sans-IO: frames from the wire in, frames to the wire out.

It terminates the flows it offloads (services on configured ports, admitted by the
resource model) and serves them with the built-in applications; everything else (ARP,
ICMP, other ports, flows it declined or handed back) it does not consume, and the runtime
passes those frames to the host kernel unchanged. It never touches a socket or a clock.
"""
from __future__ import annotations

import struct
import traceback
from collections import Counter as Tally
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Final, NamedTuple

from toe_engine.apps import APPS, App
from toe_engine.checksum import ones_sum
from toe_engine.codec import build_tcp_frame_partial, parse_frame
from toe_engine.codec.drop import DropReason
from toe_engine.codec.frame import build_tcp_ipv4_frame
from toe_engine.codec.tcp import TCP_CSUM_OFFSET, parse_options
from toe_engine.codec.icmp import ND_HOP_LIMIT, parse_nd
from toe_engine.counters import Counters
from toe_engine.neighbors import NeighborTable, arp_request, neighbor_solicitation
from toe_engine.resources import PolicyKind, ResourceConfig, ResourceManager
from toe_engine.offload.csum import complete_partial_checksum
from toe_engine.segment import ACK, FIN, RST, SYN, FourTuple, Segment, TcpOptions
from toe_engine.synpath import FLAGS_OFFSET, SYN_HEADERS, SYN_ONLY, SYN_ONLY_MASK, SynFastPath
from toe_engine.tcp.admission import Admission, CookieParams
from toe_engine.tcp.config import TcpConfig
from toe_engine.tcp.events import Accepted, Closed, Connected, DataReceived, Error, Event, PeerClosed, Reset, Writable
from toe_engine.tcp.icmp import IcmpError
from toe_engine.tcp.isn import IsnGenerator
from toe_engine.tcp.stack import TcpStack
from toe_engine.tcp.tcb import CLOSED

IPPROTO_TCP: Final = 6
OOO_BLOCK_COST: Final = 96  # what one out-of-order block costs beyond its bytes (object headers)
_IP_DEFAULTS: Final = (64, 0)
#: A connection's key as the stack's table holds it; a FourTuple is one, and so is a plain tuple
#: of the same four values, which is what the per-frame paths look connections up with.
ConnKey = tuple[bytes, int, bytes, int]

#: The frame nearly every received one is: untagged Ethernet, IPv4 without options, TCP. One
#: unpack gives what demultiplexing and the TCP core need (MACs, IP ID, TTL and checksums skipped).
_WIRE_TCP: Final = struct.Struct("!12xHBxH2xHxB2x4s4sHHIIBBH2xH")
_WIRE_TCP_LEN: Final = _WIRE_TCP.size  # 54: where TCP options start
_WIRE_TS: Final = struct.Struct("!III")  # NOP NOP kind 8 length 10, TSval, TSecr: a data segment's usual options
_ETHERTYPE_IPV4: Final = 0x0800
_IPV4_NO_OPTIONS: Final = 0x45
_IP_FRAGMENT: Final = 0x3FFF  # MF or a fragment offset
_NOP_NOP_TS: Final = 0x0101080A
_SYN_ACK: Final = SYN | ACK
_ETH_SRC: Final = slice(6, 12)
_UNRESOLVED: Final = bytes(6)  # the destination MAC of a frame held for its neighbour, written in at the reply
HELD_FRAMES: Final = 8  # frames held per unresolved neighbour (Linux holds unres_qlen_bytes' worth, about 100)
HELD_NEIGHBORS: Final = 64  # unresolved neighbours with frames held

#: (ICMP version, type, code or None for any code) -> what TCP is told.
ICMP_ERRORS: Final[dict[tuple[int, int, int | None], IcmpError]] = {
    (4, 3, 0): IcmpError.NET_UNREACHABLE, (4, 3, 1): IcmpError.HOST_UNREACHABLE,
    (4, 3, 2): IcmpError.PROTOCOL_UNREACHABLE, (4, 3, 3): IcmpError.PORT_UNREACHABLE,
    (4, 3, 4): IcmpError.FRAG_NEEDED, (4, 3, 5): IcmpError.SOURCE_ROUTE_FAILED,
    (4, 3, 13): IcmpError.ADMIN_PROHIBITED, (4, 11, None): IcmpError.TIME_EXCEEDED,
    (4, 12, None): IcmpError.PARAMETER_PROBLEM,
    (6, 1, 0): IcmpError.NET_UNREACHABLE, (6, 1, 1): IcmpError.ADMIN_PROHIBITED,
    (6, 1, 3): IcmpError.HOST_UNREACHABLE, (6, 1, 4): IcmpError.PORT_UNREACHABLE,
    (6, 2, None): IcmpError.FRAG_NEEDED, (6, 3, None): IcmpError.TIME_EXCEEDED,
    (6, 4, None): IcmpError.PARAMETER_PROBLEM,
}


def _ipv4_checksums_ok(view: memoryview, end: int) -> bool:
    """The IPv4 header's and the TCP checksum of a plain IPv4 frame of `end` bytes (its IP datagram's end)."""
    return ones_sum(view[14:34]) == 0xFFFF and ones_sum(view[26:end], IPPROTO_TCP + end - 34) == 0xFFFF  # pseudo-header


def icmp_error_kind(version: int, icmp_type: int, code: int) -> IcmpError | None:
    return ICMP_ERRORS.get((version, icmp_type, code)) or ICMP_ERRORS.get((version, icmp_type, None))


class TxFrame(NamedTuple):
    """A frame for the wire. With `csum_start` set, the device completes the TCP checksum;
    with `gso_size` set, it also cuts the frame into segments of that payload size (TSO)."""

    frame: bytes | bytearray
    gso_size: int = 0
    csum_start: int = 0
    csum_offset: int = 0


@dataclass
class EndpointConfig:
    """Who the endpoint is and what it serves."""

    mac: bytes
    addresses: tuple[bytes, ...]
    #: port -> application: a name from APPS, or an App subclass (tests, the fuzzer)
    services: dict[int, str | type[App]] = field(default_factory=lambda: {9: "discard", 7: "echo", 19: "chargen", 80: "http"})
    tcp: TcpConfig = field(default_factory=TcpConfig)
    resources: ResourceConfig = field(default_factory=ResourceConfig)
    tx_offload: bool = True  # leave checksums and segmentation to the device
    secret: bytes | None = None  # keys ISNs and SYN cookies; None picks a random one (tests fix it)
    subnet_broadcasts: frozenset[bytes] = frozenset()  # never valid as a source (MUST-63)

    def __post_init__(self) -> None:
        unknown = sorted(app for app in self.services.values() if isinstance(app, str) and app not in APPS)
        if unknown:
            raise ValueError(f"unknown application {unknown[0]!r}; known ones are {', '.join(APPS)}")


class _Admission:
    """The TCP stack's admission hook, answered by the resource model."""

    def __init__(self, endpoint: EndpointCore) -> None:
        self.endpoint = endpoint

    def admit(self, four_tuple: FourTuple, syn: Segment, now: float) -> Admission:
        return self.endpoint.resources.admit(four_tuple, syn, now)

    def release(self, four_tuple: FourTuple) -> None:
        self.endpoint.resources.release(four_tuple)
        self.endpoint._forget(four_tuple)

    def cookie_isn(self, four_tuple: FourTuple, syn: Segment, now: float) -> tuple[int, int | None]:
        opts = syn.options
        stack = self.endpoint.stack
        return self.endpoint.resources.syncookies.make_cookie(
            four_tuple, syn.seq, opts.mss or 536, opts.wscale, opts.sack_permitted,
            opts.timestamp is not None, now, ts_clock=stack.ts_clock(now))


class _AppConnection:
    """One offloaded connection as its application sees it."""

    __slots__ = ("core", "key")

    def __init__(self, core: EndpointCore, key: FourTuple) -> None:
        self.core, self.key = core, key

    def send(self, data: bytes | bytearray | memoryview) -> int:
        core = self.core
        room = core.memory_room(self.key)
        if room < len(data) and room < core.stack.send_space(self.key):
            # buffer memory, not the send buffer, is short: take what fits, say Writable when it frees
            core.counters.inc("tx_mem_limited")
            core._memory_waiters.add(self.key)
            if not room:
                return 0
            data = memoryview(data)[:room]
        sent = core.stack.send(self.key, data)
        core._touched.add(self.key)  # accounted before the next room check, or when the events are done
        return sent

    def send_space(self) -> int:
        return min(self.core.stack.send_space(self.key), self.core.memory_room(self.key))

    def shutdown(self) -> None:
        self.core.stack.shutdown(self.key)

    def close(self) -> None:
        self.core.stack.close(self.key)

    def set_nodelay(self, on: bool) -> None:
        self.core.stack.set_nodelay(self.key, on)


class EndpointCore:
    """Demultiplexes wire frames between the engine's TCP stack and the host."""

    def __init__(self, config: EndpointConfig, counters: Counters | None = None) -> None:
        self.config = config
        self.counters = counters if counters is not None else Counters()
        self.addresses = frozenset(config.addresses)
        resources = config.resources
        if resources.conn_memory_bytes is None:
            resources = replace(resources, conn_memory_bytes=2 * (config.tcp.snd_buf + config.tcp.rcv_buf))
        self.resources = ResourceManager(resources, self.counters, cookie_secret=config.secret)
        self.resources.set_offload_ports(config.services)
        # payload_views: a data segment carries a view of its send buffer, copied once into the
        # frame by _emit and let go before the next call into the stack
        self.stack = TcpStack(config.tcp, counters=self.counters, admission=_Admission(self),
                              isn=IsnGenerator(config.secret) if config.secret else None, payload_views=True)
        for port in config.services:
            self.stack.listen(None, port, backlog=max(config.resources.capacity, 128))
        self.neighbors = NeighborTable()
        self.buffer_memory = self.resources.memory
        self.apps: dict[FourTuple, App] = {}
        self.app_error_sites: Tally[str] = Tally()  # file:line of each application exception caught
        self._next_hop: dict[ConnKey, bytes] = {}  # the MAC each connection's SYN came from
        # the sender and the frame being handled, for a stateless answer (its MAC read only then)
        self._reply_ip: bytes | None = None
        self._reply_frame: bytes | bytearray | memoryview = b""
        self._touched: set[FourTuple] = set()  # connections whose buffer memory may have changed
        self._memory_waiters: set[FourTuple] = set()  # applications a memory limit cut short
        self._gone: list[FourTuple] = []  # connections whose next hop goes once their output is out
        #: Ports the socket API (toe_engine.runtime.sockets) listens on -> what serves each accepted connection.
        self.socket_ports: dict[int, Callable[[_AppConnection], App]] = {}
        #: (TTL, TOS) a connection's application asked for (IP_TTL, IP_TOS); others get 64, 0.
        self.ip_fields: dict[ConnKey, tuple[int, int]] = {}
        self._pending_apps: dict[FourTuple, type[App]] = {}
        self._eof_pending: set[FourTuple] = set()  # FIN seen, data still to hand over
        self.tx: list[TxFrame] = []
        #: Frames waiting for their neighbour's ARP reply, oldest neighbour first (`_hold`).
        self._unresolved: dict[bytes, list[tuple[TxFrame, int]]] = {}
        self.ip_id = 0  # of the last IPv4 frame sent; the SYN fast path advances it too
        #: Bare SYNs the policy answers or drops go here first (None: every frame takes the general path).
        self.syn_path: SynFastPath | None = SynFastPath(self, TxFrame)
        #: Segments of known connections in plain IPv4 frames skip parse_frame (False: every frame is parsed whole).
        self.fast_path = True
        # Per-frame counts as plain ints, folded into `counters` before every read of them.
        self._rx_frames = self._rx_segments = self._tx_frames = self._tx_segments = self._tso_super_frames = 0
        self.counters.add_flush(self._flush_counters)

    def _flush_counters(self) -> None:
        """Add the per-frame tallies to the counters (Counters calls this before each read)."""
        counters = self.counters
        for name, value in (("rx_frames", self._rx_frames), ("rx_segments", self._rx_segments),
                            ("tx_frames", self._tx_frames), ("tx_segments", self._tx_segments),
                            ("tso_super_frames", self._tso_super_frames)):
            if value:
                counters.inc(name, value)
        self._rx_frames = self._rx_segments = self._tx_frames = self._tx_segments = self._tso_super_frames = 0

    # --- applications on the engine's own active opens ----------------------------------
    def connect(self, local_ip: bytes, remote_ip: bytes, remote_port: int, app: type[App], now: float) -> FourTuple:
        """Open a connection from the engine; `app` serves it once it is established."""
        key = self.stack.connect(local_ip, remote_ip, remote_port, now)
        self._pending_apps[key] = app
        self._drain(now)
        return key

    # --- frames from the wire ---------------------------------------------------------
    def from_wire(self, frame: bytes | bytearray | memoryview, now: float, csum_ok: bool = False,
                  gso_size: int = 0) -> bool:
        """Take one frame from the wire; True if the engine consumed it, False: give it to the host.

        `csum_ok` is the device's word that checksums were verified or need not be (the
        virtio-net header's DATA_VALID or NEEDS_CSUM), as receive checksum offload gives it.
        `gso_size` is the wire MSS of a frame coalesced from several (receive GRO), 0 for one.

        A segment of a known connection in an untagged IPv4 frame with no IP options and no TCP
        options but the timestamp takes the fast path: one unpack, a lookup by a tuple of the
        values unpacked, one call into the TCP core. Anything else, or anything that does not
        check out there, goes through `parse_frame`, which names what is wrong with it.
        """
        self._rx_frames += 1
        syn_path = self.syn_path
        if syn_path is not None and len(frame) >= SYN_HEADERS and frame[FLAGS_OFFSET] & SYN_ONLY_MASK == SYN_ONLY:
            decided = syn_path.on_syn(frame, now, csum_ok)  # a flood's SYN, perhaps: decided without a TCB
            if decided is not None:
                return decided
        if self.fast_path and len(frame) >= _WIRE_TCP_LEN:
            (ethertype, ver_ihl, total_len, frag, proto, ip_src, ip_dst, src_port, dst_port, seq, ack, offset, flags,
             window, urg) = _WIRE_TCP.unpack_from(frame)
            if (ethertype == _ETHERTYPE_IPV4 and ver_ihl == _IPV4_NO_OPTIONS and proto == IPPROTO_TCP
                    and not frag & _IP_FRAGMENT and ip_dst in self.addresses):
                conn = self.stack.connection((ip_dst, dst_port, ip_src, src_port))
                header_len = offset >> 2 & 0x3C
                end = 14 + total_len
                if conn is not None and 20 <= header_len <= total_len - 20 and end <= len(frame):
                    if header_len == 20:
                        opts: TcpOptions | None = TcpOptions()
                    elif header_len == 32:
                        kinds, tsval, tsecr = _WIRE_TS.unpack_from(frame, _WIRE_TCP_LEN)
                        opts = TcpOptions(timestamp=(tsval, tsecr)) if kinds == _NOP_NOP_TS else None
                    else:
                        opts = None
                    view = frame if type(frame) is memoryview else memoryview(frame)  # slices of it copy nothing
                    if opts is not None and (csum_ok or _ipv4_checksums_ok(view, end)):
                        start = 34 + header_len
                        payload: bytes | memoryview = b""
                        if end > start:
                            if self.buffer_memory.admits(conn.key, end - start):
                                payload = view[start:end]
                            else:
                                flags &= ~FIN  # over a memory limit: keep only the ACK
                        key = conn.key
                        self._reply_ip, self._reply_frame = ip_src, frame
                        self.stack.on_segment(ip_dst, ip_src, Segment(src_port, dst_port, seq, ack, flags, window,
                                                                      payload, opts, urg, gso_size), now)
                        return self._consumed(key, frame, now)
                elif (conn is None and flags & _SYN_ACK == SYN and 20 <= header_len <= total_len - 20
                      and end <= len(frame) and (dst_port in self.config.services or dst_port in self.socket_ports)):
                    return self._new_syn(frame, now, csum_ok, ip_src, ip_dst, header_len, end, Segment(
                        src_port, dst_port, seq, ack, flags, window, b"", None, urg, gso_size))
        return self._from_wire(frame, now, csum_ok, gso_size)

    def _new_syn(self, frame: bytes | bytearray | memoryview, now: float, csum_ok: bool, ip_src: bytes, ip_dst: bytes,
                 header_len: int, end: int, seg: Segment) -> bool:
        """A SYN of no connection yet to a port the engine serves, in the fast path's plain IPv4 frame
        (`seg` has its header fields): what _from_wire does with it, its options parsed alone instead of
        the whole frame. A checksum or an option that does not check out goes to _from_wire, which says why."""
        view = frame if type(frame) is memoryview else memoryview(frame)
        opts = parse_options(view, _WIRE_TCP_LEN, 34 + header_len) if csum_ok or _ipv4_checksums_ok(view, end) else None
        if not isinstance(opts, TcpOptions):
            return self._from_wire(frame, now, csum_ok, seg.gso_size)
        seg.options = opts
        if end > 34 + header_len:  # a SYN's data may be kept by whoever takes the SYN: never a driver's buffer
            seg.payload = view[34 + header_len:end] if isinstance(frame, bytes) else bytes(view[34 + header_len:end])
        self._reply_ip, self._reply_frame = ip_src, frame
        try:
            if self.invalid_source(ip_src):
                self.counters.inc("rx_invalid_source")  # MUST-63: a SYN from a broadcast or multicast address
                return True
            if not self.stack.on_segment(ip_dst, ip_src, seg, now):
                self.counters.inc("rx_to_host")
                return False
            conn = self.stack.connection((ip_dst, seg.dst_port, ip_src, seg.src_port))  # its key, not another FourTuple
            key = conn.key if conn is not None else FourTuple(ip_dst, seg.dst_port, ip_src, seg.src_port)
            return self._consumed(key, frame, now)
        finally:  # a driver's buffer is never held past its frame
            self._reply_ip, self._reply_frame = None, b""

    def _from_wire(self, frame: bytes | bytearray | memoryview, now: float, csum_ok: bool, gso_size: int) -> bool:
        """Every frame the fast path does not take: parsed whole, then demultiplexed."""
        counters = self.counters
        self._reply_ip = None  # never a MAC left from an earlier frame
        parsed = parse_frame(frame, verify_csum=not csum_ok)
        if parsed.drop_reason is not None:
            return self._rejected(parsed)
        seg = parsed.tcp
        if seg is None:
            if parsed.arp is not None:
                self.neighbors.on_arp(parsed.arp, self.addresses, now)
            elif parsed.icmp is not None:
                nd = parse_nd(parsed.icmp)
                if nd is None:
                    self._icmp(parsed, now)
                elif parsed.ttl == ND_HOP_LIMIT:
                    self.neighbors.on_nd(nd, parsed.ip_src, self.addresses, now)
            if self._unresolved:  # an answer may have resolved a neighbour frames wait for
                self._release_resolved()
            return False
        if parsed.ip_dst not in self.addresses:
            return False
        key = FourTuple(parsed.ip_dst, seg.dst_port, parsed.ip_src, seg.src_port)
        known = self.stack.connection(key) is not None
        if not known and seg.dst_port not in self.config.services and seg.dst_port not in self.socket_ports:
            return False
        seg.gso_size = gso_size
        if seg.payload:
            if known and not self.buffer_memory.admits(key, len(seg.payload)):
                seg.payload, seg.flags = b"", seg.flags & ~FIN  # over a memory limit: keep only the ACK
            elif not known and not isinstance(frame, bytes):
                # The driver reuses its buffer. A connection's TCB copies what it keeps (receive
                # buffer, reassembly queue); a SYN's data may be kept by whoever takes the SYN.
                seg.payload = bytes(seg.payload)
        self._reply_ip, self._reply_frame = key.remote_ip, frame
        try:
            if known:
                self.stack.on_segment(key.local_ip, key.remote_ip, seg, now)
            elif seg.flags & (SYN | ACK) == SYN:
                if self.invalid_source(key.remote_ip):
                    counters.inc("rx_invalid_source")  # MUST-63: a SYN from a broadcast or multicast address
                    return True
                if not self.stack.on_segment(key.local_ip, key.remote_ip, seg, now):
                    counters.inc("rx_to_host")
                    return False
            elif self.resources.passes(key, seg.flags, now) or not self._cookie_ack(key, seg, now):
                counters.inc("rx_to_host")
                return False
            return self._consumed(key, frame, now)
        finally:  # a driver's buffer is never held past its frame
            self._reply_ip, self._reply_frame = None, b""

    def _consumed(self, key: FourTuple, frame: bytes | bytearray | memoryview, now: float) -> bool:
        """After the TCP core took a segment: the next hop, events for applications, frames out."""
        self._rx_segments += 1
        if key not in self._next_hop and self.stack.connection(key) is not None:
            self._next_hop[key] = bytes(frame[_ETH_SRC])
        self._touched.add(key)
        self._drain(now)
        self._reply_ip, self._reply_frame = None, b""
        return True

    def invalid_source(self, ip: bytes) -> bool:
        """Broadcast, multicast, unspecified or loopback: no connection may come from there."""
        if len(ip) == 4:
            return ip[0] >= 224 or ip[0] in (0, 127) or ip in self.config.subnet_broadcasts
        return ip[0] == 0xFF or ip in (bytes(16), bytes(15) + b"\x01")

    def _rejected(self, parsed: object) -> bool:
        """Count a frame the codec refused; consume it only if it was aimed at an offloaded port."""
        reason: DropReason = parsed.drop_reason  # type: ignore[attr-defined]
        self.counters.inc("rx_csum_errors" if reason.is_checksum_error else "rx_malformed")
        ours = (getattr(parsed, "ip_dst", b"") in self.addresses and getattr(parsed, "l4_proto", -1) == IPPROTO_TCP)
        return ours

    def _cookie_ack(self, key: FourTuple, seg: Segment, now: float) -> bool:
        """A bare ACK that may answer one of our SYN cookies; True if it was (and was handled)."""
        if seg.flags & (SYN | RST) or not seg.flags & ACK:
            return False
        decoded = self.resources.syncookies.check_cookie(key, seg, now)
        if decoded is None:
            # While answering with cookies, drop an ACK that fails the check, as Linux does: it is
            # often a later segment of a flow whose valid cookie ACK found no room, and the host
            # (which does not serve this port's flows) would reset it.
            return self.resources.policy.kind is PolicyKind.SYNCOOKIE
        if self.resources.admit_cookie(key, now) is not Admission.ACCEPT:
            self.counters.inc("syncookies_no_room")
            return True  # valid, but no room yet: the peer retransmits and gets in when a slot frees
        params = CookieParams(decoded.mss, decoded.wscale, decoded.sack_permitted, decoded.timestamps)
        self.stack.accept_cookie(key, params, seg, now)
        self.resources.established(key)
        return True

    def _icmp(self, parsed: object, now: float) -> None:
        """ICMP errors quoting an offloaded flow reach its TCB; the host gets them too."""
        icmp = parsed.icmp  # type: ignore[attr-defined]
        quoted = icmp.quoted
        if quoted is None or quoted.proto != IPPROTO_TCP or quoted.src not in self.addresses:
            return
        if quoted.src_port is None or quoted.dst_port is None:
            return  # a quote cut short of the ports names no flow
        key = FourTuple(quoted.src, quoted.src_port, quoted.dst, quoted.dst_port)
        if self.stack.connection(key) is None:
            return
        kind = icmp_error_kind(icmp.version, icmp.type, icmp.code)
        if kind is None:
            return
        self.stack.on_icmp_error(key, kind, now, mtu=icmp.mtu, seq=quoted.tcp_seq)
        self._drain(now)

    # --- time -------------------------------------------------------------------------
    def on_timer(self, now: float) -> None:
        self._reply_ip, self._reply_frame = None, b""  # what a timer sends answers no frame
        self.stack.on_timer(now)
        for key in self.resources.expire(now):
            if self.stack.connection(key) is not None:
                self.stack.abort(key, now)
        self._drain(now)

    def begin_batch(self) -> None:
        """The frames that follow until end_batch are a backlog (the caller knows: the runtime's
        read reached its budget): the ACKs their in-order data owes wait for end_batch, one per
        connection (TcpStack.defer_acks). Called for every batch, it would stretch ACKs of an engine
        that keeps up (SHLD-19)."""
        self.stack.defer_acks()

    def end_batch(self, now: float) -> None:
        """Send the ACKs the batch deferred; their frames join `tx` for poll_wire."""
        self._reply_ip, self._reply_frame = None, b""  # they answer no one frame
        self.stack.send_deferred_acks(now)
        self._drain(now)

    def next_deadline(self) -> float | None:
        """The earlier of the TCP timers' and the table's deadlines (None: neither); the event loop
        asks after every wake-up, so no list is built for it."""
        timer, embryonic = self.stack.next_timer(), self.resources.next_deadline()
        if timer is None or (embryonic is not None and embryonic < timer):
            return embryonic
        return timer

    # --- output -----------------------------------------------------------------------
    def poll_wire(self) -> list[TxFrame]:
        out, self.tx = self.tx, []
        return out

    def _drain(self, now: float) -> None:
        """Run application events, then turn the stack's segments into frames.

        What TCP has sent becomes frames before each round of events too: a data segment holds a
        view of its send buffer, and an application's next write must find that buffer free.
        """
        stack = self.stack
        for _ in range(8):  # applications answer events with sends, which make more events
            if stack.output:
                self._frame_output(now)
            events = stack.poll_events()
            if not events:
                if not self._memory_waiters:
                    break
                events = self._memory_freed()
                if not events:
                    break
            stack.cork()  # what the applications write in answer leaves in as few segments as it can
            for event in events:
                self._dispatch(event, now)
            stack.uncork(now)
        if self._touched:
            self._account_touched()
        if stack.output:
            self._frame_output(now)
        while self._gone:  # after their last segments (a RST on abort) have found their way out
            self._next_hop.pop(self._gone.pop(), None)

    def _frame_output(self, now: float) -> None:
        """Every segment the stack has sent so far, into frames, in order."""
        for local_ip, remote_ip, seg in self.stack.poll_output():
            self._emit(local_ip, remote_ip, seg, now)
            payload = seg.payload
            if type(payload) is memoryview:
                payload.release()  # copied into its frame: the send buffer may move again

    # --- buffer memory ----------------------------------------------------------------
    def _account_touched(self) -> None:
        """Record what each touched connection holds: its TCP queues and what its application keeps."""
        touched, stack, apps, memory = self._touched, self.stack, self.apps, self.buffer_memory
        while touched:
            key = touched.pop()
            conn = stack.connection(key)
            if conn is None:
                memory.release(key)
                continue
            ooo = conn.ooo
            app = apps.get(key)
            held = len(conn.snd_buf) + len(conn.rcv_buf)
            if ooo.bytes_held:  # every block holds a byte at least: no bytes, no blocks to count
                held += ooo.bytes_held + OOO_BLOCK_COST * len(ooo)
            memory.set(key, held + (app.buffered_bytes() if app is not None else 0))

    def memory_room(self, key: FourTuple) -> int:
        """How many more bytes `key` may hold under the buffer memory limits, all changes so far
        accounted (between events, holdings are accounted when asked for and once the events are done)."""
        if self._touched:
            self._account_touched()
        return self.buffer_memory.room(key)

    def _memory_freed(self) -> list[Event]:
        """Writable for the applications a memory limit stopped, once they have room again."""
        waiters = self._memory_waiters
        ready = [key for key in waiters if self.memory_room(key) > 0]
        waiters.difference_update(ready)
        return [Writable(key) for key in ready]

    def _forget(self, key: FourTuple) -> None:
        """A connection is gone: its buffer memory, its wait for memory, and (once its last
        segments are out) its next hop."""
        self._gone.append(key)
        self._memory_waiters.discard(key)
        self.buffer_memory.release(key)

    # --- applications -----------------------------------------------------------------
    def _dispatch(self, event: object, now: float) -> None:
        """Hand one event to its application; an application that raises is counted and its
        connection reset, and the engine carries on with the next frame."""
        key = getattr(event, "conn", None)
        if key is None:
            return
        self._touched.add(key)
        try:
            if type(event) is DataReceived:  # the event of nearly every frame
                app = self.apps.get(key)
                if app is not None:
                    self._feed(key, app)  # which returns at once if the connection went earlier in this batch
            else:
                self._deliver(event, key)
        except Exception as exc:  # noqa: BLE001 - any application's bug, by design
            self._app_failed(key, exc, now)

    def _app_failed(self, key: FourTuple, exc: Exception, now: float) -> None:
        self.counters.inc("app_errors")
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        self.app_error_sites[f"{frame.filename}:{frame.lineno}: {type(exc).__name__}"] += 1
        self.apps.pop(key, None)
        self._pending_apps.pop(key, None)
        self._eof_pending.discard(key)
        self.stack.abort(key, now)

    def _deliver(self, event: object, key: FourTuple) -> None:
        """Every event but DataReceived (which _dispatch feeds itself)."""
        if isinstance(event, (Accepted, Connected)):
            factory: Callable[[_AppConnection], App] | None = self._pending_apps.pop(key, None)
            if factory is None and key.local_port in self.config.services and key not in self.apps:
                self.resources.established(key)
                factory = _app_class(self.config.services[key.local_port])
            elif factory is None and key.local_port in self.socket_ports and key not in self.apps:
                self.resources.established(key)
                factory = self.socket_ports[key.local_port]
            if factory is not None:
                served = factory(_AppConnection(self, key))
                self.apps[key] = served
                served.on_connected()
            return
        app = self.apps.get(key)
        if isinstance(event, (Reset, Error)):  # an application that wants to know (a socket's errno) overrides on_error
            reason, fatal = ("reset", True) if isinstance(event, Reset) else (event.reason, event.fatal)
            if app is not None:
                app.on_error(reason, fatal)
                return
            notify = getattr(self._pending_apps.get(key), "on_error", None)  # an active open's factory may have one
            if notify is not None:
                notify(reason, fatal)
            return
        if isinstance(event, Closed):
            self.ip_fields.pop(key, None)
            self.apps.pop(key, None)
            self._pending_apps.pop(key, None)
            self._eof_pending.discard(key)
            self._forget(key)
            if app is not None:
                self.counters.inc("app_rx_bytes", app.received)
                self.counters.inc("app_tx_bytes", app.sent)
                app.on_closed()
            return
        if app is None or self.stack.connection(key) is None:
            return  # no application, or its connection went earlier in this batch (Closed follows)
        if isinstance(event, Writable):
            app.on_writable()
            self._feed(key, app)
        elif isinstance(event, PeerClosed):
            self._eof_pending.add(key)
            self._feed(key, app)

    def _feed(self, key: FourTuple, app: App) -> None:
        """Give the application what it has room for; the rest stays in the receive buffer,
        so the window closes when the application stops reading (as a socket's would)."""
        stack = self.stack
        conn = stack.connection(key)
        if conn is None:
            return  # the application aborted it just now
        if conn.rcv_buf:  # an empty buffer needs no recv
            room = app.receive_room()
            while room > 0:
                # all of it, the usual case: the receive buffer itself, handed over uncopied
                app.on_data(stack.recv_all(key) if room >= len(conn.rcv_buf) else stack.recv(key, room))
                if conn.state is CLOSED:
                    return  # the application closed it with bytes unread: it was reset (and reaped)
                if not conn.rcv_buf:
                    break
                room = app.receive_room()
        eof_pending = self._eof_pending
        if eof_pending and key in eof_pending and not conn.rcv_buf:
            eof_pending.discard(key)
            app.on_peer_closed()

    def _emit(self, local_ip: bytes, remote_ip: bytes, seg: Segment, now: float) -> None:
        key = (local_ip, seg.src_port, remote_ip, seg.dst_port)  # no FourTuple built to look up with
        mac = self._next_hop.get(key) or self.neighbors.lookup(remote_ip)
        if mac is None and self._reply_ip == remote_ip:
            mac = bytes(self._reply_frame[_ETH_SRC])  # a stateless answer goes back where its frame came from
        if mac is None:
            self.neighbors.asked(remote_ip)
            ask = arp_request if len(remote_ip) == 4 else neighbor_solicitation
            self.tx.append(TxFrame(ask(self.config.mac, local_ip, remote_ip)))
        self.ip_id = ip_id = (self.ip_id + 1) & 0xFFFF
        ttl, tos = self.ip_fields.get(key, _IP_DEFAULTS) if self.ip_fields else _IP_DEFAULTS
        offload = self.config.tx_offload
        if len(local_ip) == 4:
            frame = build_tcp_ipv4_frame(self.config.mac, mac or _UNRESOLVED, local_ip, remote_ip, seg, ttl, tos,
                                         ip_id, True, not offload)
            csum_start = 34
        else:
            built = build_tcp_frame_partial(self.config.mac, mac or _UNRESOLVED, local_ip, remote_ip, seg,
                                            ip_id=ip_id, ttl=ttl, tos=tos)
            frame, csum_start = built.data, built.csum_start
            if not offload:
                complete_partial_checksum(frame, csum_start, TCP_CSUM_OFFSET)
        if not offload:
            tx, segments = tuple.__new__(TxFrame, (frame, 0, 0, 0)), 1
        else:
            plen = len(seg.payload)
            conn = self.stack.connection(key) if plen else None  # TSO only ever cuts a payload
            mss = conn.snd_mss if conn is not None else 0
            gso = mss if mss and plen > mss else 0
            # tuple.__new__ is what TxFrame(...) calls, from a __new__ written in Python (the compiled build runs it so)
            tx = tuple.__new__(TxFrame, (frame, gso, csum_start, TCP_CSUM_OFFSET))
            # segments on the wire, as TcpOutSegs counts them: a TSO frame is as many as the device cuts it into
            segments = -(-plen // gso) if gso else 1
        if mac is None:
            self._hold(remote_ip, tx, segments)
            return
        # what _queue does, written out: this is every frame's path
        self._tx_frames += 1
        self._tx_segments += segments
        if segments > 1:
            self._tso_super_frames += 1
        self.tx.append(tx)

    def _queue(self, tx: TxFrame, segments: int) -> None:
        """A held frame for the wire, counted as it goes (a TSO frame as the segments the device cuts), as
        `_emit` counts the others."""
        self._tx_frames += 1
        self._tx_segments += segments
        if segments > 1:
            self._tso_super_frames += 1
        self.tx.append(tx)

    def _hold(self, remote_ip: bytes, tx: TxFrame, segments: int) -> None:
        """Keep a frame for a neighbour being resolved, as Linux queues a few per unresolved neighbour
        (unres_qlen): an active open's first SYN, sent while its ARP request or neighbour solicitation is
        out, then leaves at the answer instead of a retransmission timeout later. The oldest goes when a neighbour's queue is full,
        and the longest-waiting neighbour's when too many wait; both count as `tx_no_neighbor`."""
        held = self._unresolved.get(remote_ip)
        if held is None:
            if len(self._unresolved) >= HELD_NEIGHBORS:
                oldest = next(iter(self._unresolved))
                self.counters.inc("tx_no_neighbor", len(self._unresolved.pop(oldest)))
            held = self._unresolved[remote_ip] = []
        if len(held) >= HELD_FRAMES:
            held.pop(0)
            self.counters.inc("tx_no_neighbor")
        held.append((tx, segments))
        self.counters.inc("tx_neighbor_held")

    def _release_resolved(self) -> None:
        """Send the held frames of every neighbour now resolved (by ARP or neighbour discovery), its MAC written in."""
        lookup = self.neighbors.lookup
        for ip in list(self._unresolved):
            mac = lookup(ip)
            if mac is None:
                continue
            for tx, segments in self._unresolved.pop(ip):
                frame = tx.frame
                assert isinstance(frame, bytearray)  # the frame builders' own buffer, made for this frame
                frame[0:6] = mac
                self._queue(tx, segments)

    # --- run-time changes ---------------------------------------------------------------
    def set_addresses(self, addresses: tuple[bytes, ...]) -> None:
        """Answer for exactly these addresses from now on; connections to a dropped one keep going."""
        self.config.addresses = addresses
        self.addresses = frozenset(addresses)

    # --- inspection -------------------------------------------------------------------
    def next_hops(self) -> int:
        """How many connections have a next hop remembered (never more than are alive)."""
        return len(self._next_hop)

    def connections(self) -> list[dict[str, object]]:
        """The connection table as the control socket shows it."""
        out = []
        for key in self.stack.connections():
            conn = self.stack.connection(key)
            out.append({"local": f"{_ip(key.local_ip)}:{key.local_port}", "remote": f"{_ip(key.remote_ip)}:{key.remote_port}",
                        "state": self.stack.state(key).name, "offloaded": True,
                        "app": _app_name(self.config.services.get(key.local_port, "")),
                        "snd_mss": getattr(conn, "snd_mss", 0)})
        return out


def _app_class(app: str | type[App]) -> type[App]:
    return APPS[app] if isinstance(app, str) else app


def _app_name(app: str | type[App]) -> str:
    return app if isinstance(app, str) else app.__name__


def _ip(packed: bytes) -> str:
    import ipaddress
    return str(ipaddress.ip_address(packed))
