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
