"""Whole frames: Ethernet + IPv4/IPv6/ARP + TCP/ICMP, parsed into one flat object and built back.

`ParsedFrame` is flat on purpose: the per-packet path reads a few attributes and the offload
stages need byte offsets (where the IP header, the TCP header and the payload start) to
rewrite frames in place without re-parsing.
"""
from __future__ import annotations

import struct
from typing import Final, NamedTuple

from toe_engine.checksum import (
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    internet_checksum,
    ones_sum,
    pseudo_header_sum,
)
from toe_engine.codec.arp import ArpPacket, parse_arp
from toe_engine.codec.drop import DropReason
from toe_engine.codec.ethernet import (
    ETH_HEADER,
    ETH_HLEN,
    ETHERTYPE_ARP,
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    build_ethernet,
    parse_ethernet,
)
from toe_engine.codec.icmp import IcmpMessage, parse_icmpv4, parse_icmpv6
from toe_engine.codec.ipv4 import (
    IP_DF,
    IP_MF,
    IP_OFFMASK,
    IPV4_HEADER,
    IPV4_HLEN,
    build_ipv4_header,
    ipv4_lengths,
    parse_ipv4,
)
from toe_engine.codec.ipv6 import IPV6_HLEN, Ipv6Fragment, build_ipv6_header, parse_ipv6
from toe_engine.codec.tcp import TCP_CSUM_OFFSET, TCP_HLEN, build_options, build_tcp_segment, parse_tcp
from toe_engine.segment import Segment

_Buffer = bytes | bytearray | memoryview
_ETH_IPV4: Final = struct.Struct(ETH_HEADER.format + IPV4_HEADER.format.lstrip("!"))  # untagged Ethernet + IPv4
_ETH_IPV4_LEN: Final = _ETH_IPV4.size
#: Ethernet, IPv4 without options and a TCP header, in one pack; with the timestamp option
#: laid out as Linux sends it on data and ACKs (NOP, NOP, kind 8, length 10, TSval, TSecr).
_ETH_IPV4_TCP: Final = struct.Struct("!6s6sHBBHHHBBH4s4sHHIIBBHHH")
_ETH_IPV4_TCP_TS: Final = struct.Struct(_ETH_IPV4_TCP.format + "III")
_NOP_NOP_TS_WORD: Final = 0x0101080A
_U16: Final = struct.Struct("!H")
_IPV4_VER_IHL: Final = 0x45


class ParsedFrame:
    """Everything the engine needs from one received frame.

    `drop_reason` is None for a good frame. Addresses are packed bytes. Offsets index the
    buffer given to `parse_frame`. Fields of layers that are absent keep their defaults.
    """

    __slots__ = (
        "drop_reason", "eth_dst", "eth_src", "ethertype", "vlan_tci", "l3_offset",
        "ip_version", "ip_src", "ip_dst", "ttl", "tos", "ip_id", "df", "mf", "frag_offset",
        "ip_header_len", "ip_options_len", "ip_len", "flow_label", "ext_headers", "ipv6_fragment",
        "l4_proto", "l4_offset", "l4_len", "tcp", "tcp_header_len", "tcp_checksum",
        "icmp", "arp", "csum_verified",
    )

    def __init__(self) -> None:
        self.drop_reason: DropReason | None = None
        self.eth_dst = b""
        self.eth_src = b""
        self.ethertype = 0
        self.vlan_tci: int | None = None
        self.l3_offset = 0
        self.ip_version = 0
        self.ip_src = b""
        self.ip_dst = b""
        self.ttl = 0  # hop limit for IPv6
        self.tos = 0  # traffic class for IPv6
        self.ip_id = 0  # IPv4 ID, or the fragment header's ID for IPv6
        self.df = False
        self.mf = False
        self.frag_offset = 0
        self.ip_header_len = 0  # IPv4 IHL*4; IPv6 40 + extension headers
        self.ip_options_len = 0
        self.ip_len = 0  # IPv4 total length; IPv6 40 + payload length
        self.flow_label = 0
        self.ext_headers: tuple[int, ...] = ()
        self.ipv6_fragment: Ipv6Fragment | None = None
        self.l4_proto = -1
        self.l4_offset = 0
        self.l4_len = 0
        self.tcp: Segment | None = None
        self.tcp_header_len = 0
        self.tcp_checksum = 0
        self.icmp: IcmpMessage | None = None
        self.arp: ArpPacket | None = None
        self.csum_verified = False

    @property
    def is_fragment(self) -> bool:
        return self.mf or self.frag_offset != 0

    @property
    def payload_offset(self) -> int:
        """Where the TCP payload starts in the buffer."""
        return self.l4_offset + self.tcp_header_len

    @property
    def frame_end(self) -> int:
        """End of the IP datagram in the buffer; bytes after it are link padding."""
        return self.l3_offset + self.ip_len


