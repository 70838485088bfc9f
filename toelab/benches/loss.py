"""`toelab bench loss`: goodput under loss, the engine endpoint against the kernel, through the same middlebox.

The path is the `loss` scenario's: h1 - mb - h2, the engine middlebox routing in the middle
with TSO on its egress, so loss hits MSS-sized segments. For each setting (no loss, 1, 5 and
10 % random loss, and a Gilbert-Elliott burst setting) the middlebox is given the same seeds
in both directions, and h1's kernel client downloads from chargen and echoes through echo on
h2, once with h2's kernel serving and once with the engine endpoint serving (each in a lab of
its own, built the same way, in the same run, the endpoints taking turns at every setting and
repeat). Per row: goodput of each, engine/kernel, time to complete, the engine's RTOs (with
what each found, `engine_rto_<cause>_per_mib`) and fast, RACK and TLP retransmissions per MiB
moved, and the like-for-like kernel's RTOs and tail loss probes per MiB beside them. Every figure
pools the repeats (total bytes over total time, counts over all MiB moved), and the lossy
downloads are long enough (`DOWNLOAD_BYTES`) that a ratio does not hinge on one transfer's timers.

The reference is like for like: the kernel server runs the congestion control that matches
the engine's (`--engine-cc`: newreno -> reno, cubic -> cubic, bbr -> bbr; `kernel_cc`), so the
ratio is the cost of the engine's loss recovery apart from the choice of algorithm. Each row
also has the kernel with its namespace's default (bbr on this machine, which does not cut its
window on random loss: `default_reference`, `default_ratio`, `kernel_default_cc`); where the
default is the matching algorithm the kernel is measured once and both columns are that run.

A counter the engine does not report is an error, not a zero: a loss benchmark that cannot
see the engine's loss recovery measures nothing about it.
"""
from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from lab.errors import LabError
from lab.lab import Lab
from lab.render import load_topology
from lab.spec import TopologySpec
from scenarios.loss import impair_middlebox
from scenarios.targets import Target, UnknownCounter, delta, make
from scenarios.toe_target import ToeTarget
from scenarios.transfer import download, echo_bytes
from toe_engine.loss_study import RTO_CAUSES
from toe_engine.tcp.config import TcpConfig

from .rows import Measured, Row, row

BENCH = "loss"
MIB = 1 << 20
#: (label, the middlebox's impairments): the loss scenario's settings plus the lossless reference.
SETTINGS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("loss=0%", {"loss": 0, "gemodel": None}),
    ("loss=1%", {"loss": 1, "gemodel": None}),
    ("loss=5%", {"loss": 5, "gemodel": None}),
    ("loss=10%", {"loss": 10, "gemodel": None}),
    ("gemodel=1/50/50", {"loss": 0, "gemodel": {"p": 1.0, "r": 50.0, "one_minus_h": 50.0}}),
)
#: What each engine figure is, by the engine's counter name (a name the engine lacks is an error).
ENGINE_COUNTERS = {"rto": "rto_expired", "fast": "fast_retransmits", "rack": "rack_retransmits",
                   "tlp": "tlp_probes", "retransmits": "retransmits", "spurious_rto": "spurious_rtos",
                   **{cause: cause for cause in RTO_CAUSES}}
#: The kernel's figures beside them, by its counter name (nstat's): its RTOs and tail loss probes.
KERNEL_COUNTERS = {"rto": "TcpExtTCPTimeouts", "tlp": "TcpExtTCPLossProbes"}
#: Bytes downloaded per setting. Where loss leaves a transfer's time to a few RTOs, a short
#: download's goodput is the luck of a handful of timers; these sizes give every lossy row tens
#: of loss episodes per repeat. At 1 % and under the burst setting both ends see an RTO only every
#: 8-25 MiB, and one 200 ms RTO is most of an 8 MiB transfer's 0.1-0.3 s (the 1 % row swung
#: 0.42-1.52 between runs, the burst row 0.31-0.78), so those move 32 MiB. At 10 % the kernel
#: too needs ~2.5 s per MiB, so it stays at 3 MiB.
DOWNLOAD_BYTES = {"loss=0%": 3 * MIB, "loss=1%": 32 * MIB, "loss=5%": 12 * MIB, "loss=10%": 3 * MIB,
                  "gemodel=1/50/50": 32 * MIB}
ECHO_BYTES = 1 * MIB
LIMIT_S = 30.0
SEED = 1
MAX_REPEATS = 3
#: The kernel's name for each engine congestion control: the like-for-like reference.
KERNEL_CC = {"newreno": "reno", "cubic": "cubic", "bbr": "bbr"}
CC_SYSCTL = "net.ipv4.tcp_congestion_control"


class MissingCounter(LabError):
    """The engine does not report a counter the benchmark needs: nothing about its loss recovery can be said."""

    exit_code = 1


@dataclass(frozen=True)
class Run:
    """One transfer on one endpoint at one setting."""

    kind: str  # "download" or "echo"
    setting: str
    endpoint: str  # "kernel" or "toe"
    size: int
    moved: int
    seconds: float
    complete: bool
    counters: dict[str, int]
    congestion: str = ""  # the congestion control the serving stack ran

    @property
    def mbit_per_s(self) -> float:
        return self.moved * 8 / max(self.seconds, 1e-9) / 1e6


