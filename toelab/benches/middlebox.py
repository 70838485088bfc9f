"""`toelab bench middlebox`: the engine middlebox's forwarding rate next to a kernel router, same run.

h1 - mb - h2 (`middlebox_chain`), iperf3 from h1 to h2 through a kernel router (GRO off, the
reference), through the engine middlebox in router mode, bridge mode and router mode with GRO, and
through the user-space ceiling: a bare forwarder (toelab.benches.bare_forwarder) on the same
AF_PACKET sockets that reads each frame and writes it out of the other port, nothing else, so
whatever the engine costs beyond it is the engine's own code and whatever the bare forwarder falls
short of the kernel is what any user-space forwarder on these sockets pays; and the same forwarder
busy-polling (epoll never sleeps), the ceiling without wake-up latency, bought with a core (it
runs only during its own runs, so it takes no core from the others'). All six labs are up at once
and their runs interleave, `--repeats` rounds of one run each, so a neighbour's burst of load
falls on every node alike; each figure is the median of its runs, all of which the row keeps, with
each round's engine/kernel ratio beside them (runs seconds apart) and the ratio of the two fastest
runs: a neighbour's load slows the kernel router far more than a user-space forwarder, so the
median and round ratios rise with the load, and the best runs come nearest to a quiet machine. The
engine rows also give the middlebox process's CPU (scheduler run time) per GB it forwarded, which
a busy machine disturbs far less than the rate, and the whole chain's CPU per GB (both iperf3
processes, as they report it, and the forwarding node) against the kernel router chain's: the
kernel forwards in the softirq of whichever end's process sent the frame, so only the chain
compares like for like, and on a machine the chain keeps busy the rate ratio tends to the inverse
of that CPU ratio. Each engine mode is also set against the ceiling, its rate and its process's
CPU per GB. Last, the router's own CPU per frame in memory (no I/O): a frame routed in place in
the receive buffer against the same frame through the stage pipeline (a copy, a header object,
dispatch).
"""
from __future__ import annotations

import argparse
import statistics
from contextlib import ExitStack
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rich.table import Table

from .rows import Measured, Row, row

if TYPE_CHECKING:
    from lab.lab import Lab

KERNEL = "kernel router (GRO off)"
CEILING = "bare user-space forwarder (AF_PACKET read + write, nothing else), the user-space ceiling"
BUSY_POLL_US = 100  # the busy-polling rows' poll before each sleep (MiddleboxConfig.busy_poll, bare_forwarder --busy-poll)
SPINNING = (f"bare user-space forwarder busy-polling {BUSY_POLL_US} µs (AF_PACKET read + write, the engine's busy_poll "
            "rule), the user-space ceiling at a core's cost")
#: (label, middlebox_chain parameters): the reference first, then each engine mode, then the ceilings
#: (bare nodes whose ports the bench's own bare forwarder serves, sleeping in epoll or spinning).
FORWARDERS = ((KERNEL, {"mb_kind": "router"}),
              ("engine, router mode", {"mode": "router"}),
              ("engine, bridge mode", {"mode": "bridge"}),
              ("engine, router mode, GRO", {"mode": "router", "coalesce": "gro"}),
              (f"engine, router mode, busy-polling {BUSY_POLL_US} µs", {"mode": "router", "busy_poll": BUSY_POLL_US}),
              (CEILING, {"mb_kind": "host", "mode": "bridge"}),
              (SPINNING, {"mb_kind": "host", "mode": "bridge"}))


@dataclass
class Forwarding:
    """One forwarding node's runs: Gbit/s of each, GB carried, its forwarding process's CPU seconds and
    the iperf3 ends'; `pid` is that process (None for the kernel router, which has none)."""

    label: str
    gbit: list[float] = field(default_factory=list)
    gbytes: float = 0.0
    cpu_s: float = 0.0
    ends_cpu_s: float = 0.0  # both iperf3 processes', as they report it
    pid: int | None = None
    polls: bool = False  # it busy-polls (its ceiling is the busy-polling bare forwarder's)

    @property
    def cpu_per_gb(self) -> float:
        """CPU of the forwarding process per GB carried."""
        return self.cpu_s / max(self.gbytes, 1e-9)

    @property
    def chain_cpu_per_gb(self) -> float:
        """CPU of the whole chain (iperf3 ends and the forwarding process) per GB carried."""
        return (self.ends_cpu_s + self.cpu_s) / max(self.gbytes, 1e-9)

    @property
    def median_gbit(self) -> float:
        return statistics.median(self.gbit)


