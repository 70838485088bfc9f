"""TCP header and options (RFC 9293, RFC 7323, RFC 2018) to and from `Segment`.

Parsing never raises: a header or option that does not fit is reported as a DropReason.
Known options with an unexpected length are skipped by length and counted as unknown, which
is what the Linux stack does with them.
"""
from __future__ import annotations

import struct
from typing import Final

from toe_engine.checksum import IPPROTO_TCP, internet_checksum, pseudo_header_sum
from toe_engine.codec.drop import DropReason
from toe_engine.segment import Segment, TcpOptions

TCP_HLEN: Final = 20
TCP_MAX_OPTIONS: Final = 40
TCP_SEQ_OFFSET: Final = 4
TCP_ACK_OFFSET: Final = 8
TCP_FLAGS_OFFSET: Final = 13
TCP_WINDOW_OFFSET: Final = 14
TCP_CSUM_OFFSET: Final = 16

OPT_EOL: Final = 0
OPT_NOP: Final = 1
OPT_MSS: Final = 2
OPT_WSCALE: Final = 3
OPT_SACK_PERM: Final = 4
OPT_SACK: Final = 5
OPT_TIMESTAMP: Final = 8

TCP_HEADER: Final = struct.Struct("!HHIIBBHHH")
_U16: Final = struct.Struct("!H")
_U32: Final = struct.Struct("!I")
_U32_PAIR: Final = struct.Struct("!II")
_MSS: Final = struct.Struct("!BBH")
_TS: Final = struct.Struct("!BBII")
_NOP_NOP_TS: Final = b"\x01\x01\x08\x0a"


def parse_options(buf: memoryview, start: int, end: int) -> TcpOptions | DropReason:
    """Parse the option bytes buf[start:end]."""
    opts = TcpOptions()
    if end - start == 12 and buf[start:start + 4] == _NOP_NOP_TS:
        opts.timestamp = _U32_PAIR.unpack_from(buf, start + 4)
        return opts
    i = start
    while i < end:
        kind = buf[i]
        if kind == OPT_EOL:
            break
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= end:
            return DropReason.TCP_BAD_OPTION
        length = buf[i + 1]
        if length < 2 or i + length > end:
            return DropReason.TCP_BAD_OPTION
        if kind == OPT_TIMESTAMP and length == 10:
            opts.timestamp = _U32_PAIR.unpack_from(buf, i + 2)
        elif kind == OPT_MSS and length == 4:
            opts.mss = _U16.unpack_from(buf, i + 2)[0]
        elif kind == OPT_WSCALE and length == 3:
            opts.wscale = buf[i + 2]
        elif kind == OPT_SACK_PERM and length == 2:
            opts.sack_permitted = True
        elif kind == OPT_SACK and length >= 10 and (length - 2) % 8 == 0:
            opts.sack_blocks = tuple(
                _U32_PAIR.unpack_from(buf, j) for j in range(i + 2, i + length, 8)
            )
        else:
            opts.unknown += 1
        i += length
    return opts


def parse_tcp(buf: memoryview, offset: int, length: int) -> tuple[Segment, int] | DropReason:
    """Parse a TCP segment of `length` bytes at `offset`; returns (segment, header length).

    The payload is a memoryview into `buf` (no copy); copy it if `buf` will be reused.
    """
    if length < TCP_HLEN:
        return DropReason.TCP_TRUNCATED
    sport, dport, seq, ack, off_res, flags, window, _csum, urg = TCP_HEADER.unpack_from(buf, offset)
    header_len = (off_res >> 4) * 4
    if header_len < TCP_HLEN or header_len > length:
        return DropReason.TCP_BAD_DATA_OFFSET
    if header_len == TCP_HLEN:
        opts = TcpOptions()
    else:
        parsed = parse_options(buf, offset + TCP_HLEN, offset + header_len)
        if isinstance(parsed, DropReason):
            return parsed
        opts = parsed
    payload = buf[offset + header_len:offset + length]
    return Segment(sport, dport, seq, ack, flags, window, payload, opts, urg), header_len


def build_options(opts: TcpOptions) -> bytes:
    """Options in the Linux SYN layout (MSS, SACK-permitted+TS, NOP+WS, NOP NOP+SACK), 4-aligned."""
    out = bytearray()
    if opts.mss is not None:
        out += _MSS.pack(OPT_MSS, 4, opts.mss)
    if opts.timestamp is not None:
        lead = b"\x04\x02" if opts.sack_permitted else b"\x01\x01"
        out += lead + _TS.pack(OPT_TIMESTAMP, 10, *opts.timestamp)
    elif opts.sack_permitted:
        out += b"\x01\x01\x04\x02"
    if opts.wscale is not None:
        out += bytes((OPT_NOP, OPT_WSCALE, 3, opts.wscale))
    if opts.sack_blocks:
        out += bytes((OPT_NOP, OPT_NOP, OPT_SACK, 2 + 8 * len(opts.sack_blocks)))
        for left, right in opts.sack_blocks:
            out += _U32_PAIR.pack(left, right)
    if len(out) > TCP_MAX_OPTIONS:
        raise ValueError(f"TCP options need {len(out)} bytes, more than {TCP_MAX_OPTIONS}")
    return bytes(out)


def _options_bytes(opts: TcpOptions) -> bytes:
    if opts.timestamp is not None and opts.mss is None and opts.wscale is None \
            and not opts.sack_permitted and not opts.sack_blocks:
        return _NOP_NOP_TS + _U32_PAIR.pack(*opts.timestamp)
    if opts.mss is None and opts.wscale is None and opts.timestamp is None \
            and not opts.sack_permitted and not opts.sack_blocks:
        return b""
    return build_options(opts)


def build_tcp_segment(seg: Segment, src_ip: bytes, dst_ip: bytes, *, checksum: bool = True,
                      headroom: int = 0) -> bytearray:
    """Header, options and payload; with `checksum` False the field holds the folded
    pseudo-header sum, as a device completing CHECKSUM_PARTIAL expects.

    `headroom` zero bytes come first, for the link and IP headers a caller writes there: a
    whole frame in one buffer, its payload copied once.
    """
    options = _options_bytes(seg.options)
    header_len = TCP_HLEN + len(options)
    payload = seg.payload
    out = bytearray(headroom + header_len + len(payload))
    TCP_HEADER.pack_into(
        out, headroom, seg.src_port, seg.dst_port, seg.seq & 0xFFFFFFFF, seg.ack & 0xFFFFFFFF,
        (header_len // 4) << 4, seg.flags & 0xFF, seg.window, 0, seg.urg_ptr,
    )
    out[headroom + TCP_HLEN:headroom + header_len] = options
    out[headroom + header_len:] = payload
    pseudo = pseudo_header_sum(src_ip, dst_ip, IPPROTO_TCP, len(out) - headroom)
    if checksum:
        csum = internet_checksum(memoryview(out)[headroom:] if headroom else out, pseudo)
        _U16.pack_into(out, headroom + TCP_CSUM_OFFSET, csum)
    else:
        _U16.pack_into(out, headroom + TCP_CSUM_OFFSET, pseudo)
    return out
