"""`host_cpu`: CPU per Gbit/s of a bulk transfer from the server, offloads on and off, host stack and engine.

The client reads the server's chargen for `duration_s`: from the service port (19: the
engine's on `toe`, the kernel's on `kernel`) and from a host-stack port (5019, the kernel's
on both), first with the link's offloads on (TSO, GSO, tx checksum on both veths and on
the host stack's interface, the engine's TAP on `toe`), then off.
For each transfer the scenario reads the CPU time of every process in the server's namespace
(the kernel's send path runs in the sending process's system time; the engine is a process),
split into the engine's and the host stack's, and the machine's softirq time against an idle
window of the same length just before (shared machine: evidence, not a verdict).

The claim (TOE-16) says offload saves host CPU on bulk transfers. Checks: the CPU a Gbit cost
the transfer's processes (server and client; this kernel's tick-based accounting charges
softirq work to the task it interrupts, so the kernel's sending and receiving from softirq
is in it, which the machine-wide figures of a shared machine cannot isolate) is lower with
offloads on than off, for each port; and on `toe`, while
the engine carries a flow, the host stack's processes spend a small fraction of what they
spend carrying the host-port flow themselves.
"""
from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

from pydantic import Field

from .cpu_cost import MachineTimes, machine_times, namespace_times
from .framework import Check, RunContext, ScenarioParams, scenario
from .host_side import HOST_PORTS, host_interface, host_services
from .targets import delta, read_snmp_counters

SERVICE_PORT = 19
ENGINE_COMMAND = "toe_engine.runtime.endpoint_main"
#: CPU is counted in clock ticks (10 ms): a transfer must cost at least this many CPU-seconds to be read.
MIN_CPU_S = 0.05
#: While the engine carries the flow, the host stack may spend at most this fraction of its own cost.
HOST_IDLE_FRACTION = 0.1
OFFLOADS = ("tso", "gso", "tx_csum")


class HostCpuParams(ScenarioParams):
    duration_s: float = Field(1.0, gt=0.2, le=60, description="seconds of each transfer")
    idle_s: float = Field(0.3, ge=0, le=10, description="idle window before each transfer (softirq baseline)")


