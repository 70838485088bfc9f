"""TCP segmentation offload: one super-frame in, MSS-sized frames out.

Follows the kernel's tcp_gso_segment: sequence numbers advance by MSS, FIN and PSH stay only
on the last frame, CWR only on the first (RFC 3168), IPv4 IDs increment from the super-frame's
ID unless the flow uses a fixed ID (SKB_GSO_TCP_FIXEDID), lengths and checksums are rewritten.
"""
from __future__ import annotations

import struct

from toe_engine.checksum import internet_checksum, pseudo_header_sum
from toe_engine.codec.frame import ParsedFrame, parse_frame
from toe_engine.codec.ipv4 import IPV4_CSUM_OFFSET, IPV4_ID_OFFSET, IPV4_TOTAL_LEN_OFFSET
from toe_engine.codec.ipv6 import IPV6_PAYLOAD_LEN_OFFSET
from toe_engine.codec.tcp import TCP_CSUM_OFFSET, TCP_FLAGS_OFFSET, TCP_SEQ_OFFSET
from toe_engine.counters import Counters
from toe_engine.segment import CWR, FIN, PSH

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")


def segment_frame(
    frame: bytes | bytearray | memoryview,
    mss: int,
    parsed: ParsedFrame | None = None,
    *,
    fixed_id: bool = False,
    cwr_first_only: bool = True,
    counters: Counters | None = None,
) -> list[bytearray]:
    """Cut a TCP super-frame into frames carrying at most `mss` payload bytes each.

    `mss` is the gso_size (payload bytes per frame). A frame that already fits is returned
    as one frame with its checksums filled in. Raises ValueError if `frame` is not a whole
    TCP frame, because TSO input comes from this host's own stack, not from the wire.
    """
    if mss <= 0:
        raise ValueError("mss must be positive")
    if parsed is None:
        parsed = parse_frame(frame, verify_csum=False)
    if parsed.tcp is None or parsed.drop_reason is not None:
        raise ValueError(f"not a TCP frame: {parsed.drop_reason}")
    mv = frame if isinstance(frame, memoryview) else memoryview(frame)
    l3 = parsed.l3_offset
    l4 = parsed.l4_offset
    payload_start = parsed.payload_offset
    payload_end = parsed.frame_end
    header = mv[:payload_start]
    tcp_header_len = parsed.tcp_header_len
    ipv4 = parsed.ip_version == 4
    ip_fixed_len = parsed.ip_header_len if ipv4 else parsed.ip_header_len - 40
    seq = parsed.tcp.seq
    flags = parsed.tcp.flags
    ip_id = parsed.ip_id
    src, dst, proto = parsed.ip_src, parsed.ip_dst, parsed.l4_proto
    total = payload_end - payload_start
    starts = range(payload_start, payload_end, mss) if total else range(payload_start, payload_start + 1)
    last_index = len(starts) - 1
    frames: list[bytearray] = []
    for index, start in enumerate(starts):
        chunk_end = min(start + mss, payload_end)
        out = bytearray(header)
        out += mv[start:chunk_end]
        tcp_len = tcp_header_len + chunk_end - start
        if ipv4:
            _U16.pack_into(out, l3 + IPV4_TOTAL_LEN_OFFSET, ip_fixed_len + tcp_len)
            if not fixed_id:
                _U16.pack_into(out, l3 + IPV4_ID_OFFSET, (ip_id + index) & 0xFFFF)
            _U16.pack_into(out, l3 + IPV4_CSUM_OFFSET, 0)
            _U16.pack_into(out, l3 + IPV4_CSUM_OFFSET, internet_checksum(memoryview(out)[l3:l4]))
        else:
            _U16.pack_into(out, l3 + IPV6_PAYLOAD_LEN_OFFSET, ip_fixed_len + tcp_len)
        _U32.pack_into(out, l4 + TCP_SEQ_OFFSET, (seq + (start - payload_start)) & 0xFFFFFFFF)
        seg_flags = flags
        if index != last_index:
            seg_flags &= ~(FIN | PSH)
        if index and cwr_first_only:
            seg_flags &= ~CWR
        out[l4 + TCP_FLAGS_OFFSET] = seg_flags
        _U16.pack_into(out, l4 + TCP_CSUM_OFFSET, 0)
        pseudo = pseudo_header_sum(src, dst, proto, tcp_len)
        _U16.pack_into(out, l4 + TCP_CSUM_OFFSET, internet_checksum(memoryview(out)[l4:], pseudo))
        frames.append(out)
    if counters is not None:
        counters.inc("tso_segments", len(frames))
    return frames
