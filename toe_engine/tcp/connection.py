"""One TCP connection: the paths joined into one TCB, and the application calls (RFC 9293 3.10).

Where things are: `tcb` (fields, states), `input` (a segment arrives), `output` (what is
sent), `recovery` (loss detection and retransmission), `timeouts` (timers firing). This
module opens connections and takes the application's calls.

The connection never frees itself: it ends in CLOSED and its owner (TcpStack) reaps it.
"""
from __future__ import annotations

from toe_engine.segment import Segment, TcpOptions
from toe_engine.tcp.events import Error
from toe_engine.tcp.icmp import HARD_ERRORS, IcmpError
from toe_engine.tcp.input import ReceivePath
from toe_engine.tcp.recovery import LOSS
from toe_engine.tcp.seqnum import MASK
from toe_engine.tcp.tcb import (
    CLOSE_WAIT, CLOSED, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, INF, LAST_ACK, MIN_SND_MSS, RECEIVING_STATES, SENDING_STATES,
    SYN_RECEIVED, SYN_SENT, SYNCHRONIZED, TIME_WAIT, ConnectionHost, Counter, State, TcpError,
)

__all__ = ["CLOSED", "SYN_RECEIVED", "TIME_WAIT", "Connection", "ConnectionHost", "Counter", "State", "TcpError"]


class Connection(ReceivePath):
    """The TCB. Application calls come through TcpStack, which also reaps CLOSED TCBs."""

    __slots__ = ()

    def open_active(self, now: float) -> None:
        """Send the SYN (RFC 9293 3.10.1, active OPEN)."""
        self.state = SYN_SENT
        self.snd_nxt = self.iss + 1
        self._send_syn(now, with_ack=False)
        self.rtt_seq = self.snd_nxt
        self.rtt_time = now
        self._arm_rto(now)

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
        self._arm_rto(now)

    def open_from_cookie(self, ack_seg: Segment, mss: int, wscale: int | None, sack: bool,
                         timestamps: bool, now: float) -> None:
        """Build an ESTABLISHED TCB from a validated SYN cookie, then process the ACK itself."""
        self.irs = ack_seg.seq - 1
        self.rcv_nxt = ack_seg.seq
        self.snd_una = self.snd_nxt = self.iss + 1
        self.snd_buf_seq = self.iss + 1
        self.recover = self.snd_una
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

    def send(self, data: bytes | bytearray | memoryview, now: float, push: bool = True) -> int:
        """Queue as much of `data` as the send buffer holds; returns the count taken.

        `push` False only queues: the owner calls output() once the application is done (cork).
        """
        if self.fin_queued or self.state not in (SYN_SENT, SYN_RECEIVED, ESTABLISHED, CLOSE_WAIT):
            raise TcpError(f"connection {self.key} cannot send in state {self.state.name}")
        room = self.cfg.snd_buf - len(self.snd_buf)
        n = min(room, len(data))
        if n < len(data):
            self.want_writable = True
        if n:
            taken = data[:n] if n < len(data) else data
            try:
                self.snd_buf += taken
            except BufferError:  # a payload view of it is still out (TcpStack.payload_views)
                self._unpin_send_buffer()
                self.snd_buf += taken
            if push:
                self.output(now)
        return n

    def recv(self, max_bytes: int, now: float, push: bool = True) -> bytes:
        """Take up to `max_bytes` in-order bytes; b"" if none are waiting.

        A window update the read makes owed goes at once, or with `push` False on the owner's
        next output() (by then it may ride on the application's answer).
        """
        buf = self.rcv_buf
        n = min(max_bytes, len(buf))
        if not n:
            return b""
        if n == len(buf):
            data = bytes(buf)  # all of it, the usual case: one copy, not a slice and then bytes()
            buf.clear()
        else:
            data = bytes(memoryview(buf)[:n])
            del buf[:n]
        self._read_done(now, push)
        return data

    def recv_all(self, now: float, push: bool = True) -> bytearray:
        """Every in-order byte waiting, without a copy: the receive buffer itself is handed
        over and a new one begins. The window update rule is recv()'s."""
        data = self.rcv_buf
        if not data:
            return bytearray()
        self.rcv_buf = bytearray()
        self._read_done(now, push)
        return data

    def _read_done(self, now: float, push: bool) -> None:
        """A read freed receive buffer: a window update it makes owed goes now, or with `push`
        False on the owner's next output()."""
        if self.state in RECEIVING_STATES and self._window_opened():
            self.ack_now = True
            if push:
                self.output(now)

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

    def on_pmtu(self, mtu: int, now: float) -> None:
        """Path MTU lowered (ICMP frag-needed / PTB): shrink the MSS, resend what is out."""
        header = 40 if len(self.local_ip) == 4 else 60
        mss = max(mtu - header, MIN_SND_MSS)
        if mss >= self.pmtu_mss:
            return
        self.pmtu_mss = mss
        self._update_snd_mss()
        if self.state in SENDING_STATES and self.snd_nxt > self.snd_una:
            self.rtxq.mark_all_lost()  # resent at the new size; as Linux, loss state without a cwnd cut
            if not self.recovery:
                self.recovery = LOSS
                self.recover = self.snd_nxt
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
