"""A two-port frame forwarder: the data path of the middlebox.

It moves frames between two drivers with their virtio-net headers, so GSO super-frames cross
as super-frames and partial checksums stay partial: the kernel on the far side segments and
completes them, as it would for a real NIC. Without a stage a frame goes out straight from the
receive buffer (no copy, no parse). A stage (GRO, LRO, TSO, impairments) is a callable

    stage(vnet_header, frame, now) -> [(vnet_header, frame), ...]

that sees a private copy of each frame and returns what to send, possibly nothing (held or
dropped) or several frames. A stage that holds frames for later (delay, a GRO flush timer)
also offers `next_deadline() -> float | None` and `poll(now) -> [(vnet_header, frame), ...]`;
the forwarder gives those to the event loop as a deadline source.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol, runtime_checkable

from toe_engine.io.driver import FrameDriver
from toe_engine.io.vnet import VNET_HDR_LEN, VnetHeader
from toe_engine.runtime.loop import EventLoop

_Buffer = bytes | bytearray | memoryview
OutFrame = tuple[VnetHeader | _Buffer, _Buffer]
Stage = Callable[[VnetHeader, bytes, float], list[OutFrame]]


@runtime_checkable
class TimedStage(Protocol):
    """A stage that can hold frames and release them when its deadline passes."""

    def __call__(self, header: VnetHeader, frame: bytes, now: float) -> list[OutFrame]: ...

    def next_deadline(self) -> float | None: ...

    def poll(self, now: float) -> list[OutFrame]: ...


class _Direction:
    """One way through the forwarder: read from `source`, pass through `stage`, write to `sink`."""

    def __init__(
        self, source: FrameDriver, sink: FrameDriver, stage: Stage | None, budget: int
    ) -> None:
        self.source, self.sink, self.stage, self.budget = source, sink, stage, budget

    def pump(self, now: float) -> int:
        """Forward what is waiting on `source`, at most `budget` frames; returns the count."""
        read_raw = self.source.read_raw
        rx_view = self.source.rx_view
        stage = self.stage
        count = 0
        if stage is None:
            write_raw = self.sink.write_raw
            while count < self.budget:
                n = read_raw()
                if n == 0:
                    break
                write_raw(rx_view[:n])
                count += 1
            return count
        rx_buffer = self.source.rx_buffer
        while count < self.budget:
            n = read_raw()
            if n == 0:
                break
            header = VnetHeader.unpack(rx_buffer)
            self.emit(stage(header, bytes(rx_view[VNET_HDR_LEN:n]), now))
            count += 1
        return count

    def emit(self, frames: Iterable[OutFrame]) -> None:
        send = self.sink.send
        for header, frame in frames:
            send(header, frame)


class Forwarder:
    """Forwards frames between drivers `a` and `b`, through an optional stage each way."""

    def __init__(
        self,
        a: FrameDriver,
        b: FrameDriver,
        stage_a_to_b: Stage | None = None,
        stage_b_to_a: Stage | None = None,
        *,
        budget: int = 64,
    ) -> None:
        self.a, self.b = a, b
        self.a_to_b = _Direction(a, b, stage_a_to_b, budget)
        self.b_to_a = _Direction(b, a, stage_b_to_a, budget)

    def attach(self, loop: EventLoop) -> None:
        """Register both drivers, and the deadlines of timed stages, with `loop`."""
        loop.add_reader(self.a, self.a_to_b.pump)
        loop.add_reader(self.b, self.b_to_a.pump)
        for direction in (self.a_to_b, self.b_to_a):
            stage = direction.stage
            if isinstance(stage, TimedStage):
                loop.add_deadline_source(stage.next_deadline, _poller(direction, stage))


def _poller(direction: _Direction, stage: TimedStage) -> Callable[[float], None]:
    def on_due(now: float) -> None:
        direction.emit(stage.poll(now))

    return on_due
