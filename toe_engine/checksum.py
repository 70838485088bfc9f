"""RFC 1071 Internet checksum, pseudo-headers and RFC 1624 incremental update.

The one's-complement sum of 16-bit big-endian words is congruent to the whole buffer read as
one big-endian integer modulo 0xFFFF (because 2**16 == 1 mod 0xFFFF). Python's big integers
make that a single C-speed `int.from_bytes` plus a few folds, which is what a header costs. A
long buffer (a segment's payload, a 64 KiB super-frame) is summed as 16-bit words by numpy
when it is installed, four to ten times faster: the words are read in the machine's order,
and a byte-swapped sum is the sum times 256 modulo 0xFFFF (RFC 1071's byte-order
independence). Sums are kept as plain ints in 0..0xFFFF; a sum of 0 only arises when every
word is zero, and 0xFFFF stands for "negative zero" as RFC 1071 says.
"""
from __future__ import annotations

import sys
from types import ModuleType
from typing import Any, Final

_numpy: ModuleType | None
try:  # at import, not at the first long packet: a 0.1 s import there would show as latency
    import numpy as _numpy
except ImportError:  # pragma: no cover - numpy comes with matplotlib
    _numpy = None
_WORD: Final[Any] = _numpy.dtype("=u2") if _numpy is not None else None  # 16-bit words in the machine's order
_SUM: Final[Any] = _numpy.dtype(_numpy.uint64) if _numpy is not None else None

IPPROTO_ICMP: Final = 1
IPPROTO_TCP: Final = 6
IPPROTO_UDP: Final = 17
IPPROTO_ICMPV6: Final = 58

_MOD: Final = 0xFFFF
_FOLD_ABOVE_BITS: Final = 1024  # a longer sum is folded in halves before the modulo
_WORDS_FROM: Final = 640  # bytes: from here numpy's word sum costs less than one big integer's folds (measured)
_LITTLE_ENDIAN: Final = sys.byteorder == "little"
_Buffer = bytes | bytearray | memoryview


def ones_sum(data: _Buffer, initial: int = 0) -> int:
    """One's-complement sum of `data` (odd length padded with a zero byte) plus `initial`."""
    np = _numpy
    total = (_word_sum(np, data) if np is not None and len(data) >= _WORDS_FROM else _integer_sum(data)) + initial
    folded = total % _MOD
    if folded == 0 and total:
        return 0xFFFF
    return folded


def _word_sum(np: ModuleType, data: _Buffer) -> int:
    """A number congruent to the big-endian word sum of `data` modulo 0xFFFF, from numpy."""
    n = len(data)
    words = int(np.add.reduce(np.frombuffer(data, _WORD, n >> 1), dtype=_SUM))  # dtypes made once: 0.3 us a call
    last = data[n - 1] if n & 1 else 0  # an odd last byte, padded with a zero byte on its right
    if _LITTLE_ENDIAN:  # byte-swapped words: the word sum times 256 is congruent to the true one
        return (words + last) << 8
    return words + (last << 8)


def _integer_sum(data: _Buffer) -> int:
    """The whole buffer as one big-endian integer, folded down below 2**1024 (same residue mod 0xFFFF)."""
    value = int.from_bytes(data, "big")
    bits = len(data) * 8
    if bits & 8:
        value <<= 8
        bits += 8
    while bits > _FOLD_ABOVE_BITS:
        # Add the high half to the low half, split at a multiple of 16 bits (2**16 == 1 mod
        # 0xFFFF, so the sum is unchanged mod 0xFFFF): shifts and masks cost less than a long division.
        half = (bits >> 5) << 4
        value = (value >> half) + (value & ((1 << half) - 1))
        bits = bits - half + 1
    return value



def fold(value: int) -> int:
    """Fold any non-negative int to a 16-bit one's-complement sum (0xFFFF for non-zero multiples)."""
    folded = value % _MOD
    if folded == 0 and value:
        return 0xFFFF
    return folded


def internet_checksum(data: _Buffer, initial: int = 0) -> int:
    """The checksum field value: complement of the one's-complement sum."""
    return ~ones_sum(data, initial) & 0xFFFF


def pseudo_header_sum(src: bytes, dst: bytes, proto: int, length: int) -> int:
    """Sum of the IPv4 (RFC 793) or IPv6 (RFC 8200 §8.1) pseudo-header, chosen by address size.

    The address bytes and the (proto, length) words add up the same way in both layouts, so
    one formula serves both: IPv6's 32-bit length and next-header fields sum to the same value.
    """
    return fold(int.from_bytes(src, "big") + int.from_bytes(dst, "big") + proto + length)


def transport_checksum(src: bytes, dst: bytes, proto: int, segment: _Buffer) -> int:
    """Checksum for a TCP/UDP/ICMPv6 segment whose own checksum field holds zero."""
    return internet_checksum(segment, pseudo_header_sum(src, dst, proto, len(segment)))


def transport_checksum_ok(src: bytes, dst: bytes, proto: int, segment: _Buffer) -> bool:
    """True if a received segment (checksum field included) sums to 0xFFFF with its pseudo-header."""
    return ones_sum(segment, pseudo_header_sum(src, dst, proto, len(segment))) == 0xFFFF


def udp_checksum(src: bytes, dst: bytes, segment: _Buffer) -> int:
    """UDP checksum; a computed zero is sent as 0xFFFF (RFC 768: zero means "no checksum")."""
    return transport_checksum(src, dst, IPPROTO_UDP, segment) or 0xFFFF


def incremental_update(checksum: int, old_word: int, new_word: int) -> int:
    """RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), for rewriting one 16-bit word (TTL, ID, port)."""
    return ~fold((~checksum & 0xFFFF) + (~old_word & 0xFFFF) + new_word) & 0xFFFF