@dataclass(frozen=True)
class Cost:
    """One transfer: Gbit moved and CPU seconds spent by the server's processes and the machine."""

    gbit: float
    seconds: float
    server_cpu_s: float
    engine_cpu_s: float
    client_cpu_s: float
    softirq_s: float
    idle_softirq_s: float
    machine_busy_s: float
    idle_busy_s: float
    error: str = ""  # how the transfer ended early (a stall past the client's timeout, a close)
    longest_gap_s: float = 0.0  # the longest wait between two reads of the client
    timeouts: int = 0  # retransmission timeouts the target counted during the transfer
    retransmits: int = 0
    client_out_of_order: int = 0  # segments the client's kernel queued out of order (TcpExtTCPOFOQueue)
    client_paws_dropped: int = 0  # segments it dropped as older than its TS.Recent (TcpExtPAWSEstab)

    @property
    def gbit_per_s(self) -> float:
        return self.gbit / max(self.seconds, 1e-9)

    @property
    def host_stack_cpu_s(self) -> float:
        return self.server_cpu_s - self.engine_cpu_s

    def per_gbit(self, cpu_s: float) -> float:
        return cpu_s / self.gbit if self.gbit > 0 else float("inf")

    @property
    def attributed_cpu_s(self) -> float:
        """CPU charged to the transfer's own processes: the server's and the client's. With tick-based
        accounting (no IRQ time accounting, as here) softirq work done in a task's context is charged to it."""
        return self.server_cpu_s + self.client_cpu_s

    @property
    def machine_cpu_s(self) -> float:
        """What the transfer cost the machine: busy CPU seconds above the idle window's rate."""
        return max(0.0, self.machine_busy_s - self.idle_busy_s)

    def numbers(self, prefix: str) -> dict[str, float]:
        return {f"{prefix}_gbit_per_s": round(self.gbit_per_s, 3),
                f"{prefix}_cpu_s_per_gbit": round(self.per_gbit(self.attributed_cpu_s), 4),
                f"{prefix}_machine_cpu_s_per_gbit": round(self.per_gbit(self.machine_cpu_s), 4),
                f"{prefix}_server_cpu_s_per_gbit": round(self.per_gbit(self.server_cpu_s), 4),
                f"{prefix}_engine_cpu_s_per_gbit": round(self.per_gbit(self.engine_cpu_s), 4),
                f"{prefix}_host_stack_cpu_s_per_gbit": round(self.per_gbit(self.host_stack_cpu_s), 4),
                f"{prefix}_softirq_s_per_gbit": round(self.per_gbit(max(0.0, self.softirq_s - self.idle_softirq_s)),
                                                      4),
                f"{prefix}_longest_gap_s": round(self.longest_gap_s, 3), f"{prefix}_timeouts": self.timeouts,
                f"{prefix}_retransmits": self.retransmits, f"{prefix}_client_out_of_order": self.client_out_of_order,
                f"{prefix}_client_paws_dropped": self.client_paws_dropped}

    def unread(self) -> str:
        """Why this transfer cannot be judged ("" if it can): it ended early, moved nothing, or cost too little
        CPU to read (CPU is counted in clock ticks)."""
        if self.error:
            return (f"the transfer ended early ({self.error}) after {self.gbit * 125:.1f} MB, its longest wait "
                    f"{self.longest_gap_s:.2f} s, {self.timeouts} RTOs and {self.retransmits} retransmissions counted, "
                    f"the client queued {self.client_out_of_order} segments out of order and dropped "
                    f"{self.client_paws_dropped} as older than its TS.Recent (PAWS)")
        if self.gbit <= 0:
            return "the transfer moved nothing"
        if self.attributed_cpu_s < MIN_CPU_S:
            return f"a transfer cost under {MIN_CPU_S} CPU-s (too few clock ticks to read)"
        return ""


def offload_saved(on: Cost, off: Cost) -> tuple[bool, str]:
    """TOE-16 for one port: with offloads on the transfer's processes spent less CPU per Gbit than with them off.

    Precondition: both transfers ran their full time and cost enough CPU to read. Returns the verdict
    and, when the precondition failed, why."""
    unmet = "; ".join(f"offloads {name}: {why}" for name, cost in (("on", on), ("off", off)) if (why := cost.unread()))
    if unmet:
        return False, unmet
    return on.per_gbit(on.attributed_cpu_s) < off.per_gbit(off.attributed_cpu_s), ""


def host_spared(offloaded: Cost, hosted: Cost) -> tuple[bool, str]:
    """While the engine carries a flow the host stack's processes spend at most HOST_IDLE_FRACTION of what they
    spend carrying one themselves. Precondition: both transfers ran their full time, and the host-carried one
    cost the host stack something to compare with."""
    unmet = [f"the offloaded flow: {why}" for why in [offloaded.unread()] if why]
    unmet += [f"the host flow: {why}" for why in [hosted.unread()] if why]
    own = hosted.per_gbit(hosted.host_stack_cpu_s)
    if not unmet and not own > 0:
        unmet.append("the host stack spent nothing carrying its own flow")
    if unmet:
        return False, "; ".join(unmet)
    return offloaded.per_gbit(offloaded.host_stack_cpu_s) <= HOST_IDLE_FRACTION * own, ""


@scenario("host_cpu", purpose="Server CPU and machine softirq time per Gbit/s of a bulk transfer, offloads on and "
          "off, for the target's flow and a host-stack flow; the engine's own CPU beside the host stack's.",
          topology="host_pair", params=HostCpuParams, topology_params={"rmem_max": 6291456},
          covers=("RFC9293 3.7.4",), claims=("TOE-16",))
