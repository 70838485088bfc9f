"""Run the middlebox as a process:

    python -m toe_engine.runtime.middlebox_main --netns NS --config JSON-or-path --control PATH

It opens both interfaces (in NS, or where it was started), turns the node kernel's forwarding
off in router mode, listens on the control socket and then prints one line, "ready", so a
parent can wait for that line instead of sleeping. SIGTERM and SIGINT stop it cleanly: the
loop ends, the interfaces close and the socket file is removed.
"""
from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType

from toe_engine.io import AfPacketDriver, IoSetupError
from toe_engine.runtime.control import ControlServer, middlebox_handler
from toe_engine.runtime.loop import EventLoop
from toe_engine.runtime.middlebox import (
    Middlebox,
    MiddleboxConfig,
    MiddleboxConfigError,
    disable_kernel_forwarding,
    discover_port,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="middlebox", description="toelab forwarding middlebox")
    parser.add_argument("--netns", default=None, help="network namespace of both interfaces")
    parser.add_argument("--config", default="{}", help="JSON configuration, or the path of a JSON file")
    parser.add_argument("--control", required=True, help="path of the control socket to create")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = MiddleboxConfig.load(args.config)
    except (MiddleboxConfigError, OSError) as exc:
        print(f"middlebox: {exc}", file=sys.stderr)
        return 2
    loop = EventLoop()
    drivers: list[AfPacketDriver] = []
    server: ControlServer | None = None
    try:
        for ifname in (config.a, config.b):
            drivers.append(AfPacketDriver(ifname, args.netns))
        ports = None
        if config.mode == "router":
            ports = (discover_port(config.a, args.netns), discover_port(config.b, args.netns))
            disable_kernel_forwarding(args.netns)
        middlebox = Middlebox(config, drivers[0], drivers[1], ports)
        middlebox.attach(loop)
        server = ControlServer(args.control, middlebox_handler(middlebox))
        server.attach(loop)
        _stop_on_signals(loop)
        print("ready", flush=True)
        loop.run()
    except (IoSetupError, MiddleboxConfigError, OSError) as exc:
        print(f"middlebox: {exc}", file=sys.stderr)
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
