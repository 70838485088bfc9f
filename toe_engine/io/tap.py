"""TAP driver: a /dev/net/tun TAP device whose frames carry a virtio-net header.

With IFF_VNET_HDR and TUNSETOFFLOAD(CSUM|TSO4|TSO6) the TAP advertises checksum and TSO
offload to the kernel stack, so the stack hands us 64 KiB TCP super-frames with partial
checksums (the header says so) and accepts the same from us: this is how the engine talks to
the host kernel stack at full size. With offloads off, the kernel segments and checksums
everything before it reaches us.

A TAP device lives in the namespace of the thread that creates it, so the driver enters
`netns` only for the open and the ioctls.
"""
from __future__ import annotations

import fcntl
import os
import socket
import struct

from toe_engine.io.driver import DEFAULT_RX_BUFFER, FrameDriver
from toe_engine.io.errors import InterfaceNotFoundError, IoSetupError, namespace_label
from toe_engine.io.netns_enter import in_netns
from toe_engine.io.vnet import VNET_HDR_LEN

TUN_DEVICE = "/dev/net/tun"

IFF_TAP = 0x0002
IFF_MULTI_QUEUE = 0x0100
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000

TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8

TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08

TAP_OFFLOADS_ALL = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6
TAP_OFFLOADS_NONE = 0

IFNAMSIZ = 16
_IFREQ = struct.Struct(f"{IFNAMSIZ}sH22x")


class TapDriver(FrameDriver):
    """A non-blocking TAP device `ifname` in `netns`, read and written as (vnet header, frame).

    `offloads` is a TUN_F_* mask: TSO needs TUN_F_CSUM too, and the kernel refuses TSO without
    it. With `must_exist` the driver attaches to a TAP created beforehand (for example by
    `ip tuntap add ... vnet_hdr`) and says so clearly if it is missing, instead of creating one.
    The device disappears when the driver closes unless it was made persistent elsewhere.
    With `multi_queue` the device is an IFF_MULTI_QUEUE TAP: the first driver creates it and each
    further driver of the same name adds a queue, which the kernel picks per flow for what the
    host sends; the device lasts as long as any of its queues.
    """

    def __init__(
        self,
        ifname: str,
        netns: str | int | None = None,
        *,
        offloads: int = TAP_OFFLOADS_ALL,
        must_exist: bool = False,
        rx_buffer_size: int = DEFAULT_RX_BUFFER,
        multi_queue: bool = False,
    ) -> None:
        if not ifname or len(ifname.encode()) >= IFNAMSIZ:
            raise IoSetupError(f"TAP name {ifname!r} must be 1 to {IFNAMSIZ - 1} bytes long")
        if offloads & ~TUN_F_CSUM and not offloads & TUN_F_CSUM:
            raise IoSetupError(f"TAP {ifname!r}: TSO offloads need TUN_F_CSUM as well")
        label = namespace_label(netns)
        with in_netns(netns):
            if must_exist:
                _require_interface(ifname, label)
            fd, created_name = _open_tap(ifname, label, offloads, IFF_MULTI_QUEUE if multi_queue else 0)
        super().__init__(fd, created_name, label, rx_buffer_size)
        self.offloads = offloads


def _require_interface(ifname: str, netns: str | None) -> None:
    try:
        socket.if_nametoindex(ifname)
    except OSError:
        raise InterfaceNotFoundError(ifname, netns) from None


def _open_tap(ifname: str, netns: str | None, offloads: int, extra_flags: int = 0) -> tuple[int, str]:
    """Open the clone device and configure it; returns (fd, the name the kernel gave it)."""
    fd = os.open(TUN_DEVICE, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        request = _IFREQ.pack(ifname.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | extra_flags)
        try:
            answer = fcntl.ioctl(fd, TUNSETIFF, request)
        except OSError as exc:
            where = f"network namespace {netns!r}" if netns else "the current network namespace"
            raise IoSetupError(
                exc.errno, f"cannot open TAP {ifname!r} in {where}: {exc.strerror}"
            ) from None
        fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_LEN))
        fcntl.ioctl(fd, TUNSETOFFLOAD, offloads)
    except BaseException:
        os.close(fd)
        raise
    name = _IFREQ.unpack(answer)[0].rstrip(b"\0").decode()
    return fd, name
