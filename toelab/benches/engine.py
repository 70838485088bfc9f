"""`toelab bench core`: the engine core's cost, in memory, with no I/O.

Bulk transfer throughput in MB per CPU-second with MSS-sized frames and with 64 KiB
super-frames (TSO on the sender, GSO-style delivery), and the per-frame cost of an
in-order data segment with 1, 1,000 and 64,000 connections open (it should stay flat:
demultiplexing is a dict lookup and timers are a heap).
"""
from __future__ import annotations

import argparse
import ipaddress
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from statistics import median
from typing import TYPE_CHECKING

from rich.table import Table

from toe_engine.codec import build_tcp_frame
from toe_engine.endpoint import EndpointConfig, EndpointCore
from toe_engine.impair import ImpairmentSpec
from toe_engine.io.memory import MemoryDriver
from toe_engine.io.vnet import VNET_F_DATA_VALID, VnetHeader
from toe_engine.resources import ResourceConfig
from toe_engine.runtime.endpoint import EndpointRuntime, EndpointSettings
from toe_engine.segment import ACK, SYN, Segment, TcpOptions
from toe_engine.tcp.config import TcpConfig
from toe_engine.testing import IP_B, MAC_A, MAC_B, FrameHarness

from .rows import Measured, Row, row

if TYPE_CHECKING:
    from lab.lab import Lab

DISCARD = 9
RUNTIME_BATCH = 64  # frames per wake-up through the runtime: the endpoint's default budget
VNET_DATA_VALID = VnetHeader(flags=VNET_F_DATA_VALID).pack()  # the device checked the checksums
BUF = 4 * 1024 * 1024
UNLIMITED_QUEUE = 1_000_000
#: Kernel/engine bulk pairs per offload setting at most (--repeats caps it lower): one 3 s pair swings
#: by a third on a busy 2-core machine, the median of three much less.
BULK_REPEATS = 3
#: The offloads-on bulk is also measured with the engine busy-polling this long (EndpointSettings.busy_poll,
#: net.core.busy_poll's rule): a poll-mode engine, as a NIC's own processor or a DPDK stack runs.
BUSY_POLL_US = 100


def bulk_mb_per_cpu_s(size: int, tso_segments: int, super_frames: bool, rx_csum_offload: bool) -> tuple[float, int]:
    """MB of payload echoed per CPU-second of both cores together, and frames carried."""
    # No queue limit: netem's default of 1,000 frames would tail-drop the echo's bursts and the
    # "lossless" figure would include loss recovery.
    unlimited = ImpairmentSpec(limit=UNLIMITED_QUEUE)
    harness = FrameHarness(a_to_b=unlimited, b_to_a=unlimited, super_frames=super_frames,
                           rx_csum_offload=rx_csum_offload,
                           tcp=TcpConfig(tso_segments=tso_segments, rcv_buf=BUF, snd_buf=BUF, wscale=8))
    start = time.process_time()
    intact, _ = harness.echo_transfer(size)
    cpu = time.process_time() - start
    if not intact:
        raise RuntimeError("the benchmark transfer was not byte-exact")
    return 2 * size / 1e6 / cpu, harness.frames  # echo moves every byte twice


def _client_ip(i: int) -> bytes:
    return bytes([198, 18 + (i >> 16), (i >> 8) & 0xFF, i & 0xFF])  # RFC 2544 benchmarking range