def best_ratio(reference: Forwarding, engine: Forwarding) -> float:
    """engine/reference of each one's fastest run: a neighbour's load only ever slows a run, and the kernel
    router far more than a user-space forwarder (its rate swings 13-21 Gbit/s in one busy run, theirs
    11-12.6), so the ratio of medians and even of rounds rises with the load; the best runs come
    nearest to both on a quiet machine."""
    return round(max(engine.gbit) / max(reference.gbit), 3) if reference.gbit and engine.gbit else 0.0


def round_ratios(kernel: Forwarding, engine: Forwarding) -> list[float]:
    """engine/kernel of each round: runs a few seconds apart, so a burst of a neighbour's load that
    halves one round's figures leaves its ratio, where the ratio of medians may mix calm and busy runs."""
    return [round(e / k, 3) if k else 0.0 for k, e in zip(kernel.gbit, engine.gbit)]


def middlebox_rows(kernel: Forwarding, engines: list[Forwarding], ceiling: Forwarding | None = None,
                   spinning: Forwarding | None = None) -> list[Row]:
    """Rows of `bench middlebox`: each engine mode's (and each ceiling's) median rate against the kernel
    router's, its CPU per GB; then each engine mode against the ceiling that waits as it does (a
    busy-polling engine against the busy-polling bare forwarder, the others against the sleeping one)."""
    rows: list[Row] = []
    for engine in engines + [node for node in (ceiling, spinning) if node is not None]:
        rows.append(row("middlebox", f"forwarding h1 -> mb -> h2 (iperf3), {engine.label} (reference: kernel router, "
                        "GRO off)", "Gbit/s", round(kernel.median_gbit, 3), round(engine.median_gbit, 3),
                        kernel_runs=[round(g, 3) for g in kernel.gbit], engine_runs=[round(g, 3) for g in engine.gbit],
                        round_ratios=round_ratios(kernel, engine), best_ratio=best_ratio(kernel, engine),
                        rounds=len(engine.gbit)))
        rows.append(row("middlebox", f"middlebox CPU per GB forwarded, {engine.label}", "core·s/GB", None,
                        round(engine.cpu_per_gb, 4), gbytes=round(engine.gbytes, 3)))
        rows.append(row("middlebox", f"chain CPU per GB (iperf3 ends + forwarding node), {engine.label} (reference: "
                        "kernel router chain)", "core·s/GB", round(kernel.chain_cpu_per_gb, 4),
                        round(engine.chain_cpu_per_gb, 4), ends_core_s_per_gb=round(engine.ends_cpu_s / max(engine.gbytes, 1e-9), 4)))
    if ceiling is not None:
        rows += ceiling_rows(ceiling, [engine for engine in engines if not engine.polls or spinning is None])
    if spinning is not None:
        rows += ceiling_rows(spinning, [engine for engine in engines if engine.polls], " busy-polling")
    return rows


def ceiling_rows(ceiling: Forwarding, engines: list[Forwarding], how: str = "") -> list[Row]:
    """Each engine mode against the bare forwarder (`how` it waits, in the label): its rate, and its process's
    CPU per GB (the excess, `engine_own_core_s_per_gb`, is what the engine's code costs beyond reading and
    writing the frame)."""
    rows: list[Row] = []
    reference = f"the user-space ceiling, a bare AF_PACKET forwarder{how}"
    for engine in engines:
        rows.append(row("middlebox", f"forwarding h1 -> mb -> h2 (iperf3), {engine.label} (reference: "
                        f"{reference})", "Gbit/s", round(ceiling.median_gbit, 3),
                        round(engine.median_gbit, 3), round_ratios=round_ratios(ceiling, engine),
                        best_ratio=best_ratio(ceiling, engine), rounds=len(engine.gbit)))
        rows.append(row("middlebox", f"middlebox CPU per GB forwarded, {engine.label} (reference: {reference})",
                        "core·s/GB", round(ceiling.cpu_per_gb, 4),
                        round(engine.cpu_per_gb, 4),
                        engine_own_core_s_per_gb=round(engine.cpu_per_gb - ceiling.cpu_per_gb, 4)))
    return rows