def _transfers(target: Target, lab: Lab, services: dict[str, int], setting: str, repeat: int,
               counter_names: tuple[str, ...]) -> Iterator[Run]:
    """The download and the echo at one setting, each with the target's counter deltas."""
    address = lab.address("h2")
    for kind in ("download", "echo"):
        before = target.counters()
        if kind == "download":
            size = DOWNLOAD_BYTES[setting]
            got = download(lab, "h1", address, services["chargen"], size, LIMIT_S)
            moved, seconds, complete = got.bytes, got.seconds, got.complete
        else:
            echoed = echo_bytes(lab, "h1", address, services["echo"], ECHO_BYTES, SEED + repeat, LIMIT_S)
            if echoed.bytes == ECHO_BYTES and not echoed.exact:
                raise RuntimeError(f"the {target.name} echo at {setting} came back corrupted")
            moved, seconds, complete, size = echoed.bytes, echoed.seconds, echoed.exact, ECHO_BYTES
        counters = delta(before, target.counters(), *counter_names)
        yield Run(kind, setting, target.name, size, moved, seconds, complete, counters)


@dataclass(frozen=True)
class Endpoint:
    """What serves on h2: `kernel` with `congestion` as its namespace's setting (None: the namespace's
    default), or `toe`, the engine endpoint, with `engine_cc` as its own choice (None: its default)."""

    endpoint: str
    congestion: str | None = None
    engine_cc: str | None = None

    @property
    def label(self) -> str:
        return self.endpoint if self.congestion is None else f"{self.endpoint}-{self.congestion}"


@dataclass(frozen=True)
class _Serving:
    """An endpoint started in a lab of its own."""

    label: str
    lab: Lab
    target: Target
    services: dict[str, int]
    congestion: str  # the congestion control it runs
    counter_names: tuple[str, ...]


def _start(stack: ExitStack, spec: TopologySpec, endpoint: Endpoint) -> _Serving:
    """Build a lab for `endpoint` and start it serving on h2; `stack` tears both down."""
    lab = stack.enter_context(Lab.up(spec))
    target = make(endpoint.endpoint)
    if endpoint.congestion is not None:
        lab.node("h2").write_sysctls({CC_SYSCTL: endpoint.congestion})
    toe = endpoint.endpoint == "toe"
    ran = (endpoint.engine_cc or TcpConfig().congestion) if toe else _kernel_cc(lab)
    stack.callback(target.stop)
    services = target.start(lab, "h2")
    if endpoint.engine_cc is not None and isinstance(target, ToeTarget):
        target.engine.set(tcp={"congestion": endpoint.engine_cc})  # for every connection from now on
    counters = ENGINE_COUNTERS if toe else KERNEL_COUNTERS
    return _Serving(endpoint.label, lab, target, services, ran, tuple(counters.values()))


def measure(endpoints: list[Endpoint], repeats: int) -> list[Run]:
    """Every setting, `repeats` times, on each endpoint in a lab of its own behind the seeded middlebox.

    The endpoints take turns at every setting and repeat (same seeds), so what a busy machine
    does to one moment falls on all of them alike and each ratio compares transfers made side by side.
    """
    spec = load_topology("middlebox_chain", {"mb_kind": "middlebox", "tso": "true"})
    runs: list[Run] = []
    with ExitStack() as stack:
        serving = [_start(stack, spec, endpoint) for endpoint in endpoints]
        for index, (setting, impairments) in enumerate(SETTINGS):
            for repeat in range(repeats):
                for each in serving:
                    impair_middlebox(each.lab, impairments, seed=SEED + 100 * index + repeat)
                    runs += [dataclasses.replace(r, endpoint=each.label, congestion=each.congestion) for r in
                             _transfers(each.target, each.lab, each.services, setting, repeat, each.counter_names)]
    return runs


def _kernel_cc(lab: Lab) -> str:
    """The congestion control h2's kernel runs (its namespace's setting)."""
    return lab.node("h2").run(["sysctl", "-n", CC_SYSCTL], check=True).stdout.strip()


def _of(runs: list[Run], kind: str, setting: str, endpoint: str) -> list[Run]:
    return [r for r in runs if (r.kind, r.setting, r.endpoint) == (kind, setting, endpoint)]


def _pooled(runs: list[Run]) -> Run:
    """All repeats as one transfer: bytes, seconds and counters summed, complete if each was. Under
    loss a transfer's time is mostly a few RTOs, so the median of three repeats is the luck of a
    handful of timers; total bytes over total time is the goodput of the whole sample."""
    counters: dict[str, int] = {}
    for r in runs:
        for name, value in r.counters.items():
            counters[name] = counters.get(name, 0) + value
    first = runs[0]
    return dataclasses.replace(first, size=sum(r.size for r in runs), moved=sum(r.moved for r in runs),
                               seconds=sum(r.seconds for r in runs), complete=all(r.complete for r in runs),
                               counters=counters)


