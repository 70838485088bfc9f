"""`pmtu_path`: path MTU discovery, the ICMP black hole and MSS clamping on a linear path.

The `mtu_mismatch` scenario needs a server with two interfaces; this one runs the same
questions on c - r1 - (narrow hop) - r2 - s, where the server has one interface and answers
every flow towards its one neighbour, so an engine endpoint without a routing table can be
the target. Each end announces an MSS from its 1500-byte first hop and its data meets the
narrow hop in the middle, so PMTUD has to lower it:

- target as sender: c pulls from the target's chargen service; r2's ICMP errors (frag-needed,
  packet-too-big) must lower the target's segment size; captured on c's link, every data
  segment fits the narrow hop;
- target as receiver: c sends to the target's discard service; c's kernel does the PMTUD, and
  what is judged is that the target's announced MSS and its ACKs let the transfer complete.

Phases, with the kernel route caches flushed between them:
1. PMTUD over IPv4 (RFC 1191) and IPv6 (RFC 8201), both roles;
2. black hole: both routers drop the ICMP errors they would send; the target's download stalls;
3. MSS clamping: the routers also clamp forwarded SYNs' MSS to the route MTU; the SYN-ACK
   reaching c carries MSS <= narrow - 40 and the download completes despite the black hole.

The routers' rules are the ones the template renders for `r_drop_icmp` and `r_clamp_mss`,
loaded at run time so one lab serves every phase. TSO and GSO are off on c and the routers
(and GRO on c), so captures hold real segments; the target's own super-frames, if any, are
cut by the kernel's GSO path on its veth before they reach a router.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from scapy.utils import rdpcap

from lab.render import load_topology

from .framework import Check, RunContext, scenario
from .mtu_mismatch import (CACHE_RFC, IP_HEADER, NARROW_MTU, PMTU_COVERS, PMTUD_RFC, ROUTERS, TCP_HEADER, MtuParams,
                           Transfer, cached_mtu, connect, ip, pull_bulk, send_bulk)
from .peer import option_value
from .transfer import read_frames

#: Options a full-sized segment may carry beside its data (timestamps, SACK blocks): the
#: effective send MSS after PMTUD is at least the path's MSS less this.
OPTION_ROOM = 40


@scenario("pmtu_path", purpose="Path MTU discovery over IPv4 and IPv6 lowers the target's segment size on a "
          "linear path with a narrow middle hop; a router that drops ICMP makes a black hole that stalls; MSS "
          "clamping on the routers repairs it; as receiver the target's MSS and ACKs carry a transfer through.",
          topology="pmtu_path", params=MtuParams, topology_params={"mtu": NARROW_MTU},
          covers=PMTU_COVERS,
          server="s", client="c", claims=("TOE-5",))
def run(ctx: RunContext) -> Iterator[Check]:
    _disable_offloads(ctx)
    for version in (4, 6):
        ctx.progress(f"PMTUD over IPv{version}")
        yield from _pmtud(ctx, version)
    ctx.progress("ICMP black hole")
    _load_router_rules(ctx, drop_icmp=True, clamp_mss=False)
    yield from _black_hole(ctx)
    ctx.progress("MSS clamping")
    _load_router_rules(ctx, drop_icmp=True, clamp_mss=True)
    yield from _clamped(ctx)


def _disable_offloads(ctx: RunContext) -> None:
    """Real segments on every kernel-sent frame of the path, and none merged on receipt at c."""
    ctx.lab.set_features(ctx.client, ctx.iface(ctx.client), tso=False, gso=False, gro=False)
    for router in ROUTERS:
        for iface in ctx.lab.spec.interfaces_of(router):
            ctx.lab.set_features(router, iface, tso=False, gso=False)


def _load_router_rules(ctx: RunContext, *, drop_icmp: bool, clamp_mss: bool) -> None:
    """Load the template's router ruleset for these switches on both routers, replacing what was there."""
    spec = load_topology("pmtu_path", {"r_drop_icmp": str(drop_icmp).lower(), "r_clamp_mss": str(clamp_mss).lower()})
    for router in ROUTERS:
        node = ctx.lab.node(router)
        node.run(["nft", "delete", "table", "inet", "toelab"])
        node.run(["nft", "-f", "-"], input=spec.nodes[router].nft or "", check=True)


