"""What TAP and AF_PACKET drivers share: a non-blocking fd that carries (virtio-net header, frame).

Both kinds of descriptor accept plain `read`/`write` of one whole frame per call, so one class
holds the data path: reads land in one preallocated buffer (no allocation per frame), writes of
a contiguous header+frame go out with `os.write`, and header and frame given apart go out with
`os.writev`, so neither is copied to join them.
"""
from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from toe_engine.io.vnet import VNET_HDR_LEN, VnetHeader

_Buffer = bytes | bytearray | memoryview

# Big enough for a 64 KiB GSO frame and for BIG TCP's larger ones; a read that fills it whole
# is counted as truncated.
DEFAULT_RX_BUFFER = 256 * 1024
#: A batch buffer holds this many receive buffers' worth: at least one read's room is always left.
BATCH_BUFFERS = 2

_WOULD_DROP = (errno.EAGAIN, errno.ENOBUFS)


@dataclass
class DriverCounters:
    """Per-driver frame and byte counts, as a NIC's `ethtool -S` would show them."""

    rx_frames: int = 0
    rx_bytes: int = 0
    rx_truncated: int = 0
    tx_frames: int = 0
    tx_bytes: int = 0
    tx_dropped: int = 0


class FrameDriver:
    """A non-blocking descriptor that reads and writes frames preceded by a virtio-net header.

    `rx_buffer`/`rx_view` hold the last frame read by `read_raw`: header in the first
    `VNET_HDR_LEN` bytes, frame after it. They are overwritten by the next read, so a caller
    keeping a frame copies it.
    """

    def __init__(self, fd: int, ifname: str, netns: str | None, rx_buffer_size: int) -> None:
        self.fd = fd
        self.ifname = ifname
        self.netns = netns
        self.rx_buffer = bytearray(rx_buffer_size)
        self.rx_view = memoryview(self.rx_buffer)
        self._rx_iov = [self.rx_view]
        self._batch_view: memoryview | None = None  # allocated by the first `batches`
        self.counters = DriverCounters()

    def fileno(self) -> int:
        return self.fd

    def read_raw(self) -> int:
        """Read one header+frame into `rx_buffer`; its length, or 0 when nothing is waiting."""
        try:
            n = os.readv(self.fd, self._rx_iov)
        except BlockingIOError:
            return 0
        counters = self.counters
        counters.rx_frames += 1
        counters.rx_bytes += n - VNET_HDR_LEN
        if n == len(self.rx_buffer):
            counters.rx_truncated += 1
        return n

    def recv(self) -> tuple[VnetHeader, memoryview] | None:
        """One frame as (header, view of the frame in `rx_buffer`), or None when none waits."""
        n = self.read_raw()
        if n == 0:
            return None
        return VnetHeader.unpack(self.rx_buffer), self.rx_view[VNET_HDR_LEN:n]

    def drain(self, handler: Callable[[int], None], budget: int = 256) -> int:
        """Read until the queue is empty or `budget` frames were read, calling `handler(length)`.

        The handler finds the frame in `rx_view[:length]` (header first). Returns how many
        frames were read; a budget keeps one busy interface from starving the others.
        """
        read_raw = self.read_raw
        count = 0
        while count < budget:
            n = read_raw()
            if n == 0:
                break
            handler(n)
            count += 1
        return count

    def frames(self, budget: int) -> Iterator[memoryview]:
        """Up to `budget` waiting frames, each a view of header+frame valid until the next one.

        A ring driver yields a whole batch from one wake-up; this one reads one frame per call.
        """
        read_raw, view = self.read_raw, self.rx_view
        for _ in range(budget):
            n = read_raw()
            if not n:
                return
            yield view[:n]

    def batches(self, budget: int) -> Iterator[list[memoryview]]:
        """The frames waiting now, up to `budget`, as one batch whose views stay valid until the next.

        Each frame is read into its own part of one preallocated batch buffer, so a receive
        stage (GRO) can hold any frame of the batch without copying it; every read still
        offers a whole `rx_buffer` worth of room, so truncation is counted as with `frames`.
        """
        room = len(self.rx_buffer)
        if self._batch_view is None:
            self._batch_view = memoryview(bytearray(room * BATCH_BUFFERS))
        view, limit = self._batch_view, room * (BATCH_BUFFERS - 1)
        counters, fd = self.counters, self.fd
        batch: list[memoryview] = []
        offset = 0
        while len(batch) < budget and offset <= limit:
            window = view[offset:offset + room]
            try:
                n = os.readv(fd, [window])
            except BlockingIOError:
                break
            counters.rx_frames += 1
            counters.rx_bytes += n - VNET_HDR_LEN
            if n == room:
                counters.rx_truncated += 1
            batch.append(window[:n])
            offset += (n + 63) & ~63
        if batch:
            yield batch

    def commit_tx(self) -> None:
        """Hand queued transmissions to the kernel; a batching driver sends them here, this one
        has sent each at once."""

    def write_raw(self, header_and_frame: _Buffer) -> bool:
        """Send a contiguous header+frame; False (and counted) if the kernel had no room."""
        try:
            os.write(self.fd, header_and_frame)
        except OSError as exc:
            if exc.errno in _WOULD_DROP:
                self.counters.tx_dropped += 1
                return False
            raise
        counters = self.counters
        counters.tx_frames += 1
        counters.tx_bytes += len(header_and_frame) - VNET_HDR_LEN
        return True

    def send_messages(self, messages: list[bytes]) -> None:
        """Send whole messages (virtio-net header first), each as `write_raw` does; a batching driver
        queues them for `commit_tx`."""
        write_raw = self.write_raw
        for message in messages:
            write_raw(message)

    def send(self, header: VnetHeader | _Buffer, frame: _Buffer) -> bool:
        """Send `frame` after `header` (a VnetHeader or its packed bytes) without joining them."""
        packed = header.pack() if isinstance(header, VnetHeader) else header
        try:
            os.writev(self.fd, (packed, frame))
        except OSError as exc:
            if exc.errno in _WOULD_DROP:
                self.counters.tx_dropped += 1
                return False
            raise
        counters = self.counters
        counters.tx_frames += 1
        counters.tx_bytes += len(frame)
        return True

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> FrameDriver:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
