"""Script packets against wire segments: relative sequence numbers through the ISN, options, windows."""
from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from scenarios.pkt.model import Packet, TcpOption
from scenarios.pkt.parse import parse
from scenarios.pkt.segments import MappingError, SeqMap, describe, inbound, live_options, mismatch

ISN = 3_000_000_000


def packet(line: str) -> Packet:
    (event,) = parse(f"+0 {line}\n").events
    assert isinstance(event.action, Packet), event.action
    return event.action


def frame(flags: str, seq: int, ack: int = 0, window: int = 65535, options: list | None = None,
          payload: bytes = b"", ttl: int = 64) -> Ether:
    tcp = TCP(sport=8080, dport=40000, flags=flags, seq=seq, ack=ack, window=window, options=options or [])
    return Ether(bytes(Ether() / IP(src="10.0.0.2", dst="10.0.0.1", ttl=ttl) / tcp / Raw(payload)))


def synack_seen() -> SeqMap:
    seqmap = SeqMap()
    assert mismatch(packet("> S. 0:0(0) ack 1 <mss 1460>"), frame("SA", ISN, 1, options=[("MSS", 1460)]), seqmap) is None
    return seqmap


def test_the_synack_fixes_the_offset_and_later_lines_are_relative_to_it() -> None:
    seqmap = synack_seen()
    assert seqmap.local_offset == ISN
    assert mismatch(packet("> P. 1:101(100) ack 1"), frame("PA", ISN + 1, 1, payload=bytes(100)), seqmap) is None
    problem = mismatch(packet("> P. 1:101(100) ack 1"), frame("PA", ISN + 2, 1, payload=bytes(100)), seqmap)
    assert problem == "seq 2 where the script has 1"


def test_relative_numbers_wrap_around_the_sequence_space() -> None:
    seqmap = SeqMap()
    top = (1 << 32) - 10
    assert mismatch(packet("> S. 0:0(0) ack 1"), frame("SA", top, 1), seqmap) is None
    assert mismatch(packet("> . 20:20(0) ack 1"), frame("A", 10, 1), seqmap) is None


def test_inbound_acks_and_sack_blocks_go_through_the_offset_and_own_seq_does_not() -> None:
    seqmap = synack_seen()
    tcp = inbound(packet("< . 1:1(0) ack 101 win 257 <sack 201:301>"), seqmap, sport=40000, dport=8080)
    assert (tcp.seq, tcp.ack, tcp.window) == (1, ISN + 101, 257)
    assert dict(tcp.options)["SAck"] == (ISN + 201, ISN + 301)


def test_an_ack_before_any_synack_cannot_be_mapped() -> None:
    with pytest.raises(MappingError, match="no `>` SYN"):
        inbound(packet("< . 1:1(0) ack 1 win 257"), SeqMap(), sport=1, dport=2)


@pytest.mark.parametrize("line, got, problem", [
    ("> . 1:1(0) ack 5", frame("A", ISN + 1, 6), "ack 6 where the script has 5"),
    ("> . 1:1(0) ack 1", frame("PA", ISN + 1, 1), "flags P. where the script has ."),
    ("> . 1:1(0) ack 1 win 1000", frame("A", ISN + 1, 1, window=999), "win 999 where the script has 1000"),
    ("> . 1:1(0) ack 1 win 100~200", frame("A", ISN + 1, 1, window=201), "win 201 where the script has 100~200"),
    ("> P. 1:11(10) ack 1", frame("PA", ISN + 1, 1, payload=bytes(9)), "9 bytes of data where the script has 10"),
    ("> . 1:1(0) ack 1 <nop,nop,TS val 5 ecr 7>", frame("A", ISN + 1, 1, options=[("NOP", None), ("NOP", None),
                                                                                    ("Timestamp", (99, 8))]),
     "TS ecr 8 where the script has 7"),
    ("> . 1:1(0) ack 1 <mss 1460>", frame("A", ISN + 1, 1, options=[("NOP", None), ("WScale", 7)]),
     "options <nop,wscale 7> where the script has <mss 1460>"),
    ("> P. 1:2(1) ack 1 ttl 7", frame("PA", ISN + 1, 1, payload=b"x", ttl=64), "ttl 64 where the script has 7"),
])
def test_a_wrong_segment_is_named_by_what_differs(line: str, got: Ether, problem: str) -> None:
    assert mismatch(packet(line), got, synack_seen()) == problem


def test_wildcards_and_optional_flags_accept_either_form() -> None:
    seqmap = synack_seen()
    assert mismatch(packet("> . 1:1(0) ack 1 <...>"), frame("A", ISN + 1, 1, options=[("NOP", None)]), seqmap) is None
    assert mismatch(packet("> R[.] 1:1(0)"), frame("R", ISN + 1), seqmap) is None
    assert mismatch(packet("> R[.] 1:1(0)"), frame("RA", ISN + 1, 1), seqmap) is None
    assert mismatch(packet("> R[.] 1:1(0)"), frame("A", ISN + 1, 1), seqmap) is not None
    assert mismatch(packet("> . 1:1(0) ack 1"), frame("A", ISN + 1, 1, window=5), seqmap) is None  # win unchecked


def test_received_options_are_read_from_the_wire_bytes_in_order() -> None:
    got = frame("SA", ISN, 1, options=[("MSS", 1460), ("NOP", None), ("WScale", 7), ("SAckOK", b""),
                                       ("Timestamp", (5, 6))])
    assert live_options(got) == [TcpOption("mss", (1460,)), TcpOption("nop"), TcpOption("wscale", (7,)),
                                 TcpOption("sackOK"), TcpOption("TS", (5, 6))]
    seqmap = SeqMap(local_offset=ISN)
    assert describe(got, seqmap).startswith("S. 0:0(0) ack 1 win 65535 <mss 1460,nop,wscale 7,sackOK,TS val 5 ecr 6")


def test_ip_options_are_checked_as_bytes() -> None:
    from scapy.layers.inet import IPOption_NOP
    seqmap = synack_seen()
    tcp = TCP(sport=8080, dport=40000, flags="PA", seq=ISN + 1, ack=1) / Raw(b"x")
    with_nops = Ether(bytes(Ether() / IP(src="10.0.0.2", dst="10.0.0.1", options=[IPOption_NOP()] * 4) / tcp))
    assert mismatch(packet("> P. 1:2(1) ack 1 ipopts 01010101"), with_nops, seqmap) is None
    assert mismatch(packet("> P. 1:2(1) ack 1 ipopts 01010100"), with_nops, seqmap) == (
        "IP options 01010101 where the script has 01010100")
    assert "IP options none" in mismatch(packet("> P. 1:2(1) ack 1 ipopts 01010101"),
                                         frame("PA", ISN + 1, 1, payload=b"x"), seqmap)
