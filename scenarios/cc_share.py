"""`cc_share`: an offloaded and a host-stack flow through one bottleneck, under each congestion control.

The server h2 sits behind an engine middlebox (`bottleneck` topology) that forwards h2 -> h1
at `rate_mbit` through a tail-drop queue of `limit` packets. The client downloads at once
from the target's chargen (port 19: the engine's on `toe`, the kernel's on `kernel`) and from
a host-stack chargen (port 5019, the kernel's on both targets), for `duration_s`, while it
pings h2 to see the queueing delay. For each kernel congestion control in `host_ccs` the
server's `net.ipv4.tcp_congestion_control` is set before the flows start; on `toe` each of the
engine's algorithms in `engine_ccs` runs against each of them.

What is measured per pairing: each flow's share of the bottleneck in the steady part of the
run (after `warmup_s`), Jain's fairness index of the two, the bottleneck's utilisation
(the precondition: the queue was full enough for the flows to compete) and the ping RTT
above the idle RTT. The claim (TOE-9) is judged by which algorithm each flow used: `ss -ti`
names the kernel's for every connection it holds, the engine's configuration names its own,
so the host's choice reaches the host-stack flow and, on `toe`, not the offloaded one.
"""
from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, field_validator

from .framework import Check, RunContext, ScenarioParams, scenario
from .host_side import HOST_PORTS, Stream, host_services, stream
from .wire import tcp_frames

SERVICE_PORT = 19
#: The bottleneck counts as saturated when the two flows together carried this much of its rate.
SATURATED = 0.8
#: A flow that got less than this share of the bottleneck was starved.
MIN_SHARE = 0.02
KERNEL_CCS = ("cubic", "reno", "bbr")
ENGINE_CCS = ("newreno", "cubic")
_RTT = re.compile(r"= [\d.]+/([\d.]+)/")


class CcShareParams(ScenarioParams):
    rate_mbit: float = Field(40, gt=1, le=500, description="bottleneck rate h2 -> h1, Mbit/s")
    limit: int = Field(64, ge=4, le=10_000, description="bottleneck queue, packets")
    delay_ms: float = Field(5.0, ge=0, le=200, description="one-way delay each way, ms")
    duration_s: float = Field(2.5, gt=0.5, le=60, description="seconds both flows run, per pairing")
    warmup_s: float = Field(0.5, ge=0, le=30, description="seconds left out of the shares (slow start)")
    host_ccs: str = Field(",".join(KERNEL_CCS), description="kernel congestion controls to set on h2, comma-separated")
    engine_ccs: str = Field(",".join(ENGINE_CCS), description="the engine's congestion controls (toe), comma-separated")

    @field_validator("host_ccs", "engine_ccs")
    @classmethod
    def _names(cls, value: str) -> str:
        if not [n for n in value.split(",") if n.strip()]:
            raise ValueError("must name at least one congestion control")
        return value

    @property
    def kernel(self) -> list[str]:
        return [n.strip() for n in self.host_ccs.split(",") if n.strip()]

    @property
    def engine(self) -> list[str]:
        return [n.strip() for n in self.engine_ccs.split(",") if n.strip()]


@dataclass(frozen=True)
class Share:
    """Two flows' steady-state throughput at one bottleneck, and what it says."""

    service_mbit: float
    host_mbit: float
    rate_mbit: float

    @property
    def total(self) -> float:
        return self.service_mbit + self.host_mbit

    @property
    def utilisation(self) -> float:
        return self.total / self.rate_mbit

    @property
    def service_share(self) -> float:
        return self.service_mbit / self.total if self.total else 0.0

    @property
    def jain(self) -> float:
        return jain_index([self.service_mbit, self.host_mbit])


def jain_index(values: list[float]) -> float:
    """Jain's fairness index: 1 when all get the same, 1/n when one gets everything."""
    total, squares = sum(values), sum(v * v for v in values)
    return total * total / (len(values) * squares) if squares else 0.0


def ping_rtt_ms(output: str) -> float | None:
    """The average RTT of a `ping` summary line, or None if no reply came."""
    match = _RTT.search(output)
    return float(match.group(1)) if match else None


def congestion_of(ss_output: str, port: int) -> str | None:
    """The congestion control `ss -tinH` shows for the connection with local port `port`."""
    lines = ss_output.splitlines()
    for i, line in enumerate(lines):
        fields = line.split()
        local = next((f for f in fields if ":" in f), "")
        if local.rpartition(":")[2] == str(port) and i + 1 < len(lines):
            words = lines[i + 1].split()
            return words[0] if words else None
    return None


@scenario("cc_share", purpose="An offloaded and a host-stack flow at one rate-limited queue under each kernel "
          "(and engine) congestion control: shares, Jain's index, queueing delay; whose algorithm each flow used.",
          topology="bottleneck", params=CcShareParams,
          topology_params=lambda p: {"rate_mbit": p.rate_mbit, "limit": p.limit, "delay_ms": p.delay_ms},
          covers=("RFC5681 3.1", "RFC2914 3.2"), claims=("TOE-9",))
