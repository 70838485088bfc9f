"""`lro_router`: receive coalescing in a forwarding node whose egress MTU is smaller than what it coalesces.

The path is h1 - mb - h2 with a 1500-byte link in and a smaller one (`egress_mtu`) out. The
client h1 sends without TSO, so MSS-sized segments reach the forwarding node and any
coalescing happens there, and the node's egress port does no segmentation offload, so a
capture on h2's side shows the frames as they cross the wire. The client echoes
`transfer_kib` through three forwarding nodes:

- the engine middlebox with LRO: it merges segments into frames larger than the egress MTU
  and forgets the segment size, so it must drop them and send ICMP "fragmentation needed"
  (RFC 1191 4); however the sender lowers its segment size, LRO merges again, and the
  transfer stalls: within `stall_limit_s` far fewer bytes arrive than were sent;
- the engine middlebox with GRO: it keeps the segment size and re-segments on egress, so
  every segment reaching h2 fits h2's MSS and the echo completes byte-exact;
- a kernel router with GRO on its interfaces (a second lab, `mb_kind=router`), which keeps
  the segment size (gso_size) in the same way.

Time-sequence plots are drawn from the client's side, where the LRO stall shows as the
sender's retransmissions going unanswered.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import Field

from lab.lab import Lab
from lab.render import load_topology

from .framework import Check, RunContext, ScenarioParams, scenario
from .plots import time_sequence
from .targets import make
from .transfer import EchoResult, echo_transfer, read_frames, wait_for_capture

IP_TCP_HEADERS = 40  # IPv4 and TCP headers without options: the MSS is the MTU less these
COLLAPSE_FRACTION = 0.25
COLLAPSE_SPEEDUP = 20
MIDDLEBOX = "middlebox"


class LroRouterParams(ScenarioParams):
    egress_mtu: int = Field(1400, ge=576, le=1480, description="MTU of the link from the forwarding node to h2")
    transfer_kib: int = Field(4096, ge=256, le=65536, description="KiB echoed through each forwarding node")
    stall_limit_s: float = Field(4.0, gt=0, le=60, description="time the LRO transfer is given")
    limit_s: float = Field(30.0, gt=0, le=300, description="time limit of the GRO and kernel transfers")


@dataclasses.dataclass(frozen=True)
class Forwarded:
    """One transfer through one forwarding node, as the client and h2's side saw it."""

    echo: EchoResult
    largest_segment: int
    oversize_segments: int
    data_segments: int
    counters: dict[str, int]
    pcaps: list[Path]
    plot: Path


@scenario("lro_router", purpose="Receive coalescing in a router with a smaller egress MTU: LRO's oversize frames "
          "are dropped and the flow stalls; GRO (engine and kernel) keeps segment sizes and the transfer healthy.",
          topology="middlebox_chain", params=LroRouterParams,
          topology_params=lambda p: {"mb_kind": "middlebox", "mode": "router", "egress_mtu": p.egress_mtu},
          covers=("RFC1191 4", "RFC9293 3.7.1", "RFC9293 3.10.7.4"), claims=("TOE-10",))
def run(ctx: RunContext) -> Iterator[Check]:
    p = ctx.params
    mss = p.egress_mtu - IP_TCP_HEADERS
    mb = ctx.lab.engine("mb")  # type: ignore[attr-defined]
    _prepare(ctx.lab)
    results: dict[str, Forwarded] = {}
    for coalesce, limit in (("lro", p.stall_limit_s), ("gro", p.limit_s)):
        ctx.progress(f"engine middlebox with {coalesce}")
        mb.set(direction="a_to_b", coalesce=coalesce)
        before = mb.stats()["directions"]["a_to_b"]
        forwarded = _transfer(ctx, f"engine-{coalesce}", limit)
        after = mb.stats()["directions"]["a_to_b"]
        counters = {k: after[k] - before[k] for k in ("lro_merged", "gro_merged", "mtu_drops", "icmp_frag_needed_sent",
                                                      "fwd_frames")}
        results[f"engine-{coalesce}"] = dataclasses.replace(forwarded, counters=counters)
    mb.set(direction="a_to_b", coalesce="off")
    ctx.progress("kernel router with GRO")
    results["kernel-gro"] = _kernel_router(ctx)

    # The LRO and GRO verdicts are the forwarding node's: credited to it, not to the endpoint target.
    lro, gro = results["engine-lro"], results["engine-gro"]
    lro_counters = lro.counters
    yield ctx.check("lro-oversize-dropped", "RFC1191 4", lro_oversize_dropped(lro_counters),
                    f"with LRO the middlebox merged {lro_counters['lro_merged']} segments, dropped "
                    f"{lro_counters['mtu_drops']} frames over the {p.egress_mtu}-byte egress MTU and sent "
                    f"{lro_counters['icmp_frag_needed_sent']} ICMP fragmentation-needed messages",
                    pcaps=lro.pcaps, plots=[lro.plot], counters=lro_counters, subject=MIDDLEBOX)
    yield ctx.check("lro-flow-collapses", "RFC9293 3.7.1", lro_collapsed(lro.echo, gro.echo),
                    f"through LRO {lro.echo.bytes} of {lro.echo.size} bytes came back within "
                    f"{p.stall_limit_s:g} s ({lro.echo.mbit_per_s:.2f} Mbit/s) against {gro.echo.bytes} "
                    f"{'byte-exact' if gro.echo.exact else 'NOT byte-exact'} at {gro.echo.mbit_per_s:.1f} Mbit/s "
                    "through the same path with GRO: merged frames lose the segment size and the flow stalls",
                    pcaps=lro.pcaps, plots=[lro.plot], numbers=_numbers(lro, mss), subject=MIDDLEBOX)
    for name, subject in (("engine-gro", MIDDLEBOX), ("kernel-gro", "kernel")):
        result = results[name]
        yield ctx.check(f"segments-fit-egress[{name}]", "RFC9293 3.7.1",
                        result.oversize_segments == 0 and result.data_segments > 0,
                        f"the capture on h2's side held {result.data_segments} data segments, the largest "
                        f"carrying {result.largest_segment} bytes; {result.oversize_segments} exceeded the "
                        f"{mss}-byte MSS of the {p.egress_mtu}-byte egress link"
                        + (f" (the middlebox merged {result.counters['gro_merged']} segments with GRO)"
                           if "gro_merged" in result.counters else ""),
                        pcaps=result.pcaps, plots=[result.plot], counters=result.counters,
                        numbers=_numbers(result, mss), subject=subject)
        yield ctx.check(f"transfer-byte-exact[{name}]", "RFC9293 3.10.7.4", result.echo.exact,
                        f"{result.echo.bytes} of {result.echo.size} bytes came back "
                        f"{'identical (SHA-256)' if result.echo.exact else 'short or different'} in "
                        f"{result.echo.seconds:.2f} s ({result.echo.mbit_per_s:.1f} Mbit/s)",
                        pcaps=result.pcaps, plots=[result.plot], numbers=_numbers(result, mss), integrity=True)


