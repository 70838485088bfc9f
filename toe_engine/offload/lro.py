"""Large receive offload as NIC hardware does it: greedy, and lossy about segment boundaries.

Contiguous in-order data of one flow is merged whatever the segment sizes, PSH included, and
the aggregate takes the newest ACK, window and timestamp. Only the total length survives, so
the result carries no usable gso_size and cannot be cut back into the original frames; this
is why forwarding LRO'd traffic breaks (and why Linux turns LRO off on routers and bridges).
"""
from __future__ import annotations

import struct

from toe_engine.checksum import internet_checksum, pseudo_header_sum
from toe_engine.codec.frame import ParsedFrame, parse_frame
from toe_engine.codec.ipv4 import IPV4_CSUM_OFFSET, IPV4_HLEN, IPV4_TOTAL_LEN_OFFSET
from toe_engine.codec.ipv6 import IPV6_HLEN, IPV6_PAYLOAD_LEN_OFFSET
from toe_engine.codec.tcp import TCP_ACK_OFFSET, TCP_CSUM_OFFSET, TCP_FLAGS_OFFSET, TCP_HLEN, TCP_WINDOW_OFFSET
from toe_engine.counters import Counters
from toe_engine.offload.gro import CoalescedFrame
from toe_engine.segment import ACK, PSH

LRO_MAX_SIZE = 65535  # the largest IP datagram the aggregate may become
MAX_LRO_SESSIONS = 32

_U16 = struct.Struct("!H")
_MERGEABLE_FLAGS = ACK | PSH
_TS_OPTION_LEN = 12  # NOP NOP TS, the only option LRO hardware accepts


class _Session:
    __slots__ = ("header", "parsed", "chunks", "count", "next_seq", "ip_len", "since")

    def __init__(self, frame: bytes, parsed: ParsedFrame, now: float) -> None:
        self.header = bytearray(memoryview(frame)[:parsed.payload_offset])
        self.parsed = parsed
        self.chunks = [memoryview(frame)[parsed.payload_offset:parsed.frame_end]]
        self.count = 1
        tcp = parsed.tcp
        assert tcp is not None
        self.next_seq = (tcp.seq + parsed.frame_end - parsed.payload_offset) & 0xFFFFFFFF
        self.ip_len = parsed.ip_len
        self.since = now