def rows(runs: list[Run], engine_cc: str = TcpConfig().congestion) -> list[Row]:
    """One benchmark row per (transfer, setting): the kernel running the engine's congestion control is the
    reference; the kernel's default (runs labelled plain `kernel`, or the like-for-like ones where the
    default is that algorithm) is a second column."""
    like = f"kernel-{KERNEL_CC[engine_cc]}"
    default = "kernel" if any(r.endpoint == "kernel" for r in runs) else like
    out = []
    for kind in ("download", "echo"):
        for setting, _ in SETTINGS:
            kernel, usual, engine = (_pooled(_of(runs, kind, setting, e)) for e in (like, default, "toe"))
            repeats = len(_of(runs, kind, setting, "toe"))
            mib = max(engine.moved, 1) / MIB
            kernel_mib = max(kernel.moved, 1) / MIB
            data = row(
                BENCH, f"{kind}, {setting}", "Mbit/s", round(kernel.mbit_per_s, 2), round(engine.mbit_per_s, 2),
                kernel_cc=KERNEL_CC[engine_cc],
                default_reference=round(usual.mbit_per_s, 2),
                default_ratio=round(engine.mbit_per_s / usual.mbit_per_s, 3) if usual.mbit_per_s else None,
                kernel_default_cc=usual.congestion or None,
                kernel_seconds=round(kernel.seconds / repeats, 3),
                default_seconds=round(usual.seconds / len(_of(runs, kind, setting, default)), 3),
                engine_seconds=round(engine.seconds / repeats, 3),
                kernel_complete=kernel.complete, engine_complete=engine.complete,
                repeats=repeats, mib_per_repeat=round(engine.size / repeats / MIB, 2),
                pooled="goodput: total bytes over total time of all repeats; seconds: mean per transfer; "
                       "per MiB: counts of all repeats over the MiB they moved")
            for figure, name in ENGINE_COUNTERS.items():
                data[f"engine_{figure}_per_mib"] = round(engine.counters[name] / mib, 2)
            for figure, name in KERNEL_COUNTERS.items():
                value = kernel.counters.get(name)
                data[f"kernel_{figure}_per_mib"] = None if value is None else round(value / kernel_mib, 2)
            out.append(data)
    return out


def table(data: list[dict[str, Any]]) -> Table:
    first = data[0] if data else {}
    like, usual = first.get("kernel_cc", "?"), first.get("kernel_default_cc") or "default"
    t = Table(title=f"loss: engine endpoint ({first.get('engine_cc') or 'its default'}) vs the kernel running {like} "
                    f"(like for like: engine/kernel) and its default {usual} (engine/default); same client, same "
                    "seeded middlebox, same run (all repeats pooled)")
    for column in ("measurement", f"kernel {like} Mbit/s", "engine Mbit/s", "engine/kernel", f"kernel {usual}",
                   "engine/default", "kernel s", "engine s", "RTO/MiB", f"kernel {like} RTO/MiB", "fast/MiB",
                   "RACK/MiB", "TLP/MiB"):
        t.add_column(column, justify="right")
    for row in data:
        late = "" if row["engine_complete"] else " (incomplete)"
        t.add_row(row["measurement"], f"{row['reference']:.1f}", f"{row['engine']:.1f}{late}",
                  "-" if row["ratio"] is None else f"{row['ratio']:.2f}", f"{row['default_reference']:.1f}",
                  "-" if row["default_ratio"] is None else f"{row['default_ratio']:.2f}",
                  f"{row['kernel_seconds']:.2f}", f"{row['engine_seconds']:.2f}", f"{row['engine_rto_per_mib']:.2f}",
                  "-" if row["kernel_rto_per_mib"] is None else f"{row['kernel_rto_per_mib']:.2f}",
                  f"{row['engine_fast_per_mib']:.2f}", f"{row['engine_rack_per_mib']:.2f}",
                  f"{row['engine_tlp_per_mib']:.2f}")
    return t


def bench_loss(args: argparse.Namespace) -> Measured:
    repeats = max(1, min(getattr(args, "repeats", 1), MAX_REPEATS))
    engine_cc = getattr(args, "engine_cc", None) or TcpConfig().congestion
    endpoints = [Endpoint("kernel", KERNEL_CC[engine_cc])]
    if KERNEL_CC[engine_cc] != _default_cc():
        endpoints.append(Endpoint("kernel"))  # the namespace's own default, as a second column
    endpoints.append(Endpoint("toe", engine_cc=getattr(args, "engine_cc", None)))
    try:
        runs = measure(endpoints, repeats)
    except UnknownCounter as exc:
        raise MissingCounter(f"bench loss cannot measure the engine's loss recovery: {exc}") from None
    data = rows(runs, engine_cc)
    for each in data:
        each["engine_cc"] = engine_cc
    return Measured(table(data), data)


def _default_cc() -> str:
    """The congestion control a new namespace starts with: the machine's (a namespace inherits it)."""
    return Path(f"/proc/sys/{CC_SYSCTL.replace('.', '/')}").read_text().strip()
