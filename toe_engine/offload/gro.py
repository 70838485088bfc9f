"""Generic receive offload with the Linux kernel's TCP coalescing rules.

Mirrors dev_gro_receive (net/core/gro.c), inet_gro_receive / ipv6_gro_receive and
tcp_gro_receive (net/ipv4/tcp_offload.c) with gro_receive_network_flush (include/net/gro.h)
as of Linux 6.18, so that what merges here merges there and the aggregate can be cut back into
the original frames by TSO with its `gso_size`:

* a frame the IP layer will not hand to TCP GRO (IPv4 options, fragments, an IPv6 fragment
  header, a bad checksum, a malformed header) goes up at once and leaves held flows alone;
* for a held flow (same link header, addresses, ports, IPv6 flow label and extension headers)
  the new segment is merged unless: its TCP flag word (flags, data offset, window) differs
  other than in FIN/PSH, the ACK differs, option bytes differ, TTL/TOS/DF or IPv6 traffic
  class/hop limit differ, the IPv4 ID breaks the flow's incrementing-or-fixed pattern, it is
  empty or larger than gso_size, its sequence is not contiguous, or the aggregate would reach
  `max_size`; a segment that is not merged flushes the held flow;
* a merged segment shorter than gso_size, or one with PSH/FIN/URG/RST/SYN, flushes the flow;
  an unmerged segment with such flags (or no payload) goes up alone instead of being held.
"""
from __future__ import annotations

import struct
from typing import NamedTuple

from toe_engine.checksum import internet_checksum, pseudo_header_sum
from toe_engine.codec.frame import ParsedFrame, parse_frame
from toe_engine.codec.ipv4 import IPV4_CSUM_OFFSET, IPV4_HLEN, IPV4_TOTAL_LEN_OFFSET
from toe_engine.codec.ipv6 import IPV6_HLEN, IPV6_PAYLOAD_LEN_OFFSET, NEXTHDR_DEST, NEXTHDR_HOP, NEXTHDR_ROUTING
from toe_engine.codec.tcp import TCP_CSUM_OFFSET, TCP_FLAGS_OFFSET, TCP_HLEN
from toe_engine.counters import Counters
from toe_engine.segment import CWR, FIN, PSH, RST, SYN, URG

GRO_MAX_SIZE = 65536
MAX_HELD_FLOWS = 64  # GRO_HASH_BUCKETS (8) x MAX_GRO_SKBS (8)

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_FLAG_WORD_OFFSET = 12  # data offset, reserved bits, flags and window: tcp_flag_word()
_FLUSH_FLAGS = URG | PSH | RST | SYN | FIN
_GRO_EXT_HEADERS = frozenset({NEXTHDR_HOP, NEXTHDR_ROUTING, NEXTHDR_DEST})


class CoalescedFrame(NamedTuple):
    """A frame leaving a receive-offload stage.

    `gso_size` is the payload size of each original segment (0 when the frame is a single
    segment, or when boundaries were lost as with LRO); `segments` how many frames it holds;
    `fixed_id` that the IPv4 IDs did not increment, so re-segmentation must repeat the ID.
    """

    frame: bytes | bytearray
    gso_size: int
    segments: int
    fixed_id: bool


class _HeldFlow:
    __slots__ = (
        "frame", "parsed", "chunks", "gso_size", "count", "next_seq", "ip_len", "flag_word",
        "ack", "options", "ip_id", "fixed_id", "extra_flags", "since",
    )

    def __init__(self, frame: bytes, parsed: ParsedFrame, payload_len: int, now: float) -> None:
        mv = memoryview(frame)
        l4 = parsed.l4_offset
        tcp = parsed.tcp
        assert tcp is not None
        self.frame = frame
        self.parsed = parsed
        self.chunks = [mv[parsed.payload_offset:parsed.frame_end]]
        self.gso_size = payload_len
        self.count = 1
        self.next_seq = (tcp.seq + payload_len) & 0xFFFFFFFF
        self.ip_len = parsed.ip_len
        self.flag_word = _U32.unpack_from(mv, l4 + _FLAG_WORD_OFFSET)[0]
        self.ack = tcp.ack
        self.options = bytes(mv[l4 + TCP_HLEN:parsed.payload_offset])
        self.ip_id = parsed.ip_id
        self.fixed_id = False
        self.extra_flags = 0
        self.since = now


