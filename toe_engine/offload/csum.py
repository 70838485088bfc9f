"""Checksum offload: verify on receive, fill in (or leave to the device) on transmit.

The two device flags mirror virtio-net's header: DATA_VALID says a device already verified a
received frame; NEEDS_CSUM says a frame's transport checksum still has to be computed, from
`csum_start` to the end, into `csum_start + csum_offset`.
"""
from __future__ import annotations

import struct

from toe_engine.checksum import internet_checksum, ones_sum, pseudo_header_sum
from toe_engine.codec.frame import ParsedFrame, parse_frame
from toe_engine.codec.ipv4 import set_ipv4_checksum
from toe_engine.codec.tcp import TCP_CSUM_OFFSET
from toe_engine.counters import Counters

_U16 = struct.Struct("!H")


def rx_parse(buf: bytes | bytearray | memoryview, counters: Counters, *, data_valid: bool = False) -> ParsedFrame:
    """Parse a received frame, verifying checksums unless the device marked it DATA_VALID,
    and count it (rx_frames, and rx_csum_errors or rx_malformed with the reason)."""
    parsed = parse_frame(buf, verify_csum=not data_valid)
    counters.inc("rx_frames")
    reason = parsed.drop_reason
    if reason is not None:
        counters.inc("rx_csum_errors" if reason.is_checksum_error else "rx_malformed")
        counters.inc(f"rx_drop_{reason.value}")
    return parsed


def complete_partial_checksum(buf: bytearray | memoryview, csum_start: int, csum_offset: int) -> None:
    """Do what a device does for NEEDS_CSUM: the field already holds the pseudo-header sum."""
    _U16.pack_into(buf, csum_start + csum_offset, internet_checksum(memoryview(buf)[csum_start:]))


def fill_checksums(buf: bytearray, parsed: ParsedFrame) -> None:
    """Recompute the IPv4 header checksum and the TCP checksum of a frame in place."""
    if parsed.ip_version == 4:
        set_ipv4_checksum(buf, parsed.l3_offset, parsed.ip_header_len)
    if parsed.tcp is not None:
        start = parsed.l4_offset
        end = start + parsed.l4_len
        _U16.pack_into(buf, start + TCP_CSUM_OFFSET, 0)
        pseudo = pseudo_header_sum(parsed.ip_src, parsed.ip_dst, parsed.l4_proto, parsed.l4_len)
        _U16.pack_into(buf, start + TCP_CSUM_OFFSET, internet_checksum(memoryview(buf)[start:end], pseudo))


def tx_checksum(buf: bytearray, parsed: ParsedFrame, *, leave_to_device: bool) -> tuple[int, int] | None:
    """Prepare a TCP frame's checksum for sending.

    With `leave_to_device` the field gets the pseudo-header sum and (csum_start, csum_offset)
    is returned for a NEEDS_CSUM header; otherwise the checksum is computed and None returned.
    """
    if parsed.ip_version == 4:
        set_ipv4_checksum(buf, parsed.l3_offset, parsed.ip_header_len)
    if not leave_to_device:
        fill_checksums(buf, parsed)
        return None
    start = parsed.l4_offset
    pseudo = pseudo_header_sum(parsed.ip_src, parsed.ip_dst, parsed.l4_proto, parsed.l4_len)
    _U16.pack_into(buf, start + TCP_CSUM_OFFSET, pseudo)
    return start, TCP_CSUM_OFFSET


def tcp_checksum_ok(buf: bytes | bytearray | memoryview, parsed: ParsedFrame) -> bool:
    """Verify a parsed frame's TCP checksum (for frames parsed with verify_csum=False)."""
    start = parsed.l4_offset
    pseudo = pseudo_header_sum(parsed.ip_src, parsed.ip_dst, parsed.l4_proto, parsed.l4_len)
    return ones_sum(memoryview(buf)[start:start + parsed.l4_len], pseudo) == 0xFFFF
