"""How one endpoint queue is put together: its wire driver (a ring or plain reads), its engine
core and the runtime between them. The one-queue process and every queue process use it.
"""
from __future__ import annotations

import fcntl
import socket
import struct
from dataclasses import replace

from toe_engine.endpoint import EndpointCore
from toe_engine.io import TAP_OFFLOADS_ALL, TAP_OFFLOADS_NONE, AfPacketDriver, TapDriver, in_netns
from toe_engine.io.ring import PacketRingDriver, RingSettings
from toe_engine.runtime.endpoint import EndpointRuntime, EndpointSettings
from toe_engine.runtime.shared_table import SharedSlots, SharedTable

SIOCGIFMTU = 0x8921
SIOCGIFHWADDR = 0x8927
_IFREQ = struct.Struct("16s16s")


def interface_identity(ifname: str, netns: str | None) -> tuple[bytes, int]:
    """(MAC, MTU) of an interface, read with ioctls in its namespace (sysfs may show another)."""
    with in_netns(netns), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = _IFREQ.pack(ifname.encode(), b"")
        hwaddr = fcntl.ioctl(sock, SIOCGIFHWADDR, request)
        mtu = fcntl.ioctl(sock, SIOCGIFMTU, request)
    return hwaddr[18:24], struct.unpack_from("i", mtu, 16)[0]


def ring_settings(settings: EndpointSettings) -> RingSettings | None:
    """The wire's receive ring (ethtool -G rx / -C rx-frames rx-usecs), or None for plain reads."""
    if not settings.rx_ring:
        return None
    return RingSettings(settings.rx_ring, settings.rx_frames, settings.rx_usecs)


def open_wire(settings: EndpointSettings, netns: str | None) -> AfPacketDriver:
    ring = ring_settings(settings)
    if ring is None:
        return AfPacketDriver(settings.wire, netns)
    return PacketRingDriver(settings.wire, netns, ring=ring)


def open_tap(settings: EndpointSettings, netns: str | None, *, multi_queue: bool = False) -> TapDriver:
    offloads = TAP_OFFLOADS_ALL if settings.tap_offloads else TAP_OFFLOADS_NONE
    return TapDriver(settings.tap, netns, offloads=offloads, multi_queue=multi_queue)


def endpoint_runtime(settings: EndpointSettings, netns: str | None, wire: AfPacketDriver, tap: TapDriver, *,
                     queue: int = 0, queues: int = 1, slots: SharedSlots | None = None) -> EndpointRuntime:
    """An engine core between `wire` and `tap`. With `slots` its connection table is the node's
    shared one, and its buffer pool and buffer memory are its 1/`queues` share of the node's."""
    mac, mtu = interface_identity(settings.wire, netns)
    if settings.mac:
        mac = bytes.fromhex(settings.mac.replace(":", ""))
    config = settings.endpoint_config(mac, settings.mtu or mtu)
    if queues > 1:
        resources = config.resources
        config = replace(config, resources=replace(resources, pool_bytes=resources.pool_bytes // queues,
                                                   buffer_memory_bytes=resources.buffer_memory_bytes // queues))
    core = EndpointCore(config)
    if slots is not None:
        core.resources.table = SharedTable.replacing(core.resources.table, slots)
    runtime = EndpointRuntime(core, wire, tap, settings, settings.budget)
    runtime.queue = queue
    return runtime
