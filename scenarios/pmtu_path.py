"""`pmtu_path`: path MTU discovery, the ICMP black hole and MSS clamping on a linear path.

The `mtu_mismatch` scenario needs a server with two interfaces; this one runs the same
phases (`scenarios.pmtud`) on c - r1 - (narrow hop) - r2 - s, where the server has one
interface and answers every flow towards its one neighbour, so an engine endpoint without a
routing table can be the target. Each end announces an MSS from its 1500-byte first hop and
its data meets the narrow hop in the middle, so PMTUD has to lower it.

The routers' rules are the ones the template renders for `r_drop_icmp` and `r_clamp_mss`,
loaded at run time so one lab serves every phase. TSO and GSO are off on c and the routers
(and GRO on c), so captures hold real segments; the target's own super-frames, if any, are
cut by the kernel's GSO path on its veth before they reach a router.
"""
from __future__ import annotations

from collections.abc import Iterator

from .framework import Check, RunContext, scenario
from .pmtud import NARROW_MTU, PMTU_COVERS, ROUTERS, MtuParams, PathPlan, run_phases

PLAN = PathPlan(topology="pmtu_path", drop_param="r_drop_icmp", clamp_param="r_clamp_mss",
                sender_capture=("c", "eth0"), receiver_capture=("s", "eth0"))


@scenario("pmtu_path", purpose="Path MTU discovery over IPv4 and IPv6 lowers the target's segment size on a "
          "linear path with a narrow middle hop; a router that drops ICMP makes a black hole that stalls; MSS "
          "clamping on the routers repairs it; as receiver the target's MSS and ACKs carry a transfer through.",
          topology="pmtu_path", params=MtuParams, topology_params={"mtu": NARROW_MTU},
          covers=PMTU_COVERS,
          server="s", client="c", claims=("TOE-5",))
def run(ctx: RunContext) -> Iterator[Check]:
    _disable_offloads(ctx)
    yield from run_phases(ctx, PLAN)


def _disable_offloads(ctx: RunContext) -> None:
    """Real segments on every kernel-sent frame of the path, and none merged on receipt at c."""
    ctx.lab.set_features(ctx.client, ctx.iface(ctx.client), tso=False, gso=False, gro=False)
    for router in ROUTERS:
        for iface in ctx.lab.spec.interfaces_of(router):
            ctx.lab.set_features(router, iface, tso=False, gso=False)
