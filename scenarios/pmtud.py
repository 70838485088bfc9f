"""Path MTU discovery, the ICMP black hole and MSS clamping: the phases both PMTUD scenarios run.

A PMTUD scenario (`pmtu_path` on a linear path, `mtu_mismatch` on an asymmetric one) puts a
narrow hop in the middle of the path, so each end announces an MSS from a wide first hop and
its data must be lowered by the routers' ICMP errors. What differs between them is where the
pieces are (a `PathPlan`); the phases and their checks are these:

1. PMTUD over IPv4 (RFC 1191) and IPv6 (RFC 8201). Target as sender: the client pulls from
   its chargen service; captured past the narrow hop, every data segment fits it, the largest
   is as large as the path allows (the effective send MSS, MUST-16), and a kernel target's
   route cache holds the path MTU. Target as receiver: the client's kernel does the PMTUD;
   what is the target's is that its announced MSS and its ACKs carry the lowered stream to the
   end (the client's own segment size is the precondition, not the verdict).
2. Black hole: the routers drop the ICMP errors they would send; the target's download, which
   completed in phase 1, must stall.
3. MSS clamping: the routers also clamp forwarded SYNs' MSS to their route MTU; the target's
   SYN-ACK arrives with MSS <= narrow - 40 and its download completes despite the black hole.

Route caches are flushed before each transfer so each starts from the first-hop MTU.
"""
from __future__ import annotations

import re
import select
import socket
import struct
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field
from scapy.utils import rdpcap

from lab.render import load_topology

from .framework import Check, RunContext, ScenarioParams
from .peer import option_value
from .transfer import wait_for_capture
from .wire import tcp_frames

if TYPE_CHECKING:
    from lab.node import Node

NARROW_MTU = 1400
ROUTERS = ("r1", "r2")
IP_HEADER = {4: 20, 6: 40}
TCP_HEADER = 20
#: Options a full-sized segment may carry beside its data (timestamps, SACK blocks): the
#: effective send MSS after PMTUD is at least the path's MSS less this.
OPTION_ROOM = 40
#: the requirements a PMTUD scenario checks, by IP version where they differ
PMTUD_RFC = {4: "RFC1191 3", 6: "RFC8201 4"}
CACHE_RFC = {4: "RFC1191 6.3", 6: "RFC8201 5.2"}
PMTU_COVERS = (*PMTUD_RFC.values(), *CACHE_RFC.values(), "MUST-16", "SHLD-6", "RFC2923 2.1", "RFC4459 3.2")
TCP_INFO_SIZE = 136
#: How long a capture may take to hold what the transfer moved (past the narrow hop, every delivered byte).
CAPTURE_SETTLE_S = 3.0


class MtuParams(ScenarioParams):
    transfer_kib: int = Field(2048, ge=64, le=65536, description="KiB per bulk transfer")
    transfer_timeout_s: float = Field(10.0, gt=0, le=120, description="time a healthy transfer may take")
    black_hole_s: float = Field(5.0, gt=0, le=60, description="how long a black-holed transfer is given")
    stalled_below: float = Field(0.1, gt=0, le=1, description="a transfer that delivered less than this share stalled")


@dataclass(frozen=True)
class PathPlan:
    """Where a PMTUD scenario's pieces are on its topology."""

    topology: str
    #: the template parameters that switch the routers' ICMP drop and MSS clamp on
    drop_param: str
    clamp_param: str
    #: (node, interface) past the narrow hop where the target's data and SYN-ACKs arrive
    sender_capture: tuple[str, str]
    #: (node, interface) past the narrow hop where the client's data arrives
    receiver_capture: tuple[str, str]
    #: the router whose rendered ruleset every router loads; None: each router loads its own
    rules_from: str | None = None
    #: addresses to use by IP version, where a node's first address is not the one on the path
    client_address: Mapping[int, str] = field(default_factory=dict)
    server_address: Mapping[int, str] = field(default_factory=dict)

    def client(self, ctx: RunContext, version: int) -> str:
        return self.client_address.get(version) or ctx.address(ctx.client, version)

    def server(self, ctx: RunContext, version: int) -> str:
        return self.server_address.get(version) or ctx.address(ctx.server, version)


# --- transfers with kernel sockets from the client ---------------------------------------------
@dataclass(frozen=True)
class Transfer:
    """A bulk transfer as the client saw it."""

    wanted: int
    delivered: int
    completed: bool
    seconds: float
    snd_mss: int | None = None
    pmtu: int | None = None

    @property
    def share(self) -> float:
        return self.delivered / self.wanted if self.wanted else 0.0


def tcp_info(sock: socket.socket) -> tuple[int, int, int]:
    """(snd_mss, pmtu, bytes_acked) from Linux's struct tcp_info."""
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_SIZE)
    (snd_mss,) = struct.unpack_from("I", raw, 16)
    (pmtu,) = struct.unpack_from("I", raw, 60)
    (bytes_acked,) = struct.unpack_from("Q", raw, 120)
    return snd_mss, pmtu, bytes_acked


