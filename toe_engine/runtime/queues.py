"""RSS for the endpoint: N engine queues, each its own process on its own core.

    wire veth --PACKET_FANOUT_CBPF (io.rss: hash, indirection table)--> queue 0 .. N-1
    queue i: its packet socket (ring or plain) -- its EndpointCore -- TAP queue i
    host kernel --IFF_MULTI_QUEUE TAP (the kernel picks a queue per flow)--> queue i --> wire

The process the lab starts becomes a supervisor: it opens every queue's wire socket (joined to
the fanout group in queue order, so member index = queue) and TAP queue, forks one process per
queue, pins it to a core, and answers the node's control socket by asking each queue over its
own socket and adding up. In ethtool's words: `queues` is `-L combined N`, `rss_table` and
`rss_key` are `-X` (shown like `-x`), the ring settings are `-G rx` and `-C rx-frames/rx-usecs`;
`set` with any of these re-queues the node: the queue processes are replaced, so offloaded
connections end (as a NIC's rings are reset), while the TAP, its addresses and the connection
table's settings stay. Changing only the table or key swaps the fanout program in place.

Why a TAP queue per engine queue and not one shared TAP: what the host sends is passed to the
wire unchanged by whichever queue reads it, so any queue will do, and with IFF_MULTI_QUEUE each
queue process reads its own descriptor without waking or locking the others; the kernel keeps a
flow on one TAP queue, so its frames stay in order. One shared descriptor would wake every
queue for each frame and interleave a flow's frames across processes.

The connection table is one for the node (runtime.shared_table); buffer pool and buffer
memory are split evenly, each queue holding its share like per-ring SRAM. The socket API
(`sock`) is served by a one-queue node only: with several, an accepted or connected flow
would land on whichever queue its hash picks.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import signal
import socket
import sys
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from toe_engine.io.afpacket import AfPacketDriver
from toe_engine.io.ring import RingSettings
from toe_engine.io.rss import (
    HASH_FUNCTION,
    attach_program,
    check_key,
    check_table,
    default_key,
    equal_table,
    join_group,
    program,
    weighted_table,
)
from toe_engine.io.tap import TapDriver
from toe_engine.runtime.control import ControlServer, Handler, control_request
from toe_engine.runtime.endpoint import check_busy_poll, check_on_off, endpoint_handler
from toe_engine.runtime.loop import EventLoop
from toe_engine.runtime.queue_counters import sum_counters
from toe_engine.runtime.shared_table import SharedSlots
from toe_engine.runtime.wire_setup import endpoint_runtime, open_tap, open_wire, ring_settings

if TYPE_CHECKING:
    from toe_engine.runtime.endpoint import EndpointSettings

#: settings whose change re-queues the node; the RSS ones only swap the fanout program
REQUEUE_FIELDS = ("queues", "rx_ring", "rx_frames", "rx_usecs")
RSS_FIELDS = ("rss_table", "rss_weights", "rss_key")
#: table gauges every queue reads from the one shared table: reported once, not added up
SHARED_GAUGES = ("table_capacity", "table_occupancy", "table_embryonic", "table_high_water", "table_sram_bytes",
                 "table_sram_used_bytes")
QUEUE_READY_TIMEOUT = 15.0
PR_SET_PDEATHSIG = 1

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)


def check_queue_settings(settings: EndpointSettings) -> None:
    """Spec-time checks of the ring and RSS settings (called by EndpointSettings' validator)."""
    if settings.rx_ring:
        RingSettings(settings.rx_ring, settings.rx_frames, settings.rx_usecs).check()
    if settings.rss_table is not None:
        if settings.queues is None:
            raise ValueError("rss_table needs queues: N (an indirection table spreads flows over queues)")
        check_table(settings.rss_table, settings.queues)
    if settings.rss_key is not None:
        check_key(settings.rss_key)


def describe_ring(settings: EndpointSettings) -> dict[str, Any]:
    """The ring as `toe config` shows it: ethtool's names and the TPACKET_V3 geometry behind them."""
    ring = ring_settings(settings)
    out: dict[str, Any] = {"rx_ring": settings.rx_ring, "rx_frames": settings.rx_frames,
                           "rx_usecs": settings.rx_usecs}
    if ring is not None:
        out["ring"] = ring.geometry()
    return out


@dataclass
class QueueProcess:
    queue: int
    pid: int
    cpu: int
    control: str


class QueueSupervisor:
    """Starts, stops and re-queues the queue processes; its `handler` answers the node's control socket."""

    def __init__(self, settings: EndpointSettings, netns: str | None) -> None:
        self.settings = settings.model_copy(update={"secret": settings.secret or os.urandom(16).hex()})
        self.netns = netns
        self.key = check_key(settings.rss_key) if settings.rss_key else default_key()
        self.table = list(settings.rss_table) if settings.rss_table else equal_table(settings.queues or 1)
        self.slots = SharedSlots(settings.capacity, settings.embryonic_limit)
        self.generation = 0
        self.wires: list[AfPacketDriver] = []
        self.taps: list[TapDriver] = []
        self.workers: list[QueueProcess] = []
        try:
            self._start(settings.queues or 1)
        except BaseException:
            self.close()
            raise

    # --- starting and stopping the queues -----------------------------------------------------
    def _start(self, queues: int) -> None:
        self.generation += 1
        group = (os.getpid() * 16 + self.generation) & 0xFFFF
        for _ in range(queues):
            wire = open_wire(self.settings, self.netns)
            self.wires.append(wire)
            with socket.fromfd(wire.fd, socket.AF_PACKET, socket.SOCK_RAW) as member:
                join_group(member, group)
        self._install_program()
        while len(self.taps) < queues:
            self.taps.append(open_tap(self.settings, self.netns, multi_queue=True))
        cpus = sorted(os.sched_getaffinity(0))
        for queue in range(queues):
            self.workers.append(self._fork(queue, cpus[queue % len(cpus)]))

    def _install_program(self) -> None:
        with socket.fromfd(self.wires[0].fd, socket.AF_PACKET, socket.SOCK_RAW) as member:
            attach_program(member, program(self.table, self.key))

    def _fork(self, queue: int, cpu: int) -> QueueProcess:
        # an abstract socket name: nothing on disk to leave behind if the supervisor is killed
        path = f"\0toelab-queue-{os.getpid()}-{self.generation}-{queue}"
        ready_r, ready_w = os.pipe()
        supervisor = os.getpid()
        pid = os.fork()
        if pid == 0:  # the queue process: never returns into the caller
            code = 1
            try:
                os.close(ready_r)
                code = self._run_queue(queue, cpu, path, ready_w, supervisor)
            except BaseException:
                traceback.print_exc(file=sys.stderr)
            finally:
                sys.stderr.flush()
                os._exit(code)
        os.close(ready_w)
        try:
            ready, _, _ = select.select([ready_r], [], [], QUEUE_READY_TIMEOUT)
            said = os.read(ready_r, 1) if ready else b""
        finally:
            os.close(ready_r)
        if said != b"r":
            raise OSError(f"queue {queue} did not start (see the node's log)")
        return QueueProcess(queue, pid, cpu, path)

    def _run_queue(self, queue: int, cpu: int, path: str, ready_w: int, supervisor: int) -> int:
        loop = EventLoop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: loop.stop())
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)  # the queue ends with the supervisor
        if os.getppid() != supervisor:  # it ended before the line above took effect
            return 1
        os.sched_setaffinity(0, {cpu})
        wire, tap = self.wires[queue], self.taps[queue]
        for other in (*self.wires, *self.taps):
            if other is not wire and other is not tap:
                other.close()
        runtime = endpoint_runtime(self.settings, self.netns, wire, tap, queue=queue,
                                   queues=len(self.wires), slots=self.slots)
        runtime.attach(loop)
        server = ControlServer(path, endpoint_handler(runtime))
        server.attach(loop)
        os.write(ready_w, b"r")
        os.close(ready_w)
        try:
            loop.run()
        finally:
            server.close()
            wire.close()
            tap.close()
        return 0

    def _stop(self, *, keep_tap: bool) -> None:
        for worker in self.workers:
            try:
                os.kill(worker.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for worker in self.workers:
            try:
                os.waitpid(worker.pid, 0)
            except ChildProcessError:
                pass
        self.workers = []
        for wire in self.wires:
            wire.close()
        self.wires = []
        keep = self.taps[:1] if keep_tap else []
        for tap in self.taps[len(keep):]:
            tap.close()
        self.taps = keep

    def close(self) -> None:
        self._stop(keep_tap=False)

    # --- the node's control socket ---------------------------------------------------------------
    def ask(self, worker: QueueProcess, request: Mapping[str, Any]) -> dict[str, Any]:
        """One queue's answer; a queue that does not answer is an error of this request, not of the node."""
        try:
            answer = control_request(worker.control, dict(request))
        except (OSError, ConnectionError, ValueError) as exc:
            raise ValueError(f"queue {worker.queue} (pid {worker.pid}) did not answer: {exc}") from None
        if not answer.pop("ok", False):
            raise ValueError(answer.get("error", f"queue {worker.queue} gave no reason"))
        return answer

    def handler(self) -> Handler:
        def handle(request: dict[str, Any], now: float) -> dict[str, Any]:
            cmd = request["cmd"]
            if cmd == "stats":
                return self.stats()
            if cmd == "conns":
                rows = []
                for worker in self.workers:
                    rows += [{**row, "queue": worker.queue} for row in self.ask(worker, request)["connections"]]
                return {"connections": rows}
            if cmd == "config":
                return {"config": self.describe()}
            if cmd == "set":
                self.update({k: v for k, v in request.items() if k != "cmd"})
                return {"config": self.describe()}
            if cmd == "sock":
                if len(self.workers) != 1:
                    raise ValueError(f"the socket API needs a one-queue engine; this one has {len(self.workers)} "
                                     "queues (toe set NODE queues=1)")
                return self.ask(self.workers[0], request)
            raise ValueError(f"unknown cmd {cmd!r}: use stats, conns, config, set or sock")

        return handle

    def stats(self) -> dict[str, Any]:
        """Every queue's counters added up, its own `rx_queue_N_*` kept; the shared table's gauges once."""
        answers = [self.ask(worker, {"cmd": "stats"}) for worker in self.workers]
        counters = sum_counters(answer["counters"] for answer in answers)
        gauges = sum_counters(answer["gauges"] for answer in answers)
        gauges.update({name: answers[0]["gauges"][name] for name in SHARED_GAUGES if name in answers[0]["gauges"]})
        if "table_high_water" in counters:  # the node's table is one: its mark is the shared one
            counters["table_high_water"] = gauges["table_high_water"]
        drivers: dict[str, dict[str, int]] = {}
        for answer in answers:
            for name, values in answer["drivers"].items():
                drivers[name] = sum_counters([drivers.get(name, {}), values])
        queues = [{"queue": w.queue, "pid": w.pid, "cpu": w.cpu, "connections": a["connections"],
                   "rx_frames": a["counters"].get(f"rx_queue_{w.queue}_frames", 0)}
                  for w, a in zip(self.workers, answers)]
        return {"mode": "endpoint", "counters": counters, "gauges": gauges,
                "connections": sum(a["connections"] for a in answers), "drivers": drivers, "queues": queues}

    def describe(self) -> dict[str, Any]:
        config = self.ask(self.workers[0], {"cmd": "config"})["config"]
        config.update(describe_ring(self.settings))
        config.update({"queues": len(self.workers),
                       "rss": {"hfunc": HASH_FUNCTION, "key": self.key.hex(":"), "table": list(self.table)}})
        return config

    def update(self, changes: dict[str, Any]) -> None:
        """RSS changes swap the program; ring and queue changes re-queue; the rest goes to every queue."""
        requeue = {k: changes.pop(k) for k in REQUEUE_FIELDS if k in changes}
        rss = {k: changes.pop(k) for k in RSS_FIELDS if k in changes}
        settings = self.settings
        if requeue:
            settings = type(settings).parse({**settings.model_dump(), **requeue, "rss_table": None})
        queues = settings.queues or 1
        table, key = (self.table if not requeue else equal_table(queues)), self.key
        if "rss_weights" in rss:
            weights = rss["rss_weights"]
            if not isinstance(weights, list) or len(weights) != queues:
                raise ValueError(f"rss_weights must list one weight per queue ({queues}), got {weights!r}")
            table = weighted_table(weights)  # like ethtool -X weight: a full-size table again
        if "rss_table" in rss:
            if not isinstance(rss["rss_table"], list):
                raise ValueError(f"rss_table must be a list of queue numbers, got {rss['rss_table']!r}")
            table = check_table(rss["rss_table"], queues)
        if "rss_key" in rss:
            key = check_key(str(rss["rss_key"]))
        if changes:  # engine settings (capacity, policy, ...): every queue, validated by the first
            for worker in self.workers:
                self.ask(worker, {"cmd": "set", **changes})
            settings = _remember(settings, changes)
        self.settings, self.table, self.key = settings, table, key
        if requeue:
            self._stop(keep_tap=True)
            capacity, limit, _, _, high = self.slots.read()
            self.slots.write(capacity, limit, 0, 0, high)  # the connections went with their queues
            self._start(queues)
        elif rss:
            self._install_program()


def _remember(settings: EndpointSettings, changes: Mapping[str, Any]) -> EndpointSettings:
    """Settings with run-time changes folded in, so a re-queue starts the queues as they were."""
    update = {k: v for k, v in changes.items() if k in ("capacity", "policy", "services", "addresses")}
    for switch in ("gro", "ack_defer"):
        if switch in changes:
            update[switch] = check_on_off(switch, changes[switch])
    if "busy_poll" in changes:
        update["busy_poll"] = check_busy_poll(changes["busy_poll"])
    if "tcp" in changes:
        update["tcp"] = {**settings.tcp, **changes["tcp"]}
    if "services" in update:
        update["services"] = {int(port): app for port, app in update["services"].items()}
    return settings.model_copy(update=update)