def _flush_route_caches(ctx: RunContext) -> None:
    """Forget the path MTUs the kernels learned, so each transfer starts from the first-hop MTU."""
    for node in (ctx.client, ctx.server):
        for version in (4, 6):
            ip(ctx, node, version, "route", "flush", "cache")


def _limit(version: int) -> int:
    """The largest TCP payload that fits the narrow hop."""
    return NARROW_MTU - IP_HEADER[version] - TCP_HEADER


@dataclass(frozen=True)
class PathRun:
    """One transfer, with the data segments its sender put on the capture's link."""

    transfer: Transfer
    pcap: Path
    largest: int
    data_frames: int


def _transfer(ctx: RunContext, version: int, role: str, tag: str, timeout_s: float) -> PathRun:
    """The target sends (c pulls its chargen, captured at c) or receives (c sends to its discard, captured at s)."""
    nbytes = ctx.params.transfer_kib * 1024
    netns, server = ctx.lab.node(ctx.client).netns, ctx.address(ctx.server, version)
    sender, node = (server, ctx.client) if role == "sender" else (ctx.address(ctx.client, version), ctx.server)
    capture = ctx.capture(node, ctx.iface(node), f"tcp and src host {sender}", name=f"{tag}-{role}-v{version}.pcap")
    try:
        if role == "sender":
            transfer = pull_bulk(netns, version, server, ctx.port("chargen"), nbytes, timeout_s)
        else:
            transfer = send_bulk(netns, version, server, ctx.port("discard"), nbytes, timeout_s)
    finally:
        pcap = capture.stop()
    sizes = [f.payload_len for f in read_frames(pcap) if f.payload_len]
    return PathRun(transfer, pcap, max(sizes, default=0), len(sizes))


def _ipv6_refused(ctx: RunContext) -> str | None:
    """Why the target takes no IPv6 connection to its discard service, or None if it does."""
    address = ctx.address(ctx.server, 6)
    try:
        sock = connect(ctx.lab.node(ctx.client).netns, 6, address, ctx.port("discard"), 2.0)
    except OSError as exc:
        return f"target {ctx.target.name} took no IPv6 connection to [{address}]:{ctx.port('discard')} ({exc})"
    sock.close()
    return None


def _pmtud(ctx: RunContext, version: int) -> Iterator[Check]:
    roles = ("sender", "receiver")
    if version == 6 and (reason := _ipv6_refused(ctx)):
        for role in roles:
            yield ctx.skip(f"pmtud-segment-size[v6-{role}]", PMTUD_RFC[6], reason)
        yield ctx.skip("effective-send-mss[v6-sender]", "MUST-16", reason)
        yield ctx.skip("pmtu-cached[v6-sender]", CACHE_RFC[6], reason)
        return
    for role in roles:
        _flush_route_caches(ctx)
        run = _transfer(ctx, version, role, "pmtud", ctx.params.transfer_timeout_s)
        yield from (_sender_checks if role == "sender" else _receiver_checks)(ctx, version, run)