def run(ctx: RunContext) -> Iterator[Check]:
    costs: dict[tuple[str, int], Cost] = {}
    hif = host_interface(ctx.lab, ctx.server, ctx.address(ctx.server))
    interfaces = {(ctx.client, ctx.iface(ctx.client)), (ctx.server, ctx.iface(ctx.server)), (ctx.server, hif)}
    with host_services(ctx.lab, ctx.server):
        for setting in ("on", "off"):
            for node, iface in sorted(interfaces):  # the link's veths, and the host stack's own interface
                _set_offloads(ctx, node, iface, setting == "on")
            for port in (SERVICE_PORT, HOST_PORTS["chargen"]):
                ctx.progress(f"offloads {setting}, port {port}")
                costs[(setting, port)] = _measure(ctx, port)
    numbers: dict[str, float | int | str] = {}
    for (setting, port), cost in costs.items():
        numbers.update(cost.numbers(f"p{port}_{setting}"))
    for port in (SERVICE_PORT, HOST_PORTS["chargen"]):
        on, off = costs[("on", port)], costs[("off", port)]
        ok, unmet = offload_saved(on, off)
        on_cost, off_cost = on.per_gbit(on.attributed_cpu_s), off.per_gbit(off.attributed_cpu_s)
        who = "the engine" if ctx.target.name == "toe" and port == SERVICE_PORT else "the host stack"
        yield ctx.check(f"offload-saves-cpu[port={port}]", "RFC9293 3.7.4", ok,
                        f"port {port} ({who}): the transfer's processes spent {on_cost:.3f} CPU-s per Gbit with "
                        f"offloads on ({on.gbit_per_s:.2f} Gbit/s; server processes "
                        f"{on.per_gbit(on.server_cpu_s):.3f}) and {off_cost:.3f} with them off "
                        f"({off.gbit_per_s:.2f} Gbit/s; server processes {off.per_gbit(off.server_cpu_s):.3f})"
                        + (f"; precondition failed: {unmet}" if unmet else ""),
                        numbers=_headline(numbers, f"p{port}_"))
    if ctx.target.name != "toe":
        yield ctx.skip("host-stack-spared", "RFC9293 3.7.4", "on the kernel the host stack carries every flow: there "
                       "is no offloaded flow to spare it")
        return
    for setting in ("on", "off"):
        offloaded, hosted = costs[(setting, SERVICE_PORT)], costs[(setting, HOST_PORTS["chargen"])]
        spent = offloaded.per_gbit(offloaded.host_stack_cpu_s)
        own = hosted.per_gbit(hosted.host_stack_cpu_s)
        ok, unmet = host_spared(offloaded, hosted)
        yield ctx.check(f"host-stack-spared[offloads={setting}]", "RFC9293 3.7.4", ok,
                        f"while the engine carried port {SERVICE_PORT} the host stack's processes spent {spent:.4f} "
                        f"CPU-s per Gbit, against {own:.4f} carrying port {HOST_PORTS['chargen']} themselves; the "
                        f"engine spent {offloaded.per_gbit(offloaded.engine_cpu_s):.3f} per Gbit on its flow and "
                        f"{hosted.per_gbit(hosted.engine_cpu_s):.3f} passing the host's frames"
                        + (f"; precondition failed: {unmet}" if unmet else ""),
                        numbers={**offloaded.numbers("offloaded"), **hosted.numbers("hosted")})


def _headline(numbers: dict[str, float | int | str], prefix: str) -> dict[str, float | int | str]:
    """One port's numbers, the verdict's own (CPU per Gbit and rate, on and off) first."""
    mine = {k: v for k, v in numbers.items() if k.startswith(prefix)}
    first = [f"{prefix}{setting}_{name}" for name in ("cpu_s_per_gbit", "gbit_per_s") for setting in ("on", "off")]
    return {**{k: mine[k] for k in first if k in mine}, **mine}


def _set_offloads(ctx: RunContext, node: str, iface: str, on: bool) -> None:
    """The lab's features for a topology interface; `ethtool -K` for one the target made (the engine's TAP)."""
    if iface in ctx.lab.spec.interfaces_of(node):
        ctx.lab.set_features(node, iface, **{name: on for name in OFFLOADS})
        return
    word = "on" if on else "off"
    ctx.lab.node(node).run(["ethtool", "-K", iface, "tso", word, "gso", word, "tx", word], check=True)