def parse_frame(buf: _Buffer, verify_csum: bool = True) -> ParsedFrame:
    """Parse one Ethernet frame. Never raises on malformed input: see `drop_reason`.

    `verify_csum` False is for frames whose checksums a device already checked (virtio-net
    DATA_VALID) or left for a device to fill in (NEEDS_CSUM); IP header checksums are then
    not checked either.
    """
    mv = buf if isinstance(buf, memoryview) else memoryview(buf)
    if len(mv) >= _ETH_IPV4_LEN and mv[12] == 0x08 and mv[13] == 0x00:
        return _parse_untagged_ipv4(mv, verify_csum)
    frame = ParsedFrame()
    eth = parse_ethernet(mv)
    if eth is None:
        frame.drop_reason = DropReason.ETH_TRUNCATED
        return frame
    frame.eth_dst = eth.dst
    frame.eth_src = eth.src
    frame.ethertype = ethertype = eth.ethertype
    frame.vlan_tci = eth.vlan_tci
    frame.l3_offset = l3 = eth.l3_offset
    if ethertype == ETHERTYPE_IPV4:
        _parse_ipv4_layer(mv, l3, frame, verify_csum)
    elif ethertype == ETHERTYPE_IPV6:
        _parse_ipv6_layer(mv, l3, frame)
    elif ethertype == ETHERTYPE_ARP:
        frame.arp = parse_arp(mv, l3)
        if frame.arp is None:
            frame.drop_reason = DropReason.ARP_TRUNCATED
        return frame
    else:
        return frame
    if frame.drop_reason is None and not frame.is_fragment:
        _parse_l4(mv, frame, verify_csum)
    return frame


def _parse_untagged_ipv4(mv: memoryview, verify_csum: bool) -> ParsedFrame:
    """The frame the engine sees most, Ethernet and IPv4 in one unpack: the same fields as
    parse_ethernet + parse_ipv4 give, without their intermediate objects."""
    eth_dst, eth_src, _, ver_ihl, tos, total_len, ident, frag, ttl, proto, _csum, src, dst = \
        _ETH_IPV4.unpack_from(mv, 0)
    frame = ParsedFrame()
    frame.eth_dst = eth_dst
    frame.eth_src = eth_src
    frame.ethertype = ETHERTYPE_IPV4
    frame.l3_offset = ETH_HLEN
    lengths = ipv4_lengths(mv, ETH_HLEN, ver_ihl, total_len, verify_csum)
    if isinstance(lengths, DropReason):
        frame.drop_reason = lengths
        return frame
    header_len, total_len = lengths
    frame.ip_version = 4
    frame.ip_src = src
    frame.ip_dst = dst
    frame.ttl = ttl
    frame.tos = tos
    frame.ip_id = ident
    frame.df = bool(frag & IP_DF)
    frame.mf = mf = bool(frag & IP_MF)
    frame.frag_offset = offset = (frag & IP_OFFMASK) * 8
    frame.ip_header_len = header_len
    frame.ip_options_len = header_len - IPV4_HLEN
    frame.ip_len = total_len
    frame.l4_proto = proto
    frame.l4_offset = ETH_HLEN + header_len
    frame.l4_len = total_len - header_len
    if not mf and not offset:
        _parse_l4(mv, frame, verify_csum)
    return frame


def _parse_ipv4_layer(mv: memoryview, l3: int, frame: ParsedFrame, verify_csum: bool) -> None:
    hdr = parse_ipv4(mv, l3, verify_csum)
    if isinstance(hdr, DropReason):
        frame.drop_reason = hdr
        return
    frame.ip_version = 4
    frame.ip_src = hdr.src
    frame.ip_dst = hdr.dst
    frame.ttl = hdr.ttl
    frame.tos = hdr.tos
    frame.ip_id = hdr.ident
    frame.df = hdr.df
    frame.mf = hdr.mf
    frame.frag_offset = hdr.frag_offset
    frame.ip_header_len = hdr.header_len
    frame.ip_options_len = hdr.header_len - 20
    frame.ip_len = hdr.total_len
    frame.l4_proto = hdr.proto
    frame.l4_offset = l3 + hdr.header_len
    frame.l4_len = hdr.total_len - hdr.header_len