class Gro:
    """Coalesce received TCP frames per flow, as the kernel's GRO does.

    `receive` returns the frames that leave GRO because of this one (in the order the kernel
    would deliver them); `flush` releases flows held for at least `flush_timeout` seconds
    (0 releases everything, like the end of a NAPI poll).

    Two switches select older kernel semantics: `cwr_always_flushes` (before 6.18 any segment
    with CWR flushed the flow; now only a change of CWR does) and `fixed_id_needs_df` (before
    6.18 a fixed IPv4 ID was accepted only with DF set).
    """

    def __init__(
        self,
        max_size: int = GRO_MAX_SIZE,
        *,
        counters: Counters | None = None,
        max_flows: int = MAX_HELD_FLOWS,
        flush_timeout: float = 0.0,
        cwr_always_flushes: bool = False,
        fixed_id_needs_df: bool = False,
    ) -> None:
        self.max_size = max_size
        self.counters = counters if counters is not None else Counters()
        self.max_flows = max_flows
        self.flush_timeout = flush_timeout
        self._ignored_flags = (FIN | PSH | CWR) if cwr_always_flushes else (FIN | PSH)
        self._cwr_always_flushes = cwr_always_flushes
        self._fixed_id_needs_df = fixed_id_needs_df
        self._held: dict[tuple[object, ...], _HeldFlow] = {}

    @property
    def held_flows(self) -> int:
        return len(self._held)

    def receive(
        self, frame: bytes | bytearray | memoryview, parsed: ParsedFrame | None = None, now: float = 0.0
    ) -> list[CoalescedFrame]:
        """Offer one received frame; `parsed` saves a second parse if the caller has one."""
        if not isinstance(frame, bytes):
            frame = bytes(frame)  # held frames must outlive the caller's receive buffer
        if parsed is None:
            parsed = parse_frame(frame)
        if not _gro_candidate(parsed):
            return [CoalescedFrame(frame, 0, 1, False)]
        tcp = parsed.tcp
        assert tcp is not None
        out: list[CoalescedFrame] = []
        payload_len = parsed.frame_end - parsed.payload_offset
        ip_flush = len(frame) != parsed.frame_end  # length fields disagree with the frame (padding)
        key = _flow_key(frame, parsed)
        held = self._held.get(key)
        merged = False
        if held is not None:
            flush = self._segment_flush(held, frame, parsed, payload_len)
            if not (flush or ip_flush) and held.ip_len + payload_len < self.max_size:
                held.chunks.append(memoryview(frame)[parsed.payload_offset:parsed.frame_end])
                held.count += 1
                held.next_seq = (held.next_seq + payload_len) & 0xFFFFFFFF
                held.ip_len += payload_len
                held.extra_flags |= tcp.flags & (FIN | PSH)
                merged = True
                self.counters.inc("gro_merged")
                if payload_len < held.gso_size or tcp.flags & _FLUSH_FLAGS:
                    out.append(self._release(key))
            else:
                out.append(self._release(key))
        if not merged:
            if payload_len == 0 or tcp.flags & _FLUSH_FLAGS or ip_flush:
                out.append(CoalescedFrame(frame, 0, 1, False))
            else:
                if len(self._held) >= self.max_flows:
                    out.append(self._release(next(iter(self._held))))
                self._held[key] = _HeldFlow(frame, parsed, payload_len, now)
        return out

    def flush(self, now: float) -> list[CoalescedFrame]:
        """Release flows held since `now - flush_timeout` or earlier, oldest first."""
        deadline = now - self.flush_timeout
        due = [key for key, held in self._held.items() if held.since <= deadline]
        return [self._release(key) for key in due]

    def flush_all(self) -> list[CoalescedFrame]:
        """Release every held flow."""
        return [self._release(key) for key in list(self._held)]

    def _segment_flush(self, held: _HeldFlow, frame: bytes, parsed: ParsedFrame, payload_len: int) -> bool:
        tcp = parsed.tcp
        assert tcp is not None
        l4 = parsed.l4_offset
        word = _U32.unpack_from(frame, l4 + _FLAG_WORD_OFFSET)[0]
        if (word ^ held.flag_word) & ~(self._ignored_flags << 16):
            return True
        if self._cwr_always_flushes and tcp.flags & CWR:
            return True
        if tcp.ack != held.ack or frame[l4 + TCP_HLEN:parsed.payload_offset] != held.options:
            return True
        if self._network_flush(held, parsed):
            return True
        if payload_len == 0 or payload_len > held.gso_size:
            return True
        return tcp.seq != held.next_seq

    def _network_flush(self, held: _HeldFlow, parsed: ParsedFrame) -> bool:
        first = held.parsed
        if parsed.ttl != first.ttl or parsed.tos != first.tos:
            return True
        if parsed.ip_version == 6:
            return False
        if parsed.df != first.df:
            return True
        id_offset = (parsed.ip_id - held.ip_id) & 0xFFFF
        if held.count == 1 and id_offset == 0 and (parsed.df or not self._fixed_id_needs_df):
            held.fixed_id = True
        return id_offset != (0 if held.fixed_id else held.count)

    def _release(self, key: tuple[object, ...]) -> CoalescedFrame:
        held = self._held.pop(key)
        self.counters.inc("gro_flushed")
        if held.count == 1:
            return CoalescedFrame(held.frame, 0, 1, False)
        return CoalescedFrame(_complete(held), held.gso_size, held.count, held.fixed_id)