#: The client: reads a chargen for a set time and reports its own CPU time (it is gone before anyone could
#: read it), the longest wait between two reads, and how it ended if early (no byte within STALL_S, a close).
STALL_S = 5
DURATION_CLIENT = r"""
import json, os, socket, sys, time
addr, port, duration, stall = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
start, before, got, error, gap = time.monotonic(), os.times(), 0, "", 0.0
last = start
try:
    sock = socket.create_connection((addr, port), timeout=stall)
    start = last = time.monotonic()
    while time.monotonic() - start < duration:
        chunk = sock.recv(1 << 16)
        now = time.monotonic()
        gap, last = max(gap, now - last), now
        if not chunk:
            error = "closed early"
            break
        got += len(chunk)
except OSError as exc:
    error = f"{type(exc).__name__}: {exc or 'no byte within the timeout'}"
    gap = max(gap, time.monotonic() - last)
after = os.times()
print(json.dumps({"bytes": got, "seconds": time.monotonic() - start, "error": error, "longest_gap_s": gap,
                  "cpu_s": after.user - before.user + after.system - before.system}))
"""


def _measure(ctx: RunContext, port: int) -> Cost:
    p = ctx.params
    server = ctx.lab.node(ctx.server)
    idle_start = machine_times()
    time.sleep(p.idle_s)  # an idle window to read the machine's background rate, not a synchronisation
    idle: MachineTimes = machine_times() - idle_start
    names = ctx.target.standard_counters
    counters_before, client_before = ctx.target.counters(), _client_counters(ctx)
    procs_before, machine_before = namespace_times(server), machine_times()
    began = time.monotonic()
    done = ctx.lab.node(ctx.client).run([sys.executable, "-c", DURATION_CLIENT, ctx.address(ctx.server), str(port),
                                         str(p.duration_s), str(STALL_S)], timeout=p.duration_s + 30)
    elapsed = time.monotonic() - began
    procs_after, machine = namespace_times(server), machine_times() - machine_before
    counted = delta(counters_before, ctx.target.counters(), names["timeouts"], names["retransmits"])
    client_side = delta(client_before, _client_counters(ctx), *CLIENT_COUNTERS)
    if not done.stdout.strip():
        raise RuntimeError(f"the client on {ctx.client} reported nothing: {done.stderr.strip()[-300:]}")
    client = json.loads(done.stdout)
    scale = elapsed / p.idle_s if p.idle_s else 0.0
    return Cost(gbit=client["bytes"] * 8 / 1e9, seconds=client["seconds"],
                server_cpu_s=procs_after.since(procs_before),
                engine_cpu_s=procs_after.since(procs_before, matching=ENGINE_COMMAND),
                client_cpu_s=client["cpu_s"],
                softirq_s=machine.softirq, idle_softirq_s=idle.softirq * scale,
                machine_busy_s=machine.busy, idle_busy_s=idle.busy * scale,
                error=client["error"], longest_gap_s=client["longest_gap_s"],
                timeouts=counted[names["timeouts"]], retransmits=counted[names["retransmits"]],
                client_out_of_order=client_side["TcpExtTCPOFOQueue"], client_paws_dropped=client_side["TcpExtPAWSEstab"])


#: The client kernel's view of the server's segments: queued out of order, dropped by PAWS. A sender
#: that reorders its own frames by milliseconds shows in both: an engine process that moves between
#: cores mid-burst leaves the frames it queued on one core's backlog behind those it sends from the
#: other (a veth delivers through the sending core's backlog), and the late ones carry a TSval old
#: enough for the client's PAWS to drop them.
CLIENT_COUNTERS = ("TcpExtTCPOFOQueue", "TcpExtPAWSEstab")


def _client_counters(ctx: RunContext) -> dict[str, int]:
    with ctx.lab.node(ctx.client).inside():
        return read_snmp_counters()
