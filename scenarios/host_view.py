"""`host_view`: what the host's socket tools, socket limits and the audit see of offloaded connections.

Like `host_bypass`, the server node gets host-stack services on ports the engine does not
serve (`scenarios.host_side.HOST_PORTS`) and every reading pairs a service-port connection
(offloaded on `toe`) with a host-port one (the host stack's on both targets), the host one
being the precondition:

- TOE-8 the global view: `ss` and /proc/net/tcp against the engine's table and `toelab audit`,
  and a `tcp_rmem` cap (a topology sysctl): the largest window each connection advertised.
- TOE-2 setups per CPU-second: sequential connections to a service port over the wire and to the
  node's host stack over loopback (not behind the engine), in interleaved batches.
- TOE-11 the audit's reading of the server's wire over one bulk download.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from lab.audit import MIN_PACKETS, InterfaceAudit, audit_interfaces, engine_connections, engine_sockets, observe

from .cpu_cost import namespace_times
from .framework import Check, RunContext, ScenarioParams, scenario
from .host_side import (
    HOST_PORTS,
    SetupBatch,
    download,
    hold_open,
    host_interface,
    host_services,
    rx_packets,
    setup_batch,
)
from .targets import SERVICE_PORTS as SERVICE

SETUP_BATCHES = 16


class HostViewParams(ScenarioParams):
    rmem_max: int = Field(16384, ge=4096, le=1 << 20, description="tcp_rmem default and maximum on the server's host "
                          "stack, bytes (a topology sysctl, so every listener has it)")
    setups: int = Field(800, ge=16, le=5000, description="sequential connections per port (setup rate)")
    transfer_kib: int = Field(2048, ge=256, le=65536, description="KiB of the download the audit reads")
    limit_s: float = Field(10, gt=0, le=120, description="time limit of each flow")


@scenario("host_view", purpose="ss, /proc/net/tcp and tcp_rmem cover host-stack connections and not offloaded ones, "
          "which the engine's table and toelab audit list; setups per second on each; the audit's offload reading.",
          topology="host_pair", params=HostViewParams, topology_params=lambda p: {"rmem_max": p.rmem_max},
          covers=("RFC9293 3.5", "RFC9293 3.3.1", "RFC9293 3.8.6", "RFC9293 3.7.4"))
def run(ctx: RunContext) -> Iterator[Check]:
    with host_services(ctx.lab, ctx.server):
        hif = host_interface(ctx.lab, ctx.server, ctx.address(ctx.server))
        yield from _setups(ctx)
        yield from _global_view(ctx)
        yield from _audit(ctx, hif)


def _toe(ctx: RunContext) -> bool:
    return ctx.target.name == "toe"


# --- TOE-2 ---------------------------------------------------------------------------------
@dataclass
class Setups:
    """Sequential connect-and-close batches to one port, summed: what completed and what it cost.

    `cpu_s` is everything the setups cost the machine's CPU that can be read on a shared one:
    the client's thread (its own TCP and, over loopback, the host stack's too, run in its
    context) and every process of the server's namespace (the engine; the host services).
    """

    attempts: int = 0
    ok: int = 0
    seconds: float = 0.0
    cpu_s: float = 0.0
    best_per_s: float = 0.0
    wire_frames: int = 0  # frames the server's wire received during these batches
    loopback_frames: int = 0  # frames the server's loopback carried
    engine_passed: int | None = None  # TCP frames the engine handed to the host stack (None: no engine)

    def add(self, batch: SetupBatch, attempts: int, server_cpu_s: float, frames: Frames) -> None:
        self.attempts += attempts
        self.ok += batch.ok
        self.seconds += batch.seconds
        self.cpu_s += batch.client_cpu_s + server_cpu_s
        self.wire_frames += frames.wire
        self.loopback_frames += frames.loopback
        if frames.engine_passed is not None:
            self.engine_passed = (self.engine_passed or 0) + frames.engine_passed
        if batch.ok == attempts:
            self.best_per_s = max(self.best_per_s, batch.per_s)

    @property
    def per_cpu_s(self) -> float:
        return self.ok / self.cpu_s if self.cpu_s > 0 else 0.0

    @property
    def cpu_us_per_setup(self) -> float:
        return self.cpu_s / self.ok * 1e6 if self.ok else 0.0


@dataclass(frozen=True)
class Frames:
    """Frames the server's wire and loopback received, and TCP frames its engine passed to the host stack."""

    wire: int
    loopback: int
    engine_passed: int | None

    def __sub__(self, before: Frames) -> Frames:
        passed = None if self.engine_passed is None or before.engine_passed is None else \
            self.engine_passed - before.engine_passed
        return Frames(self.wire - before.wire, self.loopback - before.loopback, passed)