class Lro:
    """Greedy per-flow aggregation; same `receive`/`flush` shape as `Gro`."""

    def __init__(
        self,
        max_size: int = LRO_MAX_SIZE,
        *,
        counters: Counters | None = None,
        max_sessions: int = MAX_LRO_SESSIONS,
        flush_timeout: float = 0.0,
    ) -> None:
        self.max_size = max_size
        self.counters = counters if counters is not None else Counters()
        self.max_sessions = max_sessions
        self.flush_timeout = flush_timeout
        self._sessions: dict[tuple[object, ...], _Session] = {}

    @property
    def held_flows(self) -> int:
        """Open aggregation sessions (the same question as Gro.held_flows)."""
        return len(self._sessions)

    def receive(
        self, frame: bytes | bytearray | memoryview, parsed: ParsedFrame | None = None, now: float = 0.0
    ) -> list[CoalescedFrame]:
        """Offer one received frame; returns the frames that leave LRO because of it."""
        if not isinstance(frame, bytes):
            frame = bytes(frame)
        if parsed is None:
            parsed = parse_frame(frame)
        out: list[CoalescedFrame] = []
        if not _lro_candidate(parsed):
            key = _flow_key(parsed) if parsed.tcp is not None else None
            if key is not None and key in self._sessions:
                out.append(self._release(key))
            out.append(CoalescedFrame(frame, 0, 1, False))
            return out
        tcp = parsed.tcp
        assert tcp is not None
        key = _flow_key(parsed)
        payload_len = parsed.frame_end - parsed.payload_offset
        session = self._sessions.get(key)
        if session is not None:
            if self._can_merge(session, parsed, payload_len):
                self._merge(session, frame, parsed, payload_len)
                return out
            out.append(self._release(key))
        if len(self._sessions) >= self.max_sessions:
            out.append(self._release(next(iter(self._sessions))))
        self._sessions[key] = _Session(frame, parsed, now)
        return out

    def flush(self, now: float) -> list[CoalescedFrame]:
        """Release sessions open since `now - flush_timeout` or earlier."""
        deadline = now - self.flush_timeout
        due = [key for key, session in self._sessions.items() if session.since <= deadline]
        return [self._release(key) for key in due]

    def flush_all(self) -> list[CoalescedFrame]:
        """Release every open session."""
        return [self._release(key) for key in list(self._sessions)]

    def _can_merge(self, session: _Session, parsed: ParsedFrame, payload_len: int) -> bool:
        tcp = parsed.tcp
        assert tcp is not None
        first = session.parsed
        return (
            tcp.seq == session.next_seq
            and parsed.tcp_header_len == first.tcp_header_len
            and parsed.tos == first.tos
            and session.ip_len + payload_len <= self.max_size
        )

    def _merge(self, session: _Session, frame: bytes, parsed: ParsedFrame, payload_len: int) -> None:
        """Append the payload and take the newest ACK, window, timestamp and PSH."""
        l4_new = parsed.l4_offset
        l4 = session.parsed.l4_offset
        header = session.header
        header[l4 + TCP_ACK_OFFSET:l4 + TCP_ACK_OFFSET + 4] = frame[l4_new + TCP_ACK_OFFSET:l4_new + TCP_ACK_OFFSET + 4]
        header[l4 + TCP_WINDOW_OFFSET:l4 + TCP_WINDOW_OFFSET + 2] = frame[l4_new + TCP_WINDOW_OFFSET:l4_new + TCP_WINDOW_OFFSET + 2]
        header[l4 + TCP_HLEN:] = frame[l4_new + TCP_HLEN:parsed.payload_offset]
        header[l4 + TCP_FLAGS_OFFSET] |= frame[l4_new + TCP_FLAGS_OFFSET] & PSH
        session.chunks.append(memoryview(frame)[parsed.payload_offset:parsed.frame_end])
        session.count += 1
        session.next_seq = (session.next_seq + payload_len) & 0xFFFFFFFF
        session.ip_len += payload_len
        self.counters.inc("lro_merged")

    def _release(self, key: tuple[object, ...]) -> CoalescedFrame:
        session = self._sessions.pop(key)
        parsed = session.parsed
        l3 = parsed.l3_offset
        l4 = parsed.l4_offset
        out = session.header
        for chunk in session.chunks:
            out += chunk
        ip_len = len(out) - l3
        if parsed.ip_version == 4:
            _U16.pack_into(out, l3 + IPV4_TOTAL_LEN_OFFSET, ip_len)
            _U16.pack_into(out, l3 + IPV4_CSUM_OFFSET, 0)
            _U16.pack_into(out, l3 + IPV4_CSUM_OFFSET, internet_checksum(memoryview(out)[l3:l4]))
        else:
            _U16.pack_into(out, l3 + IPV6_PAYLOAD_LEN_OFFSET, ip_len - IPV6_HLEN)
        tcp_len = len(out) - l4
        _U16.pack_into(out, l4 + TCP_CSUM_OFFSET, 0)
        pseudo = pseudo_header_sum(parsed.ip_src, parsed.ip_dst, parsed.l4_proto, tcp_len)
        _U16.pack_into(out, l4 + TCP_CSUM_OFFSET, internet_checksum(memoryview(out)[l4:], pseudo))
        return CoalescedFrame(out, 0, session.count, False)


def _lro_candidate(parsed: ParsedFrame) -> bool:
    """Plain in-order data segments only: no IP options or extension headers, only ACK/PSH,
    no TCP option other than timestamps, and a payload."""
    tcp = parsed.tcp
    if parsed.drop_reason is not None or tcp is None:
        return False
    if tcp.flags & ~_MERGEABLE_FLAGS or not tcp.flags & ACK:
        return False
    if parsed.frame_end == parsed.payload_offset:
        return False
    if parsed.ip_version == 4 and parsed.ip_header_len != IPV4_HLEN:
        return False
    if parsed.ip_version == 6 and parsed.ext_headers:
        return False
    options_len = parsed.tcp_header_len - TCP_HLEN
    return options_len == 0 or (options_len == _TS_OPTION_LEN and tcp.options.timestamp is not None)


def _flow_key(parsed: ParsedFrame) -> tuple[object, ...]:
    tcp = parsed.tcp
    assert tcp is not None
    return (parsed.ip_src, parsed.ip_dst, tcp.src_port, tcp.dst_port)
