"""A driver with no descriptor: frames the caller queues come out in batches, sent frames are counted.

It stands in for the wire or the TAP where the runtime's own per-frame cost is measured (`toelab
bench core`) or driven without root: the same `batches`/`frames`/`send`/`commit_tx` calls as a
real driver, so what is timed is the runtime (receive GRO, dispatch, transmit), not a system call.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator

from toe_engine.io.driver import FrameDriver
from toe_engine.io.vnet import VNET_HDR_LEN, VnetHeader

_Buffer = bytes | bytearray | memoryview


class MemoryDriver(FrameDriver):
    """Queued frames (virtio-net header first) in, up to `budget` per batch; `sent` keeps what went
    out when `keep_sent` is set, else only the counters do."""

    def __init__(self, ifname: str = "mem0", *, keep_sent: bool = False) -> None:
        super().__init__(-1, ifname, None, VNET_HDR_LEN)
        self.pending: deque[memoryview] = deque()
        self.keep_sent = keep_sent
        self.sent: list[bytes] = []

    def put(self, frames: Iterable[_Buffer]) -> None:
        self.pending.extend(memoryview(frame) for frame in frames)

    def read_raw(self) -> int:
        return 0  # nothing arrives but what `put` queues, and that comes out through `batches`

    def batches(self, budget: int) -> Iterator[list[memoryview]]:
        pending = self.pending
        batch = [pending.popleft() for _ in range(min(budget, len(pending)))]
        if batch:
            counters = self.counters
            counters.rx_frames += len(batch)
            counters.rx_bytes += sum(len(frame) for frame in batch) - VNET_HDR_LEN * len(batch)
            yield batch

    def frames(self, budget: int) -> Iterator[memoryview]:
        for batch in self.batches(budget):
            yield from batch

    def write_raw(self, header_and_frame: _Buffer) -> bool:
        return self.send(b"", header_and_frame)

    def send(self, header: VnetHeader | _Buffer, frame: _Buffer) -> bool:
        packed = header.pack() if isinstance(header, VnetHeader) else header
        counters = self.counters
        counters.tx_frames += 1
        counters.tx_bytes += len(frame)
        if self.keep_sent:
            self.sent.append(bytes(packed) + bytes(frame))
        return True

    def close(self) -> None:
        self.pending.clear()
