"""The admission hook for the resource model: ACCEPT, PASS, DROP, RESET, COOKIE, release()."""
from __future__ import annotations

from toe_engine.segment import ACK, RST, SYN, FourTuple, Segment, TcpOptions
from toe_engine.tcp import Accepted, Admission, Closed, Connected, CookieParams, State, TcpConfig, TcpStack
from toe_engine.tcp.seqnum import MASK
from toe_engine.tcp.testing import IP_A, IP_B, BulkTransfer, Harness, pumping

SYN_SEG = Segment(4000, 80, 1000, 0, SYN, 8000, options=TcpOptions(mss=1400))


class Policy:
    def __init__(self, decision: Admission) -> None:
        self.decision = decision
        self.admitted: list[FourTuple] = []
        self.released: list[FourTuple] = []

    def admit(self, four_tuple: FourTuple, syn: Segment, now: float) -> Admission:
        self.admitted.append(four_tuple)
        return self.decision

    def release(self, four_tuple: FourTuple) -> None:
        self.released.append(four_tuple)


class Cookies(Policy):
    """A toy SYN cookie: the ISN is a function of the 4-tuple; the MSS rides in its low bits."""

    def __init__(self) -> None:
        super().__init__(Admission.COOKIE)

    @staticmethod
    def _base(ft: FourTuple) -> int:
        return (hash(ft) & 0xFFFFFF) << 8

    def cookie_isn(self, four_tuple: FourTuple, syn: Segment, now: float) -> int:
        return (self._base(four_tuple) | ((syn.options.mss or 536) >> 8)) & MASK

    def check_cookie(self, four_tuple: FourTuple, ack: Segment, now: float) -> CookieParams | None:
        isn = (ack.ack - 1) & MASK
        if isn & ~0xFF != self._base(four_tuple) & MASK:
            return None
        return CookieParams(mss=(isn & 0xFF) << 8, wscale=7, sack=True, timestamps=ack.options.timestamp is not None)


def one_syn(decision: Admission) -> tuple[TcpStack, Policy, bool, list[Segment]]:
    policy = Policy(decision)
    stack = TcpStack(admission=policy)
    stack.listen(None, 80)
    handled = stack.on_segment(IP_B, IP_A, SYN_SEG, 0.0)
    return stack, policy, handled, [o[2] for o in stack.poll_output()]


def test_accept_creates_tcb() -> None:
    stack, policy, handled, out = one_syn(Admission.ACCEPT)
    assert handled and len(stack) == 1 and [s.flags for s in out] == [SYN | ACK]
    assert policy.admitted == [FourTuple(IP_B, 80, IP_A, 4000)]


def test_pass_returns_false_and_leaves_nothing() -> None:
    stack, _, handled, out = one_syn(Admission.PASS)
    assert not handled and len(stack) == 0 and out == []


def test_drop_and_reset() -> None:
    stack, _, handled, out = one_syn(Admission.DROP)
    assert handled and len(stack) == 0 and out == []
    stack, _, handled, out = one_syn(Admission.RESET)
    assert [s.flags for s in out] == [RST | ACK] and out[0].ack == 1001 and len(stack) == 0


def test_backlog_bounds_embryonic_entries() -> None:
    stack = TcpStack()
    stack.listen(None, 80, backlog=2)
    for port in (4000, 4001, 4002):
        stack.on_segment(IP_B, IP_A, Segment(port, 80, 1000, 0, SYN, 8000), 0.0)
    assert len(stack) == 2


def test_release_called_when_tcb_freed() -> None:
    policy = Policy(Admission.ACCEPT)
    h = Harness(TcpConfig(time_wait=1.0), TcpConfig(time_wait=1.0))
    h.b.admission = policy
    ca, cb = h.establish()
    h.a.close(ca)
    h.b.close(cb)
    h.run(duration=5)
    assert policy.released == [cb]


def test_syn_cookie_round_trip_creates_established_tcb() -> None:
    cookies = Cookies()
    h = Harness()
    h.b.admission = cookies
    ca, cb = h.establish()
    assert len(h.b) == 1 and h.b.state(cb) is State.ESTABLISHED
    synack = h.segments("b")[0]
    assert synack.flags == SYN | ACK and synack.seq == cookies.cookie_isn(cb, h.segments("a")[0], 0.0)
    assert any(isinstance(e, Accepted) for e in h.events_b) and Connected(cb) in h.events_b
    tcb = h.b.connection(cb)
    assert tcb is not None and tcb.peer_mss == 1280 and tcb.snd_wscale == 7 and tcb.ts_ok and tcb.sack_ok
    data = bytes(range(256)) * 400
    x = BulkTransfer(h.a, ca, h.b, cb, data)
    y = BulkTransfer(h.b, cb, h.a, ca, data)
    h.on_step = pumping(x, y)
    assert h.run(until=lambda: x.done and y.done, max_time=60)
    assert bytes(x.received) == data and bytes(y.received) == data


def test_bad_cookie_is_reset() -> None:
    stack = TcpStack(admission=Cookies())
    stack.listen(None, 80)
    stack.on_segment(IP_B, IP_A, Segment(4000, 80, 1001, 12345, ACK, 100), 0.0)
    assert len(stack) == 0
    assert [o[2].flags for o in stack.poll_output()] == [RST]


def test_closed_event_only_for_visible_connections() -> None:
    h = Harness(TcpConfig(time_wait=1.0), TcpConfig(time_wait=1.0))
    ca, cb = h.establish()
    h.a.abort(ca)
    h.run(duration=1)
    assert Closed(ca) in h.events_a and Closed(cb) in h.events_b
