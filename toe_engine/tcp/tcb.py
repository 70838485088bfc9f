"""The TCB of one TCP connection: its states, its fields, and the transitions every path shares.

Sequence numbers are kept unwrapped (plain Python ints that never wrap) so every comparison
inside is an ordinary `<`; incoming 32-bit values are unwrapped against RCV.NXT or SND.UNA
and outgoing ones are masked. `snd_nxt` is the highest sequence sent so far (SND.MAX in some
texts): retransmissions never pull it back.

The connection is split the way Linux and FreeBSD split TCP, one class per path, stacked in
one single-inheritance chain on this TCB (so the engine compiles to native classes):
Tcb <- `recovery` (loss detection and repair) <- `timeouts` (what each timer does) <-
`output` (what to send and how it is built) <- `input` (a segment arrives) <- `connection`,
which holds the application calls. A path calls what sits below it directly; the few send
calls that recovery and timeouts make upward are declared at the end of Tcb.
"""
from __future__ import annotations

from enum import IntEnum
from typing import Final, Protocol

from toe_engine.segment import Endpoint, FourTuple, Segment, TcpOptions
from toe_engine.tcp import congestion
from toe_engine.tcp.config import MAX_WSCALE, TcpConfig
from toe_engine.tcp.events import Accepted, Connected, Event
from toe_engine.tcp.reassembly import ReassemblyQueue
from toe_engine.tcp.rtt import RttEstimator
from toe_engine.tcp.rtx_queue import RetransmitQueue

INF: Final = float("inf")
DEFAULT_MSS_V4: Final = 536  # MUST-15
DEFAULT_MSS_V6: Final = 1220
MIN_SND_MSS: Final = 48
TS_OPTION_LEN: Final = 12
SACK_OPTION_OVERHEAD: Final = 4  # kind, length and two NOPs of padding
SACK_BLOCK_LEN: Final = 8
PAWS_IDLE_LIMIT: Final = 24 * 24 * 3600.0  # RFC 7323 5.5: TS.Recent is stale after 24 days idle
SYN_TIMEOUT_RTO: Final = 3.0  # RFC 6298 5.7: the RTO data starts with after a SYN or SYN-ACK timed out


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


# One name each, Final: the compiled build reads a C static, not the module's dict, on every comparison.
CLOSED: Final = State.CLOSED
LISTEN: Final = State.LISTEN
SYN_SENT: Final = State.SYN_SENT
SYN_RECEIVED: Final = State.SYN_RECEIVED
ESTABLISHED: Final = State.ESTABLISHED
FIN_WAIT_1: Final = State.FIN_WAIT_1
FIN_WAIT_2: Final = State.FIN_WAIT_2
CLOSE_WAIT: Final = State.CLOSE_WAIT
CLOSING: Final = State.CLOSING
LAST_ACK: Final = State.LAST_ACK
TIME_WAIT: Final = State.TIME_WAIT