def per_frame_cost_us(open_connections: int, frames: int = 20000, gro: bool | None = None) -> float:
    """Microseconds per in-order 1448-byte data frame on one connection among `open_connections`.

    With `gro` None each frame goes straight to the core; with True or False the frames go
    through the endpoint runtime in batches of `RUNTIME_BATCH`, as one wake-up would hand them
    over, with receive GRO on or off (an in-memory driver stands in for the wire)."""
    core = EndpointCore(EndpointConfig(MAC_B, (IP_B,), services={DISCARD: "discard"},
                                       tcp=TcpConfig(rcv_buf=BUF, wscale=8, delayed_ack=0.04),
                                       resources=ResourceConfig(capacity=open_connections + 1,
                                                                pool_bytes=1 << 34), secret=b"bench"))
    now = 1.0
    last = None
    for i in range(open_connections):
        ip, port, isn = _client_ip(i), 1024 + i % 60000, 1000
        core.neighbors.learn(ip, MAC_A)
        syn = Segment(port, DISCARD, isn, 0, SYN, 65535, b"", TcpOptions(mss=1460, wscale=8, sack_permitted=True))
        core.from_wire(build_tcp_frame(MAC_A, MAC_B, ip, IP_B, syn), now, csum_ok=True)
        synack = core.poll_wire()[-1]
        ack_of = int.from_bytes(synack.frame[38:42], "big") + 1
        core.from_wire(build_tcp_frame(MAC_A, MAC_B, ip, IP_B, Segment(port, DISCARD, isn + 1, ack_of, ACK, 4096)),
                       now, csum_ok=True)
        core.poll_wire()
        last = (ip, port, isn + 1, ack_of)
    assert last is not None and len(core.stack) == open_connections
    ip, port, seq, ack = last
    payload = bytes(1448)
    batch = [build_tcp_frame(MAC_A, MAC_B, ip, IP_B, Segment(port, DISCARD, (seq + k * 1448) & 0xFFFFFFFF, ack, ACK,
                                                            4096, payload), ip_id=k) for k in range(frames)]
    if gro is None:
        start = time.process_time()  # CPU time: wall time on a shared machine measures the neighbours
        for frame in batch:
            core.from_wire(frame, now, csum_ok=True)
            core.poll_wire()
        elapsed = time.process_time() - start
    else:
        elapsed = _through_runtime(core, batch, now, gro)
    if core.apps and sum(a.received for a in core.apps.values()) < frames * 1448:
        raise RuntimeError("the benchmark frames were not all delivered")
    return elapsed / frames * 1e6


def _through_runtime(core: EndpointCore, frames: list[bytearray], now: float, gro: bool) -> float:
    """CPU seconds the endpoint runtime takes to read `frames` off an in-memory wire, batch by batch."""
    wire, host = MemoryDriver("wire"), MemoryDriver("host")
    runtime = EndpointRuntime(core, wire, host, EndpointSettings(addresses=[str(ipaddress.ip_address(IP_B))], gro=gro),
                              budget=RUNTIME_BATCH)
    runtime.clock = lambda: now
    wire.put(VNET_DATA_VALID + bytes(frame) for frame in frames)
    start = time.process_time()
    while runtime.pump_wire(now):
        pass
    return time.process_time() - start


CORE_BULK = (("MSS frames, software checksums", 1, False, False),
             ("MSS frames, checksum offload", 1, False, True),
             ("64 KiB super-frames (TSO+GSO)", 44, True, True))


def core_rows(bulk: list[tuple[str, float, int]], per_frame: list[tuple[int, float]], frames: int,
              runtime: tuple[float, float] | None = None) -> list[Row]:
    """Rows of `bench core`: bulk (label, MB/CPU-s, frames carried) with no reference, the per-frame
    cost at each count of open connections against the cost with the fewest open (flat = ratio 1),
    and (`runtime`: gro off, gro on) the per-frame cost through the runtime with receive GRO against without."""
    out = [row("core", f"bulk echo, {label}", "MB/CPU-s", None, round(rate, 2), frames=carried)
           for label, rate, carried in bulk]
    fewest = per_frame[0][1] if per_frame else None
    for index, (n, cost) in enumerate(per_frame):
        out.append(row("core", f"in-order 1448 B data frame, {n} connections open", "µs/frame",
                       None if index == 0 else round(fewest, 2), round(cost, 2), connections=n, frames=frames))
    if runtime is not None:
        out.append(row("core", f"in-order 1448 B data frame through the runtime, {RUNTIME_BATCH} per batch, "
                       "receive GRO on (reference: off)", "µs/frame", round(runtime[0], 2), round(runtime[1], 2),
                       frames=frames, batch=RUNTIME_BATCH))
    return out


