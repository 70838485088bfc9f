"""The sender's record of what is in flight: one entry per range sent at one time (Linux's rtx queue).

Every octet in [SND.UNA, SND.NXT) belongs to exactly one `Sent` range, kept in sequence order.
A range remembers when it last left and in which transmission (`order`, a counter: RACK,
RFC 8985, asks which of two segments was sent later, and a counter answers that even when a
clock shows both at the same instant), whether the peer SACKed it, whether it is presumed
lost, and whether a retransmission of it is in flight. Ranges sent one after the other with
nothing in between at one instant are merged, so a bulk flight is a handful of entries; a
SACK block or a retransmission splits an entry at its edges (pieces of one transmission
share its `order`, and then the lower sequence left first).

The byte totals kept alongside make RFC 6675's pipe one subtraction:
    in flight = (SND.NXT - SND.UNA) - SACKed - lost + retransmitted
where `lost` counts un-SACKed octets presumed lost (whether or not resent) and `retrans`
the octets whose retransmission is still in flight (a lost retransmission drops out of it).

Delivery-rate estimation (draft-cheng-iccrg-delivery-rate-estimation, Linux tcp_rate.c) lives
here too, because it needs exactly these two moments: each transmission snapshots how much had
been delivered and when (`Sent.rate`), and each delivery adds
to `delivered`; `rate_sample()` turns the newest delivered range into a `RateSample`.
"""
from __future__ import annotations

from bisect import bisect_right
from typing import Final

INF: Final = float("inf")

#: `Sent.rate`: (delivered, delivered_time, first_sent, app_limited) when the range left.
RateSnapshot = tuple[int, float, float, bool]
NO_SNAPSHOT: Final[RateSnapshot] = (0, 0.0, 0.0, False)

#: `Sent.lost` values: why a range is presumed lost (0: it is not).
LOST_BY_RULE: Final = 1  # RFC 6675 IsLost(), a NewReno partial ACK, a timeout or a PMTU drop
LOST_BY_RACK: Final = 2  # RFC 8985 time-based detection


class Sent:
    """One range of sequence space, sent (last) at `xmit`."""

    __slots__ = ("start", "end", "xmit", "order", "sacked", "lost", "retrans", "resent",
                 "rate")

    def __init__(self, start: int, end: int, xmit: float, order: int) -> None:
        self.start = start
        self.end = end
        self.xmit = xmit
        self.order = order
        self.sacked = False
        self.lost = 0
        self.retrans = False  # a retransmission of it is in flight
        self.resent = False  # ever retransmitted: its ACK is ambiguous for RTT (Karn)
        # the delivery-rate snapshot taken when it (last) left (one tuple: it is copied on every
        # partial ACK): RetransmitQueue.delivered and delivered_time then, the send time of the
        # range whose delivery began this sending interval (first_sent), and whether the sender
        # was application-limited
        self.rate: RateSnapshot = NO_SNAPSHOT

    def split(self, at: int) -> Sent:
        """Cut at `at`; self keeps [start, at), the returned range is [at, end)."""
        tail = Sent(at, self.end, self.xmit, self.order)
        tail.sacked, tail.lost, tail.retrans, tail.resent = self.sacked, self.lost, self.retrans, self.resent
        tail.rate = self.rate
        self.end = at
        return tail

    def sent_after(self, other: Sent) -> bool:
        """RFC 8985 RACK_sent_after(): self left later than `other`."""
        return self.order > other.order or (self.order == other.order and self.end > other.end)

    def __repr__(self) -> str:
        flags = "".join(c for c, on in (("S", self.sacked), ("L", self.lost), ("R", self.retrans)) if on)
        return f"Sent({self.start}, {self.end}, {self.xmit:.6f}{', ' + flags if flags else ''})"


