"""The endpoint core's demultiplexing, on crafted frames: what it takes, what it leaves to the host."""
from __future__ import annotations

import pytest

from toe_engine.codec import build_tcp_frame, parse_frame
from toe_engine.endpoint import EndpointConfig, EndpointCore
from toe_engine.segment import ACK, SYN, Segment, TcpOptions
from toe_engine.testing import IP_B, MAC_A, MAC_B

BROADCAST = bytes([192, 0, 2, 255])


def core() -> EndpointCore:
    return EndpointCore(EndpointConfig(MAC_B, (IP_B,), services={7: "echo"}, secret=b"t",
                                       subnet_broadcasts=frozenset({BROADCAST})))


def syn_from(src: bytes, dport: int = 7) -> bytes:
    return bytes(build_tcp_frame(MAC_A, MAC_B, src, IP_B, Segment(40000, dport, 1, 0, SYN, 65535, b"",
                                                                  TcpOptions(mss=1460))))


def test_a_syn_to_a_service_is_answered_by_the_engine() -> None:
    c = core()
    assert c.from_wire(syn_from(bytes([192, 0, 2, 1])), 1.0) is True
    (reply,) = c.poll_wire()
    seg = parse_frame(bytes(reply.frame), verify_csum=False).tcp
    assert seg is not None and seg.flags == SYN | ACK and seg.ack == 2


@pytest.mark.parametrize("src", [bytes([224, 0, 0, 1]), bytes([255, 255, 255, 255]), BROADCAST, bytes([0, 0, 0, 0])])
def test_a_syn_from_a_broadcast_or_multicast_source_is_dropped(src: bytes) -> None:
    """MUST-63: a SYN from an invalid source address is rejected silently."""
    c = core()
    assert c.from_wire(syn_from(src), 1.0) is True
    assert c.poll_wire() == []
    assert c.counters["rx_invalid_source"] == 1
    assert c.counters["conn_offloaded"] == 0


def test_other_ports_and_other_protocols_go_to_the_host() -> None:
    c = core()
    assert c.from_wire(syn_from(bytes([192, 0, 2, 1]), dport=22), 1.0) is False
    assert c.poll_wire() == []


def test_a_truncated_frame_for_us_is_counted_not_raised() -> None:
    c = core()
    frame = syn_from(bytes([192, 0, 2, 1]))
    assert c.from_wire(frame[:40], 1.0) in (True, False)
    assert c.counters["rx_malformed"] == 1
