"""Wire codec: round trips, Scapy cross-checks, ICMP/ARP/IPv6 details and malformed input."""
from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, IPOption_NOP
from scapy.layers.inet6 import IPv6, ICMPv6PacketTooBig, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop
from scapy.layers.l2 import ARP, Dot1Q, Ether

from toe_engine.codec import DropReason, build_ip_frame, build_tcp_frame, build_tcp_frame_partial, parse_frame
from toe_engine.codec.arp import ARP_REPLY, ArpPacket, build_arp
from toe_engine.codec.ethernet import ETHERTYPE_ARP, build_ethernet
from toe_engine.codec.icmp import build_echo, build_frag_needed, build_packet_too_big
from toe_engine.counters import Counters
from toe_engine.offload import complete_partial_checksum, rx_parse
from toe_engine.segment import ACK, PSH, SYN, Segment, TcpOptions

MAC_A, MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
V4 = (socket.inet_pton(socket.AF_INET, "10.0.0.1"), socket.inet_pton(socket.AF_INET, "10.0.0.2"))
V6 = (socket.inet_pton(socket.AF_INET6, "fd00::1"), socket.inet_pton(socket.AF_INET6, "fd00::2"))

u32 = st.integers(0, 0xFFFFFFFF)
option_sets = st.builds(
    TcpOptions,
    mss=st.none() | st.integers(0, 0xFFFF),
    wscale=st.none() | st.integers(0, 14),
    sack_permitted=st.booleans(),
    sack_blocks=st.lists(st.tuples(u32, u32), max_size=3).map(tuple),
    timestamp=st.none() | st.tuples(u32, u32),
)
segments = st.builds(
    Segment,
    src_port=st.integers(0, 0xFFFF),
    dst_port=st.integers(0, 0xFFFF),
    seq=u32,
    ack=u32,
    flags=st.integers(0, 0xFF),
    window=st.integers(0, 0xFFFF),
    payload=st.binary(max_size=1500),
    options=option_sets,
    urg_ptr=st.integers(0, 0xFFFF),
)


def fits(seg: Segment) -> bool:
    opts = seg.options
    size = 4 * (opts.mss is not None) + 12 * (opts.timestamp is not None)
    size += 4 * (opts.sack_permitted and opts.timestamp is None) + 4 * (opts.wscale is not None)
    size += (4 + 8 * len(opts.sack_blocks)) if opts.sack_blocks else 0
    return size <= 40


@settings(max_examples=300, deadline=None)
@given(segments, st.booleans())
def test_tcp_round_trip(seg: Segment, v6: bool) -> None:
    if not fits(seg):
        return
    src, dst = V6 if v6 else V4
    frame = build_tcp_frame(MAC_A, MAC_B, src, dst, seg, ttl=33, tos=0x10, ip_id=77)
    parsed = parse_frame(frame)
    assert parsed.drop_reason is None and parsed.csum_verified
    assert parsed.tcp == seg
    assert (parsed.ip_src, parsed.ip_dst, parsed.ttl, parsed.tos) == (src, dst, 33, 0x10)
    assert parsed.payload_offset + len(seg.payload) == len(frame)


@settings(max_examples=50, deadline=None)
@given(segments)
def test_scapy_agrees_on_bytes(seg: Segment) -> None:
    if not fits(seg):
        return
    frame = bytes(build_tcp_frame(MAC_A, MAC_B, *V4, seg, ip_id=5))
    pkt = Ether(frame)
    del pkt[IP].chksum, pkt[TCP].chksum
    assert bytes(Ether(bytes(pkt))) == frame


def test_scapy_built_frames_parse() -> None:
    opts = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 2)), ("NOP", None), ("WScale", 7)]
    pkt = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src="10.0.0.1", dst="10.0.0.2", id=9) / \
        TCP(sport=1234, dport=80, seq=10, ack=0, flags="S", window=64240, options=opts)
    parsed = parse_frame(bytes(pkt))
    assert parsed.drop_reason is None and parsed.tcp is not None
    assert parsed.tcp.flags == SYN and parsed.ip_id == 9 and parsed.df is False
    assert parsed.tcp.options == TcpOptions(mss=1460, wscale=7, sack_permitted=True, timestamp=(1, 2))
    sack = Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(options=[("NOP", None), ("NOP", None), ("SAck", (5, 9, 20, 30)), ("EOL", None)])
    assert parse_frame(bytes(sack)).tcp.options.sack_blocks == ((5, 9), (20, 30))  # type: ignore[union-attr]
    unknown = Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(options=[(30, b"\x01\x02"), ("MSS", 1)])
    got = parse_frame(bytes(unknown)).tcp.options  # type: ignore[union-attr]
    assert got.unknown == 1 and got.mss == 1


