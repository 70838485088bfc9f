"""AF_PACKET driver: one interface, raw Ethernet frames with a virtio-net header.

With PACKET_VNET_HDR the kernel tells us, per frame, whether it is a GSO super-frame (and its
segment size) and whether its checksum is still partial; on send it takes the same header and
segments or completes checksums for us. Without it a reader of a default veth sees 64 KiB
frames with wrong-looking checksums and cannot forward them faithfully. PACKET_IGNORE_OUTGOING
keeps our own transmissions out of our receive queue, so a forwarder never loops.
"""
from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Callable, Iterator

from toe_engine.io.driver import DEFAULT_RX_BUFFER, FrameDriver
from toe_engine.io.errors import InterfaceNotFoundError, namespace_label
from toe_engine.io.netns_enter import in_netns
from toe_engine.io.recvmmsg import ReceiveBatch
from toe_engine.io.vnet import VNET_HDR_LEN

SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_VNET_HDR = 15
PACKET_QDISC_BYPASS = 20
PACKET_IGNORE_OUTGOING = 23
ETH_P_ALL = 0x0003
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33

DEFAULT_SOCKET_BUFFER = 8 * 1024 * 1024
#: Frames one recvmmsg may take: an endpoint's default budget, so one call drains a wake-up's worth.
RECV_SLOTS = 64

_TPACKET_STATS = struct.Struct("II")


class AfPacketDriver(FrameDriver):
    """A non-blocking AF_PACKET socket bound to `ifname` (in `netns`, if given).

    `socket_buffer` sets SO_RCVBUF/SO_SNDBUF with the FORCE variants (root), because a few
    64 KiB super-frames fill the default receive buffer while the reader is busy.
    `qdisc_bypass` sends straight to the driver, skipping any shaping qdisc on the interface.
    """

    def __init__(
        self,
        ifname: str,
        netns: str | int | None = None,
        *,
        ignore_outgoing: bool = True,
        qdisc_bypass: bool = False,
        socket_buffer: int = DEFAULT_SOCKET_BUFFER,
        rx_buffer_size: int = DEFAULT_RX_BUFFER,
        before_bind: Callable[[socket.socket], None] | None = None,
    ) -> None:
        label = namespace_label(netns)
        with in_netns(netns):
            sock = _open_bound_socket(ifname, label, ignore_outgoing, qdisc_bypass, socket_buffer, before_bind)
        self._sock = sock
        super().__init__(sock.fileno(), ifname, label, rx_buffer_size)
        self._receive: ReceiveBatch | None = None  # made by the first `batches`

    def frames(self, budget: int) -> Iterator[memoryview]:
        """Up to `budget` waiting frames, read a batch per system call (`batches`)."""
        for batch in self.batches(budget):
            yield from batch

    def batches(self, budget: int) -> Iterator[list[memoryview]]:
        """The frames waiting now, up to `budget`: one batch per recvmmsg, each view valid until the next.

        Each frame has its own slot of `rx_buffer` size, so truncation is counted as with a
        read; a call that took fewer frames than it asked for found the queue empty, and no
        further call is made for it (the read() path's failing last read).
        """
        receive = self._receive
        if receive is None:
            receive = self._receive = ReceiveBatch(self.fd, RECV_SLOTS, len(self.rx_buffer))
        counters, take = self.counters, receive.take
        while budget > 0:
            batch = take(budget)
            if not batch:
                return
            n = len(batch)
            counters.rx_frames += n
            counters.rx_bytes += receive.taken_bytes - VNET_HDR_LEN * n
            counters.rx_truncated += receive.taken_truncated
            yield batch
            if n < budget and n < RECV_SLOTS:
                return
            budget -= n

    def kernel_statistics(self) -> tuple[int, int]:
        """(frames queued, frames dropped for want of buffer) since the last call.

        PACKET_STATISTICS resets on every read, so each call reports a fresh interval.
        """
        raw = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _TPACKET_STATS.size)
        packets, drops = _TPACKET_STATS.unpack(raw)
        return packets, drops

    def close(self) -> None:
        if self.fd >= 0:
            self._sock.close()
            self.fd = -1
        if self._receive is not None:
            self._receive.close()
            self._receive = None


def _open_bound_socket(
    ifname: str, netns: str | None, ignore_outgoing: bool, qdisc_bypass: bool, socket_buffer: int,
    before_bind: Callable[[socket.socket], None] | None = None,
) -> socket.socket:
    """Create, configure and bind the socket in the current namespace.

    It is created with protocol 0 (receives nothing) and only bound to ETH_P_ALL on the
    interface once configured, so no frame of another interface or without a header slips in.
    `before_bind` configures what must precede the bind (a memory-mapped ring, say).
    """
    try:
        socket.if_nametoindex(ifname)
    except OSError:
        raise InterfaceNotFoundError(ifname, netns) from None
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
        if ignore_outgoing:
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        if qdisc_bypass:
            sock.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
        if socket_buffer:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, socket_buffer)
            sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, socket_buffer)
        if before_bind is not None:
            before_bind(sock)
        try:
            sock.bind((ifname, ETH_P_ALL))
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                raise InterfaceNotFoundError(ifname, netns) from None
            raise
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
