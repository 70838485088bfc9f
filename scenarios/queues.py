"""The engine's receive ring, RSS queues and coalescing, in ethtool's vocabulary (TOE-13, 14, 15).

- `ring_drops` (TOE-13): one burst of frames at the engine per ring size (`ethtool -G rx N`,
  the engine's `rx_ring`); what the ring could not hold is counted as `rx_missed_errors`
  before the host sees anything, and the table of ring size against drops shows the trade.
- `rss_queues` (TOE-14): flows whose source ports are chosen so the RSS table sends a known
  number to each queue; they must land there, byte-exact, and the queue processes share the
  work; the connection table stays one for the node: flows piled on one queue still fit,
  the one past capacity is refused whichever queue it hashes to.
- `coalescing` (TOE-15): request-response latency (p50/p99) and CPU per Gbit/s of a
  small-packet and a bulk workload at several block timeouts (`ethtool -C rx-usecs`), 0
  meaning no ring (one read per frame, no coalescing).

They apply to the toe target only: the kernel on a veth has neither ring nor RSS queues to
set. The measuring functions are public; `toelab bench rings` and `coalescing` reuse them.
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import Field, field_validator

from lab.audit import audit_engine, engine_sockets
from lab.engine_nodes import EngineHandle
from lab.lab import Lab

from toe_engine.io.rss import flow_queue

from .cpu_cost import namespace_times
from .framework import Check, RunContext, ScenarioParams, scenario

ENGINE_PROCESS = "endpoint_main"
ECHO, DISCARD = 7, 9
#: frames besides the burst a node may see while it runs (ARP, a stray IPv6 ND): slack in the accounting
BACKGROUND_FRAMES = 50
COUNT_WAIT_S = 15.0
#: Bulk CPU per Gbit/s with coalescing may exceed the no-ring figure by this much (CPU-time noise on a
#: shared machine); measured here, it was 3 to 8 % lower.
BULK_CPU_TOLERANCE = 1.2


def client(lab: Lab, node: str, *args: object, timeout: float = 300) -> Any:
    """Run `python -m scenarios.flow_clients ARGS` in `node`; its JSON answer."""
    done = lab.node(node).run([sys.executable, "-m", "scenarios.flow_clients", *map(str, args)], timeout=timeout)
    if not done.stdout.strip():
        raise RuntimeError(f"flow client {args[0]} on {node} said nothing: {done.stderr.strip()[-300:]}")
    return json.loads(done.stdout.strip().splitlines()[0])


def mac_of(lab: Lab, node: str, iface: str) -> str:
    shown = lab.node(node).run(["ip", "-j", "link", "show", "dev", iface], check=True).stdout
    address: str = json.loads(shown)[0]["address"]
    return address


def flat(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """A table as check evidence (scalars only): `{key}={value}.{column}` -> cell."""
    return {f"{key}={row[key]}.{name}": value for row in rows for name, value in row.items() if name != key}


def wait_for(condition: Any, timeout_s: float = COUNT_WAIT_S) -> bool:
    """Poll a counter condition until it holds or time runs out; whether it held."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# --- TOE-13: ring size against drops ---------------------------------------------------------

@dataclass(frozen=True)
class BurstRow:
    rx_ring: int
    ring_bytes: int
    sent: int
    read: int
    missed: int


def ring_burst(lab: Lab, engine: EngineHandle, client_node: str, server_node: str, iface: str, rx_ring: int,
               frames: int) -> BurstRow:
    """Re-queue the engine with `rx_ring`, fire `frames` frames at it, and count what it read and missed."""
    config = engine.set(rx_ring=rx_ring)
    sent = client(lab, client_node, "burst", iface, mac_of(lab, server_node, iface), frames)["sent"]

    def counted() -> int:
        counters = engine.stats()["counters"]
        return int(counters["rx_queue_0_frames"] + counters["rx_missed_errors"])
    wait_for(lambda: counted() >= sent)
    counters = engine.stats()["counters"]
    return BurstRow(rx_ring, config.get("ring", {}).get("ring_bytes", 0), sent, counters["rx_queue_0_frames"],
                    counters["rx_missed_errors"])