def test_ipv4_options_skipped_and_vlan() -> None:
    pkt = Ether() / Dot1Q(vlan=42) / IP(src="10.0.0.1", dst="10.0.0.2", options=[IPOption_NOP()] * 4, tos=3, flags="DF") / TCP() / b"hi"
    parsed = parse_frame(bytes(pkt))
    assert parsed.drop_reason is None
    assert parsed.vlan_tci == 42 and parsed.l3_offset == 18
    assert parsed.ip_options_len == 4 and parsed.tos == 3 and parsed.df
    assert bytes(parsed.tcp.payload) == b"hi"  # type: ignore[union-attr]


def test_ipv6_extension_headers() -> None:
    pkt = Ether() / IPv6(src="fd00::1", dst="fd00::2", tc=0x28, fl=0x12345, hlim=9) / IPv6ExtHdrHopByHop() / \
        IPv6ExtHdrDestOpt() / TCP(sport=1, dport=2) / b"data"
    parsed = parse_frame(bytes(pkt))
    assert parsed.drop_reason is None
    assert parsed.ext_headers == (0, 60) and parsed.ip_header_len == 56
    assert (parsed.tos, parsed.flow_label, parsed.ttl) == (0x28, 0x12345, 9)
    assert bytes(parsed.tcp.payload) == b"data"  # type: ignore[union-attr]


def test_ipv6_fragment_exposed() -> None:
    pkt = Ether() / IPv6(src="fd00::1", dst="fd00::2") / IPv6ExtHdrFragment(offset=10, m=1, id=0xABCDEF) / (b"x" * 16)
    parsed = parse_frame(bytes(pkt))
    assert parsed.drop_reason is None and parsed.tcp is None
    assert parsed.ipv6_fragment is not None
    assert (parsed.ipv6_fragment.offset, parsed.ipv6_fragment.more, parsed.ip_id) == (80, True, 0xABCDEF)
    assert parsed.is_fragment


def test_ipv4_fragment_not_parsed_as_tcp() -> None:
    pkt = Ether() / IP(src="10.0.0.1", dst="10.0.0.2", flags="MF", frag=0, id=3) / TCP() / (b"x" * 20)
    parsed = parse_frame(bytes(pkt))
    assert parsed.drop_reason is None and parsed.tcp is None and parsed.mf and parsed.l4_proto == 6


def test_icmp_frag_needed_quotes_tcp() -> None:
    original = bytes(build_tcp_frame(MAC_A, MAC_B, *V4, Segment(4321, 80, 999, 0, ACK, 100, b"z" * 1400)))[14:]
    frame = build_ip_frame(MAC_B, MAC_A, V4[1], V4[0], 1, build_frag_needed(1280, original))
    parsed = parse_frame(frame)
    assert parsed.drop_reason is None and parsed.icmp is not None
    icmp = parsed.icmp
    assert (icmp.type, icmp.code, icmp.mtu) == (3, 4, 1280)
    assert icmp.quoted is not None
    assert (icmp.quoted.src, icmp.quoted.dst, icmp.quoted.src_port, icmp.quoted.dst_port, icmp.quoted.tcp_seq) == \
        (V4[0], V4[1], 4321, 80, 999)
    assert Ether(bytes(frame))[ICMP].nexthopmtu == 1280


