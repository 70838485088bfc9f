"""One TCP connection: the TCB and the RFC 9293 state machine (section 3.10).

Sequence numbers are kept unwrapped (plain Python ints that never wrap) so every comparison
inside is an ordinary `<`; incoming 32-bit values are unwrapped against RCV.NXT or SND.UNA
and outgoing ones are masked. `snd_nxt` is the highest sequence sent so far (SND.MAX in some
texts): retransmissions never pull it back, they are driven by `high_rxt` and `loss_mark`
under one RFC 6675-style pipe rule that covers SACK recovery, NewReno recovery (where
duplicate ACKs stand in for SACKed segments) and go-back-N after a timeout.

The connection never frees itself: it ends in CLOSED and its owner (TcpStack) reaps it.
"""
from __future__ import annotations

from enum import IntEnum
from typing import Protocol

from toe_engine.segment import ACK, FIN, PSH, RST, SYN, Endpoint, FourTuple, Segment, TcpOptions
from toe_engine.tcp import congestion
from toe_engine.tcp.config import MAX_WSCALE, TcpConfig
from toe_engine.tcp.events import Accepted, Connected, DataReceived, Error, Event, PeerClosed, Reset, Writable
from toe_engine.tcp.icmp import HARD_ERRORS, IcmpError
from toe_engine.tcp.reassembly import ReassemblyQueue
from toe_engine.tcp.rtt import RttEstimator
from toe_engine.tcp.scoreboard import Scoreboard
from toe_engine.tcp.seqnum import HALF, MASK, seq_diff

INF = float("inf")
DEFAULT_MSS_V4 = 536  # MUST-15
DEFAULT_MSS_V6 = 1220
MIN_SND_MSS = 48
TS_OPTION_LEN = 12
SACK_OPTION_OVERHEAD = 4  # kind, length and two NOPs of padding
SACK_BLOCK_LEN = 8
PAWS_IDLE_LIMIT = 24 * 24 * 3600.0  # RFC 7323 5.5: TS.Recent is stale after 24 days idle


class State(IntEnum):
    CLOSED = 0
    LISTEN = 1
    SYN_SENT = 2
    SYN_RECEIVED = 3
    ESTABLISHED = 4
    FIN_WAIT_1 = 5
    FIN_WAIT_2 = 6
    CLOSE_WAIT = 7
    CLOSING = 8
    LAST_ACK = 9
    TIME_WAIT = 10


CLOSED, LISTEN, SYN_SENT, SYN_RECEIVED, ESTABLISHED = (State.CLOSED, State.LISTEN, State.SYN_SENT,
                                                       State.SYN_RECEIVED, State.ESTABLISHED)
FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT, CLOSING, LAST_ACK, TIME_WAIT = (
    State.FIN_WAIT_1, State.FIN_WAIT_2, State.CLOSE_WAIT, State.CLOSING, State.LAST_ACK, State.TIME_WAIT)

RECEIVING_STATES = frozenset({ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2})
SENDING_STATES = frozenset({ESTABLISHED, CLOSE_WAIT, FIN_WAIT_1, CLOSING, LAST_ACK})
SYNCHRONIZED = frozenset({SYN_RECEIVED, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT, CLOSING,
                          LAST_ACK, TIME_WAIT})


class TcpError(Exception):
    """An application call that the connection's state does not allow."""


class Counter(Protocol):
    def inc(self, name: str, n: int = 1) -> None: ...


class ConnectionHost(Protocol):
    """What a connection needs from the stack that owns it."""

    output: list[tuple[bytes, bytes, Segment]]
    events: list[Event]
    counters: Counter

    def ts_clock(self, now: float) -> int: ...

    def challenge_ack_allowed(self, now: float) -> bool: ...