def lro_oversize_dropped(counters: dict[str, int]) -> bool:
    """LRO merged, frames over the egress MTU were dropped, and each drop was answered with ICMP (RFC 1191 4)."""
    return (counters["lro_merged"] > 0 and counters["mtu_drops"] > 0
            and counters["icmp_frag_needed_sent"] == counters["mtu_drops"])


def lro_collapsed(lro: EchoResult, gro: EchoResult) -> bool:
    """The LRO transfer stalled while the same path with GRO carried the same echo byte-exact."""
    stalled = lro.bytes < COLLAPSE_FRACTION * lro.size or gro.mbit_per_s > COLLAPSE_SPEEDUP * lro.mbit_per_s
    return gro.exact and stalled and not lro.exact


def _prepare(lab: Lab) -> None:
    """MSS-sized frames in (no TSO at the client), wire-sized frames out (no GSO on the node's egress)."""
    lab.set_features("h1", "eth0", tso=False, gso=False)
    lab.set_features("mb", "eth1", tso=False, gso=False)


def _numbers(result: Forwarded, mss: int) -> dict[str, Any]:
    return {"bytes": result.echo.bytes, "size": result.echo.size, "seconds": round(result.echo.seconds, 3),
            "mbit_per_s": round(result.echo.mbit_per_s, 2), "largest_segment": result.largest_segment,
            "egress_mss": mss, "data_segments": result.data_segments}


def _transfer(ctx: RunContext, name: str, limit_s: float) -> Forwarded:
    """Echo through the forwarding node, capturing at the client and where the data arrives (h2)."""
    port = ctx.port("echo")
    client_capture = ctx.capture(ctx.client, ctx.iface(ctx.client), f"tcp port {port}", name=f"{name}-client.pcap")
    server_capture = ctx.capture(ctx.server, ctx.iface(ctx.server), f"tcp dst port {port}", name=f"{name}-h2.pcap")
    try:
        echo = echo_transfer(ctx, ctx.params.transfer_kib * 1024, limit_s)
        # Every echoed byte crossed h2's link first: stop once the capture there holds them.
        wait_for_capture(server_capture.path, lambda frames: sum(f.payload_len for f in frames) >= echo.bytes, 3.0)
    finally:
        client_pcap, server_pcap = client_capture.stop(), server_capture.stop()
    mss = ctx.params.egress_mtu - IP_TCP_HEADERS
    sizes = Counter(f.payload_len for f in read_frames(server_pcap) if f.payload_len > 0)
    plot = ctx.artifact(f"{name}.png")
    flow = _client_flow(client_pcap, port)
    if flow is not None:
        time_sequence(client_pcap, plot, flow=flow, title=f"{ctx.target.name}: echo data through {name} (client side)")
    return Forwarded(echo, max(sizes, default=0), sum(n for size, n in sizes.items() if size > mss),
                     sum(sizes.values()), {}, [client_pcap, server_pcap], plot)


def _client_flow(pcap: Path, port: int) -> tuple[str, int, str, int] | None:
    """The client-to-service direction of the echo connection."""
    flows = Counter(f.flow for f in read_frames(pcap) if f.dport == port)
    return flows.most_common(1)[0][0] if flows else None


def _kernel_router(ctx: RunContext) -> Forwarded:
    """The same transfer in a lab whose forwarding node is the kernel with GRO on, serving the same target."""
    spec = load_topology("middlebox_chain", {"mb_kind": "router", "coalesce": "gro",
                                             "egress_mtu": str(ctx.params.egress_mtu)})
    target = make(ctx.target.name)
    with Lab.up(spec) as lab:
        _prepare(lab)
        try:
            services = target.start(lab, ctx.server)
            sub = dataclasses.replace(ctx, lab=lab, target=target, services=services)
            return _transfer(sub, "kernel-gro", ctx.params.limit_s)
        finally:
            target.stop()
