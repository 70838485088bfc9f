"""Stateless SYN cookies in the manner of Linux's net/ipv4/syncookies.c.

When the connection table is full, the engine answers a SYN with a SYN-ACK whose ISN is a
cookie and forgets the SYN. A returning ACK proves the peer saw that SYN-ACK: ACK-1 is
checked against a keyed hash of the 4-tuple, which also yields the minute counter (at most
`max_age` periods old) and an index into a small MSS table. With timestamps, the low six
bits of our TSval carry window scale, SACK-permitted and ECN, and come back in TSecr.

Cookie layout, as in Linux:

    ISN = H0(4-tuple) + peer_ISN + (count << 24) + ((H1(4-tuple, count) + mss_index) mod 2^24)

The hashes read the 4-tuple as bytes (`flow_bytes`: our address, the peer's, our port, the
peer's), which the SYN fast path (toe_engine.synpath) builds from a frame's header fields
without a FourTuple.
"""
from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Protocol

from ..segment import ACK, RST, SYN, FourTuple, Segment

COOKIE_BITS = 24
COOKIE_MASK = (1 << COOKIE_BITS) - 1
COUNT_MASK = 0xFF  # the eight bits above COOKIE_BITS
#: Peer MSS values a cookie can carry (Linux's msstab, chosen from measured MSS frequencies).
MSS_TABLE: tuple[int, ...] = (536, 1300, 1440, 1460)

TS_BITS = 6
TS_WSCALE_MASK = 0x0F  # 0xF means "the SYN carried no window scale option"
TS_SACK = 1 << 4
TS_ECN = 1 << 5
MAX_WSCALE = 14  # RFC 7323 section 2.3

_U32 = 0xFFFFFFFF
PORTS = struct.Struct("!HH")  # our port, the peer's: the end of `flow_bytes`
_NO_COUNT = bytes(4)  # H0 hashes the 4-tuple with a count of zero


class CounterSink(Protocol):
    def inc(self, name: str, n: int = 1) -> None: ...


@dataclass(frozen=True, slots=True)
class DecodedCookie:
    """What a valid cookie ACK lets the engine rebuild of the forgotten SYN."""

    iss: int  # our initial sequence number (the cookie)
    irs: int  # the peer's initial sequence number
    mss: int  # the peer's MSS, rounded down to an MSS_TABLE entry
    wscale: int | None  # the peer's window shift; None if the SYN had no wscale option
    sack_permitted: bool
    timestamps: bool
    ecn: bool
    ts_recent: int | None  # the peer's TSval on the ACK, to echo next


def mss_index(mss: int) -> int:
    """Index of the largest table MSS not above `mss` (0 if `mss` is below them all)."""
    for index in range(len(MSS_TABLE) - 1, 0, -1):
        if mss >= MSS_TABLE[index]:
            return index
    return 0


def encoded_mss(mss: int) -> int:
    """The MSS a cookie will remember for a SYN that announced `mss`."""
    return MSS_TABLE[mss_index(mss)]