class Connection:
    """The TCB. Application calls come through TcpStack, which also reaps CLOSED TCBs."""

    __slots__ = (
        "key", "local_ip", "remote_ip", "local_port", "remote_port", "cfg", "host", "_out", "_events",
        "counters", "state", "listener", "admitted", "visible", "app_closed", "soft_error", "nodelay",
        "keepalive",
        # send side
        "iss", "snd_una", "snd_nxt", "snd_wnd", "snd_wl1", "snd_wl2", "max_snd_wnd", "snd_buf",
        "snd_buf_seq", "fin_queued", "fin_seq", "snd_mss", "peer_mss", "pmtu_mss", "snd_wscale",
        "want_writable",
        # receive side
        "irs", "rcv_nxt", "rcv_adv", "rcv_wscale", "rcv_buf", "ooo", "rcv_fin_seq", "peer_fin", "rcv_mss",
        "unacked_bytes", "ack_now",
        # options
        "wscale_ok", "ts_ok", "ts_recent", "ts_recent_time", "last_ack_sent", "sack_ok",
        # timing and recovery
        "rtt", "rtt_seq", "rtt_time", "syn_retransmitted", "cc", "dupacks", "in_recovery", "recover",
        "loss_mark", "high_rxt", "reno_sacked", "force_rtx", "scoreboard", "retries", "probing",
        "persist_backoff", "keepalive_probes", "last_rcv",
        # timers
        "t_rtx", "t_delack", "t_persist", "t_keepalive", "t_close", "scheduled",
    )

    def __init__(self, key: FourTuple, cfg: TcpConfig, host: ConnectionHost, iss: int,
                 listener: Endpoint | None = None) -> None:
        self.key = key
        self.local_ip, self.local_port, self.remote_ip, self.remote_port = key
        self.cfg = cfg
        self.host = host
        self._out = host.output
        self._events = host.events
        self.counters = host.counters
        self.state = CLOSED
        self.listener = listener
        self.admitted = False
        self.visible = listener is None
        self.app_closed = False
        self.soft_error: str | None = None
        self.nodelay = cfg.nodelay
        self.keepalive = cfg.keepalive

        self.iss = iss
        self.snd_una = iss
        self.snd_nxt = iss
        self.snd_wnd = 0
        self.snd_wl1 = 0
        self.snd_wl2 = iss
        self.max_snd_wnd = 0
        self.snd_buf = bytearray()
        self.snd_buf_seq = iss + 1
        self.fin_queued = False
        self.fin_seq = 0
        self.peer_mss = DEFAULT_MSS_V4 if len(self.remote_ip) == 4 else DEFAULT_MSS_V6
        self.pmtu_mss = cfg.mss
        self.snd_mss = min(self.peer_mss, cfg.mss)
        self.snd_wscale = 0
        self.want_writable = False

        self.irs = 0
        self.rcv_nxt = 0
        self.rcv_adv = 0
        self.rcv_wscale = 0
        self.rcv_buf = bytearray()
        self.ooo = ReassemblyQueue()
        self.rcv_fin_seq: int | None = None
        self.peer_fin = False
        self.rcv_mss = min(cfg.mss, DEFAULT_MSS_V4)
        self.unacked_bytes = 0
        self.ack_now = False

        self.wscale_ok = False
        self.ts_ok = False
        self.ts_recent = 0
        self.ts_recent_time = 0.0
        self.last_ack_sent = 0
        self.sack_ok = False

        self.rtt = RttEstimator(cfg.rto_initial, cfg.rto_min, cfg.rto_max)
        self.rtt_seq: int | None = None
        self.rtt_time = 0.0
        self.syn_retransmitted = False
        self.cc = congestion.create(cfg.congestion, self.snd_mss, cfg.initial_cwnd_segments)
        self.dupacks = 0
        self.in_recovery = False
        self.recover = iss
        self.loss_mark = iss
        self.high_rxt = iss
        self.reno_sacked = 0
        self.force_rtx = False
        self.scoreboard = Scoreboard()
        self.retries = 0
        self.probing = False
        self.persist_backoff = 0
        self.keepalive_probes = 0
        self.last_rcv = 0.0

        self.t_rtx = INF
        self.t_delack = INF
        self.t_persist = INF
        self.t_keepalive = INF
        self.t_close = INF
        self.scheduled = INF

    # ------------------------------------------------------------------ opening

    def open_active(self, now: float) -> None:
        """Send the SYN (RFC 9293 3.10.1, active OPEN)."""
        self.state = SYN_SENT
        self.snd_nxt = self.iss + 1
        self._send_syn(now, with_ack=False)
        self.rtt_seq = self.snd_nxt
        self.rtt_time = now
        self.t_rtx = now + self.rtt.rto

    def open_passive(self, syn: Segment, now: float) -> None:
        """Answer a listener's SYN with a SYN-ACK and enter SYN-RECEIVED."""
        self.state = SYN_RECEIVED
        self.irs = syn.seq
        self.rcv_nxt = syn.seq + 1
        self.last_rcv = now
        self._negotiate(syn.options)
        self.snd_wnd = syn.window
        self.snd_wl1 = syn.seq
        self.snd_nxt = self.iss + 1
        self._send_syn(now, with_ack=True)
        self.rtt_seq = self.snd_nxt
        self.rtt_time = now
        self.t_rtx = now + self.rtt.rto

    def open_from_cookie(self, ack_seg: Segment, mss: int, wscale: int | None, sack: bool,
                         timestamps: bool, now: float) -> None:
        """Build an ESTABLISHED TCB from a validated SYN cookie, then process the ACK itself."""
        self.irs = ack_seg.seq - 1
        self.rcv_nxt = ack_seg.seq
        self.snd_una = self.snd_nxt = self.iss + 1
        self.snd_buf_seq = self.iss + 1
        self.recover = self.loss_mark = self.high_rxt = self.snd_una
        opts = TcpOptions(mss=mss, wscale=wscale, sack_permitted=sack,
                          timestamp=ack_seg.options.timestamp if timestamps else None)
        self._negotiate(opts)
        self.rcv_adv = self.rcv_nxt + min(self.cfg.rcv_buf, 0xFFFF)
        self.last_ack_sent = self.rcv_nxt
        self.snd_wnd = ack_seg.window << self.snd_wscale
        self.max_snd_wnd = self.snd_wnd
        self.snd_wl1 = self.rcv_nxt
        self.snd_wl2 = self.snd_una
        self._established(now)
        self.on_segment(ack_seg, now)

    def _negotiate(self, opts: TcpOptions) -> None:
        """Settle MSS, window scale, SACK and timestamps from the peer's SYN options."""
        cfg = self.cfg
        if opts.mss:
            self.peer_mss = opts.mss
        if opts.wscale is not None and cfg.wscale is not None:
            self.wscale_ok = True
            self.snd_wscale = min(opts.wscale, MAX_WSCALE)  # RFC 7323 2.3: clamp to 14
            self.rcv_wscale = cfg.wscale
        else:
            self.snd_wscale = self.rcv_wscale = 0
        self.sack_ok = cfg.sack and opts.sack_permitted
        ts = opts.timestamp
        if cfg.timestamps and ts is not None:
            self.ts_ok = True
            self.ts_recent = ts[0]
            self.ts_recent_time = self.last_rcv
        self._update_snd_mss()

    def _update_snd_mss(self) -> None:
        mss = min(self.peer_mss, self.cfg.mss, self.pmtu_mss) - (TS_OPTION_LEN if self.ts_ok else 0)
        self.snd_mss = max(mss, MIN_SND_MSS)
        self.cc.set_mss(self.snd_mss)

    def _established(self, now: float) -> None:
        self.state = ESTABLISHED
        self.t_rtx = INF
        self.retries = 0
        self.counters.inc("conn_established")
        if self.listener is not None:
            self.visible = True
            self._events.append(Accepted(self.listener, self.key))
        self._events.append(Connected(self.key))
        if self.keepalive:
            self.t_keepalive = now + self.cfg.keepalive_idle
        if self.fin_queued:
            self.state = FIN_WAIT_1

    # ------------------------------------------------------------------ application calls

    def send(self, data: bytes | bytearray | memoryview, now: float) -> int:
        """Queue as much of `data` as the send buffer holds; returns the count taken."""
        if self.fin_queued or self.state not in (SYN_SENT, SYN_RECEIVED, ESTABLISHED, CLOSE_WAIT):
            raise TcpError(f"connection {self.key} cannot send in state {self.state.name}")
        room = self.cfg.snd_buf - len(self.snd_buf)
        n = min(room, len(data))
        if n < len(data):
            self.want_writable = True
        if n:
            self.snd_buf += data[:n] if n < len(data) else data
            self.output(now)
        return n

    def recv(self, max_bytes: int, now: float) -> bytes:
        """Take up to `max_bytes` in-order bytes; b"" if none are waiting."""
        buf = self.rcv_buf
        n = min(max_bytes, len(buf))
        if not n:
            return b""
        data = bytes(buf[:n])
        del buf[:n]
        if self.state in RECEIVING_STATES and self._window_opened():
            self.ack_now = True
            self.output(now)
        return data

    def readable_bytes(self) -> int:
        return len(self.rcv_buf)

    def at_eof(self) -> bool:
        return self.peer_fin and not self.rcv_buf

    def shutdown(self, now: float) -> None:
        """Half-close: FIN after the queued data (MAY-1)."""
        state = self.state
        if self.fin_queued:
            return
        if state not in (SYN_SENT, SYN_RECEIVED, ESTABLISHED, CLOSE_WAIT):
            raise TcpError(f"connection {self.key} cannot shut down in state {state.name}")
        self.fin_queued = True
        self.fin_seq = self.snd_buf_seq + len(self.snd_buf)
        if state is ESTABLISHED:
            self.state = FIN_WAIT_1
        elif state is CLOSE_WAIT:
            self.state = LAST_ACK
        self.output(now)

    def close(self, now: float) -> None:
        """Close for both directions; unread data is reported to the peer with a RST (SHLD-3)."""
        self.app_closed = True
        if self.state is SYN_SENT:
            self._terminate()
            return
        if self.rcv_buf:
            self.abort(now)
            return
        if self.state in (SYN_RECEIVED, ESTABLISHED, CLOSE_WAIT):
            self.shutdown(now)
        elif self.state is FIN_WAIT_2:
            self.t_close = now + self.cfg.fin_wait2_timeout

    def abort(self, now: float) -> None:
        """ABORT: RST to the peer if it knows of us, then CLOSED."""
        if self.state in SYNCHRONIZED and self.state is not TIME_WAIT:
            self._send_rst(self.snd_nxt & MASK, now)
        self._terminate()

    def set_nodelay(self, on: bool, now: float) -> None:
        self.nodelay = on
        if on and self.state in SENDING_STATES:
            self.output(now)

    def set_keepalive(self, on: bool, now: float) -> None:
        """MUST-24: keep-alives are the application's choice."""
        self.keepalive = on
        self.t_keepalive = now + self.cfg.keepalive_idle if on and self.state is ESTABLISHED else INF
        self.keepalive_probes = 0

    # ------------------------------------------------------------------ errors from below

    def on_pmtu(self, mtu: int, now: float) -> None:
        """Path MTU lowered (ICMP frag-needed / PTB): shrink the MSS, resend what is out."""
        header = 40 if len(self.local_ip) == 4 else 60
        mss = max(mtu - header, MIN_SND_MSS)
        if mss >= self.pmtu_mss:
            return
        self.pmtu_mss = mss
        self._update_snd_mss()
        if self.state in SENDING_STATES and self.snd_nxt > self.snd_una:
            self.loss_mark = self.snd_nxt
            self.high_rxt = self.snd_una
            self.force_rtx = True
            self.output(now)

    def on_icmp_error(self, kind: IcmpError, now: float, mtu: int | None = None) -> None:
        """RFC 9293 3.9.1.1 / RFC 5927: hard errors abort only in SYN-SENT, the rest are soft."""
        if kind is IcmpError.SOURCE_QUENCH:
            return  # MUST-55
        if kind is IcmpError.FRAG_NEEDED:
            if mtu is not None:
                self.on_pmtu(mtu, now)
            return
        if self.state is SYN_SENT and kind in HARD_ERRORS:
            self._events.append(Error(self.key, kind.value, fatal=True))
            self._terminate()
            return
        self.soft_error = kind.value
        self._events.append(Error(self.key, kind.value))

    # ------------------------------------------------------------------ segment arrival

    def on_segment(self, seg: Segment, now: float) -> None:
        """RFC 9293 3.10.7.4, in its order: PAWS, acceptability, RST, SYN, ACK, text, FIN."""
        self.last_rcv = now
        state = self.state
        if state is SYN_SENT:
            self._on_segment_syn_sent(seg, now)
            return
        flags = seg.flags
        rcv_nxt = self.rcv_nxt
        seq = rcv_nxt + seq_diff(seg.seq, rcv_nxt)
        payload = seg.payload
        plen = len(payload)
        ts = seg.options.timestamp

        if flags & SYN and state is SYN_RECEIVED and seq == self.irs:
            if not flags & ACK:
                self._send_syn(now, with_ack=True)  # a retransmitted SYN: repeat our SYN-ACK
                return
            flags &= ~SYN  # simultaneous open: the peer's SYN-ACK, its SYN already counted
            seq += 1

        if ts is not None and self.ts_ok and not flags & RST:
            if (ts[0] - self.ts_recent) & HALF:  # SEG.TSval < TS.Recent, modulo 2**32
                if now - self.ts_recent_time <= PAWS_IDLE_LIMIT:
                    self.counters.inc("paws_rejected")
                    self.ack_now = True
                    self.output(now)
                    return
                self.ts_recent = ts[0]

        seg_len = plen + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
        rcv_wnd = self.rcv_adv - rcv_nxt
        if rcv_wnd < 0:
            rcv_wnd = 0
        if seg_len == 0:
            acceptable = seq == rcv_nxt if rcv_wnd == 0 else rcv_nxt <= seq < rcv_nxt + rcv_wnd
        elif rcv_wnd == 0:
            acceptable = False
        else:
            acceptable = (rcv_nxt <= seq < rcv_nxt + rcv_wnd
                          or rcv_nxt <= seq + seg_len - 1 < rcv_nxt + rcv_wnd)
        if not acceptable:
            if rcv_wnd == 0 and seq == rcv_nxt and not flags & SYN:
                payload = b""  # MUST-66: a closed window still takes ACK, RST and URG
                flags &= ~FIN
                plen = 0
                self.ack_now = True
            else:
                if not flags & RST:
                    self.counters.inc("out_of_window")
                    if state is TIME_WAIT and flags & FIN:
                        self.t_close = now + self.cfg.time_wait
                    self.ack_now = True
                    self.output(now)
                return

        if ts is not None and self.ts_ok and seq <= self.last_ack_sent:
            self.ts_recent = ts[0]  # RFC 7323 4.3 (PAWS above made TSval >= TS.Recent)
            self.ts_recent_time = now

        if flags & RST:
            if seq == rcv_nxt:
                self._on_reset()
            else:
                self._challenge_ack(now)  # RFC 5961 3.2
            return

        if flags & SYN:
            self._challenge_ack(now)  # RFC 5961 4.2
            return

        if not flags & ACK:
            return

        if seq < rcv_nxt:
            cut = rcv_nxt - seq
            payload = memoryview(payload)[cut:] if cut < plen else b""
            seq = rcv_nxt
        right = rcv_nxt + rcv_wnd
        if seq + len(payload) > right:
            payload = memoryview(payload)[:right - seq]
            flags &= ~FIN

        snd_una = self.snd_una
        ack = snd_una + seq_diff(seg.ack, snd_una)
        if state is SYN_RECEIVED:
            if snd_una < ack <= self.snd_nxt:
                self.snd_wnd = seg.window << self.snd_wscale
                self.max_snd_wnd = self.snd_wnd
                self.snd_wl1 = seq
                self.snd_wl2 = ack
                self._established(now)
                state = self.state
            else:
                self._send_rst(seg.ack, now)
                return
        if ack > self.snd_nxt or ack < snd_una - self.max_snd_wnd:
            self._challenge_ack(now)  # RFC 5961 5.2 (and RFC 9293: ACK of unsent data)
            return
        self._process_ack(seg, seq, ack, plen, now)
        state = self.state
        if state is CLOSED:
            return

        if payload and state in RECEIVING_STATES:
            self._receive_text(seq, payload, now)
        if flags & FIN and state is not TIME_WAIT:
            fin_at = seq + len(payload)
            if fin_at == self.rcv_nxt:
                self._receive_fin(now)
            elif fin_at > self.rcv_nxt:
                self.rcv_fin_seq = fin_at
                self.ack_now = True
        elif flags & FIN:
            self.t_close = now + self.cfg.time_wait  # a retransmitted FIN restarts 2*MSL
            self.ack_now = True
        self.output(now)

    def _on_segment_syn_sent(self, seg: Segment, now: float) -> None:
        """RFC 9293 3.10.7.3."""
        flags = seg.flags
        ack_ok = False
        ack = 0
        if flags & ACK:
            ack = self.iss + seq_diff(seg.ack, self.iss)
            if ack <= self.iss or ack > self.snd_nxt:
                if not flags & RST:
                    self._send_rst(seg.ack, now)
                return
            ack_ok = True
        if flags & RST:
            if ack_ok:
                self._events.append(Reset(self.key))
                self._terminate()
            return
        if not flags & SYN:
            return
        self.irs = seg.seq
        self.rcv_nxt = seg.seq + 1
        self._negotiate(seg.options)
        self.snd_wnd = seg.window  # never scaled in a SYN (RFC 7323 2.2)
        self.max_snd_wnd = self.snd_wnd
        self.snd_wl1 = seg.seq
        if not ack_ok:
            self.state = SYN_RECEIVED  # simultaneous open (MUST-10)
            self._send_syn(now, with_ack=True)
            self.t_rtx = now + self.rtt.rto
            return
        self.snd_wl2 = ack
        self.snd_una = ack
        self.recover = self.loss_mark = self.high_rxt = ack
        self._take_rtt_sample(ack, seg.options.timestamp, now)
        self._established(now)
        self.ack_now = True
        if seg.payload:
            self._receive_text(self.rcv_nxt, seg.payload, now)
        if flags & FIN:
            self._receive_fin(now)
        self.output(now)

    def _on_reset(self) -> None:
        """An acceptable RST (RCV.NXT exactly): RFC 9293 3.10.7.4 second step."""
        if self.state is SYN_RECEIVED and self.listener is not None and not self.visible:
            self._terminate()  # back to LISTEN: the listener never saw this one
            return
        if self.state in (SYN_RECEIVED, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT):
            self._events.append(Reset(self.key))
        self._terminate()

    def _process_ack(self, seg: Segment, seq: int, ack: int, plen: int, now: float) -> None:
        """ACK field processing: SND.UNA, loss detection, SND.WND, FIN-acked transitions."""
        snd_una = self.snd_una
        sack_news = 0
        if self.sack_ok and seg.options.sack_blocks:
            sack_news = self._take_sack_blocks(seg.options.sack_blocks, ack)
        if ack > snd_una:
            self._ack_new_data(ack, seg.options.timestamp, now)
        elif (ack == snd_una and self.snd_nxt > snd_una and not plen and not self.probing
              and not seg.flags & (SYN | FIN)
              and ((seg.window << self.snd_wscale) == self.snd_wnd or sack_news)):
            self._duplicate_ack(now, sack_news)

        if self.snd_wl1 < seq or (self.snd_wl1 == seq and self.snd_wl2 <= ack):
            wnd = seg.window << self.snd_wscale
            if wnd and not self.snd_wnd:
                self.probing = False
                self.persist_backoff = 0
                self.t_persist = INF
            self.snd_wnd = wnd
            self.snd_wl1 = seq
            self.snd_wl2 = ack
            if wnd > self.max_snd_wnd:
                self.max_snd_wnd = wnd

        if self.fin_queued and self.snd_una > self.fin_seq:
            state = self.state
            if state is FIN_WAIT_1:
                self.state = FIN_WAIT_2
                if self.app_closed:
                    self.t_close = now + self.cfg.fin_wait2_timeout
            elif state is CLOSING:
                self._enter_time_wait(now)
            elif state is LAST_ACK:
                self._terminate()

    def _take_sack_blocks(self, blocks: tuple[tuple[int, int], ...], ack: int) -> int:
        una = max(ack, self.snd_una)
        nxt = self.snd_nxt
        added = 0
        board = self.scoreboard
        for start32, end32 in blocks:
            start = una + seq_diff(start32, una)
            end = una + seq_diff(end32, una)
            if una <= start < end <= nxt:
                added += board.add(start, end)
        return added

    def _take_rtt_sample(self, ack: int, ts: tuple[int, int] | None, now: float) -> None:
        """RTT from the timestamp echo, else from the timed segment (Karn's rule, MUST-18)."""
        if self.syn_retransmitted and ack == self.iss + 1:
            # Karn's rule for the handshake, as Linux applies it: the echo may be of the first
            # SYN(-ACK), whose answer was lost, and would pass the retransmission waits off as RTT.
            return
        if self.ts_ok and ts is not None and ts[1]:
            elapsed = (self.host.ts_clock(now) - ts[1]) & MASK
            if elapsed < HALF:
                self.rtt.sample(elapsed / 1000.0)
                self.rtt_seq = None
                return
        if self.rtt_seq is not None and ack >= self.rtt_seq:
            self.rtt.sample(now - self.rtt_time)
            self.rtt_seq = None

    def _ack_new_data(self, ack: int, ts: tuple[int, int] | None, now: float) -> None:
        snd_una = self.snd_una
        acked = ack - snd_una
        flight = self.snd_nxt - snd_una
        buf_seq = self.snd_buf_seq
        data_acked = min(ack, buf_seq + len(self.snd_buf)) - buf_seq
        if data_acked > 0:
            del self.snd_buf[:data_acked]
            self.snd_buf_seq = buf_seq + data_acked
        self.snd_una = ack
        if self.scoreboard:
            self.scoreboard.advance(ack)
        self._take_rtt_sample(ack, ts, now)
        self.retries = 0
        self.dupacks = 0
        if self.high_rxt < ack:
            self.high_rxt = ack
        if self.in_recovery:
            if ack >= self.recover:
                self.in_recovery = False
                self.reno_sacked = 0
                self.cc.on_recovery_end(now)
            elif not self.sack_ok:
                self.reno_sacked = max(0, self.reno_sacked - max(0, acked - self.snd_mss))
                self.loss_mark = max(self.loss_mark, min(ack + self.snd_mss, self.snd_nxt))
                self.high_rxt = ack  # RFC 6582 step 4: retransmit the first unacknowledged segment
        else:
            self.cc.on_ack(acked, flight, now, self.rtt.srtt)
        if ack >= self.snd_nxt:
            self.t_rtx = INF
            self.probing = False
        elif not self.probing:
            self.t_rtx = now + self.rtt.rto  # RFC 6298 5.3
        if self.want_writable and len(self.snd_buf) < self.cfg.snd_buf:
            self.want_writable = False
            self._events.append(Writable(self.key))

    def _duplicate_ack(self, now: float, sack_news: int) -> None:
        self.dupacks += 1
        if self.in_recovery:
            if not self.sack_ok:
                self.reno_sacked = min(self.reno_sacked + self.snd_mss, self.snd_nxt - self.snd_una)
            return
        if self.snd_una < self.recover:
            return  # RFC 6582: no second reduction for one window of data
        lost = (self.dupacks >= self.cfg.dupthresh
                or (self.scoreboard and self.scoreboard.lost_boundary(self.snd_mss, self.cfg.dupthresh)
                    > self.snd_una))
        if lost:
            self._enter_recovery(now)

    def _enter_recovery(self, now: float) -> None:
        """Fast retransmit (RFC 5681 3.2) entering NewReno (RFC 6582) or SACK (RFC 6675) recovery."""
        una, nxt = self.snd_una, self.snd_nxt
        self.counters.inc("fast_retransmits")
        self.cc.on_fast_retransmit(nxt - una, now)
        self.in_recovery = True
        self.recover = nxt
        self.high_rxt = una
        self.loss_mark = max(self.loss_mark, min(una + self.snd_mss, nxt))
        if not self.sack_ok:
            self.reno_sacked = min(self.dupacks * self.snd_mss, nxt - una)
        self.force_rtx = True

    def _receive_text(self, seq: int, payload: bytes | memoryview, now: float) -> None:
        n = len(payload)
        if seq == self.rcv_nxt:
            if not self.app_closed:
                self.rcv_buf += payload
            self.rcv_nxt += n
            delivered = n
            if self.ooo:
                more = self.ooo.pop_ready(self.rcv_nxt)
                if more is not None:
                    if not self.app_closed:
                        self.rcv_buf += more
                    self.rcv_nxt += len(more)
                    delivered += len(more)
                self.ack_now = True  # filled (part of) a hole: ACK at once (RFC 5681 4.2)
            if self.rcv_fin_seq is not None and self.rcv_nxt == self.rcv_fin_seq:
                self._receive_fin(now)
            if n > self.rcv_mss:
                self.rcv_mss = n
            self.unacked_bytes += n
            if self.unacked_bytes >= 2 * self.rcv_mss or not self.cfg.delayed_ack:
                self.ack_now = True  # SHLD-19: at least every second full-sized segment
            elif self.t_delack == INF:
                self.t_delack = now + self.cfg.delayed_ack
            if not self.app_closed:
                self._events.append(DataReceived(self.key, delivered))
        else:
            self.ooo.insert(seq, payload)
            self.ack_now = True  # out-of-order: immediate duplicate ACK (RFC 5681 4.2)

    def _receive_fin(self, now: float) -> None:
        self.rcv_nxt += 1
        self.rcv_fin_seq = None
        self.peer_fin = True
        self.ack_now = True
        if not self.app_closed:
            self._events.append(PeerClosed(self.key))
        state = self.state
        if state in (SYN_RECEIVED, ESTABLISHED):
            self.state = CLOSE_WAIT
            self.t_keepalive = INF
        elif state is FIN_WAIT_1:
            if self.snd_una > self.fin_seq:
                self._enter_time_wait(now)
            else:
                self.state = CLOSING
        elif state is FIN_WAIT_2:
            self._enter_time_wait(now)

    def _enter_time_wait(self, now: float) -> None:
        self.state = TIME_WAIT
        self.t_rtx = self.t_persist = self.t_keepalive = INF
        self.t_close = now + self.cfg.time_wait  # MUST-13

    def _terminate(self) -> None:
        """Enter CLOSED; the stack reaps the TCB and reports Closed if the application knew it."""
        self.state = CLOSED
        self.t_rtx = self.t_delack = self.t_persist = self.t_keepalive = self.t_close = INF

    # ------------------------------------------------------------------ timers

    def deadline(self) -> float:
        return min(self.t_rtx, self.t_delack, self.t_persist, self.t_keepalive, self.t_close)

    def on_timer(self, now: float) -> None:
        if self.t_close <= now:
            self._terminate()
            return
        if self.t_rtx <= now:
            self.t_rtx = INF
            self._on_rto(now)
            if self.state is CLOSED:
                return
        if self.t_persist <= now:
            self.t_persist = INF
            self._on_persist(now)
        if self.t_delack <= now:
            self.t_delack = INF
            self.ack_now = True
        if self.t_keepalive <= now:
            self.t_keepalive = INF
            self._on_keepalive(now)
            if self.state is CLOSED:
                return
        self.output(now)

    def _on_rto(self, now: float) -> None:
        """RFC 6298 5.4-5.7 plus RFC 5681's loss window; SYN and SYN-ACK have their own limits."""
        self.counters.inc("rto_expired")
        self.retries += 1
        state = self.state
        if state is SYN_SENT or state is SYN_RECEIVED:
            limit = self.cfg.syn_retries if state is SYN_SENT else self.cfg.synack_retries
            if self.retries > limit:
                if self.visible:
                    self._events.append(Error(self.key, "connection timed out", fatal=True))
                self._terminate()
                return
            self.rtt.on_timeout()
            self.syn_retransmitted = True
            self.rtt_seq = None
            self.counters.inc("retransmits")
            self._send_syn(now, with_ack=state is SYN_RECEIVED)
            self.t_rtx = now + self.rtt.rto
            return
        if self.retries > self.cfg.retries2:
            self._events.append(Error(self.key, "retransmission timeout", fatal=True))
            self._terminate()
            return
        if self.snd_nxt <= self.snd_una:
            return
        self.rtt.on_timeout()
        flight = self.snd_nxt - self.snd_una
        if self.retries == 1:
            self.cc.on_rto(flight, now)
        else:
            self.cc.cwnd = self.snd_mss  # RFC 5681: ssthresh is not lowered again for the same loss
        self.in_recovery = False
        self.reno_sacked = 0
        self.dupacks = 0
        self.recover = self.snd_nxt
        self.loss_mark = self.snd_nxt
        self.high_rxt = self.snd_una
        self.rtt_seq = None
        self.force_rtx = True
        self.t_rtx = now + self.rtt.rto

    def _on_persist(self, now: float) -> None:
        """RFC 9293 3.8.6.1: probe a zero window (MUST-36), or beat sender SWS avoidance."""
        if self.state not in SENDING_STATES:
            return
        una, nxt = self.snd_una, self.snd_nxt
        data_end = self.snd_buf_seq + len(self.snd_buf)
        if self.snd_wnd == 0:
            self.counters.inc("zero_window_probes")
            if nxt > una:
                self._send_range(una, una + 1, now, retransmit=False)
            elif data_end > nxt:
                self._send_range(nxt, nxt + 1, now, retransmit=False)
                self.snd_nxt = nxt + 1
            self.probing = True
            self.persist_backoff += 1
            self.t_rtx = INF
        else:
            room = self.snd_wnd - (nxt - una)
            n = min(room, data_end - nxt, self.snd_mss)
            if n > 0:
                self._send_range(nxt, nxt + n, now, retransmit=False)
                self.snd_nxt = nxt + n
                self.t_rtx = now + self.rtt.rto
        self.t_persist = now + self._persist_interval()

    def _persist_interval(self) -> float:
        return min(max(self.rtt.rto, self.cfg.rto_min) * (1 << min(self.persist_backoff, 16)), self.cfg.persist_max)

    def _on_keepalive(self, now: float) -> None:
        if not self.keepalive or self.state is not ESTABLISHED:
            return
        cfg = self.cfg
        idle_since = self.last_rcv
        if self.snd_nxt > self.snd_una:
            self.t_keepalive = now + cfg.keepalive_idle  # MUST-26: only when idle; RTO rules now
            return
        if now - idle_since < cfg.keepalive_idle and self.keepalive_probes == 0:
            self.t_keepalive = idle_since + cfg.keepalive_idle
            return
        if self.keepalive_probes and now - idle_since < cfg.keepalive_interval:
            self.keepalive_probes = 0  # the peer answered (MUST-29: lost ACKs are tolerated)
            self.t_keepalive = idle_since + cfg.keepalive_idle
            return
        if self.keepalive_probes >= cfg.keepalive_probes:
            self._events.append(Error(self.key, "keepalive timeout", fatal=True))
            self._terminate()
            return
        self.keepalive_probes += 1
        self.counters.inc("keepalives_sent")
        self._emit((self.snd_una - 1) & MASK, ACK, b"", now)  # SHLD-12: no data
        self.t_keepalive = now + cfg.keepalive_interval

    # ------------------------------------------------------------------ output

    def _pipe(self) -> int:
        """RFC 6675 SetPipe(), with duplicate ACKs standing in for SACKs when SACK is off."""
        una, nxt = self.snd_una, self.snd_nxt
        if not self.in_recovery and self.loss_mark <= una:
            return nxt - una
        lost_below = self._lost_boundary()
        rtx_top = max(self.high_rxt, una)
        board = self.scoreboard
        if board:
            return board.unsacked(lost_below, nxt) + board.unsacked(una, rtx_top)
        return max(0, (nxt - lost_below) + (rtx_top - una) - self.reno_sacked)

    def _lost_boundary(self) -> int:
        boundary = self.loss_mark
        if self.scoreboard and self.in_recovery:
            boundary = max(boundary, self.scoreboard.lost_boundary(self.snd_mss, self.cfg.dupthresh))
        return min(max(boundary, self.snd_una), self.snd_nxt)

    def output(self, now: float) -> None:
        """Send what the state, windows and timers allow, then a pure ACK if one is owed."""
        state = self.state
        sent = False
        if state in SENDING_STATES:
            sent = self._transmit(now)
            una, nxt = self.snd_una, self.snd_nxt
            if nxt > una:
                if self.t_rtx == INF and not self.probing:
                    self.t_rtx = now + self.rtt.rto  # RFC 6298 5.1
                if self.probing and self.t_persist == INF:
                    self.t_persist = now + self._persist_interval()
            elif self.snd_buf_seq + len(self.snd_buf) > nxt:
                if self.t_persist == INF:
                    self.t_persist = now + self._persist_interval()
            else:
                self.t_persist = INF
        if self.ack_now and not sent and state is not CLOSED and state is not SYN_SENT:
            self._emit(self.snd_nxt & MASK, ACK, b"", now)

    def _transmit(self, now: float) -> bool:
        mss = self.snd_mss
        cwnd = self.cc.cwnd
        if not (self.in_recovery or self.loss_mark > self.snd_una):
            return self._send_new(now, cwnd - (self.snd_nxt - self.snd_una))
        sent = False
        room = cwnd - self._pipe()
        lost_below = self._lost_boundary()
        board = self.scoreboard
        nxt = self.snd_nxt
        while room >= mss or self.force_rtx:
            start = max(self.high_rxt, self.snd_una)
            if board:
                end_sacked = board.sacked_end_at(start)
                while end_sacked is not None:
                    start = end_sacked
                    end_sacked = board.sacked_end_at(start)
            if start >= lost_below:
                break
            end = min(start + mss, lost_below, nxt)
            if board:
                hole_end = board.next_sacked_start(start)
                if hole_end is not None and hole_end < end:
                    end = hole_end
            self._send_range(start, end, now, retransmit=True)
            self.high_rxt = end
            room -= end - start
            self.force_rtx = False
            sent = True
        self.force_rtx = False
        if room > 0 and self._send_new(now, room):
            sent = True
        return sent

    def _send_new(self, now: float, room: int) -> bool:
        """Send new data within `room` (cwnd less pipe) and the peer's window, Nagle and SWS rules.

        With `tso_segments` > 1 a segment may carry that many MSS of data at once, for a device
        that segments it (TSO): one pass through this code then sends up to 64 KiB.
        """
        mss = self.snd_mss
        limit = mss * self.cfg.tso_segments
        data_end = self.snd_buf_seq + len(self.snd_buf)
        fin_queued = self.fin_queued
        sent = False
        while True:
            nxt = self.snd_nxt
            avail = data_end - nxt
            fin_pending = fin_queued and nxt <= data_end
            if avail <= 0:
                if fin_pending:
                    self._send_range(nxt, nxt + 1, now, retransmit=False)
                    self.snd_nxt = nxt + 1
                    sent = True
                break
            wnd_room = self.snd_una + self.snd_wnd - nxt
            usable = room if room < wnd_room else wnd_room
            n = avail if avail < limit else limit
            if usable < n:
                if usable >= mss:
                    n = usable - usable % mss  # TSO: whole segments only
                # MUST-38 sender SWS avoidance: a window-limited small segment only if it is at
                # least half the largest window the peer ever offered; never a cwnd-limited one.
                elif usable <= 0 or wnd_room > room or usable < self.max_snd_wnd // 2:
                    break
                else:
                    n = usable
            elif not self.nodelay and nxt > self.snd_una and not fin_pending and n % mss:
                if n < mss:
                    break  # SHLD-7 Nagle: one small segment in flight at a time
                n -= n % mss  # ... and a TSO frame's short tail waits like any small segment
            fin = fin_pending and n == avail
            end = nxt + n + (1 if fin else 0)
            self._send_range(nxt, end, now, retransmit=False)
            self.snd_nxt = end
            room -= n
            sent = True
            if fin:
                break
        return sent

    def _send_range(self, start: int, end: int, now: float, retransmit: bool) -> None:
        """Send sequence space [start, end) from the send buffer; FIN if it covers fin_seq."""
        buf_seq = self.snd_buf_seq
        data_end = buf_seq + len(self.snd_buf)
        flags = ACK
        stop = end
        if self.fin_queued and end > self.fin_seq:
            flags |= FIN
            stop = end - 1
        if stop > data_end:
            stop = data_end
        payload = bytes(self.snd_buf[start - buf_seq:stop - buf_seq]) if stop > start else b""
        if stop == data_end and payload:
            flags |= PSH
        if retransmit:
            self.counters.inc("retransmits")
            if self.rtt_seq is not None and start < self.rtt_seq:
                self.rtt_seq = None  # Karn: a retransmitted segment is never timed
        elif self.rtt_seq is None and not self.ts_ok:
            self.rtt_seq = end
            self.rtt_time = now
        self._emit(start & MASK, flags, payload, now)

    def _window_opened(self) -> bool:
        # the window can open no further than its field reaches (65535 unscaled, without window scaling)
        free = min(self.cfg.rcv_buf - len(self.rcv_buf), 0xFFFF << self.rcv_wscale)
        return self.rcv_nxt + free - self.rcv_adv >= min(self.cfg.rcv_buf // 2, 2 * self.cfg.mss)

    def _window_field(self) -> int:
        """RCV.WND to advertise, scaled; the right edge never moves left (SHLD-14) and moves
        right only in steps worth a segment (MUST-39, receiver SWS avoidance)."""
        cfg = self.cfg
        rcv_nxt = self.rcv_nxt
        edge = rcv_nxt + cfg.rcv_buf - len(self.rcv_buf)
        shift = self.rcv_wscale
        if edge - self.rcv_adv >= min(cfg.rcv_buf // 2, cfg.mss):
            field = min((edge - rcv_nxt) >> shift, 0xFFFF)
            advertised = rcv_nxt + (field << shift)
            if advertised > self.rcv_adv:
                self.rcv_adv = advertised
        return min(max(self.rcv_adv - rcv_nxt, 0) >> shift, 0xFFFF)

    def _emit(self, seq32: int, flags: int, payload: bytes, now: float) -> None:
        """Build one non-SYN segment carrying our ACK, window and options."""
        opts = TcpOptions()
        if self.ts_ok:
            opts.timestamp = (self.host.ts_clock(now), self.ts_recent)
        if self.ooo and self.sack_ok:
            most = 3 if self.ts_ok else 4
            if payload:  # the blocks must fit beside the data: snd_mss only allows for timestamps
                most = min(most, max(0, (self.snd_mss - len(payload) - SACK_OPTION_OVERHEAD) // SACK_BLOCK_LEN))
            blocks = self.ooo.sack_blocks(most)
            if blocks:
                opts.sack_blocks = tuple((s & MASK, e & MASK) for s, e in blocks)
                self.counters.inc("sack_blocks_sent", len(blocks))
        if self.ooo and not payload:
            self.counters.inc("dup_acks_sent")
        window = self._window_field()
        seg = Segment(self.local_port, self.remote_port, seq32, self.rcv_nxt & MASK, flags, window,
                      payload, opts)
        self._out.append((self.local_ip, self.remote_ip, seg))
        self.last_ack_sent = self.rcv_nxt
        self.unacked_bytes = 0
        self.ack_now = False
        self.t_delack = INF

    def _send_syn(self, now: float, with_ack: bool) -> None:
        """SYN or SYN-ACK: the only segments with MSS, window scale and SACK-permitted."""
        cfg = self.cfg
        opts = TcpOptions(mss=cfg.mss)
        if with_ack:
            if self.wscale_ok:
                opts.wscale = self.rcv_wscale
            opts.sack_permitted = self.sack_ok
            if self.ts_ok:
                opts.timestamp = (self.host.ts_clock(now), self.ts_recent)
        else:
            opts.wscale = cfg.wscale
            opts.sack_permitted = cfg.sack
            if cfg.timestamps:
                opts.timestamp = (self.host.ts_clock(now), 0)
        window = min(cfg.rcv_buf - len(self.rcv_buf), 0xFFFF)  # never scaled in a SYN
        flags = SYN | ACK if with_ack else SYN
        seg = Segment(self.local_port, self.remote_port, self.iss & MASK,
                      self.rcv_nxt & MASK if with_ack else 0, flags, window, b"", opts)
        if with_ack:
            self.rcv_adv = self.rcv_nxt + window
            self.last_ack_sent = self.rcv_nxt
        self._out.append((self.local_ip, self.remote_ip, seg))

    def _send_rst(self, seq32: int, now: float) -> None:
        self.counters.inc("rst_sent")
        seg = Segment(self.local_port, self.remote_port, seq32 & MASK, 0, RST, 0)
        self._out.append((self.local_ip, self.remote_ip, seg))

    def _challenge_ack(self, now: float) -> None:
        """RFC 5961: an ACK that tells a blind attacker nothing, rate-limited stack-wide."""
        if self.host.challenge_ack_allowed(now):
            self.counters.inc("challenge_acks")
            self._emit(self.snd_nxt & MASK, ACK, b"", now)