def test_icmpv6_packet_too_big() -> None:
    original = bytes(build_tcp_frame(MAC_A, MAC_B, *V6, Segment(4321, 80, 7, 0, ACK, 100, b"z" * 1400)))[14:]
    message = build_packet_too_big(V6[1], V6[0], 1280, original)
    frame = build_ip_frame(MAC_B, MAC_A, V6[1], V6[0], 58, message)
    parsed = parse_frame(frame)
    assert parsed.drop_reason is None and parsed.icmp is not None
    assert parsed.icmp.mtu == 1280 and parsed.icmp.quoted.tcp_seq == 7  # type: ignore[union-attr]
    assert len(frame) - 14 <= 1280
    scapy_view = Ether(bytes(frame))
    assert scapy_view[ICMPv6PacketTooBig].mtu == 1280
    cksum = scapy_view[ICMPv6PacketTooBig].cksum
    del scapy_view[ICMPv6PacketTooBig].cksum
    assert Ether(bytes(scapy_view))[ICMPv6PacketTooBig].cksum == cksum


def test_echo_and_time_exceeded_from_scapy() -> None:
    frame = build_ip_frame(MAC_A, MAC_B, *V4, 1, build_echo(7, 3, b"ping"))
    icmp = parse_frame(frame).icmp
    assert icmp is not None and (icmp.type, icmp.echo_ident, icmp.echo_seq, bytes(icmp.body)) == (8, 7, 3, b"ping")
    te = Ether() / IP(src="10.0.0.9", dst="10.0.0.1") / ICMP(type=11) / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=5, dport=6, seq=77)
    quoted = parse_frame(bytes(te)).icmp.quoted  # type: ignore[union-attr]
    assert quoted is not None and (quoted.src_port, quoted.dst_port, quoted.tcp_seq) == (5, 6, 77)


def test_arp_round_trip() -> None:
    arp = ArpPacket(ARP_REPLY, MAC_A, V4[0], MAC_B, V4[1])
    frame = build_ethernet(MAC_B, MAC_A, ETHERTYPE_ARP) + build_arp(arp)
    assert parse_frame(frame).arp == arp
    assert Ether(frame)[ARP].psrc == "10.0.0.1"


def test_partial_checksum_is_completed_like_a_device() -> None:
    seg = Segment(1, 2, 3, 4, ACK | PSH, 5, b"payload" * 100)
    partial = build_tcp_frame_partial(MAC_A, MAC_B, *V4, seg)
    assert parse_frame(partial.data).drop_reason is DropReason.TCP_BAD_CHECKSUM
    complete_partial_checksum(partial.data, partial.csum_start, partial.csum_offset)
    assert partial.data == build_tcp_frame(MAC_A, MAC_B, *V4, seg)
    assert (partial.csum_start, partial.csum_offset) == (34, 16)


# --- malformed input: never an exception, always a reason ---------------------------------

GOOD_V4 = bytes(build_tcp_frame(MAC_A, MAC_B, *V4, Segment(1, 2, 3, 4, ACK, 5, b"abc", TcpOptions(mss=1460, timestamp=(1, 2)))))
GOOD_V6 = bytes(build_tcp_frame(MAC_A, MAC_B, *V6, Segment(1, 2, 3, 4, ACK, 5, b"abc", TcpOptions(timestamp=(1, 2)))))


@pytest.mark.parametrize("good", [GOOD_V4, GOOD_V6], ids=["ipv4", "ipv6"])
def test_truncated_at_every_length(good: bytes) -> None:
    for length in range(len(good)):
        parsed = parse_frame(good[:length])
        assert parsed.drop_reason is not None, length
        assert parsed.tcp is None


def with_ip_checksum(frame: bytearray) -> bytes:
    from toe_engine.codec.ipv4 import set_ipv4_checksum
    set_ipv4_checksum(frame, 14, (frame[14] & 0x0F) * 4)
    return bytes(frame)


@pytest.mark.parametrize("ihl", [0, 1, 4, 15])
def test_bad_ihl(ihl: int) -> None:
    frame = bytearray(GOOD_V4)
    frame[14] = 0x40 | ihl
    assert parse_frame(frame).drop_reason is DropReason.IPV4_BAD_IHL


def test_bad_total_length() -> None:
    frame = bytearray(GOOD_V4)
    struct.pack_into("!H", frame, 16, len(frame))
    assert parse_frame(with_ip_checksum(frame)).drop_reason is DropReason.IPV4_BAD_TOTAL_LEN


@pytest.mark.parametrize("data_offset", [0, 4, 15])
def test_bad_data_offset(data_offset: int) -> None:
    frame = bytearray(GOOD_V4)
    frame[34 + 12] = data_offset << 4
    assert parse_frame(frame).drop_reason is DropReason.TCP_BAD_DATA_OFFSET


