"""Run the middlebox as a process:

    python -m toe_engine.runtime.middlebox_main --netns NS --config JSON-or-path --control PATH

It opens both interfaces (in NS, or where it was started) and turns the node kernel's
forwarding off in router mode; the rest (control socket, "ready", clean stops) is
toe_engine.runtime.process's.
"""
from __future__ import annotations

import sys

from toe_engine.io import AfPacketDriver
from toe_engine.io.driver import FrameDriver
from toe_engine.runtime.control import Handler, middlebox_handler
from toe_engine.runtime.loop import EventLoop
from toe_engine.runtime.process import run_engine_process
from toe_engine.runtime.middlebox import (
    Middlebox,
    MiddleboxConfig,
    MiddleboxConfigError,
    disable_kernel_forwarding,
    discover_port,
)


def build(config: MiddleboxConfig, netns: str | None, loop: EventLoop,
          drivers: list[FrameDriver]) -> Handler:
    for ifname in (config.a, config.b):
        drivers.append(AfPacketDriver(ifname, netns))
    ports = None
    if config.mode == "router":
        ports = (discover_port(config.a, netns), discover_port(config.b, netns))
        disable_kernel_forwarding(netns)
    middlebox = Middlebox(config, drivers[0], drivers[1], ports)  # type: ignore[arg-type]
    middlebox.attach(loop)
    return middlebox_handler(middlebox)


def main(argv: list[str] | None = None) -> int:
    return run_engine_process("middlebox", "toelab forwarding middlebox", argv, MiddleboxConfig.load,
                              (MiddleboxConfigError,), build)


if __name__ == "__main__":
    sys.exit(main())
