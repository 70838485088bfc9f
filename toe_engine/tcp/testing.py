"""Two TCP stacks joined by an in-memory channel, on a fake clock.

The channel delivers segments after a delay and can lose, reorder and duplicate them with a
seeded random generator, so every run is reproducible. Tests may also drop chosen segments
with `drop_if`, hold chosen ones back with `delay_if` (extra seconds, to reorder them), and
inspect everything that crossed the wire in `trace`.
"""
from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import count

from toe_engine.counters import Counters
from toe_engine.segment import FourTuple, Segment, TcpOptions
from toe_engine.tcp.config import TcpConfig
from toe_engine.tcp.events import Accepted, Connected, Event
from toe_engine.tcp.isn import IsnGenerator
from toe_engine.tcp.seqnum import MASK
from toe_engine.tcp.stack import TcpStack

IP_A = bytes([192, 0, 2, 1])  # TEST-NET-1: documentation addresses, never on any wire
IP_B = bytes([192, 0, 2, 2])


@dataclass(slots=True)
class Impairment:
    """What one direction of the channel does to segments."""

    delay: float = 0.01
    loss: float = 0.0
    reorder: float = 0.0  # probability a segment is held back by `reorder_delay`
    reorder_delay: float = 0.015
    duplicate: float = 0.0


@dataclass(slots=True)
class Sent:
    """One segment on the wire, as recorded in the trace."""

    time: float
    src: str  # "a" or "b"
    seg: Segment
    dropped: bool = False


@dataclass
class Harness:
    """Stacks `a` and `b`; `a` is at IP_A, `b` at IP_B."""

    config_a: TcpConfig = field(default_factory=TcpConfig)
    config_b: TcpConfig = field(default_factory=TcpConfig)
    a_to_b: Impairment = field(default_factory=Impairment)
    b_to_a: Impairment = field(default_factory=Impairment)
    seed: int = 0
    now: float = 0.0

    def __post_init__(self) -> None:
        self.counters_a = Counters()
        self.counters_b = Counters()
        self.a = TcpStack(self.config_a, counters=self.counters_a, isn=IsnGenerator(b"a" * 16), ts_offset=1000)
        self.b = TcpStack(self.config_b, counters=self.counters_b, isn=IsnGenerator(b"b" * 16), ts_offset=7_000_000)
        self.rng = random.Random(self.seed)
        self.events_a: list[Event] = []
        self.events_b: list[Event] = []
        self.trace: list[Sent] = []
        self.keep_trace = True
        self.drop_if: Callable[[str, Segment], bool] | None = None
        self.delay_if: Callable[[str, Segment], float] | None = None
        self.on_step: Callable[[Harness], object] | None = None
        self._wire: list[tuple[float, int, str, Segment]] = []
        self._order = count()

    # ------------------------------------------------------------------ driving

    def flush(self) -> None:
        """Move everything the stacks emitted onto the wire and collect their events."""
        for name, stack, imp in (("a", self.a, self.a_to_b), ("b", self.b, self.b_to_a)):
            for _, _, seg in stack.poll_output():
                self._put(name, seg, imp)
        self.events_a += self.a.poll_events()
        self.events_b += self.b.poll_events()

    def _put(self, src: str, seg: Segment, imp: Impairment) -> None:
        dropped = (self.drop_if is not None and self.drop_if(src, seg)) or (
            imp.loss and self.rng.random() < imp.loss)
        if self.keep_trace:
            self.trace.append(Sent(self.now, src, seg, bool(dropped)))
        if dropped:
            return
        copies = 2 if imp.duplicate and self.rng.random() < imp.duplicate else 1
        for _ in range(copies):
            delay = imp.delay
            if imp.reorder and self.rng.random() < imp.reorder:
                delay += imp.reorder_delay
            if self.delay_if is not None:
                delay += self.delay_if(src, seg)
            heapq.heappush(self._wire, (self.now + delay, next(self._order), src, seg))

    def step(self, until: float) -> bool:
        """Advance to the next delivery or timer no later than `until`; False if there is none."""
        self.flush()
        if self.on_step is not None:
            self.on_step(self)
            self.flush()
        candidates = [t for t in (self.a.next_timer(), self.b.next_timer()) if t is not None]
        if self._wire:
            candidates.append(self._wire[0][0])
        if not candidates:
            return False
        when = min(candidates)
        if when > until:
            return False
        self.now = max(self.now, when)
        if self._wire and self._wire[0][0] <= self.now:
            _, _, src, seg = heapq.heappop(self._wire)
            if src == "a":
                self.b.on_segment(IP_B, IP_A, seg, self.now)
            else:
                self.a.on_segment(IP_A, IP_B, seg, self.now)
        self.sync_clocks()
        return True

    def sync_clocks(self) -> None:
        """Run both stacks' due timers at `now`, which also makes `now` their default time."""
        self.a.on_timer(self.now)
        self.b.on_timer(self.now)
        self.flush()

    def run(self, duration: float | None = None, until: Callable[[], bool] | None = None,
            max_time: float = 3600.0) -> bool:
        """Run for `duration` simulated seconds, or until `until()` holds (True) or time runs out."""
        deadline = self.now + duration if duration is not None else self.now + max_time
        while True:
            if until is not None and until():
                return True
            if not self.step(deadline):
                if duration is not None:
                    self.now = max(self.now, deadline)
                    self.sync_clocks()
                return until is not None and until()

    # ------------------------------------------------------------------ conveniences

    def establish(self, port: int = 80) -> tuple[FourTuple, FourTuple]:
        """b listens, a connects; returns (a's conn, b's conn) once both are ESTABLISHED."""
        self.b.listen(None, port)
        conn_a = self.a.connect(IP_A, IP_B, port, self.now)
        ok = self.run(until=lambda: any(isinstance(e, Connected) for e in self.events_a)
                      and any(isinstance(e, Accepted) for e in self.events_b), max_time=600)
        if not ok:
            raise AssertionError("connection did not establish")
        conn_b = next(e.conn for e in self.events_b if isinstance(e, Accepted))
        return conn_a, conn_b

    def inject(self, to: str, seg: Segment) -> list[Segment]:
        """Hand a crafted segment straight to stack `to` (as if from its peer) and return what
        that stack sends in reply, which does not go on the wire."""
        self.flush()
        stack = self.b if to == "b" else self.a
        if to == "b":
            stack.on_segment(IP_B, IP_A, seg, self.now)
        else:
            stack.on_segment(IP_A, IP_B, seg, self.now)
        replies = [out[2] for out in stack.poll_output()]
        self.flush()
        return replies

    def forge(self, src: str, conn: FourTuple, flags: int, *, seq_delta: int = 0, ack_delta: int = 0,
              payload: bytes = b"", tsval_delta: int | None = 0) -> Segment:
        """A segment as `src`'s connection `conn` would send it next, shifted by the deltas."""
        stack = self.a if src == "a" else self.b
        tcb = stack.connection(conn)
        assert tcb is not None
        opts = TcpOptions()
        if tcb.ts_ok and tsval_delta is not None:
            opts.timestamp = ((stack.ts_clock(self.now) + tsval_delta) & MASK, tcb.ts_recent)
        return Segment(tcb.local_port, tcb.remote_port, (tcb.snd_nxt + seq_delta) & MASK,
                       (tcb.rcv_nxt + ack_delta) & MASK, flags, 0xFFFF, payload, opts)

    def segments(self, src: str, include_dropped: bool = False) -> list[Segment]:
        return [s.seg for s in self.trace if s.src == src and (include_dropped or not s.dropped)]


