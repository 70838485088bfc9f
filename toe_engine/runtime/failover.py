"""Active-backup failover between an endpoint's wire ports, as a NIC with two ports on one switch does it.

One port is active: the engine reads and sends there. Standby ports are read and their frames
dropped (a switch floods broadcasts and unknown unicast to every port; answering twice
would confuse the peer), the way a Linux bond in active-backup mode treats its backup slaves.
Every `miimon_ms` the active port's carrier is read (IFF_RUNNING, what the bond's MII
monitor reads); when it is gone the first standby port with carrier becomes active and a
gratuitous ARP for each of the endpoint's IPv4 addresses leaves from it, so the switch
learns the MAC on the new port and the peers keep theirs. Connections live in the engine,
not in a port, so they carry on; what the lost port held is retransmitted.

Counters (the engine's): `failovers`, `garp_sent`, `standby_rx_dropped`.
"""
from __future__ import annotations

import fcntl
import socket
import struct
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from toe_engine.io.netns_enter import in_netns
from toe_engine.io.vnet import PLAIN_VNET_BYTES

if TYPE_CHECKING:
    from toe_engine.io.driver import FrameDriver
    from toe_engine.runtime.endpoint import EndpointRuntime
    from toe_engine.runtime.loop import EventLoop

SIOCGIFFLAGS = 0x8913
IFF_UP, IFF_RUNNING = 0x1, 0x40
_IFREQ_FLAGS = struct.Struct("16sH14x")
BROADCAST = b"\xff" * 6
ETH_P_ARP = 0x0806
DRAIN_BUDGET = 64  # frames dropped per wake-up of a standby port


def gratuitous_arp(mac: bytes, ip: bytes) -> bytes:
    """An ARP request for our own address from our own address (RFC 5227 2.4 announcement)."""
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac, ip, b"\0" * 6, ip)
    return BROADCAST + mac + struct.pack("!H", ETH_P_ARP) + arp


class Carrier:
    """Reads whether an interface is up with carrier, from a socket opened in its namespace."""

    def __init__(self, netns: str | None) -> None:
        with in_netns(netns):
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def __call__(self, ifname: str) -> bool:
        try:
            answer = fcntl.ioctl(self._sock, SIOCGIFFLAGS, _IFREQ_FLAGS.pack(ifname.encode(), 0))
        except OSError:
            return False
        flags = _IFREQ_FLAGS.unpack(answer)[1]
        return bool(flags & IFF_UP and flags & IFF_RUNNING)

    def close(self) -> None:
        self._sock.close()


class PortFailover:
    """Keeps one of an endpoint's wire ports active and moves to a standby port when it loses carrier."""

    def __init__(self, runtime: EndpointRuntime, standby: Sequence[FrameDriver], carrier: Callable[[str], bool],
                 miimon_ms: int) -> None:
        self.runtime = runtime
        self.ports: list[FrameDriver] = [runtime.wire, *standby]
        self.carrier = carrier
        self.interval = miimon_ms / 1000
        self._due = 0.0
        self._loop: EventLoop | None = None

    def attach(self, loop: EventLoop) -> None:
        """Drain the standby ports and check the active one's carrier every interval (after runtime.attach)."""
        self._loop = loop
        for port in self.ports[1:]:
            loop.add_reader(port, self._dropper(port))
        self._due = loop.clock()
        loop.add_deadline_source(lambda: self._due, self.check)

    def _dropper(self, port: FrameDriver) -> Callable[[float], None]:
        counters = self.runtime.core.counters

        def drop(now: float) -> None:
            dropped = sum(1 for _ in port.frames(DRAIN_BUDGET))
            counters.inc("standby_rx_dropped", dropped)
        return drop

    def check(self, now: float) -> None:
        self._due = now + self.interval
        active = self.runtime.wire
        if self.carrier(active.ifname):
            return
        for port in self.ports:
            if port is not active and self.carrier(port.ifname):
                self.switch(port)
                return

    def switch(self, port: FrameDriver) -> None:
        """Make `port` the active port and announce the endpoint's addresses from it."""
        loop, runtime = self._loop, self.runtime
        assert loop is not None
        old = runtime.wire
        loop.remove_reader(old)
        loop.remove_reader(port)
        runtime.wire = port
        loop.add_reader(port, runtime.pump_wire)
        loop.add_reader(old, self._dropper(old))
        counters = runtime.core.counters
        counters.inc("failovers")
        core = runtime.core
        for address in sorted(core.addresses):
            if len(address) == 4:
                try:
                    port.send(PLAIN_VNET_BYTES, gratuitous_arp(core.config.mac, address))
                    counters.inc("garp_sent")
                except OSError:
                    counters.inc("tx_errors")
        runtime.flush()

    @property
    def active(self) -> str:
        return self.runtime.wire.ifname