class RetransmitQueue:
    """Ranges in flight, in sequence order, with SACKed / lost / retransmitted byte totals."""

    __slots__ = ("ranges", "_starts_cache", "_order", "sacked", "lost", "retrans", "fack", "reordered", "original_low",
                 "delivered", "delivered_time", "first_sent", "app_limited_until", "lost_total", "_sampled")

    def __init__(self) -> None:
        self.ranges: list[Sent] = []
        self._starts_cache: list[int] | None = None
        self._order = 0  # transmissions so far
        self.sacked = 0
        self.lost = 0
        self.retrans = 0
        self.fack = 0  # the highest end of a range delivered (ACKed or SACKed) never resent
        self.reordered = False  # a never-resent range was delivered below `fack` (RFC 8985 step 3)
        self.original_low: int | float = INF  # the lowest never-resent octet delivered since the caller last reset it (F-RTO)
        self.delivered = 0  # octets ever ACKed or SACKed (the draft's C.delivered) ...
        self.delivered_time = 0.0  # ... and when that last grew (C.delivered_time; kept by rate_sample())
        self.first_sent = 0.0  # C.first_sent_time: when the newest range delivered so far had left
        self.app_limited_until = 0  # C.app_limited: samples are app-limited until `delivered` passes this (0: not)
        self.lost_total = 0  # octets ever presumed lost (a lost retransmission counts again)
        self._sampled = (0, 0)  # delivered and lost_total at the previous rate_sample()

    def __len__(self) -> int:
        return len(self.ranges)

    def __bool__(self) -> bool:
        return bool(self.ranges)

    def in_flight(self, outstanding: int) -> int:
        """RFC 6675 pipe for `outstanding` = SND.NXT - SND.UNA octets."""
        return outstanding - self.sacked - self.lost + self.retrans

    @property
    def clean(self) -> bool:
        """Nothing SACKed, lost or resent: the per-ACK fast path needs no recovery work."""
        return not (self.sacked or self.lost or self.retrans)

    # ------------------------------------------------------------------ sending

    def sent_new(self, start: int, end: int, now: float) -> None:
        """New data [start, end) left at `now`; merged into the last range if that left at once."""
        ranges = self.ranges
        order = self._order
        if ranges:
            last = ranges[-1]
            if (last.order == order and last.end == start and last.xmit == now
                    and not (last.sacked or last.lost or last.resent)):
                last.end = end  # the same burst: nothing left in between (its rate snapshot is the burst's first)
                return
        else:
            self.first_sent = self.delivered_time = now  # nothing in flight: a sending interval starts
        self._order = order = order + 1
        r = Sent(start, end, now, order)
        r.rate = (self.delivered, self.delivered_time, self.first_sent, self.app_limited_until != 0)  # _stamp(), inline
        ranges.append(r)
        self._starts_cache = None

    def resent(self, start: int, end: int, now: float) -> list[Sent]:
        """[start, end) left again at `now`: those ranges now have a retransmission in flight."""
        out = self._cut(start, end)
        self._order = order = self._order + 1
        for r in out:
            r.xmit = now
            r.order = order
            r.resent = True
            self._stamp(r)
            if not r.sacked and not r.retrans:
                r.retrans = True
                self.retrans += r.end - r.start
        return out

    # ------------------------------------------------------------------ the peer's answers

    def ack(self, una: int, want_newest: bool = True) -> Sent | None:
        """Cumulative ACK up to `una`: drop what it covers; return the newest range it delivered
        that was not SACKed before (for RACK and rate samples), or None. A caller that needs
        neither (`want_newest` False) spares a partly acknowledged range its delivered piece."""
        ranges = self.ranges
        newest: Sent | None = None
        n = 0
        for r in ranges:
            if r.start >= una:
                break
            if r.end > una:  # partly covered: keep the rest
                self._forget(r, r.start, una)
                if r.sacked:
                    pass
                elif want_newest:
                    delivered = Sent(r.start, una, r.xmit, r.order)
                    delivered.resent = r.resent
                    delivered.rate = r.rate
                    newest = self._delivered(delivered, newest)
                else:
                    self._count_delivered(r.start, una, r.resent)
                r.start = una
                break
            self._forget(r, r.start, r.end)
            if not r.sacked:
                newest = self._delivered(r, newest)
            n += 1
        if n:
            del ranges[:n]
        self._starts_cache = None
        return newest

    def sack(self, start: int, end: int) -> tuple[int, Sent | None]:
        """One SACK block: mark [start, end) SACKed; returns octets newly SACKed and the newest
        range it delivered."""
        added = 0
        newest: Sent | None = None
        for r in self._cut(start, end):
            if r.sacked:
                continue
            size = r.end - r.start
            r.sacked = True
            added += size
            self.sacked += size
            if r.lost:
                self.lost -= size
            if r.retrans:
                self.retrans -= size
            newest = self._delivered(r, newest)
        if added:
            self._merge_sacked(start, end)
        return added, newest

    def _merge_sacked(self, start: int, end: int) -> None:
        """Join SACKed neighbours around [start, end): once SACKed, a range's send time no longer matters."""
        ranges = self.ranges
        i = max(bisect_right(self._starts(), start) - 2, 0)
        merged = False
        while i + 1 < len(ranges) and ranges[i].start <= end:
            a, b = ranges[i], ranges[i + 1]
            if a.sacked and b.sacked:
                a.end = b.end
                del ranges[i + 1]
                merged = True
            else:
                i += 1
        if merged:
            self._starts_cache = None

    def _delivered(self, r: Sent, newest: Sent | None) -> Sent:
        self._count_delivered(r.start, r.end, r.resent)
        return r if newest is None or r.sent_after(newest) else newest

    def _count_delivered(self, start: int, end: int, resent: bool) -> None:
        """[start, end) reached the peer: C.delivered, and for a never-resent range F-RTO's
        lowest original octet and RACK's reordering mark (delivered below `fack`)."""
        self.delivered += end - start
        if not resent:
            if start < self.original_low:
                self.original_low = start
            if end < self.fack:
                self.reordered = True
            else:
                self.fack = end

    def _forget(self, r: Sent, start: int, end: int) -> None:
        size = end - start
        if r.sacked:
            self.sacked -= size
            return
        if r.lost:
            self.lost -= size
        if r.retrans:
            self.retrans -= size

    # ------------------------------------------------------------------ loss marks

    def mark_lost(self, r: Sent, why: int) -> None:
        """Presume `r` lost; a retransmission of it in flight is presumed lost with it."""
        if r.sacked or (r.lost and not r.retrans):
            return
        size = r.end - r.start
        if not r.lost:
            self.lost += size
        self.lost_total += size
        r.lost = why
        if r.retrans:
            r.retrans = False
            self.retrans -= size

    def mark_range_lost(self, start: int, end: int, why: int, resent_too: bool = False) -> None:
        """Presume [start, end) lost, except what is already being resent unless `resent_too`:
        only RACK (by time) or a timeout can tell that a retransmission was lost too."""
        for r in self._cut(start, end):
            if resent_too or not r.retrans:
                self.mark_lost(r, why)

    def mark_all_lost(self) -> None:
        """A timeout (or a smaller path MTU): every un-SACKed octet is to be sent again."""
        for r in self.ranges:
            self.mark_lost(r, LOST_BY_RULE)

    def next_lost(self) -> Sent | None:
        """RFC 6675 NextSeg() rule 1: the first range presumed lost and not yet resent."""
        for r in self.ranges:
            if r.lost and not r.retrans and not r.sacked:
                return r
        return None

    def last(self) -> Sent | None:
        return self.ranges[-1] if self.ranges else None

    def sacked_above_boundary(self, mss: int, dupthresh: int) -> int:
        """RFC 6675 IsLost() as one boundary: un-SACKed octets below it have more than
        (DupThresh - 1) * SMSS SACKed above them, or DupThresh SACKed segments; 0 if none."""
        above = 0
        count = 0
        threshold = (dupthresh - 1) * mss
        for r in reversed(self.ranges):
            if r.sacked:
                size = r.end - r.start
                above += size
                count += max(1, size // mss)
                if above > threshold or count >= dupthresh:
                    return r.start
        return 0

    def sacked_ranges(self) -> list[tuple[int, int]]:
        """The SACKed ranges, adjacent ones merged (for tests and reports)."""
        out: list[tuple[int, int]] = []
        for r in self.ranges:
            if r.sacked:
                if out and out[-1][1] == r.start:
                    out[-1] = (out[-1][0], r.end)
                else:
                    out.append((r.start, r.end))
        return out

    # ------------------------------------------------------------------ delivery rate

    def _stamp(self, r: Sent) -> None:
        """The draft's UpdateRateSample at send time: what `r` will compare its delivery with."""
        r.rate = (self.delivered, self.delivered_time, self.first_sent, self.app_limited_until != 0)

    def mark_app_limited(self, in_flight: int) -> None:
        """The sender has nothing more to send (or BBR's PROBE_RTT holds it back): samples until
        what is in flight now is delivered show the application's rate, not the path's."""
        self.app_limited_until = (self.delivered + in_flight) or 1

    def rate_sample(self, newest: Sent | None, now: float, min_rtt: float) -> RateSample:
        """GenerateRateSample() for one ACK; `newest` is the most recently sent range it
        delivered (None: it delivered nothing). Like Linux, an interval shorter than the
        minimum RTT is no valid sample (ACK compression would inflate the rate)."""
        rs = RateSample()
        delivered_before, lost_before = self._sampled
        rs.acked_sacked = self.delivered - delivered_before
        rs.losses = self.lost_total - lost_before
        self._sampled = (self.delivered, self.lost_total)
        if self.app_limited_until and self.delivered > self.app_limited_until:
            self.app_limited_until = 0
        if rs.acked_sacked:
            self.delivered_time = now
        if newest is None:
            return rs
        prior_delivered, prior_time, first_sent, app_limited = newest.rate
        rs.prior_delivered = prior_delivered
        rs.is_app_limited = app_limited
        rs.rtt = -1.0 if newest.resent else now - newest.xmit
        send_elapsed = newest.xmit - first_sent
        ack_elapsed = now - prior_time
        self.first_sent = newest.xmit
        interval = send_elapsed if send_elapsed > ack_elapsed else ack_elapsed
        rs.delivered = self.delivered - prior_delivered
        if interval >= min_rtt and interval > 0:
            rs.interval = interval
        return rs

    # ------------------------------------------------------------------ internals

    def _starts(self) -> list[int]:
        starts = self._starts_cache
        if starts is None:
            starts = self._starts_cache = [r.start for r in self.ranges]
        return starts

    def _cut(self, start: int, end: int) -> list[Sent]:
        """The ranges covering [start, end), split so none sticks out of it."""
        ranges = self.ranges
        if not ranges or end <= start:
            return []
        start = max(start, ranges[0].start)
        end = min(end, ranges[-1].end)
        if end <= start:
            return []
        i = bisect_right(self._starts(), start) - 1
        r = ranges[i]
        if r.start < start:
            ranges.insert(i + 1, r.split(start))
            self._starts_cache = None
            i += 1
        out: list[Sent] = []
        while i < len(ranges) and ranges[i].start < end:
            r = ranges[i]
            if r.end > end:
                ranges.insert(i + 1, r.split(end))
                self._starts_cache = None
            out.append(r)
            i += 1
        return out


class RateSample:
    """What one ACK says about the delivery rate (the draft's rs, Linux's struct rate_sample).

    `delivered` octets arrived over `interval` seconds (rate = delivered / interval; interval 0:
    no valid sample); `prior_delivered` is RetransmitQueue.delivered when the newest range
    delivered left (it marks round trips); `acked_sacked` and `losses` are the octets this ACK
    newly delivered and newly presumed lost; `rtt` is its RTT sample (-1: none). The connection
    fills in `in_flight` (the pipe after the ACK), `recovery` (its recovery state) and `srtt`.
    """

    __slots__ = ("delivered", "interval", "prior_delivered", "is_app_limited", "acked_sacked", "losses", "rtt",
                 "in_flight", "recovery", "srtt")

    def __init__(self) -> None:
        self.delivered = -1
        self.interval = 0.0
        self.prior_delivered = 0
        self.is_app_limited = False
        self.acked_sacked = 0
        self.losses = 0
        self.rtt = -1.0
        self.in_flight = 0
        self.recovery = 0
        self.srtt: float | None = None

    @property
    def rate(self) -> float:
        """Octets per second, 0 if the sample is not valid."""
        return self.delivered / self.interval if self.interval > 0 and self.delivered > 0 else 0.0
