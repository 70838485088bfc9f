"""Loss recovery: how loss is detected and what is retransmitted (Linux tcp_recovery.c, FreeBSD tcp_sack.c).

One RFC 6675-style pipe rule covers SACK recovery, NewReno recovery (RFC 6582, where
duplicate ACKs stand in for SACKed segments) and go-back-N after a timeout: retransmissions
are driven by `high_rxt` and `loss_mark`, and never pull SND.NXT back.
"""
from __future__ import annotations

from toe_engine.tcp.tcb import Tcb


class LossRecovery(Tcb):
    """Duplicate ACKs, SACK scoreboard, fast retransmit and the retransmission choice."""

    __slots__ = ()

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

    def _retransmit_lost(self, now: float, room: int) -> tuple[int, bool]:
        """RFC 6675 NextSeg() rule 1: resend presumed-lost, un-SACKed data while `room` allows.

        Returns the room left and whether anything was sent.
        """
        mss = self.snd_mss
        sent = False
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
        return room, sent

    def _loss_after_timeout(self, now: float) -> None:
        """After an RTO everything outstanding is presumed lost: go back to SND.UNA."""
        self.in_recovery = False
        self.reno_sacked = 0
        self.dupacks = 0
        self.recover = self.snd_nxt
        self.loss_mark = self.snd_nxt
        self.high_rxt = self.snd_una
        self.rtt_seq = None
        self.force_rtx = True