def bench_core(args: argparse.Namespace) -> Measured:
    size = int(getattr(args, "core_mib", 16.0) * 1024 * 1024)
    frames = getattr(args, "core_frames", 20000)
    counts = getattr(args, "core_connections", (1, 1000, 64000))
    bulk = [(label, *bulk_mb_per_cpu_s(size, tso, whole, offload)) for label, tso, whole, offload in CORE_BULK]
    runtime = (per_frame_cost_us(1, frames, gro=False), per_frame_cost_us(1, frames, gro=True))
    rows = core_rows(bulk, [(n, per_frame_cost_us(n, frames)) for n in counts], frames, runtime)
    table = Table(title="engine core in memory (no I/O): bulk echo and per-frame cost")
    for column in ("measurement", "result", "frames"):
        table.add_column(column, justify="right")
    for r in rows:
        result = (f"{r['engine']:.1f} MB/CPU-s ({r['engine'] * 8 / 1000:.2f} Gbit/CPU-s)" if r["unit"] == "MB/CPU-s"
                  else f"{r['engine']:.1f} µs/frame")
        table.add_row(r["measurement"], result, str(r["frames"]))
    return Measured(table, rows)



def _loadgen(lab: "Lab", mode: str, addr: str, port: int, seconds: float) -> dict[str, float]:
    import json
    import sys as _sys

    done = lab.node("h1").run([_sys.executable, "-m", "toelab.benches.loadgen", mode, addr, str(port), str(seconds)],
                              timeout=seconds + 60, check=True)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (clock ticks to seconds)."""
    import os

    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _engine_pid(lab: "Lab", node: str) -> int:
    for proc in lab.record.processes:
        if proc.node == node and "endpoint_main" in proc.argv:
            return proc.pid
    raise RuntimeError(f"no engine process on node {node}")


@contextmanager
def _engine_side(offloads: bool) -> Iterator[Callable[[float, int], dict[str, float]]]:
    """A toe_pair lab up for as long as the caller measures: each call is one bulk to the engine's
    discard service, with the engine's CPU, the engine busy-polling for the microseconds given (0: it sleeps)."""
    from lab.lab import Lab
    from lab.render import load_topology

    params = {"offloads": str(offloads).lower(), "capacity": "65536"}
    with Lab.up(load_topology("toe_pair", params)) as lab:
        addr, pid, engine = lab.address("t1"), _engine_pid(lab, "t1"), lab.engine("t1")
        def measure(seconds: float, busy_poll: int = 0) -> dict[str, float]:
            engine.set(busy_poll=busy_poll)
            cpu0, before = _cpu_seconds(pid), engine.stats()["counters"]
            client0 = _proc_net(lab, "h1", "netstat", "TcpExt:")
            bulk = _loadgen(lab, "bulk", addr, 9, seconds)
            cpu, after = _cpu_seconds(pid) - cpu0, engine.stats()["counters"]
            client = _proc_net(lab, "h1", "netstat", "TcpExt:")
            sent = after.get("tx_frames", 0) - before.get("tx_frames", 0)
            grew = {key: after.get(key, 0) - before.get(key, 0) for key in ("out_of_window", "dsacks_sent")}
            return {"gbit": bulk["bytes"] * 8 / bulk["seconds"] / 1e9, "cores": cpu / bulk["seconds"],
                    "frames_per_ack": (after.get("rx_frames", 0) - before.get("rx_frames", 0)) / max(sent, 1),
                    "duplicates": grew["out_of_window"], "dsacks_sent": grew["dsacks_sent"],
                    **{name: client.get(name, 0) - client0.get(name, 0) for name in CLIENT_DSACK_FIELDS}}

        yield measure


def _proc_net(lab: "Lab", node: str, table: str, prefix: str) -> dict[str, int]:
    """One header/values pair of a node's /proc/net/`table` (its own namespace's), by field name."""
    lines = [line.split() for line in lab.node(node).run(["cat", f"/proc/net/{table}"], check=True).stdout.splitlines()
             if line.startswith(prefix)]
    return {name: int(value) for name, value in zip(lines[0][1:], lines[1][1:])}


def _tcp_segments(lab: "Lab", node: str) -> tuple[int, int]:
    """(InSegs, OutSegs) of a node's kernel TCP (/proc/net/snmp): a GSO/GRO packet counts once, as a frame."""
    fields = _proc_net(lab, node, "snmp", "Tcp:")
    return fields["InSegs"], fields["OutSegs"]


#: What the Linux client learnt from the engine's D-SACKs (/proc/net/netstat TcpExt): D-SACKs received,
#: and the window cuts it undid on them
CLIENT_DSACK_FIELDS = ("TCPDSACKRecv", "TCPDSACKUndo")