class RingDropsParams(ScenarioParams):
    #: Neighbouring sizes differ by more than the engine's drain varies from burst to burst: it reads 5,000 to
    #: 18,000 of a 60,000-frame burst while it arrives, and rings of 64 and 1,024 frames hold about 1,300 and
    #: 10,500 of its 106-byte frames, so between those two the order of the drops was the scheduler's in one
    #: run of three; 4,096 holds about 42,000 (RingSettings.frames_held).
    rings: str = Field("64,4096,16384", description="ring sizes to try, frames (ethtool -G rx N), smallest first")
    burst: int = Field(60000, ge=1000, le=1_000_000, description="frames per burst, sent back to back")

    @field_validator("rings")
    @classmethod
    def _rings(cls, value: str) -> str:
        _sizes(value)
        return value


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        sizes = []
    if len(sizes) < 2 or sizes != sorted(sizes) or sizes[0] < 64:
        raise ValueError(f"rings must be two or more ring sizes of 64 frames or more, smallest first, got {text!r}")
    return sizes


@scenario("ring_drops", purpose="One burst per receive-ring size: what the ring cannot hold is counted as "
          "rx_missed_errors before the host sees it, and a larger ring trades memory for fewer drops.",
          topology="toe_queues", params=RingDropsParams, covers=("RFC2863",), targets=("toe",),
          server="h2", client="h1", claims=("TOE-13",),
          topology_params=lambda p: {"queues": 1, "rx_ring": _sizes(p.rings)[0]})
def ring_drops(ctx: RunContext) -> Iterator[Check]:
    p = ctx.params
    engine = ctx.target.engine  # type: ignore[attr-defined]
    iface = ctx.iface(ctx.server)
    rows = [ring_burst(ctx.lab, engine, ctx.client, ctx.server, iface, size, p.burst) for size in _sizes(p.rings)]
    table = flat([asdict(row) for row in rows], "rx_ring")
    ctx.artifact("ring_drops.json").write_text(json.dumps([asdict(row) for row in rows], indent=1))
    said = "; ".join(f"rx {r.rx_ring} ({r.ring_bytes // 1024} KiB): {r.missed} of {r.sent} missed" for r in rows)
    smallest, largest = rows[0], rows[-1]
    yield ctx.check("burst-overflows-the-smallest-ring", "RFC2863", smallest.missed > 0,
                    f"precondition: the burst outran the engine at rx {smallest.rx_ring}: {smallest.missed} of "
                    f"{smallest.sent} frames missed", numbers=table)
    uncounted = [r for r in rows if not r.sent <= r.read + r.missed <= r.sent + BACKGROUND_FRAMES]
    yield ctx.check("every-frame-read-or-counted", "RFC2863", not uncounted,
                    "every burst frame was either read by the engine or counted in rx_missed_errors"
                    if not uncounted else f"frames neither read nor counted: {uncounted}", numbers=table)
    tolerance = p.burst // 50
    monotone = all(b.missed <= a.missed + tolerance for a, b in zip(rows, rows[1:]))
    yield ctx.check("larger-ring-fewer-drops", "RFC2863", monotone and largest.missed < smallest.missed,
                    f"drops fall as the ring grows: {said}", numbers=table)
    counters, findings = audit_engine(ctx.server, engine_sockets(ctx.lab.record)[ctx.server])
    named = counters.get("rx_missed_errors") == largest.missed == counters.get("rx_queue_0_missed")
    flagged = largest.missed == 0 or any("rx_missed_errors" in f for f in findings)
    yield ctx.check("missed-shown-by-audit-as-ethtool-names-it", "RFC2863", named and flagged,
                    f"toelab audit shows rx_missed_errors={counters.get('rx_missed_errors')} (and rx_queue_0_missed) "
                    f"for the last burst, which missed {largest.missed}" + ("; flagged" if largest.missed else ""),
                    counters={k: v for k, v in counters.items() if "missed" in k})


# --- TOE-14: RSS queues ----------------------------------------------------------------------

def ports_for(config: dict[str, Any], src: str, dst: str, port: int, wanted: dict[int, int],
              first: int = 41000) -> list[int]:
    """Source ports of `src` whose flows to dst:port land `wanted[q]` times on each queue q, queue by queue."""
    table, key = config["rss"]["table"], bytes.fromhex(config["rss"]["key"].replace(":", ""))
    chosen: dict[int, list[int]] = {q: [] for q in wanted}
    for sport in range(first, 65536):
        q = flow_queue(src, dst, sport, port, table, key)
        if q in chosen and len(chosen[q]) < wanted[q]:
            chosen[q].append(sport)
        if all(len(chosen[q]) == n for q, n in wanted.items()):
            return [p for q in sorted(wanted) for p in chosen[q]]
    raise RuntimeError(f"no source ports reach queues {wanted} through the table {table}")


