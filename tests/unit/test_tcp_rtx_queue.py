"""The retransmission queue against a per-octet model: random sends, resends, SACKs, ACKs and loss
marks, after each of which the ranges must tile [SND.UNA, SND.NXT) and every byte total must be
what the model counts octet by octet."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from toe_engine.tcp.rtx_queue import LOST_BY_RACK, LOST_BY_RULE, RetransmitQueue

START = 1000

step = st.one_of(
    st.tuples(st.just("send"), st.integers(1, 300)),
    st.tuples(st.just("resend"), st.integers(0, 2000), st.integers(1, 300)),
    st.tuples(st.just("sack"), st.integers(0, 2000), st.integers(1, 300)),
    st.tuples(st.just("ack"), st.integers(0, 400)),
    st.tuples(st.just("lose"), st.integers(0, 2000), st.integers(1, 300)),
    st.tuples(st.just("lose_all")),
    st.tuples(st.just("tick")),
)


class Model:
    """What each octet in flight is: SACKed, lost, being resent."""

    def __init__(self) -> None:
        self.una = self.nxt = START
        self.sacked: set[int] = set()
        self.lost: set[int] = set()
        self.retrans: set[int] = set()

    def clip(self, start: int, end: int) -> range:
        return range(max(start, self.una), min(end, self.nxt))


def check(q: RetransmitQueue, m: Model) -> None:
    ranges = q.ranges
    if m.nxt > m.una:
        assert ranges[0].start == m.una and ranges[-1].end == m.nxt
    else:
        assert not ranges
    for a, b in zip(ranges, ranges[1:]):
        assert a.end == b.start and a.start < a.end
    octets = range(m.una, m.nxt)
    assert q.sacked == len(m.sacked)
    assert q.lost == len(m.lost - m.sacked)
    assert q.retrans == len(m.retrans - m.sacked)
    assert q.in_flight(m.nxt - m.una) == len(octets) - len(m.sacked) - len(m.lost - m.sacked) + len(m.retrans - m.sacked)
    for r in ranges:
        for o in (r.start, r.end - 1):
            assert r.sacked == (o in m.sacked)
            assert bool(r.lost) == (o in m.lost) or r.sacked
            assert r.retrans == (o in m.retrans) or r.sacked


@settings(max_examples=300, deadline=None)
@given(st.lists(step, max_size=40))
def test_queue_matches_an_octet_model(steps: list[tuple]) -> None:
    q, m = RetransmitQueue(), Model()
    now = 0.0
    for op, *args in steps:
        if op == "send":
            q.sent_new(m.nxt, m.nxt + args[0], now)
            m.nxt += args[0]
        elif op == "tick":
            now += 0.001
        elif op == "resend":
            span = m.clip(m.una + args[0], m.una + args[0] + args[1])
            if span:
                q.resent(span.start, span.stop, now)
                m.retrans |= {o for o in span if o not in m.sacked}
        elif op == "sack":
            span = m.clip(m.una + args[0], m.una + args[0] + args[1])
            if span:
                q.sack(span.start, span.stop)
                m.sacked |= set(span)
        elif op == "ack":
            una = min(m.una + args[0], m.nxt)
            q.ack(una)
            m.una = una
            for s in (m.sacked, m.lost, m.retrans):
                s -= set(range(START, una))
        elif op == "lose":
            span = m.clip(m.una + args[0], m.una + args[0] + args[1])
            if span:
                q.mark_range_lost(span.start, span.stop, LOST_BY_RULE)  # what is being resent is left alone
                m.lost |= {o for o in span if o not in m.sacked and o not in m.retrans}
        elif op == "lose_all":
            q.mark_all_lost()  # a timeout: every un-SACKed octet, resent or not
            unsacked = set(range(m.una, m.nxt)) - m.sacked
            m.lost |= unsacked
            m.retrans -= unsacked
        check(q, m)


def test_rack_marks_a_lost_retransmission_and_next_lost_finds_it_again() -> None:
    q = RetransmitQueue()
    q.sent_new(0, 3000, 0.0)
    q.mark_range_lost(0, 1000, LOST_BY_RULE)
    (first,) = q.resent(0, 1000, 0.1)
    assert q.next_lost() is None and q.in_flight(3000) == 3000
    q.mark_lost(first, LOST_BY_RACK)  # the retransmission was lost too
    assert q.next_lost() is first and first.lost == LOST_BY_RACK and q.in_flight(3000) == 2000


def test_ranges_sent_in_one_burst_merge_but_not_across_a_retransmission() -> None:
    q = RetransmitQueue()
    q.sent_new(0, 1000, 0.0)
    q.sent_new(1000, 2000, 0.0)
    assert len(q) == 1
    q.resent(0, 500, 0.0)
    q.sent_new(2000, 3000, 0.0)  # same instant, but a retransmission left in between
    assert len(q) == 3 and q.ranges[-1].order > q.ranges[0].order > q.ranges[1].order
    assert q.ranges[-1].sent_after(q.ranges[1]) and not q.ranges[1].sent_after(q.ranges[-1])
