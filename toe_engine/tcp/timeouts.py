"""What each of a connection's timers does when it fires (Linux tcp_timer.c).

Retransmission timeout (RFC 6298, with the SYN limits of RFC 9293), persist (zero-window
probes, MUST-36), keep-alive (MUST-24..29), delayed ACK and the 2*MSL / FIN-WAIT-2 close.
The stack-wide heap that decides *when* a connection is looked at is `timers.TimerQueue`.
"""
from __future__ import annotations

from toe_engine.segment import ACK
from toe_engine.tcp.events import Error
from toe_engine.tcp.recovery import PTO, RTO, LossRecovery
from toe_engine.tcp.seqnum import MASK
from toe_engine.tcp.tcb import CLOSED, ESTABLISHED, INF, SENDING_STATES, SYN_RECEIVED, SYN_SENT


class Timeouts(LossRecovery):
    """Timer expiry: `deadline()` for the stack's timer heap, `on_timer()` when it is due."""

    __slots__ = ()

    def deadline(self) -> float:
        """The earliest of the timers, compared one by one: min() of six floats would box each
        of them (the compiled build keeps them unboxed), and this runs after every segment."""
        when = self.t_rtx
        if self.t_delack < when:
            when = self.t_delack
        if self.t_persist < when:
            when = self.t_persist
        if self.t_keepalive < when:
            when = self.t_keepalive
        if self.t_close < when:
            when = self.t_close
        if self.t_pace < when:
            when = self.t_pace
        return when

    def on_timer(self, now: float) -> None:
        if self.t_close <= now:
            self._terminate()
            return
        if self.t_rtx <= now:
            self.t_rtx = INF
            kind = self.rtx_kind
            if kind == RTO:
                self._on_rto(now)
                if self.state is CLOSED:
                    return
            elif kind == PTO:
                self._on_probe_timeout(now)
            else:
                self._on_reorder_timeout(now)
        if self.t_persist <= now:
            self.t_persist = INF
            self._on_persist(now)
        if self.t_delack <= now:
            self.t_delack = INF
            self.ack_now = True
        if self.t_pace <= now:
            self.t_pace = INF  # the pacing gap is over: output() below sends the next quantum
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
        if self.retries == 1:
            self.rtx_since = now - self.rtt.rto  # the RTO that just ran out began when it was sent
        user_timeout = self.cfg.user_timeout
        timed_out = bool(user_timeout) and now - self.rtx_since >= user_timeout  # MUST-21/22: R2 as a time
        state = self.state
        if state is SYN_SENT or state is SYN_RECEIVED:
            limit = self.cfg.syn_retries if state is SYN_SENT else self.cfg.synack_retries
            if self.retries > limit or timed_out:
                if self.visible:
                    self._events.append(Error(self.key, "connection timed out", fatal=True))
                self._terminate()
                return
            self.rtt.on_timeout()
            self.syn_retransmitted = True
            self.rtt_seq = None
            self.counters.inc("retransmits")
            self._send_syn(now, with_ack=state is SYN_RECEIVED)
            self._arm_rto(now)
            self._clamp_to_user_timeout()
            return
        if self.retries > self.cfg.retries2 or timed_out:
            self._events.append(Error(self.key, "user timeout" if timed_out else "retransmission timeout", fatal=True))
            self._terminate()
            return
        if self.snd_nxt <= self.snd_una:
            return
        self.counters.inc(self._rto_cause())
        self.rtt.on_timeout()
        flight = self.snd_nxt - self.snd_una
        frto = self.cfg.frto and self.sack_ok and self.retries == 1 and not self.recovery  # the SACK variant
        if frto:
            self.frto_prior = (self.cc.cwnd, self.cc.ssthresh)
        if self.retries == 1:
            self.cc.on_rto(flight, now)
        else:
            self.cc.cwnd = self.snd_mss  # RFC 5681: ssthresh is not lowered again for the same loss
        if frto:
            self._frto_start(now)  # RFC 5682: only the first segment, until two ACKs tell
        else:
            self._loss_after_timeout(now)
        self._arm_rto(now)
        self._clamp_to_user_timeout()

    def _rto_cause(self) -> str:
        """What a data RTO found before it acts, as the counter to count it under (the first that
        applies): another timeout of the same episode (`rto_repeated`), a tail loss probe
        unanswered (`rto_lost_probe`), the oldest outstanding range resent already
        (`rto_lost_retransmit`: nothing sent after it was delivered, so RACK could not tell), at
        most DupThresh segments in flight (`rto_few_in_flight`), or none of these (`rto_other`:
        lost ACKs, a whole flight lost)."""
        if self.retries > 1:
            return "rto_repeated"
        if self.tlp_end is not None:
            return "rto_lost_probe"
        ranges = self.rtxq.ranges
        if ranges and ranges[0].resent:
            return "rto_lost_retransmit"
        if self.snd_nxt - self.snd_una <= self.cfg.dupthresh * self.snd_mss:
            return "rto_few_in_flight"
        return "rto_other"

    def _clamp_to_user_timeout(self) -> None:
        """The next timeout comes no later than the user timeout, which then ends the connection on time."""
        if self.cfg.user_timeout:
            self.t_rtx = min(self.t_rtx, self.rtx_since + self.cfg.user_timeout)

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
                self._arm_rto(now)
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