def _sender_checks(ctx: RunContext, version: int, run: PathRun) -> Iterator[Check]:
    t, tag, limit = run.transfer, f"[v{version}-sender]", _limit(version)
    numbers = {"largest": run.largest, "limit": limit, "seconds": t.seconds, "data_frames": run.data_frames}
    yield ctx.check(f"pmtud-segment-size{tag}", PMTUD_RFC[version],
                    t.completed and run.data_frames > 0 and run.largest <= limit,
                    f"with the target sending to c over IPv{version} through a {NARROW_MTU}-byte hop, {t.delivered} "
                    f"of {t.wanted} bytes arrived in {t.seconds} s and the largest of {run.data_frames} segments "
                    f"captured at c carried {run.largest} bytes (limit {limit})", pcaps=[run.pcap], numbers=numbers)
    yield ctx.check(f"effective-send-mss{tag}", "MUST-16", limit - OPTION_ROOM <= run.largest <= limit,
                    f"after PMTUD the target's largest segment carried {run.largest} bytes, within the "
                    f"{limit - OPTION_ROOM}..{limit} that a send MSS taken from the path MTU allows",
                    pcaps=[run.pcap], numbers=numbers)
    if ctx.target.name != "kernel":
        yield ctx.skip(f"pmtu-cached{tag}", CACHE_RFC[version],
                       "the route cache is the server kernel's; the target keeps its path MTU per connection")
        return
    client = ctx.address(ctx.client, version)
    cached = cached_mtu(ctx, ctx.server, version, client)
    yield ctx.check(f"pmtu-cached{tag}", CACHE_RFC[version], cached == NARROW_MTU,
                    f"after the transfer, `ip -{version} route get {client}` on s showed mtu {cached} "
                    f"(expected {NARROW_MTU})", numbers={"cached_mtu": cached})


def _receiver_checks(ctx: RunContext, version: int, run: PathRun) -> Iterator[Check]:
    t, limit = run.transfer, _limit(version)
    yield ctx.check(f"pmtud-segment-size[v{version}-receiver]", PMTUD_RFC[version],
                    t.completed and run.data_frames > 0 and run.largest <= limit,
                    f"with c sending to the target's discard over IPv{version} through a {NARROW_MTU}-byte hop, the "
                    f"target acknowledged {t.delivered} of {t.wanted} bytes and closed in {t.seconds} s, c's send MSS "
                    f"became {t.snd_mss} and the largest of {run.data_frames} segments captured at s carried "
                    f"{run.largest} bytes (limit {limit})", pcaps=[run.pcap],
                    numbers={"largest": run.largest, "limit": limit, "seconds": t.seconds, "snd_mss": t.snd_mss,
                             "pmtu": t.pmtu})


def _black_hole(ctx: RunContext) -> Iterator[Check]:
    p = ctx.params
    _flush_route_caches(ctx)
    run = _transfer(ctx, 4, "sender", "blackhole", p.black_hole_s)
    t = run.transfer
    yield ctx.check("black-hole-stalls[sender]", "RFC2923 2.1", not t.completed and t.share < p.stalled_below,
                    f"with the routers dropping ICMP errors, {t.delivered} of {t.wanted} bytes ({t.share:.1%}) of "
                    f"the target's download arrived in {t.seconds} s", pcaps=[run.pcap],
                    numbers={"delivered": t.delivered, "wanted": t.wanted, "largest": run.largest})


def _clamped(ctx: RunContext) -> Iterator[Check]:
    limit = _limit(4)
    _flush_route_caches(ctx)
    syns = ctx.capture(ctx.client, ctx.iface(ctx.client), "tcp[tcpflags] & tcp-syn != 0 and tcp[tcpflags] & tcp-ack != 0",
                       name="clamp-sender-synack.pcap")
    try:
        run = _transfer(ctx, 4, "sender", "clamp", ctx.params.transfer_timeout_s)
    finally:
        syn_pcap = syns.stop()
    seen = [m for f in rdpcap(str(syn_pcap)) if (m := option_value(f, "MSS")) is not None]
    yield ctx.check("clamped-syn-mss[sender]", "RFC4459 3.2", bool(seen) and max(seen) <= limit,
                    f"past the clamping routers the target's SYN-ACK carried MSS {max(seen, default=None)} "
                    f"(limit {limit})", pcaps=[syn_pcap], numbers={"mss": max(seen, default=None)})
    t = run.transfer
    yield ctx.check("clamp-repairs-black-hole[sender]", "SHLD-6", t.completed and run.largest <= limit,
                    f"with ICMP dropped and MSS clamped, {t.delivered} of {t.wanted} bytes of the target's download "
                    f"arrived in {t.seconds} s in segments of at most {run.largest} bytes", pcaps=[run.pcap],
                    numbers={"seconds": t.seconds, "largest": run.largest})
