"""Loss recovery: how loss is detected and what is retransmitted (Linux tcp_recovery.c, FreeBSD tcp_sack.c).

Two ways to detect loss, chosen by `TcpConfig.loss_detection`:

- ``rack-tlp`` (RFC 8985, the default, with SACK): a segment is lost once a segment sent
  after it was delivered and more than RACK.rtt plus a reordering window has passed since it
  left. That finds lost retransmissions and losses with too few segments in flight for three
  duplicate ACKs; a tail loss probe (TLP) makes the receiver reveal a loss at the tail, where
  no later segment would. Without SACK the connection falls back to duplicate ACKs, as Linux does.
- ``dupack``: RFC 5681 fast retransmit after DupThresh duplicate ACKs, RFC 6675 IsLost() with
  SACK, RFC 6582 NewReno partial ACKs without; the simple hardware TOE.

Either way what is presumed lost is marked in the retransmission queue (`rtx_queue`), and one
RFC 6675 pipe rule (SACKed octets out of the pipe, in and out of recovery; RFC 3042 Limited
Transmit falls out of it) decides how much may be sent; in fast recovery PRR (RFC 6937) paces
it. After a timeout F-RTO (RFC 5682) resends one segment and waits two ACKs before going back
to SND.UNA, and undoes the window cut if the timeout was spurious. The recovery states are
Linux's: OPEN, FAST (fast recovery, cwnd reduced once) and LOSS (after a timeout, until
SND.UNA passes the recovery point).
"""
from __future__ import annotations

from typing import Final

from toe_engine.tcp.rtx_queue import LOST_BY_RACK, LOST_BY_RULE, Sent
from toe_engine.tcp.tcb import INF, SENDING_STATES, Tcb

# recovery states (Linux's TCP_CA_Open, TCP_CA_Recovery, TCP_CA_Loss)
OPEN: Final = 0
FAST: Final = 1
LOSS: Final = 2
# what t_rtx is armed for: retransmission, probe or reordering timeout
RTO: Final = 0
PTO: Final = 1
REO: Final = 2
WC_DEL_ACK: Final = 0.2  # RFC 8985 WCDelAckT: the worst-case delayed ACK a lone probe may wait for
PTO_MIN: Final = 0.01  # floor for the probe timeout (10 ms, as Linux had it): a 2 ms floor measured more RTOs at 10 % loss
REO_WND_PERSIST: Final = 16  # RFC 8985: recoveries a widened reordering window lasts
EPSILON: Final = 1e-9


