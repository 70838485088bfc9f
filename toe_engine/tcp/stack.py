"""The TCP layer of one host: listeners, demultiplexing, passive and active opens, timers.

Sans-IO: segments and time go in through on_segment()/on_timer() and the application calls;
segments to send come out of poll_output() as (local_ip, remote_ip, Segment) and events for
the application out of poll_events(). A connection is named by its FourTuple, local side
first. Application calls take an optional `now`; without it the time of the last
on_segment/on_timer/connect call is used.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Final

from toe_engine.counters import Counters
from toe_engine.segment import ACK, FIN, RST, SYN, Endpoint, FourTuple, Segment, TcpOptions
from toe_engine.tcp.admission import AcceptAll, Admission, AdmissionHook, CookieParams
from toe_engine.tcp.config import TcpConfig
from toe_engine.tcp.connection import CLOSED, SYN_RECEIVED, TIME_WAIT, Connection, Counter, State, TcpError
from toe_engine.tcp.events import Closed, Event
from toe_engine.tcp.icmp import IcmpError, usable_pmtu
from toe_engine.tcp.isn import IsnGenerator
from toe_engine.tcp.seqnum import HALF, MASK
from toe_engine.tcp.timers import INF, TimerQueue

EPHEMERAL_FIRST: Final = 32768
EPHEMERAL_LAST: Final = 60999

Output = tuple[bytes, bytes, Segment]
#: Admission's answers, Final: C statics in the compiled build, where an Enum member is a class attribute lookup.
_PASS: Final = Admission.PASS
_DROP: Final = Admission.DROP
_RESET: Final = Admission.RESET
_COOKIE: Final = Admission.COOKIE


class ChallengeAckLimiter:
    """RFC 5961 section 7: at most `limit` challenge ACKs per second for the whole stack."""

    __slots__ = ("limit", "_window_start", "_sent")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._window_start = -INF
        self._sent = 0

    def allow(self, now: float) -> bool:
        if now - self._window_start >= 1.0:
            self._window_start = now
            self._sent = 0
        if self._sent < self.limit:
            self._sent += 1
            return True
        return False


@dataclass(slots=True)
class Listener:
    """A passive OPEN; `local_ip` None listens on every address (MUST-42 allows several)."""

    local_ip: bytes | None
    port: int
    backlog: int
    config: TcpConfig
    embryonic: int = 0
    #: The Endpoint of each local address it answered for, made once (one is named by each connection it accepts).
    endpoints: dict[bytes, Endpoint] = field(default_factory=dict, repr=False, compare=False)

    def endpoint(self, local_ip: bytes) -> Endpoint:
        ip = local_ip if self.local_ip is None else self.local_ip
        known = self.endpoints.get(ip)
        if known is None:
            known = self.endpoints[ip] = Endpoint(ip, self.port)
        return known


class TcpStack:
    """All TCP connections and listeners of one host."""

    def __init__(self, config: TcpConfig | None = None, *, counters: Counter | None = None,
                 admission: AdmissionHook | None = None, isn: IsnGenerator | None = None,
                 ts_offset: int = 0, payload_views: bool = False) -> None:
        self.config = config or TcpConfig()
        #: Data segments carry memoryviews of the send buffer instead of copies: for an owner that
        #: copies each payload into its frame and drops the Segment before the application writes
        #: again. Views still in `output` when the buffer must move become copies
        #: (`snd_buf_views_copied`); one the owner still holds costs a copy of the buffer (`snd_buf_pinned`).
        self.payload_views = payload_views
        self.counters: Counter = counters if counters is not None else Counters()
        self.admission: AdmissionHook = admission if admission is not None else AcceptAll()
        self.output: list[Output] = []
        self.events: list[Event] = []
        self._isn = isn or IsnGenerator()
        self._ts_offset = ts_offset
        self._conns: dict[tuple[bytes, int, bytes, int], Connection] = {}
        self._listeners: dict[tuple[bytes | None, int], Listener] = {}
        self._embryonic_of: dict[tuple[bytes, int, bytes, int], Listener] = {}
        self._timers = TimerQueue()
        self._challenge = ChallengeAckLimiter(self.config.challenge_ack_limit)
        self._synack_repeated: dict[FourTuple, float] = {}  # when a duplicate SYN last drew a SYN-ACK
        self._next_port = EPHEMERAL_FIRST
        self._now = 0.0
        #: Segments header prediction took (Linux's TCPHPHits with TCPHPAcks): a plain tally,
        #: folded into the counters as `tcp_hp_hits` whenever they are read.
        self.hp_hits = 0
        add_flush = getattr(self.counters, "add_flush", None)
        if add_flush is not None:
            add_flush(self._flush_tallies)
        self._corked: dict[FourTuple, Connection] | None = None  # between cork() and uncork()
        #: Connections whose regular ACK waits for send_deferred_acks(), between defer_acks() and it.
        self._acks_deferred: dict[FourTuple, Connection] | None = None

    # ------------------------------------------------------------------ host services

    def ts_clock(self, now: float) -> int:
        """The TSval clock: milliseconds (RFC 7323 5.4 wants 1 ms to 1 s per tick)."""
        return (int(now * 1000) + self._ts_offset) & MASK

    def challenge_ack_allowed(self, now: float) -> bool:
        return self._challenge.allow(now)

    def synack_repeat_allowed(self, conn: FourTuple, now: float) -> bool:
        """Whether a duplicate SYN for a SYN-RECEIVED entry may draw another SYN-ACK: at most one
        per `invalid_ratelimit`, as Linux's tcp_check_req rate-limits it (TCPACKSkippedSynRecv)."""
        last = self._synack_repeated.get(conn)
        if last is not None and 0 <= now - last < self.config.invalid_ratelimit:
            self.counters.inc("synack_rtx_limited")
            return False
        self._synack_repeated[conn] = now
        self.counters.inc("synack_repeated")  # with synack_rtx_limited: every duplicate SYN is counted
        return True

    def defer_ack(self, conn: tuple[bytes, int, bytes, int]) -> bool:
        """Whether the regular ACK `conn` owes now may wait for send_deferred_acks(): True between
        defer_acks() and it, and `conn` gets its ACK then."""
        deferred = self._acks_deferred
        if deferred is None:
            return False
        c = self._conns.get(conn)
        if c is None:
            return False
        deferred[c.key] = c
        return True

    def _flush_tallies(self) -> None:
        if self.hp_hits:
            self.counters.inc("tcp_hp_hits", self.hp_hits)
            self.hp_hits = 0

    # ------------------------------------------------------------------ application interface

    def listen(self, local_ip: bytes | None, port: int, backlog: int = 128,
               config: TcpConfig | None = None) -> None:
        """Passive OPEN on (local_ip, port); `backlog` bounds SYN-RECEIVED entries."""
        key = (local_ip, port)
        if key in self._listeners:
            raise TcpError(f"already listening on port {port}")
        self._listeners[key] = Listener(local_ip, port, backlog, config or self.config)

    def unlisten(self, local_ip: bytes | None, port: int) -> None:
        self._listeners.pop((local_ip, port), None)

    def connect(self, local_ip: bytes, remote_ip: bytes, remote_port: int, now: float | None = None,
                local_port: int | None = None, config: TcpConfig | None = None) -> FourTuple:
        """Active OPEN: send a SYN, return the new connection's FourTuple."""
        now = self._clock(now)
        _check_unicast(remote_ip)  # MUST-46
        if local_port is None:
            local_port = self._ephemeral_port(local_ip, remote_ip, remote_port)
        key = FourTuple(local_ip, local_port, remote_ip, remote_port)
        if key in self._conns:
            raise TcpError(f"connection {key} already exists")
        conn = Connection(key, config or self.config, self, self._isn.isn(key, now))
        self._conns[key] = conn
        conn.open_active(now)
        self._after(conn)
        return key

    def cork(self) -> None:
        """Hold what sends and reads would transmit until uncork(), as TCP_CORK does: a response
        an event handler writes in pieces leaves as one segment, and the ACK (or window update)
        the request is owed rides on it instead of going alone first."""
        if self._corked is None:
            self._corked = {}

    def uncork(self, now: float | None = None) -> None:
        """Transmit what cork() held, once per connection (a close or shutdown sent it already)."""
        corked, self._corked = self._corked, None
        if corked:
            self._output_held(corked, self._clock(now), ack_owed=False)

    def defer_acks(self) -> None:
        """Hold the ACKs that in-order data owes until send_deferred_acks(): one ACK per connection
        for a whole receive batch, as Linux sends one for the segments it works through from a
        socket's backlog (TCP_ACK_DEFERRED, net.ipv4.tcp_backlog_ack_defer). Duplicate ACKs for
        out-of-order data, ACKs of a FIN or of a filled hole, and window updates still go at once."""
        if self._acks_deferred is None:
            self._acks_deferred = {}

    def send_deferred_acks(self, now: float | None = None) -> None:
        """End what defer_acks() began: each connection still owing its ACK sends it now (a
        segment that left meanwhile carried it already)."""
        deferred, self._acks_deferred = self._acks_deferred, None
        if deferred:
            self._output_held(deferred, self._clock(now), ack_owed=True)

    def _output_held(self, held: dict[FourTuple, Connection], now: float, ack_owed: bool) -> None:
        """output() once for each connection held that was not reaped meanwhile; with `ack_owed`,
        only where the ACK is still owed, and it is sent."""
        conns = self._conns
        for key, c in held.items():
            if conns.get(key) is not c or (ack_owed and not c.unacked_bytes):
                continue
            if ack_owed:
                c.ack_now = True
            c.output(now)
            self._after(c)

    def send(self, conn: FourTuple, data: bytes | bytearray | memoryview, now: float | None = None) -> int:
        """Queue data; returns how many bytes the send buffer took (a Writable event follows a short count)."""
        c = self._conn(conn)
        corked = self._corked
        if corked is not None:
            corked[conn] = c
            return c.send(data, self._clock(now), push=False)
        n = c.send(data, self._clock(now))
        self._after(c)
        return n

    def recv(self, conn: FourTuple, max_bytes: int = 1 << 30, now: float | None = None) -> bytes:
        """Up to `max_bytes` received bytes; b"" if none are waiting (see at_eof)."""
        c = self._conn(conn)
        data = c.recv(max_bytes, self._clock(now), push=self._corked is None)
        self._read_by(c)
        return data

    def recv_all(self, conn: tuple[bytes, int, bytes, int], now: float | None = None) -> bytearray:
        """Every received byte waiting, without a copy: the connection's receive buffer itself
        (it starts a new one); an empty bytearray if none are waiting."""
        c = self._conn(conn)
        data = c.recv_all(self._clock(now), push=self._corked is None)
        self._read_by(c)
        return data

    def _read_by(self, c: Connection) -> None:
        """After a read: a corked connection transmits at uncork(), any other one settles now."""
        corked = self._corked
        if corked is not None:
            corked[c.key] = c
        else:
            self._after(c)

    def readable(self, conn: FourTuple) -> int:
        return self._conn(conn).readable_bytes()

    def at_eof(self, conn: FourTuple) -> bool:
        """True once the peer's FIN arrived and every byte before it was read."""
        c = self._conns.get(conn)
        return c is None or c.at_eof()

    def send_space(self, conn: FourTuple) -> int:
        c = self._conn(conn)
        return c.cfg.snd_buf - len(c.snd_buf)

    def shutdown(self, conn: FourTuple, now: float | None = None) -> None:
        """Half-close: no more sends; FIN follows the queued data."""
        c = self._conn(conn)
        fin_queued = c.fin_queued
        c.shutdown(self._clock(now))
        self._sent_what_was_corked(c, fin_queued)
        self._after(c)

    def close(self, conn: FourTuple, now: float | None = None) -> None:
        c = self._conns.get(conn)
        if c is None:
            return
        fin_queued = c.fin_queued
        c.close(self._clock(now))
        self._sent_what_was_corked(c, fin_queued)
        self._after(c)

    def _sent_what_was_corked(self, c: Connection, fin_was_queued: bool) -> None:
        """A close or shutdown that queued the FIN ran output() itself: uncork() owes that connection nothing."""
        corked = self._corked
        if corked and not fin_was_queued and c.fin_queued:
            corked.pop(c.key, None)

    def abort(self, conn: FourTuple, now: float | None = None) -> None:
        c = self._conns.get(conn)
        if c is None:
            return
        c.abort(self._clock(now))
        self._after(c)

    def set_nodelay(self, conn: FourTuple, on: bool, now: float | None = None) -> None:
        c = self._conn(conn)
        c.set_nodelay(on, self._clock(now))
        self._after(c)

    def set_keepalive(self, conn: FourTuple, on: bool, now: float | None = None) -> None:
        c = self._conn(conn)
        c.set_keepalive(on, self._clock(now))
        self._after(c)

    def state(self, conn: FourTuple) -> State:
        c = self._conns.get(conn)
        return State.CLOSED if c is None else c.state

    def connection(self, conn: tuple[bytes, int, bytes, int]) -> Connection | None:
        """The TCB itself, for inspection (tests, metrics); None once it is gone."""
        return self._conns.get(conn)

    def connections(self) -> list[FourTuple]:
        return [c.key for c in self._conns.values()]

    def has_connection(self, key: tuple[bytes, int, bytes, int]) -> bool:
        """Whether a TCB exists for (local_ip, local_port, remote_ip, remote_port): the SYN fast path asks."""
        return key in self._conns

    def listener(self, local_ip: bytes, port: int) -> Listener | None:
        """The listener a SYN to (local_ip, port) reaches, or None."""
        return self._listener_for(local_ip, port)

    def __len__(self) -> int:
        return len(self._conns)

    # ------------------------------------------------------------------ network and time

    def on_segment(self, local_ip: bytes, remote_ip: bytes, seg: Segment, now: float) -> bool:
        """Process one received segment; False means "not ours" (admission said PASS)."""
        self._now = now
        key = (local_ip, seg.dst_port, remote_ip, seg.src_port)
        conn = self._conns.get(key)
        if conn is not None:
            if conn.state is TIME_WAIT and seg.flags & (SYN | ACK | RST | FIN) == SYN and self._may_reuse(conn, seg):
                self._reap(conn)  # MAY-2: a new incarnation may replace TIME-WAIT
                self.counters.inc("time_wait_reused")
            else:
                if conn.on_segment(seg, now):
                    self.hp_hits += 1
                self._after(conn)
                return True
        return self._no_connection(local_ip, remote_ip, key, seg, now)

    def on_timer(self, now: float) -> None:
        """Run every timer due at `now`."""
        self._now = now
        for conn in self._timers.pop_due(now):
            conn.on_timer(now)
            self._after(conn)
        self._timers.compact(len(self._conns))

    def next_timer(self) -> float | None:
        """When on_timer() next has work, or None."""
        return self._timers.next_deadline()

    def poll_output(self) -> list[Output]:
        out = self.output[:]
        self.output.clear()
        return out

    def poll_events(self) -> list[Event]:
        events = self.events[:]
        self.events.clear()
        return events

    def on_icmp_error(self, conn: FourTuple, kind: IcmpError, now: float, mtu: int | None = None,
                      seq: int | None = None) -> None:
        """An ICMP error quoting one of our segments. `seq` is the quoted sequence number; if
        given it must lie in [SND.UNA, SND.NXT] or the message is ignored (RFC 5927 4.1)."""
        c = self._conns.get(conn)
        if c is None:
            return
        if seq is not None and ((seq - c.snd_una) & MASK) > c.snd_nxt - c.snd_una:
            return
        if mtu is not None:
            mtu = self._usable_pmtu(c, mtu)
            if mtu is None:
                return
        c.on_icmp_error(kind, now, mtu)
        self._after(c)

    def on_pmtu(self, conn: FourTuple, mtu: int, now: float) -> None:
        """The path MTU toward this connection's peer dropped to `mtu`."""
        c = self._conns.get(conn)
        if c is None:
            return
        usable = self._usable_pmtu(c, mtu)
        if usable is None:
            return
        c.on_pmtu(usable, now)
        self._after(c)

    def accept_cookie(self, four_tuple: FourTuple, params: CookieParams, ack: Segment,
                      now: float) -> FourTuple:
        """Create an ESTABLISHED TCB from a validated SYN cookie and process its ACK."""
        listener = self._listener_for(four_tuple[0], four_tuple[1])
        if listener is None:
            raise TcpError(f"no listener for {four_tuple}")
        key = FourTuple(*four_tuple)
        conn = Connection(key, listener.config, self, (ack.ack - 1) & MASK, listener.endpoint(key.local_ip))
        conn.admitted = True
        self._conns[key] = conn
        conn.open_from_cookie(ack, params.mss, params.wscale, params.sack, params.timestamps, now)
        self._after(conn)
        return key

    # ------------------------------------------------------------------ internals

    def _usable_pmtu(self, c: Connection, mtu: int) -> int | None:
        usable = usable_pmtu(mtu, len(c.remote_ip) == 16, self.config.min_pmtu)
        if usable != mtu:
            self.counters.inc("pmtu_below_minimum")
        return usable

    def _clock(self, now: float | None) -> float:
        if now is not None:
            self._now = now
        return self._now

    def _conn(self, conn: tuple[bytes, int, bytes, int]) -> Connection:
        c = self._conns.get(conn)
        if c is None:
            raise TcpError(f"no connection {conn}")
        return c

    def _after(self, conn: Connection) -> None:
        """Reap a CLOSED TCB, settle the listener's embryonic count, keep the timer queued."""
        state = conn.state
        if state is CLOSED:
            self._reap(conn)
            return
        if state is TIME_WAIT and conn.admitted:
            self._leave_table(conn)
        if conn.listener is not None and self._embryonic_of and conn.state is not SYN_RECEIVED:
            listener = self._embryonic_of.pop(conn.key, None)
            if listener is not None:
                listener.embryonic -= 1
        self._timers.schedule(conn)

    def _leave_table(self, conn: Connection) -> None:
        """A TCB entering TIME-WAIT gives its table slot back, as an offload NIC hands TIME-WAIT to
        the host's small record and frees the hardware entry (FreeBSD's cxgbe: tcp_twstart, then the
        TID is released): 2*MSL of closed connections must not fill a table sized for live ones.
        The TCB stays for those 2*MSL to answer a retransmitted FIN (MUST-13) and a new SYN (MAY-2)."""
        conn.admitted = False
        self.counters.inc("time_wait_slots_freed")
        self.admission.release(conn.key)

    def _reap(self, conn: Connection) -> None:
        key = conn.key
        if self._conns.get(key) is conn:
            del self._conns[key]
        conn.state = CLOSED
        conn.scheduled = INF
        # Its stale timer entry may keep the TCB alive a while: free its buffers now.
        conn.snd_buf = bytearray()
        conn.rcv_buf = bytearray()
        conn.ooo.clear()
        self._synack_repeated.pop(key, None)
        listener = self._embryonic_of.pop(key, None)
        if listener is not None:
            listener.embryonic -= 1
        if conn.admitted:
            self.admission.release(key)
        if conn.visible:
            self.counters.inc("conn_closed")
            self.events.append(Closed(key))

    def _listener_for(self, local_ip: bytes, port: int) -> Listener | None:
        listeners = self._listeners
        return listeners.get((local_ip, port)) or listeners.get((None, port))

    def _may_reuse(self, conn: Connection, syn: Segment) -> bool:
        """RFC 9293 3.10.7.4 / RFC 6191: a SYN may reopen TIME-WAIT if it is clearly newer."""
        if self._listener_for(conn.local_ip, conn.local_port) is None:
            return False
        ts = syn.options.timestamp
        if conn.ts_ok and ts is not None:
            return not (ts[0] - conn.ts_recent) & HALF and ts[0] != conn.ts_recent
        return 0 < ((syn.seq - conn.rcv_nxt) & MASK) < HALF

    def _no_connection(self, local_ip: bytes, remote_ip: bytes, key: tuple[bytes, int, bytes, int],
                       seg: Segment, now: float) -> bool:
        """RFC 9293 3.10.7.1 (CLOSED) and 3.10.7.2 (LISTEN)."""
        flags = seg.flags
        listener = self._listener_for(local_ip, seg.dst_port)
        if listener is None:
            self._reset_for(local_ip, remote_ip, seg)
            return True
        if flags & RST:
            return True
        four_tuple = FourTuple(*key)
        if flags & ACK:
            check = getattr(self.admission, "check_cookie", None)
            if check is not None and not flags & SYN:
                params = check(four_tuple, seg, now)
                if params is not None:
                    self.accept_cookie(four_tuple, params, seg, now)
                    return True
            self._reset_for(local_ip, remote_ip, seg)
            return True
        if not flags & SYN:
            return True
        if flags & FIN and self.config.drop_synfin:
            self.counters.inc("rx_syn_fin_dropped")  # Linux's LISTEN drops SYN+FIN
            return True
        decision = self.admission.admit(four_tuple, seg, now)
        if decision is _PASS:
            return False
        if decision is _DROP:
            return True
        if decision is _RESET:
            self._reset_for(local_ip, remote_ip, seg)
            return True
        if decision is _COOKIE:
            cookie = self.admission.cookie_isn(four_tuple, seg, now)  # type: ignore[attr-defined]
            isn, tsval = cookie if isinstance(cookie, tuple) else (cookie, None)
            self.output.append((local_ip, remote_ip, self._cookie_syn_ack(listener.config, seg, isn, now, tsval)))
            return True
        if listener.embryonic >= listener.backlog:
            self.admission.release(four_tuple)
            return True
        conn = Connection(four_tuple, listener.config, self, self._isn.isn(four_tuple, now),
                          listener.endpoint(local_ip))
        conn.admitted = True
        self._conns[key] = conn
        listener.embryonic += 1
        self._embryonic_of[key] = listener
        conn.open_passive(seg, now)
        self._after(conn)
        return True

    def _cookie_syn_ack(self, cfg: TcpConfig, syn: Segment, isn: int, now: float,
                        tsval: int | None = None) -> Segment:
        """A SYN-ACK that leaves no state behind; its options match what open_passive sends.

        A cookie scheme that encodes options in the timestamp (as Linux does) supplies `tsval`.
        """
        peer = syn.options
        opts = TcpOptions(mss=cfg.mss)
        if peer.wscale is not None and cfg.wscale is not None:
            opts.wscale = cfg.wscale
        opts.sack_permitted = cfg.sack and peer.sack_permitted
        if cfg.timestamps and peer.timestamp is not None:
            opts.timestamp = (self.ts_clock(now) if tsval is None else tsval, peer.timestamp[0])
        return Segment(syn.dst_port, syn.src_port, isn & MASK, (syn.seq + 1) & MASK, SYN | ACK,
                       min(cfg.rcv_buf, 0xFFFF), b"", opts)

    def _reset_for(self, local_ip: bytes, remote_ip: bytes, seg: Segment) -> None:
        """The RST that answers a segment no connection wants (RFC 9293 3.10.7.1)."""
        if seg.flags & RST:
            return
        self.counters.inc("rst_sent")
        if seg.flags & ACK:
            rst = Segment(seg.dst_port, seg.src_port, seg.ack, 0, RST, 0)
        else:
            rst = Segment(seg.dst_port, seg.src_port, 0, (seg.seq + seg.seg_len) & MASK, RST | ACK, 0)
        self.output.append((local_ip, remote_ip, rst))

    def _ephemeral_port(self, local_ip: bytes, remote_ip: bytes, remote_port: int) -> int:
        span = EPHEMERAL_LAST - EPHEMERAL_FIRST + 1
        for _ in range(span):
            port = self._next_port
            self._next_port = EPHEMERAL_FIRST + (port - EPHEMERAL_FIRST + 1) % span
            if (local_ip, port, remote_ip, remote_port) not in self._conns:
                return port
        raise TcpError("no free ephemeral port")


def _check_unicast(ip: bytes) -> None:
    addr = ipaddress.ip_address(ip)
    broadcast = addr.version == 4 and addr == ipaddress.IPv4Address("255.255.255.255")
    if addr.is_multicast or addr.is_unspecified or broadcast:
        raise TcpError(f"cannot open a connection to {addr} (MUST-46)")
