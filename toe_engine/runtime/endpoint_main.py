"""Run the endpoint engine as a process:

    python -m toe_engine.runtime.endpoint_main --config JSON-or-path --control PATH [--netns NS]

It opens the wire (AF_PACKET on `wire`, in NS or where it was started), creates the TAP
`tap` towards the host kernel, listens on the control socket and then prints one line,
"ready", so a parent waits for that line instead of sleeping. Giving the TAP its addresses,
MAC and routes, and keeping the kernel off the wire, is the caller's part (see
lab/endpoint_nodes.py). SIGTERM and SIGINT stop it cleanly: the loop ends, the TAP
disappears with its descriptor and the socket file is removed.
"""
from __future__ import annotations

import argparse
import fcntl
import signal
import socket
import struct
import sys
from types import FrameType

from toe_engine.endpoint import EndpointCore
from toe_engine.io import TAP_OFFLOADS_ALL, TAP_OFFLOADS_NONE, AfPacketDriver, IoSetupError, TapDriver, in_netns
from toe_engine.io.driver import FrameDriver
from toe_engine.runtime.control import ControlServer
from toe_engine.runtime.endpoint import EndpointRuntime, EndpointSettings, EndpointSettingsError, endpoint_handler
from toe_engine.runtime.loop import EventLoop

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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="endpoint", description="toelab TCP offload engine endpoint")
    parser.add_argument("--netns", default=None, help="network namespace of the wire and the TAP")
    parser.add_argument("--config", default="{}", help="JSON configuration, or the path of a JSON file")
    parser.add_argument("--control", required=True, help="path of the control socket to create")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = EndpointSettings.load(args.config)
    except (EndpointSettingsError, OSError) as exc:
        print(f"endpoint: {exc}", file=sys.stderr)
        return 2
    loop = EventLoop()
    drivers: list[FrameDriver] = []
    server: ControlServer | None = None
    try:
        wire = AfPacketDriver(settings.wire, args.netns)
        drivers.append(wire)
        mac, mtu = interface_identity(settings.wire, args.netns)
        if settings.mac:
            mac = bytes.fromhex(settings.mac.replace(":", ""))
        core = EndpointCore(settings.endpoint_config(mac, settings.mtu or mtu))
        offloads = TAP_OFFLOADS_ALL if settings.tap_offloads else TAP_OFFLOADS_NONE
        tap = TapDriver(settings.tap, args.netns, offloads=offloads)
        drivers.append(tap)
        runtime = EndpointRuntime(core, wire, tap, settings, settings.budget)
        runtime.attach(loop)
        server = ControlServer(args.control, endpoint_handler(runtime))
        server.attach(loop)
        _stop_on_signals(loop)
        print("ready", flush=True)
        loop.run()
    except (IoSetupError, EndpointSettingsError, OSError) as exc:
        print(f"endpoint: {exc}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            server.close()
        for driver in drivers:
            driver.close()
        loop.close()
    return 0


def _stop_on_signals(loop: EventLoop) -> None:
    def stop(signum: int, frame: FrameType | None) -> None:
        loop.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


if __name__ == "__main__":
    sys.exit(main())