class LossRecovery(Tcb):
    """Loss detection (RACK-TLP or duplicate ACKs), recovery states and the retransmission choice."""

    __slots__ = ()

    def _pipe(self) -> int:
        """RFC 6675 SetPipe(); without SACK, duplicate ACKs stand in for SACKed segments."""
        q = self.rtxq
        pipe = self.snd_nxt - self.snd_una - q.sacked - q.lost + q.retrans - self.reno_sacked
        return pipe if pipe > 0 else 0

    # ------------------------------------------------------------------ the retransmission timer

    def _arm_rto(self, now: float) -> None:
        self.t_rtx = now + self.rtt.rto
        self.rtx_kind = RTO

    def _arm_rtx(self, now: float, restart_rto: bool = True) -> None:
        """RFC 6298 5.1/5.3, with RFC 8985 7.2's probe timeout in its place while nothing is in
        recovery; the probe never comes later than the RTO would. `restart_rto=False` (new data
        sent, RFC 6298 5.1) keeps a running RTO's deadline and only brings a probe forward."""
        if restart_rto or self.rtx_kind != RTO or self.t_rtx == INF:
            rto_at = now + self.rtt.rto
        else:
            rto_at = self.t_rtx
        srtt = self.rtt.srtt
        if self.rack and not self.recovery and self.tlp_end is None and srtt is not None:
            pto = 2 * srtt
            if self.snd_nxt - self.snd_una <= self.snd_mss:
                pto += WC_DEL_ACK  # a lone segment's ACK may be delayed
            if pto < PTO_MIN:
                pto = PTO_MIN
            if now + pto < rto_at:
                self.t_rtx = now + pto
                self.rtx_kind = PTO
                return
        self.t_rtx = rto_at
        self.rtx_kind = RTO

    # ------------------------------------------------------------------ ACK arrival

    def _on_ack_loss(self, ack: int, advanced: bool, newest: Sent | None, dsack: bool, dupack: bool,
                     sack_news: int, delivered: int, now: float) -> None:
        """Loss detection on an ACK that is not the plain in-order case (see input._process_ack).

        `advanced`: the ACK moved SND.UNA; `newest`: the most recently sent range it delivered;
        `delivered`: octets it newly ACKed or SACKed (RFC 6937 DeliveredData).
        """
        if dsack:
            self._on_dsack()
        if self.tlp_end is not None:
            self._tlp_ack(ack, advanced, dsack, dupack and not sack_news, now)
        if self.frto:
            self._frto_ack(advanced, sack_news, now)
        if self.rack and not self.frto:  # while F-RTO decides, nothing else is resent
            if newest is not None:
                self._rack_advance(newest, now)
            if not self.rtxq.clean or self.recovery:
                self._rack_detect_and_act(now)
        elif self.recovery == FAST and self.sack_ok:
            self._mark_islost()
        if self.recovery == FAST and not self.cc.rate_based:  # BBR sets its own window in recovery
            self._prr(delivered)

    def _prr(self, delivered: int) -> None:
        """RFC 6937 Proportional Rate Reduction: in fast recovery, send about ssthresh/RecoverFS
        of what each ACK delivered while the pipe is above ssthresh (so the ACK clock keeps
        running and segments sent after a retransmission can reveal its loss to RACK), then
        grow back towards ssthresh by slow start (PRR-SSRB)."""
        self.prr_delivered += delivered
        mss = self.snd_mss
        ssthresh = self.cc.ssthresh
        pipe = self._pipe()
        if pipe > ssthresh:
            sndcnt = -(-self.prr_delivered * ssthresh // self.prr_recover_fs) - self.prr_out
        else:
            bound = self.prr_delivered - self.prr_out
            sndcnt = min(ssthresh - pipe, (bound if bound > delivered else delivered) + mss)
        self.cc.cwnd = pipe + (sndcnt if sndcnt > 0 else 0)

    def _duplicate_ack(self, now: float, sack_news: int) -> None:
        """RFC 5681 3.2 / RFC 6675 5: DupThresh duplicate ACKs (or IsLost(SND.UNA)) start recovery.

        With RACK-TLP and SACK the ACK's SACK blocks already went to RACK; the count is kept
        for Limited Transmit and reports only.
        """
        self.dupacks += 1
        if not self.sack_ok:
            self.reno_sacked = min(self.reno_sacked + self.snd_mss, self.snd_nxt - self.snd_una)
            if not self.recovery and self.dupacks < self.cfg.dupthresh:
                self.reno_sacked = min(self.reno_sacked, 2 * self.snd_mss)  # RFC 3042: two at most
        if self.recovery or self.rack:
            return
        lost = (self.dupacks >= self.cfg.dupthresh
                or (self.sack_ok and self.rtxq.sacked_above_boundary(self.snd_mss, self.cfg.dupthresh)
                    > self.snd_una))
        if lost:
            self._enter_recovery(now)

    def _enter_recovery(self, now: float) -> None:
        """Fast retransmit (RFC 5681 3.2) entering fast recovery: cwnd is reduced once per loss episode."""
        una, nxt = self.snd_una, self.snd_nxt
        self.counters.inc("fast_retransmits")
        self.cc.on_fast_retransmit(nxt - una, now)
        self.recovery = FAST
        self.recover = nxt
        self.tlp_end = None
        self.prr_delivered = self.prr_out = 0
        self.prr_recover_fs = max(nxt - una, 1)
        if not self.rack:
            self.rtxq.mark_range_lost(una, min(una + self.snd_mss, nxt), LOST_BY_RULE)
            if self.sack_ok:
                self._mark_islost()
            else:
                self.reno_sacked = min(self.dupacks * self.snd_mss, nxt - una)
        self.force_rtx = True
        if self.rtx_kind != RTO:
            self._arm_rto(now)

    def _recovery_point_reached(self, now: float) -> None:
        """SND.UNA passed the recovery point: back to OPEN (RFC 6582 step 3 deflates after FAST).
        An F-RTO episode ends here too: with everything up to the recovery point delivered there
        is nothing left to decide, and a flag left set kept ACKs off the in-order fast path."""
        if self.recovery == FAST:
            self.cc.on_recovery_end(now)
        self.recovery = OPEN
        self.frto = 0
        self.reno_sacked = 0
        if self.reo_wnd_persist > 0:
            self.reo_wnd_persist -= 1
            if not self.reo_wnd_persist:
                self.reo_wnd_mult = 1

    def _newreno_partial_ack(self, ack: int, acked: int) -> None:
        """RFC 6582 step 4: a partial ACK in recovery without SACK: the next segment is lost too."""
        self.reno_sacked = max(0, self.reno_sacked - max(0, acked - self.snd_mss))
        self.rtxq.mark_range_lost(ack, min(ack + self.snd_mss, self.snd_nxt), LOST_BY_RULE)

    def _mark_islost(self) -> None:
        """RFC 6675 IsLost(): un-SACKed octets with enough SACKed above them are presumed lost."""
        boundary = self.rtxq.sacked_above_boundary(self.snd_mss, self.cfg.dupthresh)
        if boundary > self.snd_una:
            self.rtxq.mark_range_lost(self.snd_una, boundary, LOST_BY_RULE)

    def _loss_after_timeout(self, now: float) -> None:
        """RFC 6298 5.4 / RFC 5681: after an RTO every un-SACKed octet is presumed lost."""
        self._enter_loss()
        self.frto = 0
        self.rtxq.mark_all_lost()

    def _enter_loss(self) -> None:
        self.recovery = LOSS
        self.recover = self.snd_nxt
        self.reno_sacked = 0
        self.dupacks = 0
        self.tlp_end = None
        self.rtt_seq = None
        self.force_rtx = True

    # ------------------------------------------------------------------ F-RTO (RFC 5682)

    def _frto_start(self, now: float) -> None:
        """Step 1: after the RTO resend the first unacknowledged segment only."""
        self._enter_loss()
        self.frto = 2
        una = self.snd_una
        self.rtxq.mark_range_lost(una, min(una + self.snd_mss, self.snd_nxt), LOST_BY_RULE, resent_too=True)

    def _frto_ack(self, advanced: bool, sack_news: int, now: float) -> None:
        """Steps 2 and 3, on the ACKs after the timeout (the SACK-enhanced version, RFC 5682 3)."""
        q = self.rtxq
        original = q.original_low < self.recover  # data never resent, from before the timeout, arrived
        q.original_low = INF
        if not self.recovery:
            self.frto = 0  # everything up to the recovery point arrived: nothing left to decide
            return
        if self.frto == 2:
            if not advanced:
                return  # duplicate ACKs before the first new one: their SACKs are noted
            data_end = self.snd_buf_seq + len(self.snd_buf)
            if data_end <= self.snd_nxt or self.snd_una + self.snd_wnd <= self.snd_nxt:
                self._frto_conventional(2)  # 2b without new data to probe with: conventional recovery
                return
            self.frto = 3  # 2b: two new segments go out, not retransmissions
            self.cc.cwnd = self._pipe() + 2 * self.snd_mss
            return
        if original:  # 3b: the timeout was spurious; RFC 4015's response undoes the window cut
            self.frto = 0
            self.counters.inc("spurious_rtos")
            self.recovery = OPEN
            self.cc.cwnd, self.cc.ssthresh = self.frto_prior
        elif advanced or sack_news:
            self._frto_conventional(3)  # 3a: only resent or new data arrived: the loss was real

    def _frto_conventional(self, segments: int) -> None:
        """F-RTO found no evidence of a spurious timeout: go back to SND.UNA with a small window."""
        self.frto = 0
        self.rtxq.mark_all_lost()
        self.cc.cwnd = min(self.cc.cwnd, segments * self.snd_mss)
        self.force_rtx = True

    # ------------------------------------------------------------------ RACK (RFC 8985 6)

    def _rack_advance(self, r: Sent, now: float) -> None:
        """Step 2: RACK.rtt and RACK.xmit_ts from the most recently sent range just delivered."""
        rtt = now - r.xmit
        if r.resent and rtt < self.min_rtt:
            return  # the ACK may be for the original transmission (RFC 8985 6.2)
        if rtt < self.min_rtt:
            self.min_rtt = rtt
        order, end = r.order, r.end
        if order > self.rack_order or (order == self.rack_order and end > self.rack_end):
            self.rack_order = order  # RACK.xmit_ts, as a transmission count
            self.rack_end = end  # RACK.end_seq
            self.rack_rtt = rtt

    def _on_dsack(self) -> None:
        """Step 4: a D-SACK shows a spurious retransmission: widen the reordering window for a while."""
        if self.dsack_round is not None and self.snd_una >= self.dsack_round:
            self.dsack_round = None
        if self.dsack_round is None:
            self.dsack_round = self.snd_nxt
            self.reo_wnd_mult += 1
            self.reo_wnd_persist = REO_WND_PERSIST

    def _reo_wnd(self) -> float:
        """Step 4: the reordering window; zero until reordering was seen once recovery started
        or DupThresh segments were SACKed, as duplicate-ACK counting would have it."""
        q = self.rtxq
        if not q.reordered and (self.recovery or q.sacked >= self.cfg.dupthresh * self.snd_mss):
            return 0.0
        min_rtt = self.min_rtt if self.min_rtt < INF else 0.0
        srtt = self.rtt.srtt or 0.0
        wnd = self.reo_wnd_mult * min_rtt / 4
        return wnd if wnd < srtt else srtt

    def _rack_detect(self, now: float) -> tuple[bool, float]:
        """Step 5: mark lost every range sent before RACK.xmit_ts whose time is up; returns whether
        any was marked and how long until the next one would be (0: none pending)."""
        rack_order, rack_end = self.rack_order, self.rack_end
        if not rack_order:
            return False, 0.0
        wait = self.rack_rtt + self._reo_wnd()
        q = self.rtxq
        marked = False
        timeout = 0.0
        for r in q.ranges:
            if r.sacked or (r.lost and not r.retrans):
                continue
            if r.order < rack_order or (r.order == rack_order and r.end < rack_end):  # RACK_sent_after()
                remaining = r.xmit + wait - now
                if remaining <= EPSILON:
                    q.mark_lost(r, LOST_BY_RACK)
                    marked = True
                elif remaining > timeout:
                    timeout = remaining
        return marked, timeout

    def _rack_detect_and_act(self, now: float) -> None:
        marked, timeout = self._rack_detect(now)
        if marked and not self.recovery:
            self._enter_recovery(now)
        if timeout:
            self.t_rtx = now + timeout  # the reordering timer (RFC 8985 6.3)
            self.rtx_kind = REO

    def _on_reorder_timeout(self, now: float) -> None:
        """RACK's reordering timer: whatever it waited for is lost now."""
        self._rack_detect_and_act(now)
        if self.t_rtx == INF and self.snd_nxt > self.snd_una:
            if self.recovery:
                self._arm_rto(now)
            else:
                self._arm_rtx(now)

    # ------------------------------------------------------------------ TLP (RFC 8985 7)

    def _on_probe_timeout(self, now: float) -> None:
        """7.3: send one probe: a new segment if the windows allow, else the last one again;
        then the RTO, not another probe, guards the tail."""
        if self.state not in SENDING_STATES or self.snd_nxt <= self.snd_una:
            return
        nxt, mss = self.snd_nxt, self.snd_mss
        data_end = self.snd_buf_seq + len(self.snd_buf)
        self.counters.inc("tlp_probes")
        if data_end > nxt and self.snd_una + self.snd_wnd - nxt >= min(mss, data_end - nxt):
            n = min(mss, data_end - nxt)
            end = nxt + n + (1 if self.fin_queued and nxt + n == data_end else 0)
            self._send_range(nxt, end, now, retransmit=False)
            self.snd_nxt = end
            self.tlp_retrans = False
        else:
            last = self.rtxq.last()
            start = max(last.start if last is not None else nxt - mss, nxt - mss, self.snd_una)
            self._send_range(start, nxt, now, retransmit=True)
            self.tlp_retrans = True
        self.tlp_end = self.snd_nxt
        self._arm_rto(now)

    def _tlp_ack(self, ack: int, advanced: bool, dsack: bool, pure_dupack: bool, now: float) -> None:
        """7.4: did the probe repair a loss? Then the loss is answered with a cwnd reduction."""
        end = self.tlp_end
        assert end is not None
        if ack < end:
            return
        if not self.tlp_retrans or dsack:
            pass  # new data probed, or the original and the probe both arrived
        elif ack > end or advanced:  # the probe's own ACK, with no D-SACK for it: the original was lost
            self.counters.inc("tlp_recoveries")
            self.cc.on_fast_retransmit(self.snd_nxt - self.snd_una, now)
            self.cc.on_recovery_end(now)
        elif not pure_dupack:
            return
        self.tlp_end = None  # the episode is over: the next tail may be probed again
        if not self.recovery and self.rtx_kind == RTO and self.snd_nxt > self.snd_una and not self.probing:
            self._arm_rtx(now)

    # ------------------------------------------------------------------ what to resend

    def _retransmit_lost(self, now: float, room: int) -> tuple[int, bool]:
        """RFC 6675 NextSeg() rule 1: resend presumed-lost, un-SACKed data while `room` allows.

        Returns the room left and whether anything was sent.
        """
        mss = self.snd_mss
        q = self.rtxq
        sent = False
        while room >= mss or self.force_rtx:
            r = q.next_lost()
            if r is None:
                break
            start = r.start
            end = min(start + mss, r.end)
            if r.lost == LOST_BY_RACK:
                self.counters.inc("rack_retransmits")
            self._send_range(start, end, now, retransmit=True)
            room -= end - start
            self.force_rtx = False
            sent = True
        self.force_rtx = False
        return room, sent