def connect(node: Node, version: int, address: str, port: int, timeout_s: float) -> socket.socket:
    with node.inside():
        sock = socket.socket(socket.AF_INET if version == 4 else socket.AF_INET6, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    sock.connect((address, port))
    sock.setblocking(False)
    return sock


def _abort(sock: socket.socket) -> None:
    """Close with a RST: a stalled transfer's queued data must not linger in the lab."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def send_bulk(node: Node, version: int, address: str, port: int, nbytes: int, timeout_s: float) -> Transfer:
    """Send `nbytes` to a discard service and wait for its close; delivered = bytes the peer acknowledged."""
    start = time.monotonic()
    deadline = start + timeout_s
    sock = connect(node, version, address, port, timeout_s)
    block, sent, completed = memoryview(bytes(1 << 16)), 0, False
    while sent < nbytes and (left := deadline - time.monotonic()) > 0:
        if select.select([], [sock], [], left)[1]:
            try:
                sent += sock.send(block[:min(len(block), nbytes - sent)])
            except BlockingIOError:
                continue
    if sent == nbytes:
        sock.shutdown(socket.SHUT_WR)
        while (left := deadline - time.monotonic()) > 0 and select.select([sock], [], [], left)[0]:
            try:
                if not sock.recv(4096):
                    completed = True
                    break
            except BlockingIOError:
                continue
    snd_mss, pmtu, acked = tcp_info(sock)
    seconds = time.monotonic() - start
    _abort(sock)
    return Transfer(nbytes, min(max(0, acked - 1), nbytes), completed, round(seconds, 3), snd_mss, pmtu)


def pull_bulk(node: Node, version: int, address: str, port: int, nbytes: int, timeout_s: float) -> Transfer:
    """Read `nbytes` from a chargen service within the time allowed."""
    start = time.monotonic()
    deadline = start + timeout_s
    sock = connect(node, version, address, port, timeout_s)
    got = 0
    while got < nbytes and (left := deadline - time.monotonic()) > 0:
        if select.select([sock], [], [], left)[0]:
            try:
                chunk = sock.recv(1 << 16)
            except BlockingIOError:
                continue
            if not chunk:
                break
            got += len(chunk)
    seconds = time.monotonic() - start
    _abort(sock)
    return Transfer(nbytes, min(got, nbytes), got >= nbytes, round(seconds, 3))


# --- the lab's routers and route caches -------------------------------------------------------
def ip(ctx: RunContext, node: str, version: int, *args: str) -> str:
    return ctx.lab.node(node).run(["ip", f"-{version}", *args], check=True).stdout


def flush_route_caches(ctx: RunContext) -> None:
    """Forget the path MTUs the end kernels learned, so each transfer starts from the first-hop MTU."""
    for node in (ctx.client, ctx.server):
        for version in (4, 6):
            ip(ctx, node, version, "route", "flush", "cache")


def cached_mtu(ctx: RunContext, node: str, version: int, destination: str) -> int | None:
    """The MTU `ip route get` reports for a destination (a learned PMTU shows as `mtu N`)."""
    match = re.search(r"\bmtu (\d+)", ip(ctx, node, version, "route", "get", destination))
    return int(match.group(1)) if match else None


def load_router_rules(ctx: RunContext, plan: PathPlan, *, drop_icmp: bool, clamp_mss: bool) -> None:
    """Load the template's router rules for these switches on both routers, replacing what was there."""
    spec = load_topology(plan.topology, {plan.drop_param: str(drop_icmp).lower(),
                                         plan.clamp_param: str(clamp_mss).lower()})
    for router in ROUTERS:
        node = ctx.lab.node(router)
        node.run(["nft", "delete", "table", "inet", "toelab"])
        node.run(["nft", "-f", "-"], input=spec.nodes[plan.rules_from or router].nft or "", check=True)


def payload_limit(version: int) -> int:
    """The largest TCP payload that fits the narrow hop."""
    return NARROW_MTU - IP_HEADER[version] - TCP_HEADER


@dataclass(frozen=True)
class PathRun:
    """One transfer, with the data segments its sender put past the narrow hop."""

    transfer: Transfer
    pcap: Path
    largest: int
    data_frames: int


def transfer(ctx: RunContext, plan: PathPlan, version: int, role: str, tag: str, timeout_s: float) -> PathRun:
    """The target sends (the client pulls its chargen) or receives (the client sends to its discard)."""
    nbytes = ctx.params.transfer_kib * 1024
    client, server = ctx.lab.node(ctx.client), plan.server(ctx, version)
    sender, (node, iface) = ((server, plan.sender_capture) if role == "sender"
                             else (plan.client(ctx, version), plan.receiver_capture))
    capture = ctx.capture(node, iface, f"tcp and src host {sender}", name=f"{tag}-{role}-v{version}.pcap")
    try:
        if role == "sender":
            moved = pull_bulk(client, version, server, ctx.port("chargen"), nbytes, timeout_s)
        else:
            moved = send_bulk(client, version, server, ctx.port("discard"), nbytes, timeout_s)
        wait_for_capture(capture.path, lambda frames: sum(f.payload_len for f in frames) >= moved.delivered,
                         CAPTURE_SETTLE_S)
    finally:
        pcap = capture.stop()
    sizes = [f.payload_len for f in tcp_frames(pcap) if f.payload_len]
    return PathRun(moved, pcap, max(sizes, default=0), len(sizes))


# --- judging (pure) ---------------------------------------------------------------------------
def segments_fit(run: PathRun, limit: int) -> bool:
    """The transfer completed and every data segment seen past the narrow hop fitted it."""
    return run.transfer.completed and run.data_frames > 0 and run.largest <= limit


def send_mss_from_path(run: PathRun, limit: int) -> bool:
    """The largest segment is as large as a send MSS taken from the path MTU allows (MUST-16), no larger."""
    return run.data_frames > 0 and limit - OPTION_ROOM <= run.largest <= limit


def receiver_carried(run: PathRun, limit: int) -> bool:
    """The client's PMTUD lowered its segments (precondition) and the target acknowledged all and closed."""
    return run.data_frames > 0 and run.largest <= limit and run.transfer.completed


def stalled(baseline: Transfer | None, holed: Transfer, below: float) -> bool:
    """The black-holed transfer stalled while the same transfer without the black hole completed."""
    return baseline is not None and baseline.completed and not holed.completed and holed.share < below


def clamped(mss_seen: list[int], limit: int) -> bool:
    """A SYN-ACK was seen past the clamping router and every MSS it carried fits the narrow hop."""
    return bool(mss_seen) and max(mss_seen) <= limit


# --- the phases -------------------------------------------------------------------------------
def run_phases(ctx: RunContext, plan: PathPlan) -> Iterator[Check]:
    """PMTUD over IPv4 and IPv6, then the black hole, then MSS clamping (the module docstring)."""
    baseline: Transfer | None = None
    for version in (4, 6):
        ctx.progress(f"PMTUD over IPv{version}")
        for check, sent in _pmtud(ctx, plan, version):
            if sent is not None and version == 4:
                baseline = sent
            yield check
    ctx.progress("ICMP black hole")
    load_router_rules(ctx, plan, drop_icmp=True, clamp_mss=False)
    yield _black_hole(ctx, plan, baseline)
    ctx.progress("MSS clamping")
    load_router_rules(ctx, plan, drop_icmp=True, clamp_mss=True)
    yield from _clamped(ctx, plan)


def _ipv6_refused(ctx: RunContext, plan: PathPlan) -> str | None:
    """Why the target takes no IPv6 connection to its discard service, or None if it does."""
    address = plan.server(ctx, 6)
    try:
        sock = connect(ctx.lab.node(ctx.client), 6, address, ctx.port("discard"), 2.0)
    except OSError as exc:
        return f"target {ctx.target.name} took no IPv6 connection to [{address}]:{ctx.port('discard')} ({exc})"
    sock.close()
    return None


def _pmtud(ctx: RunContext, plan: PathPlan, version: int) -> Iterator[tuple[Check, Transfer | None]]:
    """Checks of one IP version, each with the sender-role transfer it judged (the black hole's baseline)."""
    if version == 6 and (reason := _ipv6_refused(ctx, plan)):
        for check in (ctx.skip("pmtud-segment-size[v6-sender]", PMTUD_RFC[6], reason),
                      ctx.skip("effective-send-mss[v6-sender]", "MUST-16", reason),
                      ctx.skip("pmtu-cached[v6-sender]", CACHE_RFC[6], reason),
                      ctx.skip("pmtud-receiver-completes[v6]", PMTUD_RFC[6], reason)):
            yield check, None
        return
    flush_route_caches(ctx)
    sent = transfer(ctx, plan, version, "sender", "pmtud", ctx.params.transfer_timeout_s)
    for check in _sender_checks(ctx, plan, version, sent):
        yield check, sent.transfer
    flush_route_caches(ctx)
    received = transfer(ctx, plan, version, "receiver", "pmtud", ctx.params.transfer_timeout_s)
    yield _receiver_check(ctx, version, received), None


def _sender_checks(ctx: RunContext, plan: PathPlan, version: int, run: PathRun) -> Iterator[Check]:
    t, tag, limit = run.transfer, f"[v{version}-sender]", payload_limit(version)
    numbers = {"largest": run.largest, "limit": limit, "seconds": t.seconds, "data_frames": run.data_frames}
    yield ctx.check(f"pmtud-segment-size{tag}", PMTUD_RFC[version], segments_fit(run, limit),
                    f"with the target sending over IPv{version} through a {NARROW_MTU}-byte hop, {t.delivered} of "
                    f"{t.wanted} bytes arrived in {t.seconds} s and the largest of {run.data_frames} segments "
                    f"captured past the hop carried {run.largest} bytes (limit {limit})", pcaps=[run.pcap],
                    numbers=numbers)
    yield ctx.check(f"effective-send-mss{tag}", "MUST-16", send_mss_from_path(run, limit),
                    f"after PMTUD the target's largest segment carried {run.largest} bytes, within the "
                    f"{limit - OPTION_ROOM}..{limit} that a send MSS taken from the path MTU allows",
                    pcaps=[run.pcap], numbers=numbers)
    if ctx.target.name != "kernel":
        yield ctx.skip(f"pmtu-cached{tag}", CACHE_RFC[version],
                       "the route cache is the server kernel's; the target keeps its path MTU per connection")
        return
    client = plan.client(ctx, version)
    cached = cached_mtu(ctx, ctx.server, version, client)
    yield ctx.check(f"pmtu-cached{tag}", CACHE_RFC[version], cached == NARROW_MTU,
                    f"after the transfer, `ip -{version} route get {client}` on the target's node showed mtu "
                    f"{cached} (expected {NARROW_MTU})", numbers={"cached_mtu": cached})


def _receiver_check(ctx: RunContext, version: int, run: PathRun) -> Check:
    t, limit = run.transfer, payload_limit(version)
    lowered = run.data_frames > 0 and run.largest <= limit
    return ctx.check(f"pmtud-receiver-completes[v{version}]", PMTUD_RFC[version], receiver_carried(run, limit),
                     f"with the client sending to the target's discard over IPv{version} through a {NARROW_MTU}-byte "
                     f"hop, its segments were {'lowered' if lowered else 'NOT lowered (no PMTUD to judge)'} to at "
                     f"most {run.largest} bytes (limit {limit}) and the target acknowledged {t.delivered} of "
                     f"{t.wanted} bytes and {'closed' if t.completed else 'did not close'} in {t.seconds} s",
                     pcaps=[run.pcap], numbers={"largest": run.largest, "limit": limit, "seconds": t.seconds,
                                                "data_frames": run.data_frames, "delivered": t.delivered})


def _black_hole(ctx: RunContext, plan: PathPlan, baseline: Transfer | None) -> Check:
    p = ctx.params
    flush_route_caches(ctx)
    run = transfer(ctx, plan, 4, "sender", "blackhole", p.black_hole_s)
    t = run.transfer
    before = (f"{baseline.delivered} of {baseline.wanted} bytes in {baseline.seconds} s" if baseline
              else "nothing measured")
    return ctx.check("black-hole-stalls[sender]", "RFC2923 2.1", stalled(baseline, t, p.stalled_below),
                     f"with the routers dropping ICMP errors, {t.delivered} of {t.wanted} bytes ({t.share:.1%}) of "
                     f"the target's download arrived in {t.seconds} s; without the black hole: {before}",
                     pcaps=[run.pcap], numbers={"delivered": t.delivered, "wanted": t.wanted, "largest": run.largest,
                                                "baseline_completed": bool(baseline and baseline.completed)})


def _clamped(ctx: RunContext, plan: PathPlan) -> Iterator[Check]:
    limit = payload_limit(4)
    flush_route_caches(ctx)
    node, iface = plan.sender_capture
    syns = ctx.capture(node, iface, "tcp[tcpflags] & tcp-syn != 0 and tcp[tcpflags] & tcp-ack != 0",
                       name="clamp-sender-synack.pcap")
    try:
        run = transfer(ctx, plan, 4, "sender", "clamp", ctx.params.transfer_timeout_s)
    finally:
        syn_pcap = syns.stop()
    seen = [m for f in rdpcap(str(syn_pcap)) if (m := option_value(f, "MSS")) is not None]
    yield ctx.check("clamped-syn-mss[sender]", "RFC4459 3.2", clamped(seen, limit),
                    f"past the clamping routers the target's SYN-ACK carried MSS {max(seen, default=None)} "
                    f"(limit {limit})", pcaps=[syn_pcap], numbers={"mss": max(seen, default=None)})
    t = run.transfer
    yield ctx.check("clamp-repairs-black-hole[sender]", "SHLD-6", segments_fit(run, limit),
                    f"with ICMP dropped and MSS clamped, {t.delivered} of {t.wanted} bytes of the target's download "
                    f"arrived in {t.seconds} s in segments of at most {run.largest} bytes", pcaps=[run.pcap],
                    numbers={"seconds": t.seconds, "largest": run.largest})
