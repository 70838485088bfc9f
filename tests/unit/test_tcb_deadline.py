"""A connection's deadline is the earliest of its six timers, whichever of them it is."""
from __future__ import annotations

import itertools

import pytest

from toe_engine.tcp.testing import Harness

TIMERS = ("t_rtx", "t_delack", "t_persist", "t_keepalive", "t_close", "t_pace")
INF = float("inf")


@pytest.mark.parametrize("earliest", TIMERS)
def test_the_deadline_is_the_earliest_timer_wherever_it_sits(earliest: str) -> None:
    h = Harness()
    conn = h.a.connection(h.establish()[0])
    assert conn is not None
    for offset, name in enumerate(TIMERS):
        setattr(conn, name, 100.0 + offset)
    setattr(conn, earliest, 5.0)
    assert conn.deadline() == 5.0


def test_the_deadline_of_no_timer_is_infinite_and_ties_are_the_tied_time() -> None:
    h = Harness()
    conn = h.a.connection(h.establish()[0])
    assert conn is not None
    for name in TIMERS:
        setattr(conn, name, INF)
    assert conn.deadline() == INF
    for first, second in itertools.combinations(TIMERS, 2):
        for name in TIMERS:
            setattr(conn, name, INF)
        setattr(conn, first, 7.0)
        setattr(conn, second, 7.0)
        assert conn.deadline() == 7.0


def test_the_endpoints_deadline_is_the_earlier_of_its_timers_and_its_tables() -> None:
    from toe_engine.codec import build_tcp_frame
    from toe_engine.endpoint import EndpointConfig, EndpointCore
    from toe_engine.resources import ResourceConfig
    from toe_engine.segment import SYN, Segment, TcpOptions
    from toe_engine.testing import IP_A, IP_B, MAC_A, MAC_B

    core = EndpointCore(EndpointConfig(MAC_B, (IP_B,), services={80: "http"}, resources=ResourceConfig(capacity=4),
                                       secret=b"deadline"))
    core.neighbors.learn(IP_A, MAC_A)
    assert core.next_deadline() is None  # nothing pending anywhere
    syn = Segment(40000, 80, 1, 0, SYN, 65535, b"", TcpOptions(mss=1460))
    assert core.from_wire(build_tcp_frame(MAC_A, MAC_B, IP_A, IP_B, syn), 1.0, csum_ok=True)
    timer, embryonic = core.stack.next_timer(), core.resources.next_deadline()
    assert timer is not None and embryonic is not None and timer != embryonic  # the SYN-ACK's RTO, the embryonic timeout
    assert core.next_deadline() == min(timer, embryonic)