RECEIVING_STATES: Final = frozenset({ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2})
SENDING_STATES: Final = frozenset({ESTABLISHED, CLOSE_WAIT, FIN_WAIT_1, CLOSING, LAST_ACK})
SYNCHRONIZED: Final = frozenset({SYN_RECEIVED, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT, CLOSING,
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
    payload_views: bool  # data segments carry views of the send buffer, not copies (TcpStack)

    def ts_clock(self, now: float) -> int: ...

    def challenge_ack_allowed(self, now: float) -> bool: ...

    def synack_repeat_allowed(self, conn: FourTuple, now: float) -> bool: ...

    def defer_ack(self, conn: tuple[bytes, int, bytes, int]) -> bool: ...  # may the ACK owed wait for the batch?


class Tcb:
    """The fields of one connection; the paths (recovery, timeouts, output, input) extend it in turn."""

    __slots__ = (
        "key", "local_ip", "remote_ip", "local_port", "remote_port", "cfg", "host", "_out", "_events",
        "counters", "state", "listener", "admitted", "visible", "app_closed", "soft_error", "nodelay",
        "keepalive",
        # send side
        "iss", "snd_una", "snd_nxt", "snd_wnd", "snd_wl1", "snd_wl2", "max_snd_wnd", "snd_buf",
        "snd_buf_seq", "fin_queued", "fin_seq", "snd_mss", "peer_mss", "pmtu_mss", "snd_wscale",
        "want_writable",
        # receive side
        "irs", "rcv_nxt", "rcv_adv", "rcv_wscale", "rcv_buf", "ooo", "rcv_fin_seq", "peer_fin", "rcv_mss", "rcv_up",
        "rtx_since",
        "unacked_bytes", "ack_now", "dsack_pending",
        # options
        "wscale_ok", "ts_ok", "ts_recent", "ts_recent_time", "last_ack_sent", "sack_ok",
        # timing and recovery
        "rtt", "rtt_seq", "rtt_time", "syn_retransmitted", "cc", "retries", "probing", "persist_backoff",
        "keepalive_probes", "last_rcv", "last_send",
        # loss recovery (recovery.py)
        "rtxq", "recovery", "recover", "dupacks", "reno_sacked", "force_rtx", "rack", "rack_order", "rack_end", "rack_rtt",
        "min_rtt", "reo_wnd_mult", "reo_wnd_persist", "dsack_round", "tlp_end", "tlp_retrans",
        "frto", "frto_prior", "prr_delivered", "prr_out", "prr_recover_fs",
        # timers
        "t_rtx", "rtx_kind", "t_delack", "t_persist", "t_keepalive", "t_close", "scheduled",
        # pacing (output.py, for a rate-based congestion control): when the next send may start
        "pace_next", "t_pace",
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
        self.rcv_up: int | None = None  # RCV.UP: the first non-urgent octet after urgent data seen (MUST-30..33)
        self.rtx_since = 0.0  # when what the current run of timeouts retransmits was first sent (user timeout)
        self.peer_fin = False
        self.rcv_mss = min(cfg.mss, DEFAULT_MSS_V4)
        self.unacked_bytes = 0
        self.ack_now = False
        self.dsack_pending: tuple[int, int] | None = None  # RFC 2883: a duplicate to report once, first

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
        self.retries = 0
        self.probing = False
        self.persist_backoff = 0
        self.keepalive_probes = 0
        self.last_rcv = 0.0
        self.last_send = -INF

        self.rtxq = RetransmitQueue()
        self.recovery = 0  # recovery.OPEN
        self.recover = iss
        self.dupacks = 0
        self.reno_sacked = 0
        self.force_rtx = False
        self.rack = False  # RACK-TLP in use: configured, and SACK negotiated
        self.rack_order = 0  # the most recently sent range delivered: its transmission (RACK.xmit_ts) ...
        self.rack_end = 0  # ... and its end (RACK.end_seq)
        self.rack_rtt = 0.0
        self.min_rtt = INF
        self.reo_wnd_mult = 1
        self.reo_wnd_persist = 0
        self.dsack_round: int | None = None
        self.tlp_end: int | None = None
        self.tlp_retrans = False
        self.frto = 0  # F-RTO (RFC 5682): 0 off, 2 or 3 the step that the next new ACK is for
        self.frto_prior = (0, 0)  # cwnd and ssthresh before the timeout, for the undo (RFC 4015)
        self.prr_delivered = 0  # PRR (RFC 6937): delivered and sent in this fast recovery, and its start flight
        self.prr_out = 0
        self.prr_recover_fs = 1

        self.t_rtx = INF
        self.rtx_kind = 0  # recovery.RTO
        self.t_delack = INF
        self.t_persist = INF
        self.t_keepalive = INF
        self.t_close = INF
        self.scheduled = INF
        self.pace_next = 0.0
        self.t_pace = INF

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
        self.rack = self.sack_ok and cfg.loss_detection == "rack-tlp"  # RACK needs SACK (as in Linux)
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
        if self.syn_retransmitted and not self.rtt.samples:
            self.rtt.restart(SYN_TIMEOUT_RTO)  # RFC 6298 5.7: data starts with a 3 s RTO
        self.counters.inc("conn_established")
        if self.listener is not None:
            self.visible = True
            self._events.append(Accepted(self.listener, self.key))
        self._events.append(Connected(self.key))
        if self.keepalive:
            self.t_keepalive = now + self.cfg.keepalive_idle
        if self.fin_queued:
            self.state = FIN_WAIT_1

    def _enter_time_wait(self, now: float) -> None:
        self.state = TIME_WAIT
        self.t_rtx = self.t_persist = self.t_keepalive = self.t_pace = INF
        self.t_close = now + self.cfg.time_wait  # MUST-13

    def _terminate(self) -> None:
        """Enter CLOSED; the stack reaps the TCB and reports Closed if the application knew it."""
        self.state = CLOSED
        self.t_rtx = self.t_delack = self.t_persist = self.t_keepalive = self.t_close = self.t_pace = INF

    # The send path's entry points, declared here because the paths below it in the chain
    # (recovery, timeouts) call them; SendPath (output.py) overrides each.
    def output(self, now: float) -> None:
        raise NotImplementedError

    def _emit(self, seq32: int, flags: int, payload: bytes | memoryview, now: float) -> None:
        raise NotImplementedError

    def _send_syn(self, now: float, with_ack: bool) -> None:
        raise NotImplementedError

    def _send_range(self, start: int, end: int, now: float, retransmit: bool) -> None:
        raise NotImplementedError
