"""`mtu_mismatch`: path MTU discovery, the ICMP black hole, and MSS clamping on an asymmetric path.

On the `mtu_mismatch` topology (A - R1 - B and A - R2 - B) the target serves on B. An
endpoint announces an MSS from its own route back to the peer, so a narrow hop next to the
receiver never needs PMTUD on a symmetric path. The scenario therefore routes asymmetrically,
as real paths often are: A reaches B through R1, whose hop to B is 1400 bytes, and B answers
through R2, whose hop to A is narrowed to 1400 bytes by the topology parameters. Each end
announces an MSS from a wide (1500/2000) first hop, and each direction's data meets a
1400-byte hop in the middle of its path. The phases and checks are those of `scenarios.pmtud`.

The routers' nftables rules are the ones the template renders for R1's `r1_drop_icmp` and
`r1_clamp_mss`, loaded at run time on both routers so one lab serves every phase. The
senders' TSO and GSO are off, so the captures hold real segments, not super-frames.
"""
from __future__ import annotations

from collections.abc import Iterator

from .framework import Check, RunContext, scenario
from .pmtud import NARROW_MTU, PMTU_COVERS, MtuParams, PathPlan, ip, run_phases

#: B's way back to A through R2, and R2's routes for the prefixes it does not touch.
B_RETURN = {4: ("10.0.1.0/24", "10.0.4.2"), 6: ("fd00:1::/64", "fd00:4::2")}
R2_ROUTES = {4: [("10.0.1.0/24", "10.0.2.1"), ("10.0.3.0/24", "10.0.4.1")],
             6: [("fd00:1::/64", "fd00:2::1"), ("fd00:3::/64", "fd00:4::1")]}
#: A's side of R1 and R2 and B's side of R1: the addresses on the asymmetric path.
PLAN = PathPlan(topology="mtu_mismatch", drop_param="r1_drop_icmp", clamp_param="r1_clamp_mss",
                sender_capture=("a", "r2"), receiver_capture=("b", "r1"), rules_from="r1",
                client_address={4: "10.0.1.1", 6: "fd00:1::1"}, server_address={4: "10.0.3.1", 6: "fd00:3::1"})


@scenario("mtu_mismatch", purpose="Path MTU discovery over IPv4 and IPv6 lowers the sender's segment size; a "
          "router that drops ICMP makes a black hole that stalls; MSS clamping on the router repairs it. "
          "Asymmetric path; target as receiver and as sender.",
          topology="mtu_mismatch", params=MtuParams, topology_params={"mtu_a_r2": NARROW_MTU},
          covers=PMTU_COVERS,
          server="b", client="a", claims=("TOE-5",))
def run(ctx: RunContext) -> Iterator[Check]:
    _route_asymmetrically(ctx)
    for node, iface in (("a", "r1"), ("b", "r2")):
        ctx.lab.set_features(node, iface, tso=False, gso=False)
    yield from run_phases(ctx, PLAN)


def _route_asymmetrically(ctx: RunContext) -> None:
    """B answers A through R2; R2 learns the prefixes of A's R1 side and B's R1 side."""
    for version in (4, 6):
        prefix, via = B_RETURN[version]
        ip(ctx, "b", version, "route", "replace", prefix, "via", via)
        for prefix, via in R2_ROUTES[version]:
            ip(ctx, "r2", version, "route", "replace", prefix, "via", via)
