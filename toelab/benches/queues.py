"""`toelab bench rings`, `toelab bench coalescing`, and the queue-scaling row of `toelab bench engine`.

- rings (TOE-13): one burst of small frames per receive-ring size; frames missed
  (rx_missed_errors) against the burst, the ring's memory beside it.
- coalescing (TOE-15): request-response p50/p99 and engine CPU per small exchange and per
  Gbit/s of bulk, at several block timeouts (rx-usecs); the reference is no ring.
- queue scaling (TOE-14): bulk to discard with offloads off on 4 flows, 2 queues against 1
  queue (same run); the flows' source ports are chosen so 2 land on each queue. CPU is the
  engine's CPU time (all its processes), so the figure per Gbit/s holds on a busy machine;
  the throughput ratio only holds on an otherwise idle one.

Rows follow the benchmark convention (`--json FILE`).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from lab.lab import Lab
from lab.render import load_topology
from scenarios.cpu_cost import namespace_times
from scenarios.queues import DISCARD, ENGINE_PROCESS, BurstRow, CoalescingRow, coalescing_row, ports_for, ring_burst

from .rows import Measured, Row, row, table_of

RING_SIZES = (64, 256, 1024, 4096, 16384)
BURST = 60000
COALESCING_USECS = (0, 1000, 2000, 4000)
FLOWS = 4


def ring_rows(bursts: list[BurstRow]) -> list[Row]:
    """Rows of `bench rings`: frames missed per ring size, against the frames of the burst."""
    return [row("rings", f"frames missed of a {burst.sent}-frame burst, rx ring {burst.rx_ring} "
                f"({burst.ring_bytes // 1024} KiB)", "frames", burst.sent, burst.missed,
                rx_ring=burst.rx_ring, ring_bytes=burst.ring_bytes, read=burst.read) for burst in bursts]


def bench_rings(args: argparse.Namespace) -> Measured:
    with Lab.up(load_topology("toe_pair", {"offloads": "false", "queues": "1", "rx_ring": str(RING_SIZES[0])})) as lab:
        engine = lab.engine("t1")
        rows = ring_rows([ring_burst(lab, engine, "h1", "t1", "eth0", size, BURST) for size in RING_SIZES])
    return Measured(table_of("receive ring size vs rx_missed_errors under one burst (TOE-13); reference: frames sent",
                             rows), rows)


def coalescing_rows(measured: list[CoalescingRow]) -> list[Row]:
    """Rows of `bench coalescing`: each setting's latency and CPU against the first setting's (no ring)."""
    rows: list[Row] = []
    plain = measured[0]
    for m in measured:
        label = "no ring" if not m.rx_usecs else f"rx-usecs {m.rx_usecs}"
        rows += [row("coalescing", f"64 B request-response p50, {label}", "µs", plain.p50_us, m.p50_us),
                 row("coalescing", f"64 B request-response p99, {label}", "µs", plain.p99_us, m.p99_us),
                 row("coalescing", f"engine CPU per 64 B exchange, {label}", "µs", plain.small_cpu_s_per_exchange_us,
                     m.small_cpu_s_per_exchange_us),
                 row("coalescing", f"bulk engine CPU per Gbit/s, offloads off, {label}", "core·s/Gbit",
                     plain.bulk_cpu_per_gbit_s, m.bulk_cpu_per_gbit_s, gbit_s=m.bulk_gbit_s)]
    return rows


def bench_coalescing(args: argparse.Namespace) -> Measured:
    with Lab.up(load_topology("toe_pair", {"offloads": "false", "queues": "1"})) as lab:
        engine = lab.engine("t1")
        measured = [coalescing_row(lab, engine, "h1", "t1", lab.address("t1"), usecs, 2000, 64, args.seconds)
                    for usecs in COALESCING_USECS]
    rows = coalescing_rows(measured)
    return Measured(table_of("interrupt coalescing (TOE-15): latency and CPU against no ring, same run", rows), rows)


def multi_flow_bulk(queues: int, flows: int, seconds: float) -> dict[str, float]:
    """Bulk to the engine's discard service on `flows` flows at once, with `queues` queue processes
    (1: the engine's own process); Gbit/s and the engine's CPU seconds per second."""
    params = {"offloads": "false", "capacity": "1024", "queues": str(queues if queues > 1 else 0)}
    with Lab.up(load_topology("toe_pair", params)) as lab:
        engine, addr = lab.engine("t1"), lab.address("t1")
        if queues > 1:
            per = {q: flows // queues + (q < flows % queues) for q in range(queues)}
            sports = ports_for(engine.config(), lab.address("h1"), addr, DISCARD, per)
        else:
            sports = list(range(41000, 41000 + flows))
        server = lab.node("t1")
        before, started = namespace_times(server), time.monotonic()
        procs = [lab.node("h1").popen([sys.executable, "-m", "scenarios.flow_clients", "bulk", addr, str(DISCARD),
                                       str(seconds), str(sport)], stdout=subprocess.PIPE, text=True)
                 for sport in sports]
        results = []
        for proc in procs:
            out, _ = proc.communicate(timeout=seconds + 120)
            results.append(json.loads(out))
        elapsed = time.monotonic() - started
        cpu = namespace_times(server).since(before, matching=ENGINE_PROCESS)
        spread = {k: v for k, v in engine.stats()["counters"].items() if k.startswith("rx_queue_") and k.endswith("_frames")}
    gbit = sum(r["bytes"] for r in results) * 8 / max(r["seconds"] for r in results) / 1e9
    return {"gbit": gbit, "cores": cpu / elapsed, **{k: float(v) for k, v in spread.items()}}


def queue_scaling_rows(seconds: float) -> list[Row]:
    """The 2-queue/4-flow row of `toelab bench engine` (and its CPU row), against one queue in the same run."""
    return scaling_rows(multi_flow_bulk(1, FLOWS, seconds), multi_flow_bulk(2, FLOWS, seconds))


def scaling_rows(one: dict[str, float], two: dict[str, float]) -> list[Row]:
    """The queue-scaling rows from `multi_flow_bulk` with 1 queue and with 2."""
    return [row("engine", f"bulk to discard, offloads off, {FLOWS} flows: 2 queues (reference: 1 queue)", "Gbit/s",
                round(one["gbit"], 3), round(two["gbit"], 3),
                rx_queue_0_frames=two.get("rx_queue_0_frames", 0), rx_queue_1_frames=two.get("rx_queue_1_frames", 0)),
            row("engine", f"engine CPU per Gbit/s, offloads off, {FLOWS} flows: 2 queues (reference: 1 queue)",
                "core·s/Gbit", round(one["cores"] / max(one["gbit"], 1e-9), 3),
                round(two["cores"] / max(two["gbit"], 1e-9), 3), cores_1q=round(one["cores"], 2),
                cores_2q=round(two["cores"], 2))]


def syn_flood_answered(queues: int, rate: int, seconds: float) -> dict[str, float]:
    """A spoofed SYN flood at a table that holds nothing (policy syncookie): SYNs answered with a
    cookie, SYNs counted as missed, per second of flood, with `queues` queue processes."""
    from scenarios.queues import mac_of, wait_for

    params = {"offloads": "false", "capacity": "0", "policy": "syncookie", "queues": str(queues if queues > 1 else 0)}
    with Lab.up(load_topology("toe_pair", params)) as lab:
        engine = lab.engine("t1")
        flood = lab.node("h1").popen([sys.executable, "-m", "scenarios.flood", "--iface", "eth0",
                                      "--src-mac", mac_of(lab, "h1", "eth0"), "--dst-mac", mac_of(lab, "t1", "eth0"),
                                      "--dst", lab.address("t1"), "--dport", "80", "--spoof", "198.18.0.0/15",
                                      "--rate", str(rate), "--duration", str(seconds)], stdout=subprocess.PIPE, text=True)
        out, _ = flood.communicate(timeout=seconds + 60)
        stats = json.loads(out.strip().splitlines()[-1])

        def settled() -> bool:
            counters = engine.stats()["counters"]
            return counters.get("syncookies_sent", 0) + counters.get("rx_missed_errors", 0) >= stats["sent"]
        wait_for(settled, 30)
        counters = engine.stats()["counters"]
    return {"sent": stats["sent"], "flood_s": stats["elapsed_s"], "answered": counters.get("syncookies_sent", 0),
            "missed": counters.get("rx_missed_errors", 0)}


def bench_syn_queues(args: argparse.Namespace) -> Measured:
    """Spoofed SYNs answered with cookies per second of flood, 1 queue against 2 (same run)."""
    rate = 200_000
    one, two = syn_flood_answered(1, rate, args.seconds), syn_flood_answered(2, rate, args.seconds)
    rows = syn_queue_rows(rate, one, two)
    return Measured(table_of("SYN flood at a full table (syncookie): the flood path, 1 queue vs 2", rows), rows)


def syn_queue_rows(rate: int, one: dict[str, float], two: dict[str, float]) -> list[Row]:
    """Rows of `bench syn_queues` from `syn_flood_answered` with 1 queue and with 2."""
    rows: list[Row] = []
    for label, key in (("SYNs answered with a cookie per second of flood", "answered"),
                       ("SYNs missed (rx_missed_errors) per second of flood", "missed")):
        rows.append(row("syn_queues", f"{label}, {rate:,} SYN/s offered: 2 queues (reference: 1 queue)", "1/s",
                        round(one[key] / one["flood_s"]), round(two[key] / two["flood_s"]),
                        sent_1q=one["sent"], sent_2q=two["sent"]))
    accounted = all(r["answered"] + r["missed"] >= r["sent"] for r in (one, two))
    rows.append(row("syn_queues", "every SYN that reached the wire answered or counted (1 = yes)", "", 1, int(accounted)))
    return rows