class SynCookies:
    """Makes and checks SYN cookies under one per-engine secret.

    `period` is the counter tick in seconds (Linux: 60) and `max_age` the number of ticks a
    cookie stays valid (Linux: MAX_SYNCOOKIE_AGE = 2). `ts_hz` is the TSval clock rate used
    when the caller does not pass its own TSval clock.
    """

    def __init__(
        self,
        secret: bytes,
        counters: CounterSink | None = None,
        *,
        period: float = 60.0,
        max_age: int = 2,
        ts_hz: int = 1000,
    ) -> None:
        if not 1 <= len(secret) <= 32:
            raise ValueError("the SYN cookie secret must be 1 to 32 bytes long")
        if not 1 <= max_age <= COUNT_MASK:
            raise ValueError(f"max_age must be between 1 and {COUNT_MASK} periods, got {max_age}")
        self._hash0 = hashlib.blake2s(key=secret, digest_size=4, person=b"toecook0")
        self._hash1 = hashlib.blake2s(key=secret, digest_size=4, person=b"toecook1")
        self._counters = counters
        self.period = period
        self.max_age = max_age
        self.ts_hz = ts_hz
        self._last_count = -1
        self._last_count_bytes = b""

    def make_cookie(
        self,
        four_tuple: FourTuple,
        syn_seq: int,
        mss: int,
        wscale: int | None,
        sack: bool,
        ts: bool,
        now: float,
        *,
        ecn: bool = False,
        ts_clock: int | None = None,
    ) -> tuple[int, int | None]:
        """Return (ISN, TSval) for the SYN-ACK; TSval is None unless the SYN carried timestamps.

        `wscale` is the peer's announced shift (None if absent); `ts_clock` is the engine's
        current TSval clock, defaulting to `now` at `ts_hz`. The TSval is never ahead of it.
        """
        isn = self.flow_isn(flow_bytes(four_tuple), syn_seq, mss, now)
        tsval = None
        if ts:
            clock = int(now * self.ts_hz) if ts_clock is None else ts_clock
            tsval = option_timestamp(clock & _U32, wscale, sack, ecn)
        if self._counters is not None:
            self._counters.inc("syncookies_sent")
        return isn, tsval

    def flow_isn(self, flow: bytes, syn_seq: int, mss: int, now: float) -> int:
        """The cookie ISN for a SYN whose 4-tuple is `flow` (see `flow_bytes`); counts nothing."""
        count = int(now // self.period)
        if count != self._last_count:  # the count's bytes change once a period: made once, not per SYN
            self._last_count, self._last_count_bytes = count, _count_bytes(count)
        h0, h1 = self._hash0.copy(), self._hash1.copy()
        h0.update(flow + _NO_COUNT)
        h1.update(flow + self._last_count_bytes)
        keyed = (int.from_bytes(h1.digest(), "big") + mss_index(mss)) & COOKIE_MASK
        return (int.from_bytes(h0.digest(), "big") + syn_seq + ((count & COUNT_MASK) << COOKIE_BITS) + keyed) & _U32

    def check_cookie(self, four_tuple: FourTuple, ack_segment: Segment, now: float) -> DecodedCookie | None:
        """Decode the cookie in a third-handshake ACK, or None if it is forged, stale or for another flow.

        Segments that are not a bare ACK (SYN or RST set, ACK clear) are not cookie answers
        and return None without counting a failure.
        """
        flags = ack_segment.flags
        if not flags & ACK or flags & (SYN | RST):
            return None
        decoded = self._decode(four_tuple, ack_segment, now)
        if self._counters is not None:
            self._counters.inc("syncookies_ok" if decoded else "syncookies_failed")
        return decoded

    def _decode(self, four_tuple: FourTuple, seg: Segment, now: float) -> DecodedCookie | None:
        iss = (seg.ack - 1) & _U32
        irs = (seg.seq - 1) & _U32
        count = self._count(now)
        flow = flow_bytes(four_tuple)
        stripped = (iss - _keyed(self._hash0, flow + _NO_COUNT) - irs) & _U32
        age = (count - (stripped >> COOKIE_BITS)) & COUNT_MASK
        if age >= self.max_age:
            return None
        data = (stripped - _keyed(self._hash1, flow + _count_bytes(count - age))) & COOKIE_MASK
        if data >= len(MSS_TABLE):
            return None
        timestamp = seg.options.timestamp
        if timestamp is None:
            return DecodedCookie(iss, irs, MSS_TABLE[data], None, False, False, False, None)
        tsval, tsecr = timestamp
        wscale_bits = tsecr & TS_WSCALE_MASK
        wscale = None if wscale_bits == TS_WSCALE_MASK else min(wscale_bits, MAX_WSCALE)
        return DecodedCookie(
            iss=iss,
            irs=irs,
            mss=MSS_TABLE[data],
            wscale=wscale,
            sack_permitted=bool(tsecr & TS_SACK),
            timestamps=True,
            ecn=bool(tsecr & TS_ECN),
            ts_recent=tsval,
        )

    def _count(self, now: float) -> int:
        return int(now // self.period)

    @staticmethod
    def _digest(template: hashlib.blake2s, four_tuple: FourTuple, count: int) -> int:
        """H0 (with `_hash0` and count 0) or H1 (with `_hash1`) of a 4-tuple, as the cookie uses it."""
        return _keyed(template, flow_bytes(four_tuple) + _count_bytes(count))


def flow_bytes(four_tuple: FourTuple) -> bytes:
    """The bytes the cookie hashes for a 4-tuple: our address, the peer's, our port, the peer's."""
    return four_tuple.local_ip + four_tuple.remote_ip + PORTS.pack(four_tuple.local_port, four_tuple.remote_port)


def _keyed(template: hashlib.blake2s, data: bytes) -> int:
    hasher = template.copy()
    hasher.update(data)
    return int.from_bytes(hasher.digest(), "big")


def _count_bytes(count: int) -> bytes:
    return (count & _U32).to_bytes(4, "big")


def option_timestamp(clock: int, wscale: int | None, sack: bool, ecn: bool) -> int:
    """Linux's cookie_init_timestamp: the clock with its low bits replaced, never ahead of it."""
    options = TS_WSCALE_MASK if wscale is None else min(wscale, MAX_WSCALE)
    if sack:
        options |= TS_SACK
    if ecn:
        options |= TS_ECN
    tsval = ((clock >> TS_BITS) << TS_BITS) | options
    if tsval > clock:
        tsval -= 1 << TS_BITS
    return tsval & _U32
