"""Run the endpoint engine as a process:

    python -m toe_engine.runtime.endpoint_main --config JSON-or-path --control PATH [--netns NS]

It opens the wire (AF_PACKET on `wire`, in NS or where it was started) and creates the TAP
`tap` towards the host kernel (with `queues: N`, N queue processes do, fed by an RSS fanout:
toe_engine.runtime.queues); the rest (control socket, "ready", clean stops, the TAP going
with its descriptor) is toe_engine.runtime.process's. Giving the TAP its addresses, MAC and
routes, and keeping the kernel off the wire, is the caller's part (see lab/endpoint_nodes.py).
"""
from __future__ import annotations

import sys

from toe_engine.io import AfPacketDriver
from toe_engine.io.driver import FrameDriver
from toe_engine.runtime.failover import Carrier, PortFailover
from toe_engine.runtime.control import Handler
from toe_engine.runtime.endpoint import EndpointSettings, EndpointSettingsError, endpoint_handler
from toe_engine.runtime.loop import EventLoop
from toe_engine.runtime.process import pin_to_current_cpu, run_engine_process
from toe_engine.runtime.wire_setup import endpoint_runtime, interface_identity, open_tap, open_wire

__all__ = ["build", "interface_identity", "main"]


def build(settings: EndpointSettings, netns: str | None, loop: EventLoop,
          drivers: list[FrameDriver]) -> Handler:
    """One queue in this process, or (with `queues` set) queue processes under this one (runtime.queues)."""
    if settings.queues is not None:
        from toe_engine.runtime.queues import QueueSupervisor

        supervisor = QueueSupervisor(settings, netns)
        drivers.append(supervisor)  # type: ignore[arg-type]  # closed like a driver: stops the queues
        return supervisor.handler()
    wire = open_wire(settings, netns)
    drivers.append(wire)
    tap = open_tap(settings, netns)
    drivers.append(tap)
    runtime = endpoint_runtime(settings, netns, wire, tap)
    runtime.attach(loop)
    if settings.pin:  # one queue, one core, as each queue process of runtime.queues: no reordering by migration
        pin_to_current_cpu()
    if settings.standby:  # more wire ports: active-backup failover between them
        standby = [AfPacketDriver(name, netns) for name in settings.standby]
        drivers.extend(standby)
        PortFailover(runtime, standby, Carrier(netns), settings.miimon_ms).attach(loop)
    return endpoint_handler(runtime)


def main(argv: list[str] | None = None) -> int:
    return run_engine_process("endpoint", "toelab TCP offload engine endpoint", argv, EndpointSettings.load,
                              (EndpointSettingsError,), build)


if __name__ == "__main__":
    sys.exit(main())
