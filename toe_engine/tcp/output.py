"""The send path: what may be sent now and how each segment is built (Linux tcp_output.c).

`output()` is the one entry point every other path calls after changing state: it sends what
the windows, the congestion window and Nagle allow (retransmissions first, chosen by
`recovery`), then a pure ACK if one is owed.
"""
from __future__ import annotations

from typing import Final

from toe_engine.segment import ACK, FIN, PSH, RST, SYN, Segment, TcpOptions
from toe_engine.tcp.recovery import FAST
from toe_engine.tcp.seqnum import MASK
from toe_engine.tcp.tcb import (
    CLOSED, INF, SACK_BLOCK_LEN, SACK_OPTION_OVERHEAD, SENDING_STATES, SYN_SENT,
)
from toe_engine.tcp.timeouts import Timeouts

TSO_DEFER_MAX_S: Final = 0.001  # no deferral after a pause in sending longer than this (Linux: 1 ms)
TSO_WIN_DIVISOR: Final = 3  # a third of the window is worth sending at once (net.ipv4.tcp_tso_win_divisor)


class SendPath(Timeouts):
    """Transmission: new data, pure ACKs, SYNs and RSTs."""

    __slots__ = ()

    def output(self, now: float) -> None:
        """Send what the state, windows and timers allow, then a pure ACK if one is owed."""
        state = self.state
        sent = False
        if state in SENDING_STATES:
            before = self.snd_nxt
            if (before < self.snd_buf_seq + len(self.snd_buf) or self.fin_queued or self.force_rtx
                    or self.rtxq.lost or self.cc.rate_based):
                sent = self._transmit(now)
                self._arm_send_timers(now, before)
            elif before == self.snd_una:
                # Receive-only: nothing unsent, in flight or lost, so no send machinery runs and no
                # timer but persist's (off) applies. An idle restart (RFC 5681 4.1) waits for data
                # to send, as Linux's tcp_cwnd_restart does.
                self.t_persist = INF
            else:
                self._arm_send_timers(now, before)  # all sent, some in flight: only its timers
        if self.ack_now and not sent and state is not CLOSED and state is not SYN_SENT:
            self._emit(self.snd_nxt & MASK, ACK, b"", now)

    def _arm_send_timers(self, now: float, before: int) -> None:
        """The retransmission, probe and persist timers after a transmission that began at SND.NXT `before`."""
        una, nxt = self.snd_una, self.snd_nxt
        if nxt > una:
            if self.probing:
                pass
            elif self.t_rtx == INF:
                self._arm_rtx(now)  # RFC 6298 5.1
            elif nxt > before and self.rack and not self.recovery and self.tlp_end is None:
                self._arm_rtx(now, restart_rto=False)  # new data (re)starts the probe timer (RFC 8985 7.2)
            if self.probing and self.t_persist == INF:
                self.t_persist = now + self._persist_interval()
        elif self.snd_buf_seq + len(self.snd_buf) > nxt:
            if self.t_persist == INF:
                self.t_persist = now + self._persist_interval()
        else:
            self.t_persist = INF

    def _transmit(self, now: float) -> bool:
        cc = self.cc
        una = self.snd_una
        if self.snd_nxt == una and now - self.last_send > self.rtt.rto:
            cc.on_idle(now)  # RFC 5681 4.1: restart from at most the initial window after an RTO idle
        if cc.pacing_rate:
            return self._transmit_paced(now)
        q = self.rtxq
        if not (q.lost or self.force_rtx):
            room = cc.cwnd - (self.snd_nxt - una - q.sacked + q.retrans - self.reno_sacked)  # RFC 6675 pipe, no loss
            if room <= 0 and not self.fin_queued:
                return False  # the congestion window is full, and only a FIN goes regardless
            if self.cfg.tso_defer and self._tso_defer(now, room):
                return False
            return self._send_new(now, room)
        room, sent = self._retransmit_lost(now, cc.cwnd - self._pipe())
        if room > 0 and self._send_new(now, room):
            sent = True
        return sent

    def _tso_defer(self, now: float, room: int) -> bool:
        """Whether new data waits for the next ACK so that it leaves in one large TSO frame, not a
        frame of one or two MSS per ACK (Linux's tcp_tso_should_defer): only with TSO, in the open
        state, while something is in flight (an ACK is coming), no FIN is queued and the last
        transmission was under 1 ms ago; and only while what may be sent is less than a full TSO
        frame, less than a third of the window (tcp_tso_win_divisor) and less than what is
        waiting, and the oldest unacknowledged segment left at least srtt/2 ago (its ACK is near)."""
        cfg = self.cfg
        una, nxt = self.snd_una, self.snd_nxt
        if (cfg.tso_segments < 2 or nxt == una or self.fin_queued or self.recovery
                or now - self.last_send > TSO_DEFER_MAX_S):
            return False
        wnd_room = una + self.snd_wnd - nxt
        limit = room if room < wnd_room else wnd_room
        mss = self.snd_mss
        if limit < mss or limit >= mss * cfg.tso_segments or limit >= self.snd_buf_seq + len(self.snd_buf) - nxt:
            return False
        cwnd, wnd = self.cc.cwnd, self.snd_wnd
        if limit >= (wnd if wnd < cwnd else cwnd) // TSO_WIN_DIVISOR:
            return False
        srtt = self.rtt.srtt
        ranges = self.rtxq.ranges
        if not srtt or not ranges or now - ranges[0].xmit < srtt / 2:
            return False
        self.counters.inc("tso_deferred")
        return True

    def _transmit_paced(self, now: float) -> bool:
        """Pacing, for a rate-based congestion control (BBR): one send quantum now, the next no
        earlier than this one takes at the pacing rate, less half of any lateness (Linux's
        tcp_update_skb_after_send); `t_pace` wakes the connection then. Running out of data
        with cwnd to spare marks the delivery-rate samples app-limited (tcp_rate_check_app_limited)."""
        if now < self.pace_next:
            self.t_pace = self.pace_next
            return False
        cc = self.cc
        q = self.rtxq
        room = cc.cwnd - self._pipe()
        quantum = cc.send_quantum
        budget = left = room if room < quantum else quantum
        sent = False
        if q.lost or self.force_rtx:
            left, sent = self._retransmit_lost(now, budget)
        nxt = self.snd_nxt
        if left > 0 and self._send_new(now, left):
            sent = True
        n = budget - left + self.snd_nxt - nxt
        if n > 0:
            prior = self.pace_next
            gap = n / cc.pacing_rate
            if now > prior:
                gap -= min(gap / 2, now - prior)
                prior = now
            self.pace_next = self.t_pace = prior + gap
        pipe = self._pipe()
        if self.snd_buf_seq + len(self.snd_buf) - self.snd_nxt < self.snd_mss and pipe < cc.cwnd and not q.lost:
            q.mark_app_limited(pipe)
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
        payload: bytes | memoryview = b""
        if stop > start:  # a view of the send buffer; a copy unless the owner takes views (TcpStack.payload_views)
            payload = memoryview(self.snd_buf)[start - buf_seq:stop - buf_seq]
            if not self.host.payload_views:
                payload = bytes(payload)
        if stop == data_end and payload:
            flags |= PSH
        if retransmit:
            self.counters.inc("retransmits")
            if self.rtt_seq is not None and start < self.rtt_seq:
                self.rtt_seq = None  # Karn: a retransmitted segment is never timed
        elif self.rtt_seq is None and not self.ts_ok:
            self.rtt_seq = end
            self.rtt_time = now
        if retransmit or start < self.snd_nxt:
            self.rtxq.resent(start, end, now)
        else:
            self.rtxq.sent_new(start, end, now)
        if self.recovery == FAST:  # what PRR has sent (RFC 6937 prr_out)
            self.prr_out += end - start
        self.last_send = now
        self._emit(start & MASK, flags, payload, now)

    def _unpin_send_buffer(self) -> None:
        """Make the send buffer resizable while payload views of it are out: those still waiting
        in the stack's output become copies of their bytes; if the owner holds another one, the
        buffer itself goes on in a copy (`snd_buf_pinned`), leaving the old one to the views."""
        buf = self.snd_buf
        for _, _, seg in self._out:
            payload = seg.payload
            if type(payload) is memoryview and payload.obj is buf:
                seg.payload = bytes(payload)
                payload.release()
        self.counters.inc("snd_buf_views_copied")
        try:
            buf.append(0)  # resizable now?
            buf.pop()
        except BufferError:
            self.counters.inc("snd_buf_pinned")
            self.snd_buf = bytearray(buf)

    def _window_opened(self) -> bool:
        """Whether a read freed enough for a window update ACK now (Linux's tcp_cleanup_rbuf rule).

        Only when what the peer may still send is at most half the largest window, and the new
        window is at least twice that and a segment more (MUST-39): a read behind a data ACK,
        with the window still wide open, waits for the next ACK that is due anyway.
        """
        cfg = self.cfg
        clamp = min(cfg.rcv_buf, 0xFFFF << self.rcv_wscale)  # as far as the field reaches
        left = self.rcv_adv - self.rcv_nxt
        if left < 0:
            left = 0
        if 2 * left > clamp:
            return False
        free = min(cfg.rcv_buf - len(self.rcv_buf), clamp)
        return free >= 2 * left and free - left >= min(cfg.rcv_buf // 2, 2 * cfg.mss)

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

    def _emit(self, seq32: int, flags: int, payload: bytes | memoryview, now: float) -> None:
        """Build one non-SYN segment carrying our ACK, window and options."""
        opts = TcpOptions(timestamp=(self.host.ts_clock(now), self.ts_recent)) if self.ts_ok else TcpOptions()
        ooo = self.ooo
        dsack = self.dsack_pending
        if ooo.bytes_held or dsack is not None:  # holes or a duplicate: SACK them, and count the duplicate ACK
            if self.sack_ok:
                most = 3 if self.ts_ok else 4
                if payload:  # the blocks must fit beside the data: snd_mss only allows for timestamps
                    most = min(most, max(0, (self.snd_mss - len(payload) - SACK_OPTION_OVERHEAD) // SACK_BLOCK_LEN))
                if dsack is not None and most:  # RFC 2883 4: the duplicate first, once (no room: the next ACK)
                    blocks = [dsack] + ooo.sack_blocks(most - 1)
                    self.dsack_pending = None
                    self.counters.inc("dsacks_sent")
                else:
                    blocks = ooo.sack_blocks(most)
                if blocks:
                    opts.sack_blocks = tuple((s & MASK, e & MASK) for s, e in blocks)
                    self.counters.inc("sack_blocks_sent", len(blocks))
            if not payload and ooo.bytes_held:
                self.counters.inc("dup_acks_sent")
        seg = Segment(self.local_port, self.remote_port, seq32, self.rcv_nxt & MASK, flags, self._window_field(),
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
