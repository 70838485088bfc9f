"""The source_route scenario's option helpers: encoding, decoding, reversal and the pseudo-header, without root.

The scenario judges a target by comparing what it decodes from the wire with what these build,
so each is checked against RFC 791's layout byte by byte and against wrong answers.
"""
from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP, IPOption_LSRR, IPOption_RR, IPOption_SSRR
from scapy.layers.l2 import Ether

from scenarios.addresses import with_ip_options
from scenarios.source_route import (SourceRoute, application_route, checksum_between, completed_route, return_route,
                                    route_text, sent_route, source_route)
from scenarios.wire import ChecksumState

S, D, G1, G2 = "10.0.0.1", "10.0.0.2", "10.0.0.254", "10.0.0.253"


def frame(options: bytes = b"", src: str = D, dst: str = S) -> Ether:
    plain = Ether(bytes(Ether() / IP(src=src, dst=dst) / TCP(sport=7, dport=40000, flags="SA", seq=1, ack=2)))
    return with_ip_options(plain, options) if options else plain


def test_a_completed_route_is_rfc791_lsrr_with_the_pointer_past_the_last_hop() -> None:
    raw = completed_route([G1, G2])
    # type 131, length 3 + 2 * 4, pointer 12 (past the second address), the hops, one end-of-list to the word
    assert raw == bytes([131, 11, 12, 10, 0, 0, 254, 10, 0, 0, 253, 0])
    assert completed_route([G1]) == bytes([131, 7, 8, 10, 0, 0, 254, 0])


def test_a_strict_route_is_type_137_and_its_reversal_strict_too() -> None:
    assert completed_route([G1, G2], strict=True) == bytes([137, 11, 12, 10, 0, 0, 254, 10, 0, 0, 253, 0])
    assert return_route([G1, G2], S, "SSRR") == SourceRoute("SSRR", 4, (G1, S), G2)
    assert return_route([G1, G2], S, "SSRR") != return_route([G1, G2], S)


def test_an_application_route_starts_at_pointer_4() -> None:
    assert application_route([G1]) == bytes([131, 7, 4, 10, 0, 0, 254, 0])


def test_the_return_route_goes_to_the_last_hop_then_back_through_the_others_to_the_source() -> None:
    assert return_route([G1, G2], S) == SourceRoute("LSRR", 4, (G1, S), G2)
    assert return_route([G1], S) == SourceRoute("LSRR", 4, (S,), G1)
    three = return_route(["10.0.0.10", "10.0.0.11", "10.0.0.12"], S)
    assert three.dst == "10.0.0.12" and three.route == ("10.0.0.11", "10.0.0.10", S)
    with pytest.raises(ValueError, match="at least one hop"):
        return_route([], S)


def test_an_application_route_leaves_for_its_first_hop() -> None:
    assert sent_route([G1], S) == SourceRoute("LSRR", 4, (S,), G1)
    assert sent_route([G1, G2], S) == SourceRoute("LSRR", 4, (G2, S), G1)


def test_source_route_decodes_what_a_target_sent_and_tells_loose_from_strict() -> None:
    reversed_back = bytes(IPOption_LSRR(routers=[G1, S], pointer=4)) + b"\0"
    got = source_route(frame(reversed_back, dst=G2))
    assert got == return_route([G1, G2], S)
    strict = bytes(IPOption_SSRR(routers=[G1, S], pointer=4)) + b"\0"
    assert source_route(frame(strict, dst=G2)) == SourceRoute("SSRR", 4, (G1, S), G2)
    assert source_route(frame(strict, dst=G2)) != return_route([G1, G2], S)


def test_an_echoed_unreversed_or_missing_route_is_no_return_route() -> None:
    expected = return_route([G1, G2], S)
    echoed = frame(completed_route([G1, G2]), dst=S)  # the received option sent back as it came
    unreversed = frame(bytes(IPOption_LSRR(routers=[G2, S], pointer=4)) + b"\0", dst=G1)
    record_route = frame(bytes(IPOption_RR(routers=[G1, S], pointer=4)) + b"\0", dst=G2)
    assert source_route(echoed) != expected and source_route(unreversed) != expected
    assert source_route(record_route) is None and source_route(frame()) is None
    assert route_text(frame()) == f"to {S} with no source route"
    assert route_text(frame(bytes(IPOption_LSRR(routers=[G1, S], pointer=4)) + b"\0", dst=G2)) == \
        f"to {G2} with LSRR pointer 4 [{G1}, {S}]"
    assert route_text(None) == "nothing"


def test_the_checksum_is_judged_over_the_ultimate_destination_not_the_first_hop() -> None:
    # a segment checksummed over (D, S), sent to the first hop G2 with the route: right for S, wrong for G2
    over_ultimate = frame()
    routed = with_ip_options(Ether(bytes(over_ultimate)), bytes(IPOption_LSRR(routers=[G1, S], pointer=4)) + b"\0")
    routed[IP].dst = G2
    del routed[IP].chksum
    routed = Ether(bytes(routed))
    assert checksum_between(routed, D, S) is ChecksumState.CORRECT
    assert checksum_between(routed, D, G2) is ChecksumState.WRONG
