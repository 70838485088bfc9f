"""`mtu_mismatch`: path MTU discovery, the ICMP black hole, and MSS clamping, both directions.

On the `mtu_mismatch` topology (A - R1 - B and A - R2 - B) the target serves on B. An
endpoint announces an MSS from its own route back to the peer, so a narrow hop next to the
receiver never needs PMTUD on a symmetric path. The scenario therefore routes asymmetrically,
as real paths often are: A reaches B through R1, whose hop to B is 1400 bytes, and B answers
through R2, whose hop to A is narrowed to 1400 bytes by the topology parameters. Each end
announces an MSS from a wide (1500/2000) first hop, and each direction's data meets a
1400-byte hop in the middle of its path:

- target as receiver: A (kernel) sends a bulk transfer to B's discard service through R1;
- target as sender: A pulls from B's chargen service, whose data crosses R2.

Phases, with the senders' route caches flushed between them:
1. PMTUD over IPv4 (RFC 1191) and IPv6 (RFC 8201): the routers' ICMP errors lower the
   sender's segment size; captured after the narrow hop, every data segment fits it, and the
   sender's route cache holds MTU 1400.
2. Black hole: both routers drop the ICMP errors they would send; the transfers stall.
3. MSS clamping: the routers also clamp forwarded SYNs' MSS to their route's MTU; the SYN
   seen at B carries MSS <= 1360 and the transfers complete despite the black hole.

The routers' nftables rules are the ones the template renders for `r1_drop_icmp` and
`r1_clamp_mss`, loaded at run time on both routers so one lab serves every phase. The
senders' TSO and GSO are off, so the captures hold real segments, not super-frames.
"""
from __future__ import annotations

import re
import select
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field
from scapy.utils import rdpcap

from lab.netns import entered
from lab.render import load_topology

from .framework import Check, RunContext, ScenarioParams, scenario
from .peer import option_value
from .wire import tcp_frames

NARROW_MTU = 1400
ROUTERS = ("r1", "r2")
IP_HEADER = {4: 20, 6: 40}
TCP_HEADER = 20
#: the requirements a PMTUD scenario checks, by IP version where they differ
PMTUD_RFC = {4: "RFC1191 3", 6: "RFC8201 4"}
CACHE_RFC = {4: "RFC1191 6.3", 6: "RFC8201 5.2"}
PMTU_COVERS = (*PMTUD_RFC.values(), *CACHE_RFC.values(), "MUST-16", "SHLD-6", "RFC2923 2.1", "RFC4459 3.2")
#: Addresses on the topology: A's side of R1 and R2, B's side of R1.
A_ADDR = {4: "10.0.1.1", 6: "fd00:1::1"}
B_ADDR = {4: "10.0.3.1", 6: "fd00:3::1"}
#: B's way back to A through R2, and R2's routes for the prefixes it does not touch.
B_RETURN = {4: ("10.0.1.0/24", "10.0.4.2"), 6: ("fd00:1::/64", "fd00:4::2")}
R2_ROUTES = {4: [("10.0.1.0/24", "10.0.2.1"), ("10.0.3.0/24", "10.0.4.1")],
             6: [("fd00:1::/64", "fd00:2::1"), ("fd00:3::/64", "fd00:4::1")]}
TCP_INFO_SIZE = 136


class MtuParams(ScenarioParams):
    transfer_kib: int = Field(2048, ge=64, le=65536, description="KiB per bulk transfer")
    transfer_timeout_s: float = Field(10.0, gt=0, le=120, description="time a healthy transfer may take")
    black_hole_s: float = Field(5.0, gt=0, le=60, description="how long a black-holed transfer is given")
    stalled_below: float = Field(0.1, gt=0, le=1, description="a transfer that delivered less than this share stalled")


@scenario("mtu_mismatch", purpose="Path MTU discovery over IPv4 and IPv6 lowers the sender's segment size; a "
          "router that drops ICMP makes a black hole that stalls; MSS clamping on the router repairs it. "
          "Target as receiver and as sender.",
          topology="mtu_mismatch", params=MtuParams, topology_params={"mtu_a_r2": NARROW_MTU},
          covers=PMTU_COVERS,
          server="b", client="a", claims=("TOE-5",))
def run(ctx: RunContext) -> Iterator[Check]:
    _route_asymmetrically(ctx)
    for node, iface in (("a", "r1"), ("b", "r2")):
        ctx.lab.set_features(node, iface, tso=False, gso=False)
    for version in (4, 6):
        ctx.progress(f"PMTUD over IPv{version}")
        yield from _pmtud(ctx, version)
    ctx.progress("ICMP black hole")
    _load_router_rules(ctx, drop_icmp=True, clamp_mss=False)
    yield from _black_hole(ctx)
    ctx.progress("MSS clamping")
    _load_router_rules(ctx, drop_icmp=True, clamp_mss=True)
    yield from _clamped(ctx)


