"""RFC 1071 Internet checksum, pseudo-headers and RFC 1624 incremental update.

The one's-complement sum of 16-bit big-endian words is congruent to the whole buffer read as
one big-endian integer modulo 0xFFFF (because 2**16 == 1 mod 0xFFFF). Python's big integers
make that a single C-speed `int.from_bytes` plus one modulo, which is what keeps a 64 KiB
checksum cheap on the per-packet path. Sums are kept as plain ints in 0..0xFFFF; a sum of 0
only arises when every word is zero, and 0xFFFF stands for "negative zero" as RFC 1071 says.
"""
from __future__ import annotations

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58

_MOD = 0xFFFF
_FOLD_ABOVE_BITS = 1024  # a longer sum is folded in halves before the modulo
_Buffer = bytes | bytearray | memoryview


def ones_sum(data: _Buffer, initial: int = 0) -> int:
    """One's-complement sum of `data` (odd length padded with a zero byte) plus `initial`."""
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
    total = value + initial
    folded = total % _MOD
    if folded == 0 and total:
        return 0xFFFF
    return folded


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