#: Frames one side sends per sequential setup and teardown: SYN (or SYN-ACK), ACK, FIN at least.
MIN_FRAMES_PER_SETUP = 3
#: On one stack the wire path and loopback may differ by the veth's own cost, never by this factor.
LIKE_RATE = 3.0


def setups_judged(engine: bool, service: Setups, host: Setups, engine_served: int | None) -> tuple[bool, str]:
    """TOE-2's verdict on setups per CPU-second, service port against the node's host stack over loopback.

    Preconditions: every setup completed; the service-port setups crossed the server's wire and
    the host-stack ones its loopback; on the engine, the engine itself served every service-port
    setup (none fell back to the host stack) and passed the host stack next to nothing while the
    reference ran (it was not in the reference's path, so its cost of handing frames to the host
    is not in the reference). Then the engine's claim holds when
    its setups cost more CPU than the host stack's (fewer per CPU-second, ratio < 1); on the
    kernel both are the host stack's and must be within LIKE_RATE of each other.
    Returns the verdict and, when a precondition failed, which.
    """
    failed = []
    if service.attempts == 0 or host.attempts == 0:
        failed.append("no setups were attempted")
    elif service.ok < service.attempts or host.ok < host.attempts:
        failed.append("not every setup completed")
    if service.cpu_s <= 0 or host.cpu_s <= 0:
        failed.append("no CPU time was read")
    if service.wire_frames < MIN_FRAMES_PER_SETUP * service.attempts:
        failed.append(f"the service-port setups did not cross the server's wire ({service.wire_frames} frames)")
    if host.loopback_frames < MIN_FRAMES_PER_SETUP * host.attempts:
        failed.append(f"the host-stack reference did not go over loopback ({host.loopback_frames} frames)")
    if engine and (host.engine_passed is None or host.engine_passed >= host.attempts):
        failed.append(f"the engine passed {host.engine_passed} TCP frames to the host stack while the reference ran, "
                      "so it was in the reference's path")
    if engine and (engine_served is None or engine_served < service.attempts):
        failed.append(f"the engine served {engine_served} of {service.attempts} service-port setups itself")
    if failed:
        return False, "; ".join(failed)
    ratio = service.per_cpu_s / host.per_cpu_s
    return (ratio < 1 if engine else 1 / LIKE_RATE <= ratio <= LIKE_RATE), ""