def _parse_ipv6_layer(mv: memoryview, l3: int, frame: ParsedFrame) -> None:
    hdr = parse_ipv6(mv, l3)
    if isinstance(hdr, DropReason):
        frame.drop_reason = hdr
        return
    frame.ip_version = 6
    frame.ip_src = hdr.src
    frame.ip_dst = hdr.dst
    frame.ttl = hdr.hop_limit
    frame.tos = hdr.traffic_class
    frame.flow_label = hdr.flow_label
    frame.ext_headers = hdr.ext_headers
    frame.ip_header_len = IPV6_HLEN + hdr.ext_len
    frame.ip_len = IPV6_HLEN + hdr.payload_len
    frame.l4_proto = hdr.upper_proto
    frame.l4_offset = l3 + IPV6_HLEN + hdr.ext_len
    frame.l4_len = hdr.payload_len - hdr.ext_len
    frag = hdr.fragment
    if frag is not None:
        frame.ipv6_fragment = frag
        frame.ip_id = frag.ident
        frame.mf = frag.more
        frame.frag_offset = frag.offset


def _parse_l4(mv: memoryview, frame: ParsedFrame, verify_csum: bool) -> None:
    proto = frame.l4_proto
    off = frame.l4_offset
    length = frame.l4_len
    if proto == IPPROTO_TCP:
        result = parse_tcp(mv, off, length)
        if isinstance(result, DropReason):
            frame.drop_reason = result
            return
        frame.tcp, frame.tcp_header_len = result
        frame.tcp_checksum = (mv[off + TCP_CSUM_OFFSET] << 8) | mv[off + TCP_CSUM_OFFSET + 1]
        if verify_csum:
            pseudo = pseudo_header_sum(frame.ip_src, frame.ip_dst, IPPROTO_TCP, length)
            if ones_sum(mv[off:off + length], pseudo) != 0xFFFF:
                frame.drop_reason = DropReason.TCP_BAD_CHECKSUM
                return
            frame.csum_verified = True
    elif proto == IPPROTO_ICMP and frame.ip_version == 4:
        icmp = parse_icmpv4(mv, off, length, verify_csum)
        if isinstance(icmp, DropReason):
            frame.drop_reason = icmp
        else:
            frame.icmp = icmp
    elif proto == IPPROTO_ICMPV6 and frame.ip_version == 6:
        icmp6 = parse_icmpv6(mv, off, length, frame.ip_src, frame.ip_dst, verify_csum)
        if isinstance(icmp6, DropReason):
            frame.drop_reason = icmp6
        else:
            frame.icmp = icmp6


class PartialCsumFrame(NamedTuple):
    """A frame whose TCP checksum is left to the device, as a virtio-net NEEDS_CSUM header says:
    the device sums from `csum_start` to the end and stores the result at csum_start+csum_offset."""

    data: bytearray
    csum_start: int
    csum_offset: int


def build_ip_frame(
    eth_src: bytes,
    eth_dst: bytes,
    src_ip: bytes,
    dst_ip: bytes,
    proto: int,
    l4: _Buffer,
    *,
    ttl: int = 64,
    tos: int = 0,
    ip_id: int = 0,
    df: bool = True,
    flow_label: int = 0,
) -> bytearray:
    """Ethernet + IPv4 or IPv6 (chosen by address length) around a ready transport message."""
    ip: bytes | bytearray
    if len(src_ip) == 4:
        eth = build_ethernet(eth_dst, eth_src, ETHERTYPE_IPV4)
        ip = build_ipv4_header(src_ip, dst_ip, proto, len(l4), ttl=ttl, tos=tos, ident=ip_id, df=df)
    else:
        eth = build_ethernet(eth_dst, eth_src, ETHERTYPE_IPV6)
        ip = build_ipv6_header(
            src_ip, dst_ip, proto, len(l4), hop_limit=ttl, traffic_class=tos, flow_label=flow_label
        )
    out = bytearray(eth)
    out += ip
    out += l4
    return out


def build_tcp_frame(
    eth_src: bytes,
    eth_dst: bytes,
    src_ip: bytes,
    dst_ip: bytes,
    segment: Segment,
    *,
    ttl: int = 64,
    tos: int = 0,
    ip_id: int = 0,
    df: bool = True,
    flow_label: int = 0,
) -> bytearray:
    """A complete TCP frame with IP and TCP checksums filled in."""
    if len(src_ip) == 4:
        return build_tcp_ipv4_frame(eth_src, eth_dst, src_ip, dst_ip, segment, ttl, tos, ip_id, df, True)
    tcp = build_tcp_segment(segment, src_ip, dst_ip)
    return build_ip_frame(
        eth_src, eth_dst, src_ip, dst_ip, IPPROTO_TCP, tcp,
        ttl=ttl, tos=tos, ip_id=ip_id, df=df, flow_label=flow_label,
    )