@dataclass(frozen=True)
class Transfer:
    """A bulk transfer as one end saw it."""

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


def connect(netns: str, version: int, address: str, port: int, timeout_s: float) -> socket.socket:
    with entered(netns):
        sock = socket.socket(socket.AF_INET if version == 4 else socket.AF_INET6, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    sock.connect((address, port))
    sock.setblocking(False)
    return sock


def _abort(sock: socket.socket) -> None:
    """Close with a RST: a stalled transfer's queued data must not linger in the lab."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def send_bulk(netns: str, version: int, address: str, port: int, nbytes: int, timeout_s: float) -> Transfer:
    """Send `nbytes` to a discard service and wait for its close; delivered = bytes the peer acknowledged."""
    start = time.monotonic()
    deadline = start + timeout_s
    sock = connect(netns, version, address, port, timeout_s)
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


def pull_bulk(netns: str, version: int, address: str, port: int, nbytes: int, timeout_s: float) -> Transfer:
    """Read `nbytes` from a chargen service within the time allowed."""
    start = time.monotonic()
    deadline = start + timeout_s
    sock = connect(netns, version, address, port, timeout_s)
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


def ip(ctx: RunContext, node: str, version: int, *args: str) -> str:
    return ctx.lab.node(node).run(["ip", f"-{version}", *args], check=True).stdout


def _route_asymmetrically(ctx: RunContext) -> None:
    """B answers A through R2; R2 learns the prefixes of A's R1 side and B's R1 side."""
    for version in (4, 6):
        prefix, via = B_RETURN[version]
        ip(ctx, "b", version, "route", "replace", prefix, "via", via)
        for prefix, via in R2_ROUTES[version]:
            ip(ctx, "r2", version, "route", "replace", prefix, "via", via)


def _flush_route_caches(ctx: RunContext) -> None:
    """Forget learned path MTUs, so each phase starts from the first-hop MTU."""
    for node in ("a", "b"):
        for version in (4, 6):
            ip(ctx, node, version, "route", "flush", "cache")


def cached_mtu(ctx: RunContext, node: str, version: int, destination: str) -> int | None:
    """The MTU `ip route get` reports for a destination (a learned PMTU shows as `mtu N`)."""
    match = re.search(r"\bmtu (\d+)", ip(ctx, node, version, "route", "get", destination))
    return int(match.group(1)) if match else None


def _load_router_rules(ctx: RunContext, *, drop_icmp: bool, clamp_mss: bool) -> None:
    """Load the template's R1 ruleset for these switches on both routers, replacing what was there."""
    spec = load_topology("mtu_mismatch", {"r1_drop_icmp": str(drop_icmp).lower(),
                                          "r1_clamp_mss": str(clamp_mss).lower()})
    rules = spec.nodes["r1"].nft or ""
    for router in ROUTERS:
        node = ctx.lab.node(router)
        node.run(["nft", "delete", "table", "inet", "toelab"])
        node.run(["nft", "-f", "-"], input=rules, check=True)


@dataclass(frozen=True)
class RoleRun:
    """One transfer in one role, with what the capture after the narrow hop saw."""

    role: str
    transfer: Transfer
    pcap: Path
    largest: int
    data_frames: int


def _transfer(ctx: RunContext, version: int, role: str, tag: str, timeout_s: float) -> RoleRun:
    """The target receives (A sends to its discard) or sends (A pulls its chargen); captured past the narrow hop."""
    nbytes = ctx.params.transfer_kib * 1024
    sender = A_ADDR[version] if role == "receiver" else B_ADDR[version]
    node, iface = ("b", "r1") if role == "receiver" else ("a", "r2")
    capture = ctx.capture(node, iface, f"tcp and src host {sender}", name=f"{tag}-{role}-v{version}.pcap")
    try:
        if role == "receiver":
            transfer = send_bulk(ctx.lab.node("a").netns, version, B_ADDR[version], ctx.port("discard"), nbytes,
                                 timeout_s)
        else:
            transfer = pull_bulk(ctx.lab.node("a").netns, version, B_ADDR[version], ctx.port("chargen"), nbytes,
                                 timeout_s)
    finally:
        pcap = capture.stop()
    sizes = [f.payload_len for f in tcp_frames(pcap) if f.payload_len]
    return RoleRun(role, transfer, pcap, max(sizes, default=0), len(sizes))


def _pmtud(ctx: RunContext, version: int) -> Iterator[Check]:
    rfc = PMTUD_RFC[version]
    cache_rfc = CACHE_RFC[version]
    limit = NARROW_MTU - IP_HEADER[version] - TCP_HEADER
    for role in ("receiver", "sender"):
        _flush_route_caches(ctx)
        run = _transfer(ctx, version, role, "pmtud", ctx.params.transfer_timeout_s)
        t, tag = run.transfer, f"[v{version}-{role}]"
        who = "A sending to the target" if role == "receiver" else "the target sending to A"
        ok = t.completed and run.data_frames > 0 and run.largest <= limit
        yield ctx.check(f"pmtud-segment-size{tag}", rfc, ok,
                        f"with {who} over IPv{version} through a {NARROW_MTU}-byte hop, {t.delivered} of {t.wanted} "
                        f"bytes arrived in {t.seconds} s and the largest of {run.data_frames} captured segments "
                        f"carried {run.largest} bytes (limit {limit})", pcaps=[run.pcap],
                        numbers={"largest": run.largest, "limit": limit, "seconds": t.seconds,
                                 "snd_mss": t.snd_mss, "pmtu": t.pmtu})
        if role == "receiver":
            yield ctx.check(f"effective-send-mss{tag}", "MUST-16", t.snd_mss is not None and t.snd_mss <= limit,
                            f"A's send MSS after PMTUD was {t.snd_mss} with path MTU {t.pmtu} (limit {limit})",
                            numbers={"snd_mss": t.snd_mss, "pmtu": t.pmtu})
        node, destination = ("a", B_ADDR[version]) if role == "receiver" else ("b", A_ADDR[version])
        if role == "sender" and ctx.target.name != "kernel":
            yield ctx.skip(f"pmtu-cached{tag}", cache_rfc, "the route cache is the kernel's; the target keeps its own")
            continue
        cached = cached_mtu(ctx, node, version, destination)
        yield ctx.check(f"pmtu-cached{tag}", cache_rfc, cached == NARROW_MTU,
                        f"after the transfer, `ip -{version} route get {destination}` on {node.upper()} showed "
                        f"mtu {cached} (expected {NARROW_MTU})", numbers={"cached_mtu": cached})


def _black_hole(ctx: RunContext) -> Iterator[Check]:
    p = ctx.params
    for role in ("receiver", "sender"):
        _flush_route_caches(ctx)
        run = _transfer(ctx, 4, role, "blackhole", p.black_hole_s)
        t = run.transfer
        stalled = not t.completed and t.share < p.stalled_below
        yield ctx.check(f"black-hole-stalls[{role}]", "RFC2923 2.1", stalled,
                        f"with the routers dropping ICMP errors, {t.delivered} of {t.wanted} bytes "
                        f"({t.share:.1%}) arrived in {t.seconds} s", pcaps=[run.pcap],
                        numbers={"delivered": t.delivered, "wanted": t.wanted, "largest": run.largest})


def _clamped(ctx: RunContext) -> Iterator[Check]:
    limit = NARROW_MTU - IP_HEADER[4] - TCP_HEADER
    for role in ("receiver", "sender"):
        _flush_route_caches(ctx)
        node, iface = ("b", "r1") if role == "receiver" else ("a", "r2")
        syns = ctx.capture(node, iface, "tcp[tcpflags] & tcp-syn != 0", name=f"clamp-{role}-syn.pcap")
        try:
            run = _transfer(ctx, 4, role, "clamp", ctx.params.transfer_timeout_s)
        finally:
            syn_pcap = syns.stop()
        mss = [option_value(f, "MSS") for f in rdpcap(str(syn_pcap))]
        seen = [m for m in mss if m is not None]
        what = "SYN" if role == "receiver" else "SYN-ACK"
        yield ctx.check(f"clamped-syn-mss[{role}]", "RFC4459 3.2", bool(seen) and max(seen) <= limit,
                        f"past the clamping router the {what} carried MSS {max(seen, default=None)} "
                        f"(limit {limit})", pcaps=[syn_pcap], numbers={"mss": max(seen, default=None)})
        t = run.transfer
        ok = t.completed and run.largest <= limit
        yield ctx.check(f"clamp-repairs-black-hole[{role}]", "SHLD-6", ok,
                        f"with ICMP dropped and MSS clamped, {t.delivered} of {t.wanted} bytes arrived in "
                        f"{t.seconds} s in segments of at most {run.largest} bytes", pcaps=[run.pcap],
                        numbers={"seconds": t.seconds, "largest": run.largest})