@pytest.mark.parametrize("option", [b"\x02\x00\x00\x00", b"\x02\x01\x00\x00", b"\x01\x01\x01\x08"])
def test_bad_option_length(option: bytes) -> None:
    frame = bytearray(GOOD_V4)
    frame[54:58] = option  # the MSS option
    assert parse_frame(frame, verify_csum=False).drop_reason is DropReason.TCP_BAD_OPTION


@pytest.mark.parametrize("good", [GOOD_V4, GOOD_V6], ids=["ipv4", "ipv6"])
def test_bad_checksum_is_counted(good: bytes) -> None:
    frame = bytearray(good)
    frame[-1] ^= 0xFF
    counters = Counters()
    parsed = rx_parse(frame, counters)
    assert parsed.drop_reason is DropReason.TCP_BAD_CHECKSUM
    assert counters["rx_csum_errors"] == 1 and counters["rx_frames"] == 1
    assert rx_parse(frame, counters, data_valid=True).drop_reason is None
    frame = bytearray(GOOD_V4)
    frame[22] ^= 1  # IPv4 TTL, header checksum now wrong
    assert rx_parse(frame, counters).drop_reason is DropReason.IPV4_BAD_CHECKSUM
    rx_parse(b"\x00" * 10, counters)
    assert counters["rx_malformed"] == 1 and counters["rx_csum_errors"] == 2


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=120), st.integers(0, 200), st.sampled_from([GOOD_V4, GOOD_V6]))
def test_random_corruption_never_raises(noise: bytes, where: int, good: bytes) -> None:
    frame = bytearray(good)
    frame[where:where + len(noise)] = noise
    parse_frame(frame)
    parse_frame(frame, verify_csum=False)


@pytest.mark.parametrize("csum", [False, True])
@pytest.mark.parametrize("payload", [b"", b"x" * 7])
def test_a_syns_or_sacks_frame_is_the_general_builders_to_the_byte(csum: bool, payload: bytes) -> None:
    """build_tcp_ipv4_frame packs every header at once and writes a SYN's or SACK's options in after
    them: the bytes are those of the TCP segment builder behind Ethernet and IPv4 headers."""
    from toe_engine.codec.ethernet import ETH_HEADER, ETH_HLEN, ETHERTYPE_IPV4
    from toe_engine.codec.frame import build_tcp_ipv4_frame
    from toe_engine.codec.ipv4 import put_ipv4_header
    from toe_engine.codec.tcp import build_tcp_segment

    src, dst, mine, theirs = b"\x0a\x00\x00\x01", b"\xc0\xa8\x01\x02", b"m" * 6, b"n" * 6
    for opts in (TcpOptions(mss=1460, wscale=7, sack_permitted=True, timestamp=(1, 2)),
                 TcpOptions(mss=1460, wscale=0, sack_permitted=False, timestamp=(2**32 - 1, 0)),
                 TcpOptions(mss=536), TcpOptions(sack_permitted=True), TcpOptions(wscale=14),
                 TcpOptions(sack_blocks=((5, 9), (100, 2**32 - 1)), timestamp=(7, 8)),
                 TcpOptions(sack_blocks=((1, 2), (3, 4), (5, 6), (7, 8)))):
        seg = Segment(80, 40000, 123456, 2**32 - 5, SYN | ACK, 65535, payload, opts)
        expected = build_tcp_segment(seg, src, dst, checksum=csum, headroom=34)
        ETH_HEADER.pack_into(expected, 0, theirs, mine, ETHERTYPE_IPV4)
        put_ipv4_header(expected, ETH_HLEN, src, dst, 6, len(expected) - 34, 63, 0, 65535, True)
        assert bytes(build_tcp_ipv4_frame(mine, theirs, src, dst, seg, 63, 0, 65535, True, csum)) == bytes(expected)
    with pytest.raises(ValueError):  # more option bytes than a header holds, as the segment builder says
        build_tcp_ipv4_frame(mine, theirs, src, dst, Segment(80, 1, 0, 0, ACK, 0, b"", TcpOptions(
            sack_blocks=((1, 2), (3, 4), (5, 6), (7, 8)), timestamp=(1, 2))), 64, 0, 0, True, csum)