def build_tcp_ipv4_frame(eth_src: bytes, eth_dst: bytes, src_ip: bytes, dst_ip: bytes, segment: Segment,
                         ttl: int, tos: int, ip_id: int, df: bool, checksum: bool) -> bytearray:
    """An untagged Ethernet + IPv4 TCP frame in one buffer, its payload copied once (a memoryview
    payload is read, not kept). Without `checksum` the TCP field holds the pseudo-header sum
    for the device to complete (CHECKSUM_PARTIAL, from byte 34).

    The headers are laid out by one struct pack, the IPv4 header checksum summed from the field
    values: with the timestamp option in it for a segment with no other option (every data segment
    and ACK once a connection is up), any other option set (a SYN's, SACK blocks) built by the TCP
    codec's `build_options` and written in after it.
    """
    opts = segment.options
    payload = segment.payload
    ts = opts.timestamp
    options = b""
    if opts.mss is not None or opts.wscale is not None or opts.sack_permitted or opts.sack_blocks:
        options = build_options(opts)
        header_len = TCP_HLEN + len(options)
    else:
        header_len = 20 if ts is None else 32
    tcp_len = header_len + len(payload)
    total_len = IPV4_HLEN + tcp_len
    if total_len > 0xFFFF:
        total_len = 0  # a TSO super-packet over 64 KiB: the length field cannot hold it (BIG TCP)
    ip_id &= 0xFFFF
    frag = IP_DF if df else 0
    # 2**16 == 1 modulo 0xFFFF, so each address read as one integer sums like its two 16-bit words
    addresses = int.from_bytes(src_ip, "big") + int.from_bytes(dst_ip, "big")
    # checksum.fold of a positive sum: its remainder modulo 0xFFFF, or 0xFFFF for a multiple of it
    ip_csum = ~((((_IPV4_VER_IHL << 8 | tos) + total_len + ip_id + frag + (ttl << 8 | IPPROTO_TCP) + addresses)
                 % 0xFFFF) or 0xFFFF) & 0xFFFF
    pseudo = ((addresses + IPPROTO_TCP + tcp_len) % 0xFFFF) or 0xFFFF
    frame = bytearray(_ETH_IPV4_LEN + tcp_len)
    fields = (eth_dst, eth_src, ETHERTYPE_IPV4, _IPV4_VER_IHL, tos, total_len, ip_id, frag, ttl, IPPROTO_TCP, ip_csum,
              src_ip, dst_ip, segment.src_port, segment.dst_port, segment.seq & 0xFFFFFFFF, segment.ack & 0xFFFFFFFF,
              header_len << 2, segment.flags & 0xFF, segment.window, pseudo, segment.urg_ptr)
    if options:
        _ETH_IPV4_TCP.pack_into(frame, 0, *fields)
        frame[_ETH_IPV4_LEN + TCP_HLEN:_ETH_IPV4_LEN + header_len] = options
    elif ts is None:
        _ETH_IPV4_TCP.pack_into(frame, 0, *fields)
    else:
        _ETH_IPV4_TCP_TS.pack_into(frame, 0, *fields, _NOP_NOP_TS_WORD, ts[0], ts[1])
    if payload:
        frame[_ETH_IPV4_LEN + header_len:] = payload
    if checksum:
        # the field holds the pseudo-header sum already: summing the segment as it is covers both
        _U16.pack_into(frame, _ETH_IPV4_LEN + TCP_CSUM_OFFSET, internet_checksum(memoryview(frame)[_ETH_IPV4_LEN:]))
    return frame


def build_tcp_frame_partial(
    eth_src: bytes,
    eth_dst: bytes,
    src_ip: bytes,
    dst_ip: bytes,
    segment: Segment,
    *,
    ttl: int = 64,
    tos: int = 0,
    ip_id: int = 0,
    df: bool = True,
    flow_label: int = 0,
) -> PartialCsumFrame:
    """Like `build_tcp_frame` but with the TCP checksum left to the device (the field holds
    the pseudo-header sum, as Linux CHECKSUM_PARTIAL does)."""
    if len(src_ip) == 4:
        frame = build_tcp_ipv4_frame(eth_src, eth_dst, src_ip, dst_ip, segment, ttl, tos, ip_id, df, False)
        return PartialCsumFrame(frame, _ETH_IPV4_LEN, TCP_CSUM_OFFSET)
    tcp = build_tcp_segment(segment, src_ip, dst_ip, checksum=False)
    data = build_ip_frame(
        eth_src, eth_dst, src_ip, dst_ip, IPPROTO_TCP, tcp,
        ttl=ttl, tos=tos, ip_id=ip_id, df=df, flow_label=flow_label,
    )
    return PartialCsumFrame(data, len(data) - len(tcp), TCP_CSUM_OFFSET)