def _gro_candidate(parsed: ParsedFrame) -> bool:
    """Whether the IP layer would pass this frame to TCP GRO at all."""
    if parsed.drop_reason is not None or parsed.tcp is None:
        return False
    if parsed.ip_version == 4:
        return parsed.ip_header_len == IPV4_HLEN
    return all(ext in _GRO_EXT_HEADERS for ext in parsed.ext_headers)


def _flow_key(frame: bytes, parsed: ParsedFrame) -> tuple[object, ...]:
    tcp = parsed.tcp
    assert tcp is not None
    l3 = parsed.l3_offset
    key: tuple[object, ...] = (frame[:l3], parsed.ip_src, parsed.ip_dst, tcp.src_port, tcp.dst_port)
    if parsed.ip_version == 6:
        key += (parsed.flow_label, frame[l3 + IPV6_HLEN:parsed.l4_offset])
    return key


def _complete(held: _HeldFlow) -> bytearray:
    """Build the aggregate: the first segment's headers, every payload, lengths and checksums."""
    parsed = held.parsed
    l3 = parsed.l3_offset
    l4 = parsed.l4_offset
    out = bytearray(memoryview(held.frame)[:parsed.payload_offset])
    for chunk in held.chunks:
        out += chunk
    ip_len = len(out) - l3
    if parsed.ip_version == 4:
        _U16.pack_into(out, l3 + IPV4_TOTAL_LEN_OFFSET, ip_len)
        _U16.pack_into(out, l3 + IPV4_CSUM_OFFSET, 0)
        _U16.pack_into(out, l3 + IPV4_CSUM_OFFSET, internet_checksum(memoryview(out)[l3:l4]))
    else:
        _U16.pack_into(out, l3 + IPV6_PAYLOAD_LEN_OFFSET, ip_len - IPV6_HLEN)
    out[l4 + TCP_FLAGS_OFFSET] |= held.extra_flags
    tcp_len = len(out) - l4
    _U16.pack_into(out, l4 + TCP_CSUM_OFFSET, 0)
    pseudo = pseudo_header_sum(parsed.ip_src, parsed.ip_dst, parsed.l4_proto, tcp_len)
    _U16.pack_into(out, l4 + TCP_CSUM_OFFSET, internet_checksum(memoryview(out)[l4:], pseudo))
    return out