class BulkTransfer:
    """Pushes `data` from one side to the other and collects what arrives, through the stack API."""

    def __init__(self, sender: TcpStack, sender_conn: FourTuple, receiver: TcpStack,
                 receiver_conn: FourTuple, data: bytes, close_when_done: bool = True) -> None:
        self.sender, self.sender_conn = sender, sender_conn
        self.receiver, self.receiver_conn = receiver, receiver_conn
        self.data = memoryview(data)
        self.offset = 0
        self.received = bytearray()
        self.close_when_done = close_when_done
        self.closed = False

    def pump(self, now: float) -> None:
        if self.offset < len(self.data):
            self.offset += self.sender.send(self.sender_conn, self.data[self.offset:self.offset + 65536], now)
        elif self.close_when_done and not self.closed:
            self.sender.shutdown(self.sender_conn, now)
            self.closed = True
        if self.receiver.connection(self.receiver_conn) is not None:
            self.received += self.receiver.recv(self.receiver_conn, 1 << 20, now)

    @property
    def done(self) -> bool:
        if len(self.received) != len(self.data):
            return False
        return not self.close_when_done or self.receiver.at_eof(self.receiver_conn)


def pumping(*transfers: BulkTransfer) -> Callable[[Harness], None]:
    """An on_step hook that keeps every transfer moving."""

    def pump_all(h: Harness) -> None:
        for transfer in transfers:
            transfer.pump(h.now)

    return pump_all


def drop_copies(offsets: dict[int, int], base: int) -> Callable[[str, Segment], bool]:
    """A `drop_if` rule: lose the first `n` copies a sends of the data segment at `base + offset`,
    for each {offset: n} (n = 2 loses the original and its first retransmission)."""
    left = {(base + off) & MASK: n for off, n in offsets.items()}

    def rule(src: str, seg: Segment) -> bool:
        if src == "a" and seg.payload and left.get(seg.seq, 0) > 0:
            left[seg.seq] -= 1
            return True
        return False

    return rule
