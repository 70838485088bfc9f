"""What every engine process shares: arguments, the control socket, "ready", clean stops.

    python -m toe_engine.runtime.<kind>_main --config JSON-or-path --control PATH [--netns NS]

A process loads its configuration (a bad one exits 2 with one sentence), lets its kind open
its interfaces and attach to the event loop, listens on the control socket, and prints one
line, "ready", so a parent waits for that line instead of sleeping. SIGTERM and SIGINT end
the loop; the interfaces close and the socket file is removed.
"""
from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any, TypeVar

from toe_engine.io import IoSetupError
from toe_engine.io.driver import FrameDriver
from toe_engine.runtime.control import ControlServer, Handler
from toe_engine.runtime.loop import EventLoop

Config = TypeVar("Config")
#: build(config, netns, loop, drivers) -> the control socket's request handler; every driver
#: it opens goes into `drivers` so it is closed whatever happens.
Build = Callable[[Config, "str | None", EventLoop, list[FrameDriver]], Handler]


def run_engine_process(prog: str, description: str, argv: list[str] | None, load: Callable[[str], Config],
                       config_errors: tuple[type[Exception], ...], build: Build[Config]) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--netns", default=None, help="network namespace of the interfaces (default: this one)")
    parser.add_argument("--config", default="{}", help="JSON configuration, or the path of a JSON file")
    parser.add_argument("--control", required=True, help="path of the control socket to create")
    args = parser.parse_args(argv)
    refused: tuple[type[Exception], ...] = (*config_errors, OSError)
    failed: tuple[type[Exception], ...] = (IoSetupError, *refused)
    try:
        config = load(args.config)
    except refused as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    loop = EventLoop()
    drivers: list[FrameDriver] = []
    server: ControlServer | None = None
    try:
        handler = build(config, args.netns, loop, drivers)
        server = ControlServer(args.control, handler)
        server.attach(loop)
        _stop_on_signals(loop)
        _freeze_startup_heap()
        print("ready", flush=True)
        loop.run()
    except failed as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            server.close()
        for driver in drivers:
            driver.close()
        loop.close()
    return 0


def _freeze_startup_heap() -> None:
    """Move everything made while starting (modules, settings models, drivers) out of the collector's
    reach: it lives as long as the process, and a collection that walks it again and again costs a
    per-frame path allocating objects per connection (about 5 % of an HTTP set-up's engine CPU)."""
    gc.collect()
    gc.freeze()


def current_cpu() -> int:
    """The core this process runs on now (field 39 of /proc/self/stat: the last CPU it ran on)."""
    with open("/proc/self/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[36])


def pin_to_current_cpu() -> int:
    """Stay on the core this process runs on, as a NIC queue's interrupt stays on its CPU.

    A process that moves between cores sends through each core's backlog in turn (a veth
    delivers on the sending core), so frames sent before a move can arrive after frames sent
    after it: its own flows reordered. Returns the core."""
    cpu = current_cpu()
    if cpu in os.sched_getaffinity(0):
        os.sched_setaffinity(0, {cpu})
    return cpu


def _stop_on_signals(loop: EventLoop) -> None:
    def stop(signum: int, frame: FrameType | None) -> None:
        loop.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