ROUTER_FRAMES = 20000
#: (label, TCP payload bytes, GSO segment size or 0): what iperf3 through a veth mostly carries.
ROUTER_FRAME_KINDS = (("64 KiB GSO super-frame", 45 * 1448, 1448), ("pure ACK", 0, 0))


def router_frame_cost_us(payload: int, gso_size: int, frames: int = ROUTER_FRAMES) -> tuple[float, float]:
    """CPU µs per frame routed in place, and through `RouterStage.process`, on one frame refilled each time."""
    import ipaddress
    import time

    from toe_engine.codec.frame import build_tcp_frame_partial
    from toe_engine.io.vnet import VNET_F_NEEDS_CSUM, VNET_GSO_NONE, VNET_GSO_TCPV4, VNET_HDR_LEN, VnetHeader
    from toe_engine.runtime.router import Port, Router, RouterStage
    from toe_engine.segment import ACK, Segment

    macs = [bytes([2, 0, 0, 0, 0, i]) for i in range(4)]  # h1, mb eth0, mb eth1, h2
    h1, h2 = ipaddress.ip_address("10.0.1.2").packed, ipaddress.ip_address("10.0.2.2").packed
    router = Router((Port("eth0", macs[1], 1500, [ipaddress.ip_interface("10.0.1.1/24")]),
                     Port("eth1", macs[2], 1500, [ipaddress.ip_interface("10.0.2.1/24")])), lambda port, frame: None)
    router.learn(h2, macs[3])
    stage = RouterStage(router, 0)
    built = build_tcp_frame_partial(macs[0], macs[1], h1, h2, Segment(40000, 5201, 1, 1, ACK, 512, bytes(payload)))
    header = VnetHeader(VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4 if gso_size else VNET_GSO_NONE, 0, gso_size,
                        built.csum_start, built.csum_offset)
    raw = header.pack() + bytes(built.data)
    n = len(raw)
    buf = bytearray(256 * 1024)
    view = memoryview(buf)

    def timed(route: Callable[[], object]) -> float:
        start = time.process_time()
        for _ in range(frames):
            buf[:n] = raw  # what the driver's read does, in both loops alike
            route()
        return time.process_time() - start

    buf[:n] = raw
    if not stage.forward_in_place(buf, n) or len(stage.process(header, bytes(built.data), 0.0)) != 1:
        raise RuntimeError("the benchmark frame was not routed on both paths")
    refill = timed(lambda: None)
    in_place = timed(lambda: stage.forward_in_place(buf, n))
    pipeline = timed(lambda: stage.process(VnetHeader.unpack(buf), bytes(view[VNET_HDR_LEN:n]), 0.0))
    return (max(in_place - refill, 0.0) / frames * 1e6, max(pipeline - refill, 0.0) / frames * 1e6)


def router_cost_rows(costs: list[tuple[str, float, float]]) -> list[Row]:
    """Rows of the router's CPU per frame: (label, in place, through the pipeline) in µs."""
    return [row("middlebox", f"router CPU per frame in memory, {label} (reference: through the stage pipeline)",
                "µs/frame", round(pipeline, 3), round(in_place, 3), frames=ROUTER_FRAMES)
            for label, in_place, pipeline in costs]


def _middlebox_pid(lab: Lab) -> int | None:
    for proc in lab.record.processes:
        if proc.node == "mb" and "middlebox_main" in proc.argv:
            return proc.pid
    return None


def _run(lab: Lab, forwarding: Forwarding, seconds: float) -> None:
    from lab.tools import iperf
    from scenarios.cpu_cost import process_runtime

    pid = forwarding.pid
    before = process_runtime(pid) if pid is not None else 0.0
    result = iperf(lab, "h1", "h2", seconds=seconds)
    if pid is not None:
        forwarding.cpu_s += process_runtime(pid) - before
    forwarding.gbit.append(result.gbit_per_s)
    forwarding.gbytes += result.bytes / 1e9
    forwarding.ends_cpu_s += result.cpu_s