def _setups(ctx: RunContext) -> Iterator[Check]:
    """Sequential connections to a service port over the wire and to the node's host stack over loopback.

    The reference is the same node's host stack reached without the engine: a client inside
    the server's namespace connecting to the server's own address, which the kernel routes
    over loopback. (A host port reached over the wire passes through the engine on `toe`, so
    it pays the engine's cost of handing frames to the host and says nothing of the host
    stack alone.) Batches are interleaved, so a busy moment costs both alike, and the verdict
    is read in CPU time, which another engineer's load does not stretch as it does wall time;
    the best batch's wall rate of each is reported beside it.
    """
    p, client, addr = ctx.params, ctx.lab.node(ctx.client), ctx.address(ctx.server)
    server_node = ctx.lab.node(ctx.server)
    service, host = SERVICE["discard"], HOST_PORTS["discard"]
    paths = {"service": (client, service), "host": (server_node, host)}
    for node, port in paths.values():  # warm both paths and their caches
        setup_batch(node, addr, port, 5, 2.0)
    tally = {name: Setups() for name in paths}
    offloaded_before = _offloaded(ctx)
    batch = max(1, p.setups // SETUP_BATCHES)
    for _ in range(SETUP_BATCHES):
        for name, (node, port) in paths.items():
            frames, before = _frames(ctx), namespace_times(server_node, precise=True)
            done = setup_batch(node, addr, port, batch, 2.0)
            server_cpu = namespace_times(server_node, precise=True).since(before)
            tally[name].add(done, batch, server_cpu, _frames(ctx) - frames)
    served = None if offloaded_before is None else (_offloaded(ctx) or 0) - offloaded_before
    svc, ref = tally["service"], tally["host"]
    verdict, unmet = setups_judged(_toe(ctx), svc, ref, served)
    ratio = svc.per_cpu_s / ref.per_cpu_s if ref.per_cpu_s else 0.0
    numbers = {"setups_per_cpu_s_ratio": round(ratio, 3),
               "service_setups_per_cpu_s": round(svc.per_cpu_s), "host_setups_per_cpu_s": round(ref.per_cpu_s),
               "service_cpu_us_per_setup": round(svc.cpu_us_per_setup, 1),
               "host_cpu_us_per_setup": round(ref.cpu_us_per_setup, 1),
               "service_best_setups_per_s": round(svc.best_per_s), "host_best_setups_per_s": round(ref.best_per_s),
               "service_ok": svc.ok, "host_ok": ref.ok, "attempts": svc.attempts,
               "service_wire_frames": svc.wire_frames, "host_loopback_frames": ref.loopback_frames,
               **({} if served is None else {"engine_served": served, "engine_passed_to_host": ref.engine_passed})}
    who = "the engine" if _toe(ctx) else "the host stack"
    said = (f"{svc.ok}/{svc.attempts} sequential connections to port {service} over the wire ({who}: "
            f"{svc.cpu_us_per_setup:.0f} us of CPU each, best batch {svc.best_per_s:.0f}/s) and {ref.ok}/{ref.attempts} "
            f"to the node's host stack on port {host} over loopback ({ref.cpu_us_per_setup:.0f} us each, best batch "
            f"{ref.best_per_s:.0f}/s): setups per CPU-second {ratio:.2f} of the host stack's")
    if unmet:
        seen = f"precondition failed: {unmet}"
    elif _toe(ctx):
        seen = ("the engine set up fewer connections per CPU-second than the host stack" if verdict
                else "the engine set up as many connections per CPU-second as the host stack, not what the claim predicts")
    else:
        seen = ("both are the host stack and set up at a like cost" if verdict
                else f"one stack, yet the wire and loopback differ more than {LIKE_RATE:g}-fold")
    yield ctx.check("setup-rate", "RFC9293 3.5", verdict, f"{said}: {seen}", numbers=numbers, claims=("TOE-2",))


def _frames(ctx: RunContext) -> Frames:
    node = ctx.lab.node(ctx.server)
    passed = ctx.target.counters().get("rx_to_host", 0) if _toe(ctx) else None
    return Frames(rx_packets(node, ctx.iface(ctx.server)), rx_packets(node, "lo"), passed)


def _offloaded(ctx: RunContext) -> int | None:
    """Connections the engine has terminated itself so far; None on a target without an engine."""
    return ctx.target.counters().get("conn_offloaded", 0) if _toe(ctx) else None


# --- TOE-8 ---------------------------------------------------------------------------------
def listed_ports(ss_output: str, proc_tcp: str) -> tuple[set[int], set[int]]:
    """Local ports of established sockets in `ss -tnH state established` and in /proc/net/tcp and tcp6 (state 01)."""
    in_ss = set()
    for line in ss_output.splitlines():
        fields = line.split()
        local = next((f for f in fields if ":" in f), None)
        if local:
            in_ss.add(int(local.rpartition(":")[2]))
    in_proc = set()
    for line in proc_tcp.splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[3] == "01" and fields[0].endswith(":"):
            in_proc.add(int(fields[1].rpartition(":")[2], 16))
    return in_ss, in_proc


def _ports(ports: set[int]) -> str:
    return ",".join(map(str, sorted(ports))) or "none"


def largest_window(pcap: Path, server: str, port: int) -> int:
    """The largest receive window (scaled) the server advertised on `port`, from a client-side capture."""
    from scapy.layers.inet import IP, TCP
    from scapy.utils import rdpcap

    scale, largest = 0, 0
    for packet in rdpcap(str(pcap)):
        if IP not in packet or TCP not in packet or packet[IP].src != server or packet[TCP].sport != port:
            continue
        tcp = packet[TCP]
        if tcp.flags & 0x02:
            scale = dict((k, v) for k, v in tcp.options if isinstance(k, str)).get("WScale", 0) or 0
            largest = max(largest, tcp.window)
        else:
            largest = max(largest, tcp.window << scale)
    return largest


def _global_view(ctx: RunContext) -> Iterator[Check]:
    p, node = ctx.params, ctx.lab.node(ctx.server)
    client, addr = ctx.lab.node(ctx.client), ctx.address(ctx.server)
    ports = (SERVICE["discard"], HOST_PORTS["discard"])
    capture = ctx.capture(ctx.client, ctx.iface(ctx.client), " or ".join(f"tcp port {x}" for x in ports),
                          name="global-view.pcap")
    socks = []
    try:
        socks = [hold_open(client, addr, port) for port in ports]
        for sock in socks:
            sock.sendall(bytes(256 * 1024))
        ss = node.run(["ss", "-tnH", "state", "established"], check=True).stdout
        proc = node.run(["cat", "/proc/net/tcp", "/proc/net/tcp6"], check=True).stdout
        table = ctx.target.engine.request({"cmd": "conns"})["connections"] if _toe(ctx) else []  # type: ignore[attr-defined]
        audited = engine_connections(engine_sockets(ctx.lab.record)[ctx.server]) if _toe(ctx) else None
    finally:
        for sock in socks:
            sock.close()
        pcap = capture.stop()
    in_ss, in_proc = listed_ports(ss, proc)
    offloaded = {int(row["local"].rpartition(":")[2]) for row in table if row.get("offloaded")}
    in_audit = {int(str(row["local"]).rpartition(":")[2]) for row in audited or () if row.get("offloaded")}
    service, host = ports
    numbers = {"ss_ports": _ports(in_ss & set(ports)), "proc_ports": _ports(in_proc & set(ports)),
               "engine_offloaded_ports": _ports(offloaded & set(ports)), "audit_offloaded_ports": _ports(in_audit)}
    precondition = host in in_ss and host in in_proc
    if _toe(ctx):
        ok = (precondition and service not in in_ss and service not in in_proc and service in offloaded
              and service in in_audit)
        seen = (f"ss and /proc/net/tcp on {ctx.server} listed the host-port connection and "
                f"{'not ' if service not in in_ss | in_proc else ''}the offloaded one, which the engine's table "
                f"{'holds' if service in offloaded else 'does not hold'} and toelab audit "
                f"{'lists' if service in in_audit else 'does not list'}")
    else:
        ok = precondition and service in in_ss and service in in_proc
        seen = f"ss and /proc/net/tcp on {ctx.server} listed both connections"
    yield ctx.check("socket-tools-view", "RFC9293 3.3.1", ok,
                    seen + ("" if precondition else "; precondition failed: the host connection was not listed"),
                    pcaps=[pcap], numbers=numbers, claims=("TOE-8",))
    host_window, service_window = largest_window(pcap, addr, host), largest_window(pcap, addr, service)
    windows = {"rmem_max": p.rmem_max, "host_window": host_window, "service_window": service_window}
    precondition = 0 < host_window <= p.rmem_max
    if _toe(ctx):
        ok = precondition and service_window > p.rmem_max
        seen = f"the offloaded connection advertised up to {service_window} bytes, past the cap"
    else:
        ok = precondition and 0 < service_window <= p.rmem_max
        seen = f"the service-port connection advertised at most {service_window} bytes, within the cap"
    yield ctx.check("socket-limits-tcp-rmem", "RFC9293 3.8.6", ok,
                    f"with tcp_rmem capped at {p.rmem_max} bytes the host connection advertised at most "
                    f"{host_window}; {seen}" + ("" if precondition else "; precondition failed: the cap did not "
                                                "show on the host connection"),
                    pcaps=[pcap], numbers=windows, claims=("TOE-8",))


# --- TOE-11 -------------------------------------------------------------------------------
def _audit(ctx: RunContext, hif: str) -> Iterator[Check]:
    """The audit's judgement of the server's wire over one bulk download: TSO on, and super-frames really left.

    The audit reads an interface's counters since it was made; the handshakes of the setup
    checks alone would drag the average frame under the MTU, so the audit's own rule
    (`lab.audit.observe`) is applied to the counters' growth over the download.
    """
    wire = ctx.iface(ctx.server)

    def row() -> InterfaceAudit | None:
        return next((a for a in audit_interfaces(ctx.lab.record) if a.node == ctx.server and a.iface == wire), None)

    before = row()
    # With TSO a kernel server sends ~48 KiB per frame: the download must be long enough that
    # the audit's own rule (at least MIN_PACKETS frames) judges it, or the check fails unmeasured.
    size = max(ctx.params.transfer_kib * 1024, 2 * MIN_PACKETS * 65536)
    flow = download(ctx.lab.node(ctx.client), ctx.address(ctx.server), SERVICE["chargen"], size, ctx.params.limit_s)
    after = row()
    if before is None or after is None:
        yield ctx.check("audit-offload-happened", "RFC9293 3.7.4", False,
                        f"the audit has no row for {ctx.server}:{wire}", claims=("TOE-11",))
        return
    grown = InterfaceAudit(after.node, after.iface, after.mtu, after.features,
                           {k: after.stats[k] - before.stats.get(k, 0) for k in after.stats})
    observe(grown)
    packets, sent = grown.stats["tx_packets"], grown.stats["tx_bytes"]
    average = sent / max(packets, 1)
    tso = bool(grown.features.get("tso"))
    ok = flow.complete and packets >= MIN_PACKETS and tso and average > grown.mtu and not grown.findings
    yield ctx.check("audit-offload-happened", "RFC9293 3.7.4", ok,
                    f"over a {flow.bytes}-byte download the audit read {ctx.server}:{wire} with TSO "
                    f"{'on' if tso else 'off'} sending {packets} frames averaging {average:.0f} bytes against an MTU "
                    f"of {grown.mtu}" + (f"; it flagged {'; '.join(grown.findings)}" if grown.findings else
                                         "; it flagged nothing"),
                    numbers={"tx_packets": packets, "avg_tx_frame": round(average), "mtu": grown.mtu,
                             "findings": len(grown.findings), "host_interface": hif}, claims=("TOE-11",))
