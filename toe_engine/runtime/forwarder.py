"""A two-port frame forwarder: the data path of the middlebox.

It moves frames between two drivers with their virtio-net headers, so GSO super-frames cross
as super-frames and partial checksums stay partial: the kernel on the far side segments and
completes them, as it would for a real NIC. Without a stage a frame goes out straight from the
receive buffer (no copy, no parse). A stage (GRO, LRO, TSO, impairments) is a callable

    stage(vnet_header, frame, now) -> [(vnet_header, frame), ...]

that sees a private copy of each frame and returns what to send, possibly nothing (held or
dropped) or several frames; a frame a stage cannot make sense of is dropped and counted in
`malformed`. A stage that holds frames for later (delay, a GRO flush timer)
also offers `next_deadline() -> float | None` and `poll(now) -> [(vnet_header, frame), ...]`;
the forwarder gives those to the event loop as a deadline source.

A direction may also have an in-place path, `in_place(buffer, length) -> bool`, tried on each
frame before the stage: it sees the driver's receive buffer (virtio-net header, then frame),
may patch it there, and says True when the frame is to go out as it now is. That is the
router's way for the common frame: no copy, no header object, no stage dispatch.

Between two plain drivers (their `read_raw` and `write_raw` those of `FrameDriver`, as
AF_PACKET's and TAP's are) a direction calls os.readv and os.write itself and adds the
drivers' counters up once per pump: per frame that is two system calls and the in-place path,
no Python call of the drivers' own.
"""
from __future__ import annotations

import errno
import os
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, runtime_checkable

from toe_engine.io.driver import FrameDriver
from toe_engine.io.vnet import VNET_HDR_LEN, VnetHeader
from toe_engine.runtime.loop import EventLoop

_Buffer = bytes | bytearray | memoryview
OutFrame = tuple[VnetHeader | _Buffer, _Buffer]
Stage = Callable[[VnetHeader, bytes, float], Sequence[OutFrame]]
InPlace = Callable[[bytearray, int], bool]
#: What a stage raises on a frame whose headers contradict themselves (a GSO header with no
#: segment size, a checksum offset past the end): the frame is dropped and counted, never fatal.
MALFORMED = (IndexError, ValueError, ZeroDivisionError, struct.error)
_WOULD_DROP = (errno.EAGAIN, errno.ENOBUFS)


@runtime_checkable
class TimedStage(Protocol):
    """A stage that can hold frames and release them when its deadline passes."""

    def __call__(self, header: VnetHeader, frame: bytes, now: float) -> Sequence[OutFrame]: ...

    def next_deadline(self) -> float | None: ...

    def poll(self, now: float) -> Sequence[OutFrame]: ...


class _Direction:
    """One way through the forwarder: read from `source`, pass through `stage`, write to `sink`."""

    def __init__(
        self, source: FrameDriver, sink: FrameDriver, stage: Stage | None, budget: int
    ) -> None:
        self.source, self.sink, self.stage, self.budget = source, sink, stage, budget
        self.in_place: InPlace | None = None
        self.in_place_frames = 0  # frames that took `in_place`, added up once per pump
        self.plain = _plain_read(source) and _plain_write(sink)  # whether `_pump_plain` may stand in
        self.malformed = 0  # frames a stage could not make sense of (dropped)

    def pump(self, now: float) -> None:
        """Forward what is waiting on `source`, at most `budget` frames."""
        if self.plain:
            self._pump_plain(now)
            return
        read_raw = self.source.read_raw
        rx_view = self.source.rx_view
        write_raw = self.sink.write_raw
        stage = self.stage
        budget = self.budget
        count = 0
        if stage is None:
            while count < budget:
                n = read_raw()
                if n == 0:
                    break
                write_raw(rx_view[:n])
                count += 1
            return
        rx_buffer = self.source.rx_buffer
        in_place = self.in_place
        patched = 0
        try:
            while count < budget:
                n = read_raw()
                if n == 0:
                    break
                count += 1
                if in_place is not None and in_place(rx_buffer, n):
                    write_raw(rx_view[:n])
                    patched += 1
                else:
                    self._through_stage(stage, n, now)
        finally:
            self.in_place_frames += patched

    def _pump_plain(self, now: float) -> None:
        """`pump` between plain drivers, their read and write inlined: os.readv, the in-place path,
        os.write, with the drivers' counters added up once per pump."""
        source, sink = self.source, self.sink
        fd_in, fd_out = source.fd, sink.fd
        rx_buffer, rx_view = source.rx_buffer, source.rx_view
        iov = [rx_view]
        room = len(rx_buffer)
        readv, write = os.readv, os.write
        stage, in_place = self.stage, self.in_place
        count = patched = rx_bytes = truncated = tx = tx_bytes = dropped = 0
        try:
            while count < self.budget:
                try:
                    n = readv(fd_in, iov)
                except BlockingIOError:
                    break
                count += 1
                rx_bytes += n
                if n == room:
                    truncated += 1
                if stage is None or (in_place is not None and in_place(rx_buffer, n)):
                    if stage is not None:
                        patched += 1
                    try:
                        write(fd_out, rx_view[:n])
                    except OSError as exc:
                        if exc.errno not in _WOULD_DROP:
                            raise
                        dropped += 1
                    else:
                        tx += 1
                        tx_bytes += n
                    continue
                self._through_stage(stage, n, now)
        finally:
            self.in_place_frames += patched
            rx_counters, tx_counters = source.counters, sink.counters
            rx_counters.rx_frames += count
            rx_counters.rx_bytes += rx_bytes - VNET_HDR_LEN * count
            rx_counters.rx_truncated += truncated
            tx_counters.tx_frames += tx
            tx_counters.tx_bytes += tx_bytes - VNET_HDR_LEN * tx
            tx_counters.tx_dropped += dropped

    def _through_stage(self, stage: Stage, n: int, now: float) -> None:
        """Give the stage a copy of the frame in the source's receive buffer and send what it returns;
        a frame it cannot make sense of is dropped and counted."""
        source = self.source
        try:
            out = stage(VnetHeader.unpack(source.rx_buffer), bytes(source.rx_view[VNET_HDR_LEN:n]), now)
        except MALFORMED:
            self.malformed += 1
            return
        self.emit(out)

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


def _plain_read(driver: FrameDriver) -> bool:
    return type(driver).read_raw is FrameDriver.read_raw


def _plain_write(driver: FrameDriver) -> bool:
    return type(driver).write_raw is FrameDriver.write_raw


def _poller(direction: _Direction, stage: TimedStage) -> Callable[[float], None]:
    def on_due(now: float) -> None:
        direction.emit(stage.poll(now))

    return on_due