def run(ctx: RunContext) -> Iterator[Check]:
    p = ctx.params
    node = ctx.lab.node(ctx.server)
    with host_services(ctx.lab, ctx.server):
        idle = ping_rtt_ms(ctx.lab.node(ctx.client).run(["ping", "-n", "-q", "-c", "5", "-i", "0.05",
                                                           ctx.address(ctx.server)]).stdout)
        engine_ccs = p.engine if ctx.target.name == "toe" else [None]
        for engine_cc in engine_ccs:
            if engine_cc is not None:  # what the engine says it now runs, not what it was asked
                engine_cc = ctx.target.engine.set(tcp={"congestion": engine_cc})["tcp"]["congestion"]  # type: ignore[attr-defined]
            for host_cc in p.kernel:
                how = _choose(ctx, host_cc)
                if how is None:
                    yield ctx.skip(f"bottleneck-share[{_variant(engine_cc, host_cc)}]", "RFC5681 3.1",
                                   f"h2's kernel accepts congestion control {host_cc!r} neither as "
                                   "net.ipv4.tcp_congestion_control nor as a route's congctl")
                    continue
                try:
                    yield from _pairing(ctx, engine_cc, host_cc, idle, how)
                finally:
                    _route_cc(ctx, None)


def _choose(ctx: RunContext, cc: str) -> str | None:
    """Make `cc` the host's choice for new connections: the namespace's default, or (for an algorithm a
    non-initial namespace may not make its default, as `tcp_allowed_congestion_control` decides) the
    congctl of the server's default route, which new connections along it take. Returns how, or None."""
    node = ctx.lab.node(ctx.server)
    if node.run(["sysctl", "-w", f"net.ipv4.tcp_congestion_control={cc}"]).returncode == 0:
        return "net.ipv4.tcp_congestion_control"
    return "route congctl" if _route_cc(ctx, cc) else None


def _route_cc(ctx: RunContext, cc: str | None) -> bool:
    """Set (or with None clear) the congctl metric of the server's IPv4 default route."""
    node = ctx.lab.node(ctx.server)
    routes = json.loads(node.run(["ip", "-j", "route", "show", "default"], check=True).stdout or "[]")
    if not routes:
        return False
    route = routes[0]
    argv = ["ip", "route", "replace", "default", "via", route["gateway"], "dev", route["dev"]]
    return node.run(argv + (["congctl", cc] if cc else [])).returncode == 0


def _variant(engine_cc: str | None, host_cc: str) -> str:
    return f"engine={engine_cc},host={host_cc}" if engine_cc else f"host={host_cc}"


