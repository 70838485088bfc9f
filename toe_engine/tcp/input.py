"""The receive path: what happens when a segment arrives (Linux tcp_input.c, FreeBSD tcp_input.c).

RFC 9293 3.10.7 in its order: PAWS, acceptability, RST, SYN, ACK (SND.UNA, SACK, the send
window, FIN acknowledged), segment text, FIN. Loss detection on the ACKs is in `recovery`.
"""
from __future__ import annotations

from typing import Final

from toe_engine.segment import ACK, FIN, PSH, RST, SYN, URG, Segment
from toe_engine.tcp.events import DataReceived, PeerClosed, Reset, Writable
from toe_engine.tcp.recovery import FAST
from toe_engine.tcp.rtx_queue import Sent
from toe_engine.tcp.seqnum import HALF, MASK, seq_diff
from toe_engine.tcp.tcb import (
    CLOSE_WAIT, CLOSED, CLOSING, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, INF, LAST_ACK, PAWS_IDLE_LIMIT,
    RECEIVING_STATES, SYN_RECEIVED, SYN_SENT, TIME_WAIT, State,
)
from toe_engine.tcp.output import SendPath

ACK_PSH: Final = ACK | PSH  # the flags a predicted segment may carry


class ReceivePath(SendPath):
    """Segment arrival for every state after LISTEN (the stack handles LISTEN and CLOSED)."""

    __slots__ = ()

    def on_segment(self, seg: Segment, now: float) -> bool:
        """RFC 9293 3.10.7.4, in its order: PAWS, acceptability, RST, SYN, ACK, text, FIN; the
        next in-order segment of an ESTABLISHED connection tries header prediction first.
        True if the segment took that short path."""
        self.last_rcv = now
        state = self.state
        if state is ESTABLISHED and self.cfg.header_prediction and self._predicted(seg, now):
            return True
        if state is SYN_SENT:
            self._on_segment_syn_sent(seg, now)
            return False
        flags = seg.flags
        rcv_nxt = self.rcv_nxt
        seq = rcv_nxt + seq_diff(seg.seq, rcv_nxt)
        payload = seg.payload
        plen = len(payload)
        ts = seg.options.timestamp

        if flags & SYN and state is SYN_RECEIVED and seq == self.irs:
            if not flags & ACK:
                if self.host.synack_repeat_allowed(self.key, now):  # rate-limited, as Linux's tcp_check_req
                    self._send_syn(now, with_ack=True)  # a retransmitted SYN: repeat our SYN-ACK
                return False
            if self.listener is None:  # only an active opener can be in a simultaneous open
                flags &= ~SYN  # the peer's SYN-ACK, its SYN already counted
                seq += 1

        if (ts is not None and (ts[0] - self.ts_recent) & HALF and self.ts_ok and not flags & RST
                and self._paws_rejects(ts[0], now)):  # SEG.TSval < TS.Recent, modulo 2**32
            return False

        rcv_wnd = self.rcv_adv - rcv_nxt
        if rcv_wnd < 0:
            rcv_wnd = 0
        if not (plen and rcv_nxt <= seq < rcv_nxt + rcv_wnd) and not self._acceptable(
                seq, plen + (1 if flags & SYN else 0) + (1 if flags & FIN else 0), rcv_wnd):
            if not (rcv_wnd == 0 and seq == rcv_nxt and not flags & SYN):
                if plen and seq < rcv_nxt and self.sack_ok and not flags & RST:
                    self.dsack_pending = (seq, min(seq + plen, rcv_nxt))  # RFC 2883 4.1.1: a duplicate
                self._refuse(flags, now)
                return False
            payload = b""  # MUST-66: a closed window still takes ACK, RST and URG
            flags &= ~FIN
            plen = 0
            self.ack_now = True

        if flags & RST:
            if seq == rcv_nxt:
                self._on_reset()
            else:
                self._challenge_ack(now)  # RFC 5961 3.2
            return False
        if flags & SYN:
            self._challenge_ack(now)  # RFC 5961 4.2
            return False
        if not flags & ACK:
            return False

        if seq < rcv_nxt:
            cut = rcv_nxt - seq
            if plen and self.sack_ok:
                self.dsack_pending = (seq, min(seq + plen, rcv_nxt))  # RFC 2883 4.1.1: its head
            payload = memoryview(payload)[cut:] if cut < plen else b""
            seq = rcv_nxt
        right = rcv_nxt + rcv_wnd
        if seq + len(payload) > right:
            payload = memoryview(payload)[:right - seq]
            flags &= ~FIN

        snd_una = self.snd_una
        ack = snd_una + seq_diff(seg.ack, snd_una)
        if state is SYN_RECEIVED and not self._handshake_acked(seg, seq, ack, now):
            return False
        if ack > self.snd_nxt or ack < snd_una - self.max_snd_wnd:
            self._challenge_ack(now)  # RFC 5961 5.2 (and RFC 9293: ACK of unsent data)
            return False
        if ts is not None and self.ts_ok and seq <= self.last_ack_sent:
            # RFC 7323 4.3, once the segment passed the RST, SYN and ACK checks (PAWS above
            # made TSval >= TS.Recent): a challenged segment must not move TS.Recent
            self.ts_recent = ts[0]
            self.ts_recent_time = now
        self._process_ack(seg, seq, ack, plen, now)
        state = self.state
        if state is CLOSED:
            return False
        if flags & URG and seg.urg_ptr and state in RECEIVING_STATES:  # sixth, the URG bit: RCV.UP (MUST-30..33)
            up = rcv_nxt + seq_diff(seg.seq, rcv_nxt) + seg.urg_ptr
            if self.rcv_up is None or up > self.rcv_up:
                self.rcv_up = up
        if payload and self.app_closed and seq + len(payload) > self.rcv_nxt:
            self._data_after_close(seg, now)
            return False
        if flags & FIN:
            self._text_and_fin(seq, payload, flags & FIN, state, now, seg.gso_size)
        elif payload and state in RECEIVING_STATES:
            self._receive_text(seq, payload, now, seg.gso_size)
        self.output(now)
        return False

    def _predicted(self, seg: Segment, now: float) -> bool:
        """Header prediction (Van Jacobson's; Linux tcp_rcv_established, FreeBSD tcp_input): in
        ESTABLISHED, a segment with only ACK (and maybe PSH), SEG.SEQ = RCV.NXT, an open send
        window that stays open (a receiver that reads as it goes moves its window on nearly every
        segment, so unlike Linux's pred_flags a changed window is taken too), no SACK blocks, a
        timestamp PAWS passes and an ACK in [SND.UNA, SND.NXT], while nothing is out of order
        and no loss recovery runs, is either a pure ACK of new data or in-order data: it skips
        every test that cannot fire for it. False, before anything is touched, sends the segment
        down the full path; either way the same state and segments result
        (tests/unit/test_tcp_fastpath.py runs transfers both ways). In ESTABLISHED the application
        has neither closed nor shut down (either makes it FIN-WAIT-1 at once), so no FIN is
        queued and no data arrives after a close."""
        if seg.flags | PSH != ACK_PSH:
            return False
        rcv_nxt = self.rcv_nxt
        if seg.seq != rcv_nxt & MASK or self.ooo.bytes_held or self.rcv_fin_seq is not None:
            return False
        opts = seg.options
        ts = opts.timestamp
        if opts.sack_blocks or (self.ts_ok and (ts is None or (ts[0] - self.ts_recent) & HALF)):
            return False
        wnd = seg.window << self.snd_wscale
        if not wnd or not self.snd_wnd:
            return False  # a window closing or reopening: persist and probing are the full path's
        q = self.rtxq
        if self.recovery or self.frto or self.tlp_end is not None or q.sacked or q.lost or q.retrans or self.probing:
            return False
        snd_una = self.snd_una
        ack = snd_una + ((seg.ack - snd_una) & MASK)  # an ACK below SND.UNA unwraps far above SND.NXT
        if ack > self.snd_nxt:
            return False
        payload = seg.payload
        plen = len(payload)
        if plen:
            if plen > self.rcv_adv - rcv_nxt:
                return False  # beyond the window
        elif ack == snd_una:
            return False  # a duplicate ACK, a window probe or a keep-alive: the full path judges it

        if ts is not None and self.ts_ok and rcv_nxt <= self.last_ack_sent:
            self.ts_recent = ts[0]  # RFC 7323 4.3
            self.ts_recent_time = now
        if ack > snd_una:
            rate_based = self.cc.rate_based  # only a rate sample asks which range was delivered last
            newest = self._ack_new_data(ack, ts, now, rate_based)
            if rate_based:
                self._rate_sample(newest, now)
        elif self.cc.rate_based:
            self._rate_sample(None, now)
        if ack > snd_una or self.snd_wl1 < rcv_nxt or (self.snd_wl1 == rcv_nxt and self.snd_wl2 <= ack):
            self.snd_wnd = wnd  # RFC 9293 3.10.7.4's window update, from open to open (and see _process_ack)
            self.snd_wl1 = rcv_nxt
            self.snd_wl2 = ack
            if wnd > self.max_snd_wnd:
                self.max_snd_wnd = wnd
        if plen:
            self.rcv_buf += payload
            self.rcv_nxt = rcv_nxt + plen
            self._owe_ack(plen, seg.gso_size or plen, now)
            self._events.append(DataReceived(self.key, plen))
        self.output(now)
        return True

    def _refuse(self, flags: int, now: float) -> None:
        """An unacceptable segment: dropped, and answered with an ACK unless it is a RST (RFC 9293 3.10.7.4)."""
        if flags & RST:
            return
        self.counters.inc("out_of_window")
        if self.state is TIME_WAIT and flags & FIN:
            self.t_close = now + self.cfg.time_wait
        self.ack_now = True
        self.output(now)

    def _handshake_acked(self, seg: Segment, seq: int, ack: int, now: float) -> bool:
        """SYN-RECEIVED: an ACK of our SYN completes the handshake; any other ACK draws a RST."""
        if not self.snd_una < ack <= self.snd_nxt:
            self._send_rst(seg.ack, now)
            return False
        # a SYN-ACK's window is never scaled (RFC 7323 2.2), even once the shift is known
        self.snd_wnd = seg.window if seg.flags & SYN else seg.window << self.snd_wscale
        self.max_snd_wnd = self.snd_wnd
        self.snd_wl1 = seq
        self.snd_wl2 = ack
        self._established(now)
        return True

    def _paws_rejects(self, tsval: int, now: float) -> bool:
        """RFC 7323 5.3 PAWS, for a TSval older than TS.Recent: a segment from the past (ACKed, dropped)."""
        if now - self.ts_recent_time > PAWS_IDLE_LIMIT:
            self.ts_recent = tsval  # RFC 7323 5.5: TS.Recent went stale while idle
            return False
        self.counters.inc("paws_rejected")
        self.ack_now = True
        self.output(now)
        return True

    def _acceptable(self, seq: int, seg_len: int, rcv_wnd: int) -> bool:
        """RFC 9293 3.10.7.4's four-case acceptability test, in unwrapped numbers."""
        rcv_nxt = self.rcv_nxt
        if seg_len == 0:
            return seq == rcv_nxt if rcv_wnd == 0 else rcv_nxt <= seq < rcv_nxt + rcv_wnd
        if rcv_wnd == 0:
            return False
        return rcv_nxt <= seq < rcv_nxt + rcv_wnd or rcv_nxt <= seq + seg_len - 1 < rcv_nxt + rcv_wnd

    def _text_and_fin(self, seq: int, payload: bytes | memoryview, fin: int, state: State, now: float,
                      gso_size: int = 0) -> None:
        """RFC 9293 3.10.7.4 steps seven and eight: take the text, then the FIN once it is in order."""
        if payload and state in RECEIVING_STATES:
            self._receive_text(seq, payload, now, gso_size)
        if fin and state is not TIME_WAIT:
            fin_at = seq + len(payload)
            if fin_at == self.rcv_nxt:
                self._receive_fin(now)
            elif fin_at > self.rcv_nxt:
                self.rcv_fin_seq = fin_at
                self.ack_now = True
        elif fin:
            self.t_close = now + self.cfg.time_wait  # a retransmitted FIN restarts 2*MSL
            self.ack_now = True

    def _data_after_close(self, seg: Segment, now: float) -> None:
        """New data for an application that closed: nobody will read it, so RST (RFC 9293 3.10.7.4,
        RFC 1122 4.2.2.13) rather than ACK and drop it, as Linux does in FIN-WAIT-1/2."""
        self.counters.inc("rx_data_after_close")
        self._send_rst(seg.ack, now)
        self._terminate()

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
            self._arm_rto(now)
            return
        self.snd_wl2 = ack
        self.snd_una = ack
        self.recover = ack
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
        newest = None
        dsack = False
        q = self.rtxq
        sacked_before = q.sacked + self.reno_sacked  # without SACK, duplicate ACKs count as delivered
        if self.frto:
            q.original_low = INF  # F-RTO asks what this ACK delivered
        blocks = seg.options.sack_blocks
        if blocks and self.sack_ok:
            sack_news, newest, dsack = self._take_sack_blocks(blocks, ack)
        dupack = False
        if ack > snd_una:
            acked = self._ack_new_data(ack, seg.options.timestamp, now)
            if acked is not None and (newest is None or acked.sent_after(newest)):
                newest = acked
        elif (ack == snd_una and self.snd_nxt > snd_una and not plen and not self.probing
              and not seg.flags & (SYN | FIN) and (sack_news or not dsack)  # a D-SACK tells of no loss
              and ((seg.window << self.snd_wscale) == self.snd_wnd or sack_news)):
            dupack = True
            self._duplicate_ack(now, sack_news)
        if self.recovery or dsack or self.tlp_end is not None or q.sacked or q.lost or q.retrans:
            delivered = self.snd_una - snd_una + q.sacked + self.reno_sacked - sacked_before  # RFC 6937 DeliveredData
            if delivered < 0:
                delivered = 0
            self._on_ack_loss(ack, ack > snd_una, newest, dsack, dupack, sack_news, delivered, now)
        if self.cc.rate_based:  # BBR: a delivery-rate sample from every ACK, after loss detection
            self._rate_sample(newest, now)

        # RFC 9293 3.10.7.4's window update, and, as Linux's tcp_may_update_window has it, from any
        # ACK that moves SND.UNA: a retransmission's old SEG.SEQ fails SND.WL1's test, and the old
        # window slid up to the new SND.UNA would reach past the peer's right edge
        if ack > snd_una or self.snd_wl1 < seq or (self.snd_wl1 == seq and self.snd_wl2 <= ack):
            wnd = seg.window if seg.flags & SYN else seg.window << self.snd_wscale  # RFC 7323 2.2
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

    def _rate_sample(self, newest: Sent | None, now: float) -> None:
        """Linux's tcp_rate_gen() then cong_control(): the sample, with the pipe and recovery state."""
        q = self.rtxq
        rs = q.rate_sample(newest, now, self.min_rtt if self.min_rtt < INF else 0.0)
        rs.in_flight = self._pipe()
        rs.recovery = self.recovery
        rs.srtt = self.rtt.srtt
        self.cc.on_rate_sample(rs, q, now)

    def _take_sack_blocks(self, blocks: tuple[tuple[int, int], ...], ack: int) -> tuple[int, Sent | None, bool]:
        """SACK blocks into the retransmission queue: octets newly SACKed, the most recently sent
        range they delivered, and whether the first block is a D-SACK (RFC 2883 4: starting
        below the cumulative ACK, or inside the second block, as Linux's tcp_check_dsack tells).
        A D-SACK reports a duplicate, not delivery: it never enters the scoreboard, so it moves
        neither the pipe, nor RACK, nor DeliveredData."""
        una = max(ack, self.snd_una)
        nxt = self.snd_nxt
        added = 0
        newest: Sent | None = None
        q = self.rtxq
        first = True
        dsack = False
        for start32, end32 in blocks:
            start = una + seq_diff(start32, una)
            end = una + seq_diff(end32, una)
            if first:
                first = False
                if start < ack or (len(blocks) > 1 and _inside(start, end, blocks[1], una)):
                    dsack = True
                    self.counters.inc("dsacks_received")
                    continue
            if una <= start < end <= nxt:
                n, r = q.sack(start, end)
                added += n
                if r is not None and (newest is None or r.sent_after(newest)):
                    newest = r
        return added, newest, dsack

    def _take_rtt_sample(self, ack: int, ts: tuple[int, int] | None, now: float) -> None:
        """RTT from the timestamp echo, else from the timed segment (Karn's rule, MUST-18)."""
        if self.syn_retransmitted and ack == self.iss + 1:
            # Karn's rule for the handshake, as Linux applies it: the echo may be of the first
            # SYN(-ACK), whose answer was lost, and would pass the retransmission waits off as RTT.
            return
        if self.ts_ok and ts is not None and ts[1]:
            elapsed = (self.host.ts_clock(now) - ts[1]) & MASK
            if elapsed < HALF:
                self._rtt_sample(elapsed / 1000.0)
                self.rtt_seq = None
                return
        if self.rtt_seq is not None and ack >= self.rtt_seq:
            self._rtt_sample(now - self.rtt_time)
            self.rtt_seq = None

    def _rtt_sample(self, rtt: float) -> None:
        self.rtt.sample(rtt)
        if rtt < self.min_rtt:
            self.min_rtt = rtt

    def _ack_new_data(self, ack: int, ts: tuple[int, int] | None, now: float,
                      want_newest: bool = True) -> Sent | None:
        """SND.UNA advances: free the send buffer, sample the RTT, grow cwnd or leave recovery.
        Returns the most recently sent range the ACK delivered (for RACK), if `want_newest`."""
        snd_una = self.snd_una
        acked = ack - snd_una
        flight = self.snd_nxt - snd_una
        buf_seq = self.snd_buf_seq
        data_acked = min(ack, buf_seq + len(self.snd_buf)) - buf_seq
        if data_acked > 0:
            try:
                del self.snd_buf[:data_acked]
            except BufferError:  # a payload view of it is still out (TcpStack.payload_views)
                self._unpin_send_buffer()
                del self.snd_buf[:data_acked]
            self.snd_buf_seq = buf_seq + data_acked
        self.snd_una = ack
        newest = self.rtxq.ack(ack, want_newest)
        self._take_rtt_sample(ack, ts, now)
        self.retries = 0
        self.dupacks = 0
        recovery = self.recovery
        if recovery and ack >= self.recover:
            self._recovery_point_reached(now)
        elif recovery == FAST:
            if not self.sack_ok:
                self._newreno_partial_ack(ack, acked)
        else:
            self.reno_sacked = 0
            self.cc.on_ack(acked, flight, now, self.rtt.srtt)
        if ack >= self.snd_nxt:
            self.t_rtx = INF
            self.probing = False
        elif not self.probing:
            self._arm_rtx(now)  # RFC 6298 5.3, or the probe timeout (RFC 8985 7.2)
        # The writer wakes once a third of the buffer is free (what is free at least half of what is
        # queued: Linux's sk_stream_is_writeable), not for every segment or two an ACK frees.
        if self.want_writable and 3 * len(self.snd_buf) <= 2 * self.cfg.snd_buf:
            self.want_writable = False
            self._events.append(Writable(self.key))
        return newest

    def _receive_text(self, seq: int, payload: bytes | memoryview, now: float, gso_size: int = 0) -> None:
        """In-order text to the receive buffer (and the ACK it owes), out-of-order to reassembly.
        `gso_size` is the wire MSS of a coalesced segment: what rcv_mss measures, as Linux's
        tcp_measure_rcv_mss takes gso_size before the length."""
        n = len(payload)
        if seq == self.rcv_nxt:
            if not self.app_closed:
                self.rcv_buf += payload
            self.rcv_nxt += n
            delivered = n
            if self.ooo:
                if self.sack_ok and self.dsack_pending is None:  # RFC 2883 4.1.1, as Linux's tcp_ofo_queue:
                    self.dsack_pending = self.ooo.held_below(self.rcv_nxt)  # the hole's filler overlapped held data
                more = self.ooo.pop_ready(self.rcv_nxt)
                if more is not None:
                    if not self.app_closed:
                        self.rcv_buf += more
                    self.rcv_nxt += len(more)
                    delivered += len(more)
                self.ack_now = True  # filled (part of) a hole: ACK at once (RFC 5681 4.2)
            if self.rcv_fin_seq is not None and self.rcv_nxt == self.rcv_fin_seq:
                self._receive_fin(now)
            self._owe_ack(n, gso_size or n, now)
            if not self.app_closed:
                self._events.append(DataReceived(self.key, delivered))
        else:
            if not self.ooo.insert(seq, payload) and self.sack_ok:
                self.dsack_pending = (seq, seq + n)  # RFC 2883 4.1.2: held already, its block follows
            self.ack_now = True  # out-of-order: immediate duplicate ACK (RFC 5681 4.2)

    def _owe_ack(self, n: int, size: int, now: float) -> None:
        """The ACK that `n` in-order octets in segments of `size` (the wire MSS of a coalesced
        one) owe: at once for every second full-sized segment (SHLD-19), else delayed."""
        cfg = self.cfg
        if size > self.rcv_mss:  # capped at the MSS we advertised, as Linux caps it at advmss:
            self.rcv_mss = size if size < cfg.mss else cfg.mss  # a super-frame is many segments
        unacked = self.unacked_bytes = self.unacked_bytes + n
        if (unacked >= 2 * self.rcv_mss or not cfg.delayed_ack) and not self.host.defer_ack(self.key):
            self.ack_now = True
        elif self.t_delack == INF:  # also under defer_ack: the batch's end sends it, the timer is a backstop
            self.t_delack = now + cfg.delayed_ack

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


def _inside(start: int, end: int, block: tuple[int, int], una: int) -> bool:
    """Whether [start, end) lies within the 32-bit SACK `block` (unwrapped against `una`)."""
    return una + seq_diff(block[0], una) <= start and end <= una + seq_diff(block[1], una)