def flow_queues(engine: EngineHandle) -> dict[int, int]:
    """Client source port -> the queue serving it, from the engine's connection table."""
    rows = engine.request({"cmd": "conns"})["connections"]
    return {int(row["remote"].rsplit(":", 1)[1]): row["queue"] for row in rows if row["offloaded"]}


def hold_flows(lab: Lab, node: str, addr: str, sports: list[int], size: int) -> tuple[list[dict[str, Any]], Any]:
    """Echo `size` bytes on one connection per source port and keep them open; (results, the client to release)."""
    import subprocess

    proc = lab.node(node).popen([sys.executable, "-m", "scenarios.flow_clients", "echo", addr, str(ECHO), str(size),
                                 ",".join(map(str, sports)), "hold"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise RuntimeError(f"echo client on {node} said nothing: {proc.stderr.read() if proc.stderr else ''}")
    return json.loads(line), proc


def release(proc: Any) -> None:
    proc.stdin.write("\n")
    proc.stdin.close()
    proc.wait(timeout=60)


class RssParams(ScenarioParams):
    queues: int = Field(2, ge=2, le=8, description="engine queues (ethtool -L combined N)")
    per_queue: int = Field(2, ge=1, le=16, description="flows steered to each queue")
    size_kib: int = Field(8192, ge=64, le=262144, description="KiB echoed on each flow")


@scenario("rss_queues", purpose="Flows land on the queue the RSS table names and come back byte-exact; the queue "
          "processes share the work; the connection table and its policy stay one for the node.",
          topology="toe_queues", params=RssParams, covers=("RFC9293 3.10.7.4", "RFC9293 3.5"), targets=("toe",),
          server="h2", client="h1", claims=("TOE-14",), topology_params=lambda p: {"queues": p.queues})
def rss_queues(ctx: RunContext) -> Iterator[Check]:
    p = ctx.params
    engine: EngineHandle = ctx.target.engine  # type: ignore[attr-defined]
    src, dst = ctx.address(ctx.client), ctx.address(ctx.server)
    config = engine.config()
    sports = ports_for(config, src, dst, ECHO, {q: p.per_queue for q in range(p.queues)})
    expected = {sport: i // p.per_queue for i, sport in enumerate(sports)}
    server = ctx.lab.node(ctx.server)
    pids = {q["queue"]: q["pid"] for q in engine.stats()["queues"]}
    before = namespace_times(server)
    started = time.monotonic()
    results, proc = hold_flows(ctx.lab, ctx.client, dst, sports, p.size_kib * 1024)
    seconds = time.monotonic() - started
    try:
        landed, stats = {sport: q for sport, q in flow_queues(engine).items() if sport in expected}, engine.stats()
    finally:
        release(proc)
    after = namespace_times(server)
    counters = stats["counters"]
    per_queue = {q: counters.get(f"rx_queue_{q}_frames", 0) for q in range(p.queues)}
    cpu = {q: round(after.seconds.get(pid, 0.0) - before.seconds.get(pid, 0.0), 3) for q, pid in pids.items()}
    gbit = 2 * len(sports) * p.size_kib * 1024 * 8 / seconds / 1e9
    numbers: dict[str, Any] = {"echo_gbit_s": round(gbit, 3),
                               **{f"sport={sport}.queue": q for sport, q in landed.items()},
                               **{f"queue={q}.expected_flows": list(expected.values()).count(q) for q in per_queue},
                               **{f"queue={q}.rx_frames": n for q, n in per_queue.items()},
                               **{f"queue={q}.cpu_s": c for q, c in cpu.items()}}
    yield ctx.check("flows-land-where-the-table-says", "RFC9293 3.10.7.4",
                    landed == expected and all(n > 0 for n in per_queue.values()),
                    f"{len(sports)} flows on the queues the RSS table names ({p.per_queue} each), rx frames per queue "
                    f"{per_queue}" if landed == expected else f"flows landed {landed}, the table says {expected}",
                    numbers=numbers)
    exact = [r for r in results if r.get("ok")]
    yield ctx.check("byte-exact-on-every-queue", "RFC9293 3.10.7.4", len(exact) == len(sports),
                    f"{len(exact)} of {len(sports)} flows echoed byte-exact across {p.queues} queues",
                    integrity=True, numbers={f"sport={r['sport']}.ok": bool(r.get("ok")) for r in results})
    total = sum(cpu.values())
    shared = total > 0 and min(cpu.values()) >= 0.25 * total / p.queues
    yield ctx.check("queues-share-the-work", "RFC9293 3.10.7.4", shared,
                    f"CPU seconds per queue process {cpu} for equal flows per queue ({gbit:.2f} Gbit/s echoed, a "
                    "shared machine: the split, not the speed, is judged)", numbers=numbers)
    # One table: fill it unevenly (all but one flow on queue 0), then one more on the emptiest queue.
    capacity = p.queues * p.per_queue
    wait_for(lambda: engine.stats()["gauges"]["table_occupancy"] == 0)  # the echo flows' closes have completed
    engine.set(capacity=capacity, policy="deny:rst")
    piled = ports_for(engine.config(), src, dst, ECHO, {0: capacity - 1, 1: 1}, first=50000)
    extra = ports_for(engine.config(), src, dst, ECHO, {1: 1}, first=piled[-1] + 1)
    first, holder = hold_flows(ctx.lab, ctx.client, dst, piled, 4096)
    try:
        late, late_proc = hold_flows(ctx.lab, ctx.client, dst, extra, 4096)
        release(late_proc)
        stats = engine.stats()
    finally:
        release(holder)
    seen = stats["counters"]
    fits = all(r.get("ok") for r in first)
    refused = not late[0].get("ok") and seen.get("conn_denied", 0) == 1
    yield ctx.check("one-table-for-all-queues", "RFC9293 3.5", fits and refused
                    and stats["gauges"]["table_occupancy"] == capacity,
                    f"capacity {capacity} for the node: {sum(bool(r.get('ok')) for r in first)} of {len(piled)} flows "
                    f"piled on queue 0 fit, the next on queue 1 was {'refused' if refused else 'accepted'} "
                    f"(conn_denied {seen.get('conn_denied', 0)}, occupancy {stats['gauges']['table_occupancy']})",
                    counters={k: seen.get(k, 0) for k in ("conn_offloaded", "conn_denied", "conn_fallback")})
    sums = sum(seen.get(f"rx_queue_{q}_frames", 0) for q in range(p.queues)) == stats["drivers"]["eth0"]["rx_frames"]
    yield ctx.check("counters-add-up-across-queues", "RFC9293 3.5", sums,
                    "the node's wire frames are the sum of rx_queue_N_frames, and the policy counters are the node's",
                    counters={f"rx_queue_{q}_frames": seen.get(f"rx_queue_{q}_frames", 0) for q in range(p.queues)})


# --- TOE-15: coalescing ----------------------------------------------------------------------

@dataclass(frozen=True)
class CoalescingRow:
    rx_usecs: int  # 0: no ring, one read per frame
    p50_us: float
    p99_us: float
    small_cpu_s_per_exchange_us: float
    bulk_gbit_s: float
    bulk_cpu_per_gbit_s: float


def engine_cpu(lab: Lab, node: str) -> Any:
    return namespace_times(lab.node(node))


def coalescing_row(lab: Lab, engine: EngineHandle, client_node: str, server_node: str, addr: str, rx_usecs: int,
                   exchanges: int, size: int, bulk_s: float, rx_frames: int = 64) -> CoalescingRow:
    """Re-queue the engine with this coalescing, then measure request-response and bulk."""
    engine.set(rx_ring=4096 if rx_usecs else 0, rx_usecs=max(rx_usecs, 1), rx_frames=rx_frames)
    before = engine_cpu(lab, server_node)
    rr = client(lab, client_node, "rr", addr, ECHO, exchanges, size)
    middle = engine_cpu(lab, server_node)
    bulk = client(lab, client_node, "bulk", addr, DISCARD, bulk_s)
    after = engine_cpu(lab, server_node)
    rtts = sorted(rr["rtt_us"])
    small_cpu = middle.since(before, matching=ENGINE_PROCESS) / exchanges * 1e6
    gbit = bulk["bytes"] * 8 / bulk["seconds"] / 1e9
    bulk_cpu = after.since(middle, matching=ENGINE_PROCESS) / bulk["seconds"]
    return CoalescingRow(rx_usecs, round(statistics.median(rtts), 1), round(rtts[int(len(rtts) * 0.99) - 1], 1),
                         round(small_cpu, 1), round(gbit, 3), round(bulk_cpu / max(gbit, 1e-9), 3))


class CoalescingParams(ScenarioParams):
    usecs: str = Field("0,1000,4000", description="block timeouts to try, µs (ethtool -C rx-usecs); 0: no ring")
    exchanges: int = Field(1000, ge=50, le=100_000, description="request-response exchanges per setting")
    size: int = Field(64, ge=1, le=65536, description="bytes per request and per response (small packets)")
    bulk_s: float = Field(2.0, gt=0, le=60, description="seconds of bulk transfer per setting")

    @field_validator("usecs")
    @classmethod
    def _usecs(cls, value: str) -> str:
        _timeouts(value)
        return value


def _timeouts(text: str) -> list[int]:
    try:
        settings = sorted(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        settings = []
    if not settings or settings[0] != 0 or settings[-1] < 1000 or settings[-1] > 1_000_000:
        raise ValueError(f"usecs must list 0 (no ring) and a block timeout of 1000 to 1000000 µs, got {text!r}")
    return settings


@scenario("coalescing", purpose="Request-response latency and CPU per Gbit/s of small and bulk transfers at several "
          "receive-ring block timeouts: coalescing trades latency for CPU, and small packets gain nothing.",
          topology="toe_queues", params=CoalescingParams, covers=("RFC9293 3.7.4",), targets=("toe",),
          server="h2", client="h1", claims=("TOE-15",), topology_params={"queues": 1})
def coalescing(ctx: RunContext) -> Iterator[Check]:
    p = ctx.params
    engine: EngineHandle = ctx.target.engine  # type: ignore[attr-defined]
    rows = [coalescing_row(ctx.lab, engine, ctx.client, ctx.server, ctx.address(ctx.server), u, p.exchanges, p.size,
                           p.bulk_s) for u in _timeouts(p.usecs)]
    table = flat([asdict(r) for r in rows], "rx_usecs")
    ctx.artifact("coalescing.json").write_text(json.dumps([asdict(r) for r in rows], indent=1))
    plain, slowest = rows[0], rows[-1]
    said = "; ".join(f"rx-usecs {r.rx_usecs}: p50 {r.p50_us:.0f} µs p99 {r.p99_us:.0f} µs, bulk "
                     f"{r.bulk_cpu_per_gbit_s:.2f} core per Gbit/s" for r in rows)
    yield ctx.check("coalescing-costs-latency", "RFC9293 3.7.4",
                    slowest.p50_us >= slowest.rx_usecs / 2 and slowest.p50_us > 2 * plain.p50_us,
                    f"a lone request waits for the block timeout: {said}", numbers=table)
    yield ctx.check("small-packets-gain-nothing", "RFC9293 3.7.4",
                    slowest.small_cpu_s_per_exchange_us >= 0.8 * plain.small_cpu_s_per_exchange_us,
                    f"engine CPU per {p.size}-byte exchange: {plain.small_cpu_s_per_exchange_us:.0f} µs without a ring, "
                    f"{slowest.small_cpu_s_per_exchange_us:.0f} µs at rx-usecs {slowest.rx_usecs}: one frame per "
                    "wake-up either way", numbers=table)
    yield ctx.check("bulk-cpu-per-gbit", "RFC9293 3.7.4",
                    slowest.bulk_gbit_s > 0
                    and slowest.bulk_cpu_per_gbit_s <= BULK_CPU_TOLERANCE * plain.bulk_cpu_per_gbit_s,
                    f"bulk: {plain.bulk_cpu_per_gbit_s:.2f} core per Gbit/s without a ring, "
                    f"{slowest.bulk_cpu_per_gbit_s:.2f} at rx-usecs {slowest.rx_usecs} (CPU time, same run; no more "
                    f"than {BULK_CPU_TOLERANCE}x)",
                    numbers=table)
