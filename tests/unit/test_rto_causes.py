"""Each data RTO is counted under what it found (Timeouts._rto_cause), so a loss benchmark can say
which part of loss recovery left it to the timer. Chosen segments are lost on the two-stack
harness (10 ms each way) and the sender's cause counters must name the case, once each."""
from __future__ import annotations

from collections.abc import Callable

import pytest

from toe_engine.counters import STANDARD_COUNTERS
from toe_engine.segment import Segment
from toe_engine.tcp import TcpConfig
from toe_engine.tcp.testing import Harness, drop_copies

CAUSES = ("rto_repeated", "rto_lost_retransmit", "rto_lost_probe", "rto_few_in_flight", "rto_other")


def causes_after(cfg: TcpConfig, segments: int, drop: Callable[[int, int], Callable[[str, Segment], bool]],
                 duration: float = 8.0) -> dict[str, int]:
    """Send `segments` full segments from a with `drop(base, mss)` losing some; a's cause counters
    (the data must arrive whole, and every data RTO must have exactly one cause)."""
    h = Harness(cfg, TcpConfig())
    ca, cb = h.establish()
    tcb = h.a.connection(ca)
    assert tcb is not None
    base, mss = tcb.snd_nxt, tcb.snd_mss
    h.drop_if = drop(base, mss)
    data = bytes(range(256)) * (segments * mss // 256) + b"x" * (segments * mss % 256)
    h.a.send(ca, data)
    h.run(duration=duration)
    assert h.b.recv(cb) == data
    c = h.counters_a
    assert sum(c[name] for name in CAUSES) == c["rto_expired"]
    return {name: c[name] for name in CAUSES if c[name]}


def test_the_causes_are_standard_counters_so_a_benchmark_may_ask_for_them() -> None:
    assert set(CAUSES) <= set(STANDARD_COUNTERS)


def test_a_lost_probe_at_the_tail() -> None:
    """The last segment and the probe that resent it are both lost: the RTO found the probe unanswered."""
    assert causes_after(TcpConfig(nodelay=True), 10, lambda base, mss: drop_copies({9 * mss: 2}, base)) == {
        "rto_lost_probe": 1}


def test_a_lost_retransmission_with_nothing_sent_after_it() -> None:
    """RACK resent the first segment (two delivered after it), the resend was lost too and nothing
    left after it that could show RACK the loss: only the RTO could."""
    assert causes_after(TcpConfig(nodelay=True), 3, lambda base, mss: drop_copies({0: 2}, base)) == {
        "rto_lost_retransmit": 1}


def test_a_timeout_of_the_same_episode_again() -> None:
    """The resend after the first RTO is lost as well: the second RTO is a repeat, not a new cause."""
    assert causes_after(TcpConfig(nodelay=True), 3, lambda base, mss: drop_copies({0: 3}, base)) == {
        "rto_lost_retransmit": 1, "rto_repeated": 1}


def test_too_few_in_flight_for_duplicate_acks() -> None:
    """Without RACK-TLP three segments cannot draw three duplicate ACKs: the RTO repairs the first."""
    assert causes_after(TcpConfig(nodelay=True, loss_detection="dupack"), 3,
                        lambda base, mss: drop_copies({0: 1}, base)) == {"rto_few_in_flight": 1}


@pytest.mark.parametrize("loss_detection", ["dupack", "rack-tlp"])
def test_a_whole_window_of_acks_lost(loss_detection: str) -> None:
    """Every ACK of a ten-segment flight is lost (and the probe's): with duplicate ACKs only the RTO
    found none of the named cases; with RACK-TLP it found the probe unanswered."""
    resends_unanswered = 1 if loss_detection == "dupack" else 2  # the probe's ACK is lost too

    def drop(base: int, mss: int) -> Callable[[str, Segment], bool]:
        first_sends: set[int] = set()
        resends = [0]

        def rule(src: str, seg: Segment) -> bool:
            if src == "a" and seg.payload:
                resends[0] += seg.seq in first_sends
                first_sends.add(seg.seq)
            return src == "b" and not seg.payload and resends[0] < resends_unanswered
        return rule

    got = causes_after(TcpConfig(nodelay=True, loss_detection=loss_detection), 10, drop)
    assert got == ({"rto_other": 1} if loss_detection == "dupack" else {"rto_lost_probe": 1})


def test_an_frto_episode_ended_by_a_full_ack_leaves_rack_on() -> None:
    """A lone segment and its probe are lost; the RTO's resend is ACKed up to the recovery point,
    which ends F-RTO (a flag left set kept every later ACK off the in-order fast path until the
    next loss). The next loss is RACK's, not another RTO's."""
    h = Harness(TcpConfig(nodelay=True), TcpConfig())
    ca, cb = h.establish()
    tcb = h.a.connection(ca)
    assert tcb is not None and tcb.cfg.frto and tcb.sack_ok
    base, mss = tcb.snd_nxt, tcb.snd_mss
    h.drop_if = drop_copies({0: 2, 4 * mss: 1}, base)
    h.a.send(ca, b"1" * mss)
    h.run(duration=4)
    assert h.counters_a["rto_expired"] == 1 and tcb.snd_una == tcb.snd_nxt
    assert tcb.frto == 0
    h.a.send(ca, b"2" * (6 * mss))
    h.run(duration=4)
    assert h.b.recv(cb) == b"1" * mss + b"2" * (6 * mss)
    c = h.counters_a
    assert c["rto_expired"] == 1 and c["rack_retransmits"] == 1