@contextmanager
def _kernel_side(offloads: bool) -> Iterator[tuple[Callable[[float], dict[str, float]], Callable[[float], float]]]:
    """A two_hosts lab up for as long as the caller measures: the same client against the same Python
    services on a plain kernel host (one bulk per call), and iperf3 (Gbit/s)."""
    import subprocess
    import sys as _sys

    from lab.lab import Lab
    from lab.render import load_topology
    from lab.tools import iperf, wait_for_line

    with Lab.up(load_topology("two_hosts")) as lab:
        if not offloads:
            for node in ("h1", "h2"):
                lab.set_features(node, "eth0", tso=False, gso=False, tx_csum=False)
        server = lab.node("h2").popen([_sys.executable, "-m", "lab.services", "discard=9"], stdout=subprocess.PIPE)
        wait_for_line(server, "ready", "kernel-side services")
        addr = lab.address("h2")

        def measure(seconds: float) -> dict[str, float]:
            in0, out0 = _tcp_segments(lab, "h2")
            bulk = _loadgen(lab, "bulk", addr, 9, seconds)
            in1, out1 = _tcp_segments(lab, "h2")
            return {"gbit": bulk["bytes"] * 8 / bulk["seconds"] / 1e9,
                    "frames_per_ack": (in1 - in0) / max(out1 - out0, 1)}

        yield measure, lambda seconds: iperf(lab, "h1", "h2", seconds=seconds).gbit_per_s


def paired_medians(pairs: list[tuple[dict[str, float], dict[str, float]]]) -> tuple[dict[str, float], dict[str, float]]:
    """(kernel, engine) from repeated kernel/engine transfers: the median of each figure, and in the
    engine's the median of the pairs' engine/kernel ratios (`ratio`) and their spread (`ratio_min`/`_max`)."""
    kernel = {key: median(k[key] for k, _ in pairs) for key in pairs[0][0]}
    engine = {key: median(e[key] for _, e in pairs) for key in pairs[0][1]}
    ratios = [e["gbit"] / max(k["gbit"], 1e-9) for k, e in pairs]
    engine.update(ratio=median(ratios), ratio_min=min(ratios), ratio_max=max(ratios), repeats=len(pairs))
    return kernel, engine


def bulk_pairs(offloads: bool, seconds: float, repeats: int,
               busy_poll: int = 0) -> tuple[dict[str, float], dict[str, float], dict[str, float] | None]:
    """Kernel and engine bulk transfers taking turns (the order reversed every repeat, both labs up
    throughout), so each ratio compares transfers made side by side on a busy machine. With `busy_poll`
    (µs) each repeat also has a transfer to the same engine busy-polling, paired with the same kernel run:
    (kernel, engine, busy-polling engine or None)."""
    with _kernel_side(offloads) as (kernel_bulk, kernel_iperf), _engine_side(offloads) as engine_bulk:
        runs: dict[str, Callable[[], dict[str, float]]] = {
            "kernel": lambda: kernel_bulk(seconds), "engine": lambda: engine_bulk(seconds, 0)}
        if busy_poll:
            runs["polling"] = lambda: engine_bulk(seconds, busy_poll)
        pairs, polled = [], []
        for i in range(repeats):
            got = {name: runs[name]() for name in (list(runs) if i % 2 == 0 else reversed(list(runs)))}
            pairs.append((got["kernel"], got["engine"]))
            if busy_poll:
                polled.append((got["kernel"], got["polling"]))
        kernel, engine = paired_medians(pairs)
        polling = paired_medians(polled)[1] if polled else None
        kernel["iperf_gbit"] = kernel_iperf(seconds)
    return kernel, engine, polling


def bulk_label(offloads: bool, busy_poll: int = 0) -> str:
    return ("offloads on" if offloads else "offloads off") + (f", busy-poll {busy_poll} µs" if busy_poll else "")