def _pairing(ctx: RunContext, engine_cc: str | None, host_cc: str, idle_ms: float | None, how: str
             ) -> Iterator[Check]:
    p = ctx.params
    variant = _variant(engine_cc, host_cc)
    client = ctx.lab.node(ctx.client)
    addr = ctx.address(ctx.server)
    ctx.progress(f"bottleneck with {variant}")
    capture = ctx.capture(ctx.client, ctx.iface(ctx.client), f"tcp src port {SERVICE_PORT} or tcp src port "
                          f"{HOST_PORTS['chargen']} or tcp dst port {SERVICE_PORT} or tcp dst port "
                          f"{HOST_PORTS['chargen']}", name=f"share-{variant}.pcap")
    start = threading.Barrier(3)
    results: dict[int, Stream] = {}

    def read(port: int) -> None:
        results[port] = stream(client, addr, port, p.duration_s, start)

    threads = [threading.Thread(target=read, args=(port,), daemon=True)
               for port in (SERVICE_PORT, HOST_PORTS["chargen"])]
    for thread in threads:
        thread.start()
    pings = max(3, int((p.duration_s - p.warmup_s) / 0.05) - 2)
    try:
        start.wait(timeout=p.duration_s + 5)
        pinger = client.popen(["ping", "-n", "-q", "-c", str(pings), "-i", "0.05", addr], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
        listed = (HOST_PORTS["chargen"],) if ctx.target.name == "toe" else (SERVICE_PORT, HOST_PORTS["chargen"])
        ss = _server_sockets(ctx, listed, p.duration_s)
        ctx.artifact(f"ss-{variant}.txt").write_text(ss)
        for thread in threads:
            thread.join(p.duration_s + 10)
        ping_out = pinger.communicate(timeout=p.duration_s + 10)[0]
    finally:
        pcap = capture.stop()
    busy = ping_rtt_ms(ping_out)
    service, host = results.get(SERVICE_PORT), results.get(HOST_PORTS["chargen"])
    end = p.duration_s
    share = Share(_mbit(service, p.warmup_s, end), _mbit(host, p.warmup_s, end), p.rate_mbit)
    plot = ctx.artifact(f"share-{variant}.png")
    two_flow_plot(pcap, plot, addr, {SERVICE_PORT: f"port {SERVICE_PORT} ({engine_cc or host_cc})",
                                     HOST_PORTS["chargen"]: f"port {HOST_PORTS['chargen']} ({host_cc})"},
                  f"{ctx.target.name}: two flows at a {p.rate_mbit:g} Mbit/s bottleneck ({variant})")
    service_cc = engine_cc or congestion_of(ss, SERVICE_PORT)
    host_seen = congestion_of(ss, HOST_PORTS["chargen"])
    queueing = None if busy is None or idle_ms is None else round(busy - idle_ms, 2)
    numbers = {"service_mbit": round(share.service_mbit, 2), "host_mbit": round(share.host_mbit, 2),
               "service_share": round(share.service_share, 3), "jain": round(share.jain, 3),
               "utilisation": round(share.utilisation, 3), "queueing_delay_ms": queueing,
               "idle_rtt_ms": idle_ms, "service_cc": service_cc, "host_cc": host_seen}
    saturated = share.utilisation >= SATURATED
    errors = [f"port {s.port}: {s.error}" for s in (service, host) if s is not None and s.error]
    both_moved = min(share.service_share, 1 - share.service_share) >= MIN_SHARE
    yield ctx.check(f"bottleneck-share[{variant}]", "RFC2914 3.2", saturated and both_moved and not errors,
                    f"at the {p.rate_mbit:g} Mbit/s bottleneck the port-{SERVICE_PORT} flow ({service_cc}) got "
                    f"{share.service_mbit:.1f} Mbit/s and the host-stack flow ({host_seen}) {share.host_mbit:.1f}: "
                    f"share {share.service_share:.2f}, Jain {share.jain:.3f}, utilisation {share.utilisation:.2f}"
                    f"{'' if saturated else ' (precondition failed: the bottleneck was not saturated)'}, queueing "
                    f"delay {queueing} ms" + (f"; {'; '.join(errors)}" if errors else ""),
                    pcaps=[pcap], plots=[plot], numbers=numbers)
    if engine_cc == host_cc:
        yield ctx.skip(f"host-cc-choice[{variant}]", "RFC5681 3.1", f"the engine's and the host's algorithm are both "
                       f"named {host_cc}: this pairing cannot tell whose choice the offloaded flow followed",
                       claims=("TOE-8",))
        return
    if ctx.target.name == "toe":
        offloaded_listed = congestion_of(ss, SERVICE_PORT)
        ok = host_seen == host_cc and offloaded_listed is None
        sentence = (f"the host chose {host_cc} ({how}): its flow ran {host_seen}, the offloaded flow ran the engine's "
                    f"{engine_cc} and {'was not' if offloaded_listed is None else 'was'} among the host's sockets")
    else:
        ok = host_seen == host_cc and service_cc == host_cc
        sentence = (f"the host chose {host_cc} ({how}): the port-{SERVICE_PORT} flow ran {service_cc} and the host-port "
                    f"flow {host_seen}")
    yield ctx.check(f"host-cc-choice[{variant}]", "RFC5681 3.1", ok, sentence,
                    numbers={"host_choice": host_cc, "service_cc": service_cc, "host_cc": host_seen},
                    claims=("TOE-8",))


def _server_sockets(ctx: RunContext, ports: tuple[int, ...], limit_s: float) -> str:
    """`ss -tinH` of the server once its host-stack connections on `ports` are established there.

    The client's connect() returns on the SYN-ACK; the server's side is established only when
    the client's ACK has crossed the delayed path, so this waits (bounded) for that event.
    """
    deadline = time.monotonic() + limit_s
    while True:
        ss = ctx.lab.node(ctx.server).run(["ss", "-tinH", "state", "established"]).stdout
        if all(congestion_of(ss, port) for port in ports) or time.monotonic() > deadline:
            return ss
        time.sleep(0.01)


def _mbit(flow: Stream | None, start_s: float, end_s: float) -> float:
    if flow is None:
        return 0.0
    return flow.bytes_between(start_s, end_s) * 8 / max(end_s - start_s, 1e-9) / 1e6


def two_flow_plot(pcap: Path, out: Path, server: str, labels: dict[int, str], title: str) -> None:
    """A tcptrace-style time-sequence plot of several flows from `server`: data sent and ACKs, one colour each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = tcp_frames(pcap)
    if not frames:
        return
    t0 = frames[0].ts
    fig, ax = plt.subplots(figsize=(9, 5), dpi=100)
    for (port, label), colour in zip(labels.items(), ("tab:red", "tab:blue", "tab:green")):
        data = [f for f in frames if f.src == server and f.sport == port and f.payload_len > 0]
        acks = [f for f in frames if f.dst == server and f.dport == port and "A" in f.flags]
        if not data:
            continue
        base = data[0].seq
        ax.plot([f.ts - t0 for f in data], [((f.seq - base) % (1 << 32)) + f.payload_len for f in data], ".",
                color=colour, markersize=1.5, label=f"{label} data")
        if acks:
            ax.step([f.ts - t0 for f in acks], [(f.ack - base) % (1 << 32) for f in acks], where="post",
                    color=colour, linewidth=0.6, alpha=0.6, label=f"{label} ACK")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("relative sequence number (bytes)")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
