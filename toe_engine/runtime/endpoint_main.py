"""Run the endpoint engine as a process:

    python -m toe_engine.runtime.endpoint_main --config JSON-or-path --control PATH [--netns NS]

It opens the wire (AF_PACKET on `wire`, in NS or where it was started) and creates the TAP
`tap` towards the host kernel; the rest (control socket, "ready", clean stops, the TAP going
with its descriptor) is toe_engine.runtime.process's. Giving the TAP its addresses, MAC and
routes, and keeping the kernel off the wire, is the caller's part (see lab/endpoint_nodes.py).
"""
from __future__ import annotations

import fcntl
import socket
import struct
import sys
from collections.abc import Callable
from typing import Any

from toe_engine.endpoint import EndpointCore
from toe_engine.io import TAP_OFFLOADS_ALL, TAP_OFFLOADS_NONE, AfPacketDriver, TapDriver, in_netns
from toe_engine.io.driver import FrameDriver
from toe_engine.runtime.endpoint import EndpointRuntime, EndpointSettings, EndpointSettingsError, endpoint_handler
from toe_engine.runtime.loop import EventLoop
from toe_engine.runtime.process import run_engine_process

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


def build(settings: EndpointSettings, netns: str | None, loop: EventLoop,
          drivers: list[FrameDriver]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    wire = AfPacketDriver(settings.wire, netns)
    drivers.append(wire)
    mac, mtu = interface_identity(settings.wire, netns)
    if settings.mac:
        mac = bytes.fromhex(settings.mac.replace(":", ""))
    core = EndpointCore(settings.endpoint_config(mac, settings.mtu or mtu))
    offloads = TAP_OFFLOADS_ALL if settings.tap_offloads else TAP_OFFLOADS_NONE
    tap = TapDriver(settings.tap, netns, offloads=offloads)
    drivers.append(tap)
    runtime = EndpointRuntime(core, wire, tap, settings, settings.budget)
    runtime.attach(loop)
    return endpoint_handler(runtime)


def main(argv: list[str] | None = None) -> int:
    return run_engine_process("endpoint", "toelab TCP offload engine endpoint", argv, EndpointSettings.load,
                              (EndpointSettingsError,), build)


if __name__ == "__main__":
    sys.exit(main())