def endpoint_rows(offloads: bool, kernel: dict[str, float], engine: dict[str, float], busy_poll: int = 0) -> list[Row]:
    """Rows of `bench engine` for one offload setting (and the engine's busy-poll µs, 0: it sleeps), from
    `bulk_pairs` (medians of the repeats; the pairs' own ratios in `pair_ratio*` when there were pairs)."""
    label = bulk_label(offloads, busy_poll)
    pairs = {f"pair_ratio{suffix}": round(engine[key], 3) for key, suffix in
             (("ratio", ""), ("ratio_min", "_min"), ("ratio_max", "_max")) if key in engine}
    if "repeats" in engine:
        pairs["repeats"] = int(engine["repeats"])
    # frames received per ACK sent on each side: both ACK once per receive batch (Linux's backlog, the engine's wake-up)
    return [row("engine", f"bulk to discard, {label}", "Gbit/s", round(kernel["gbit"], 3), round(engine["gbit"], 3),
                iperf3_gbit_s=round(kernel["iperf_gbit"], 3),
                kernel_frames_per_ack=round(kernel.get("frames_per_ack", 0.0), 1),
                engine_frames_per_ack=round(engine.get("frames_per_ack", 0.0), 1),
                # segments the engine already had (Linux's spurious retransmissions), and its D-SACKs for them
                engine_duplicates=int(engine.get("duplicates", 0)),
                engine_dsacks_sent=int(engine.get("dsacks_sent", 0)),
                client_dsacks_received=int(engine.get("TCPDSACKRecv", 0)),
                client_dsack_undos=int(engine.get("TCPDSACKUndo", 0)),
                busy_poll_us=busy_poll, **pairs),
            row("engine", f"engine CPU per Gbit/s, {label}", "core·s/Gbit", None,
                round(engine["cores"] / max(engine["gbit"], 1e-9), 3), cores=round(engine["cores"], 2))]


def bench_engine(args: argparse.Namespace) -> Measured:
    """The engine endpoint against the kernel, measured in the same run with the same client (bulk:
    `bulk_pairs`, up to BULK_REPEATS pairs taking turns); `--http-only` measures the HTTP connection
    set-ups alone, `--bulk-only` the bulk rows alone."""
    from toelab.benches.http_setup import http_rows, in_memory_cost, lab_setups, setups_cells, setups_table
    from toelab.benches.queues import queue_scaling_rows

    bulk_only = getattr(args, "bulk_only", False)
    http = [] if bulk_only else http_rows(*lab_setups(args.seconds), in_memory_cost(),
                                          in_memory_cost(through_runtime=True))
    if getattr(args, "http_only", False):
        return Measured(setups_table(http), http)
    table = Table(title="engine endpoint vs kernel: same client (Python), same run")
    for column in ("measurement", "kernel", "engine", "engine / kernel"):
        table.add_column(column, justify="right")
    rows: list[Row] = []
    repeats = max(1, min(getattr(args, "repeats", 1), BULK_REPEATS))
    for offloads in (True, False):
        busy_poll = BUSY_POLL_US if offloads else 0
        kernel, engine, polling = bulk_pairs(offloads, args.seconds, repeats, busy_poll)
        table.add_row(f"iperf3 kernel -> kernel, {bulk_label(offloads)}", f"{kernel['iperf_gbit']:.2f} Gbit/s", "", "")
        for polled, figures in ((0, engine), (busy_poll, polling)):
            if figures is None:
                continue
            label = bulk_label(offloads, polled)
            table.add_row(f"bulk to discard, {label} (median of {repeats})", f"{kernel['gbit']:.2f} Gbit/s",
                          f"{figures['gbit']:.2f} Gbit/s",
                          f"{figures['gbit'] / kernel['gbit']:.2f} (pairs {figures['ratio_min']:.2f}-{figures['ratio_max']:.2f}; "
                          f"{figures['gbit'] / kernel['iperf_gbit']:.2f} of iperf3)")
            table.add_row(f"engine CPU, {label}", "", f"{figures['cores']:.2f} cores = "
                          f"{figures['cores'] / max(figures['gbit'], 1e-9):.2f} core per Gbit/s", "")
            rows += endpoint_rows(offloads, kernel, figures, polled)
    for setups in http:
        table.add_row(*setups_cells(setups))
    rows += http
    for scaling in [] if bulk_only else queue_scaling_rows(args.seconds):  # the "kernel" column: one queue
        table.add_row(scaling["measurement"], f"{scaling['reference']:.2f} {scaling['unit']}",
                      f"{scaling['engine']:.2f} {scaling['unit']}", f"{scaling['ratio']:.2f} (2 queues / 1)")
        rows.append(scaling)
    return Measured(table, rows)
