"""32-bit modular sequence arithmetic (RFC 9293 3.4, RFC 1982).

The connection keeps sequence numbers internally as unbounded ("unwrapped") integers so that
its comparisons are plain `<`; these helpers convert between the wire's 32-bit values and that
space, and compare raw 32-bit values where no reference point exists (timestamps, codecs).
"""
from __future__ import annotations

from typing import Final

MASK: Final = 0xFFFFFFFF
HALF: Final = 0x80000000
MOD: Final = 0x100000000


def seq_diff(a: int, b: int) -> int:
    """Signed distance a - b in modular space, in [-2**31, 2**31)."""
    d = (a - b) & MASK
    return d - MOD if d & HALF else d


def seq_lt(a: int, b: int) -> bool:
    return seq_diff(a, b) < 0


def seq_le(a: int, b: int) -> bool:
    return seq_diff(a, b) <= 0


def seq_gt(a: int, b: int) -> bool:
    return seq_diff(a, b) > 0


def seq_ge(a: int, b: int) -> bool:
    return seq_diff(a, b) >= 0


def seq_add(a: int, n: int) -> int:
    return (a + n) & MASK


def seq_in_window(seq: int, start: int, size: int) -> bool:
    """start <= seq < start + size, modulo 2**32."""
    return ((seq - start) & MASK) < size


def unwrap(value: int, reference: int) -> int:
    """The unwrapped number whose low 32 bits are `value` and which is nearest `reference`."""
    d = (value - reference) & MASK
    return reference + (d - MOD if d & HALF else d)