def _check_carried(carried: dict[str, Any], moved: float) -> None:
    """A ceiling's figures are the bare forwarder's only if every byte iperf3 moved (`moved`) crossed it (its
    ports have no addresses and its node's kernel forwards nothing, so nothing else could carry them)."""
    forwarded = carried.get("a_to_b", {}).get("bytes", 0)
    if forwarded < moved:
        raise RuntimeError(f"the bare forwarder carried {forwarded} bytes h1 -> h2, fewer than the "
                           f"{moved:.0f} iperf3 moved through its node: its rate would not be its own")


def _run_spinning(lab: Lab, forwarding: Forwarding, seconds: float) -> None:
    """`_run` through a busy-polling bare forwarder started for this run alone: polling, it takes a core,
    which the other nodes' runs must not lose to it."""
    from .bare_forwarder import BareForwarder

    spinner = BareForwarder(lab, busy_poll_us=BUSY_POLL_US)
    forwarding.pid = spinner.pid
    before = forwarding.gbytes
    try:
        _run(lab, forwarding, seconds)
    finally:
        carried = spinner.stop()
    _check_carried(carried, (forwarding.gbytes - before) * 1e9)


def bench_middlebox(args: argparse.Namespace) -> Measured:
    """Forwarding throughput of the engine middlebox next to a kernel router and a bare user-space
    forwarder, interleaved in one run."""
    from lab.lab import Lab
    from lab.render import load_topology

    from .bare_forwarder import BareForwarder

    repeats = max(1, args.repeats)
    measured = [Forwarding(label, polls="busy_poll" in params or label == SPINNING) for label, params in FORWARDERS]
    kernel, *engines, ceiling, spinning = measured
    with ExitStack() as stack:
        labs = [stack.enter_context(Lab.up(load_topology("middlebox_chain", params))) for _, params in FORWARDERS]
        bare = BareForwarder(labs[-2])
        stack.callback(bare.stop)
        for lab, engine in zip(labs[1:-2], engines):
            engine.pid = _middlebox_pid(lab)
        ceiling.pid = bare.pid
        for _ in range(repeats):
            for lab, forwarding in zip(labs, measured):
                (_run_spinning if forwarding is spinning else _run)(lab, forwarding, args.seconds)
        _check_carried(bare.stop(), ceiling.gbytes * 1e9)
    costs = [(label, *router_frame_cost_us(payload, gso_size)) for label, payload, gso_size in ROUTER_FRAME_KINDS]
    table = Table(title=f"forwarding h1 -> mb -> h2 (iperf3), engine middlebox vs kernel router and a bare user-space "
                        f"forwarder, same run, median of {repeats} interleaved runs")
    for column in ("forwarding node", "Gbit/s", "ratio to kernel", "median of round ratios", "best runs' ratio",
                   "ratio to its ceiling", "runs (Gbit/s)", "middlebox core·s/GB", "chain core·s/GB"):
        table.add_column(column, justify="right")
    table.add_row(KERNEL, f"{kernel.median_gbit:.2f}", "1.00", "", "", "", " ".join(f"{g:.1f}" for g in kernel.gbit), "",
                  f"{kernel.chain_cpu_per_gb:.3f}")
    for forwarding in engines + [ceiling, spinning]:
        own = spinning if forwarding.polls else ceiling  # the ceiling that waits as it does
        to_ceiling = f"{forwarding.median_gbit / own.median_gbit:.2f}" if forwarding is not own else ""
        table.add_row(forwarding.label, f"{forwarding.median_gbit:.2f}",
                      f"{forwarding.median_gbit / kernel.median_gbit:.2f}",
                      f"{statistics.median(round_ratios(kernel, forwarding)):.2f}",
                      f"{best_ratio(kernel, forwarding):.2f}", to_ceiling,
                      " ".join(f"{g:.1f}" for g in forwarding.gbit), f"{forwarding.cpu_per_gb:.3f}",
                      f"{forwarding.chain_cpu_per_gb:.3f}")
    for label, in_place, pipeline in costs:
        table.add_row(f"router CPU per frame, {label}", "", f"{in_place / pipeline:.2f}", "", "", "",
                      f"{in_place:.2f} µs in place, {pipeline:.2f} µs through the pipeline", "", "")
    return Measured(table, middlebox_rows(kernel, engines, ceiling, spinning) + router_cost_rows(costs))
