"""`host_bypass`: what the host's netfilter and qdiscs do to offloaded, declined and host-stack flows.

The server node gets host-stack services on ports the engine does not serve
(`scenarios.host_side.HOST_PORTS`); every measurement is a pair in the same run: a flow to a
service port (offloaded on `toe`, the host stack's on `kernel`) against a flow to a host
port (the host stack's on both). The host-port flow is each check's precondition: the rule,
shaper or limit demonstrably acted on it. On `toe` a third flow goes to the service port
while the engine's table holds nothing (capacity 0, policy fallback), so the engine declines
it and the host stack carries it: it must be filtered and shaped again.

- TOE-6 netfilter: an nftables input chain on the host drops one port of each kind, logs new
  connections (NFLOG, read in the node) and counts established packets on another; the
  counters, the log and the handshakes tell who saw what.
- TOE-7 QoS: an HTB shaper on the host interface's egress limits downloads; an nftables
  `limit rate over` policer on input limits uploads.
- TOE-17 a declined flow echoed byte-exact.
The socket tools, socket limits and the audit are `host_view`'s.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from pydantic import Field

from .framework import Check, RunContext, ScenarioParams, scenario
from .host_side import HOST_PORTS, Flow, connects, download, host_interface, host_services, upload
from .nflog import NflogListener
from .targets import SERVICE_PORTS as SERVICE
from .transfer import echo_transfer

NFT_TABLE = "toelab_claims"
NFLOG_GROUP = 7
SERVICE_LOG, HOST_LOG = "toelab-service ", "toelab-host "
LOG_WAIT_S = 1.0  # how long a log message the host-stack flow must have made is awaited
DROP_TIMEOUT_S = 1.0
#: A shaped or policed flow may beat the configured rate by this much (bucket bursts, timing).
RATE_TOLERANCE = 1.25
#: A flow counts as having run into the limit when it reached this fraction of it.
MIN_LIMITED_FRACTION = 0.3
#: A flow the limit does not apply to must go at least this many times faster than the limit.
BYPASS_FACTOR = 2.0
POLICE_BURST = 64_000


class HostBypassParams(ScenarioParams):
    shape_mbit: float = Field(40, gt=1, le=1000, description="HTB rate on the host interface's egress, Mbit/s")
    police_kbyte_s: int = Field(2000, ge=100, le=100_000, description="nftables policer rate on input, kbytes/s")
    transfer_kib: int = Field(2048, ge=256, le=65536, description="KiB per shaped or policed flow")
    limit_s: float = Field(10, gt=0, le=120, description="time limit of each flow")


@dataclass(frozen=True)
class Rules:
    """nftables counters by rule comment."""

    packets: dict[str, int]

    def __getitem__(self, name: str) -> int:
        return self.packets.get(name, 0)


def ruleset(table: str, rules: list[tuple[str, str]]) -> str:
    """An inet input chain with one commented rule per (comment, rule text)."""
    body = "".join(f'    {rule} comment "{comment}"\n' for comment, rule in rules)
    return (f"table inet {table} {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n"
            f"{body}  }}\n}}\n")


def rule_counters(listing: str) -> Rules:
    """Packets counted per rule comment, from `nft -j list table ...` output."""
    packets: dict[str, int] = {}
    for item in json.loads(listing).get("nftables", []):
        rule = item.get("rule")
        if not rule or "comment" not in rule:
            continue
        for expr in rule.get("expr", []):
            if isinstance(expr, dict) and "counter" in expr:
                packets[rule["comment"]] = int(expr["counter"]["packets"])
    return Rules(packets)


def limited(flow: Flow, limit_mbit: float) -> bool:
    """The flow ran into the limit: it moved, at most RATE_TOLERANCE over it and at least a fair part of it."""
    return (flow.bytes > 0 and flow.mbit_per_s <= limit_mbit * RATE_TOLERANCE
            and flow.mbit_per_s >= limit_mbit * MIN_LIMITED_FRACTION)


def bypassed(flow: Flow, limit_mbit: float) -> bool:
    return flow.complete and flow.mbit_per_s >= limit_mbit * BYPASS_FACTOR


@scenario("host_bypass", purpose="Host netfilter rules (drop, count, log), an HTB shaper and a policer act on "
          "host-stack flows; on the engine, offloaded flows pass them by and declined flows meet them again.",
          topology="host_pair", params=HostBypassParams, covers=("RFC2979", "RFC2475", "RFC9293 3.10.7.4"))
def run(ctx: RunContext) -> Iterator[Check]:
    server = ctx.lab.node(ctx.server)
    with host_services(ctx.lab, ctx.server):
        hif = host_interface(ctx.lab, ctx.server, ctx.address(ctx.server))
        ctx.progress(f"host stack on {ctx.server}:{hif}")
        yield from _netfilter(ctx)
        yield from _shaper(ctx, hif)
        yield from _policer(ctx)
        yield from _declined_echo(ctx)
    server.run(["nft", "delete", "table", "inet", NFT_TABLE])


def _await(condition: Callable[[], bool], limit_s: float) -> bool:
    """Poll `condition` until it holds or `limit_s` passes (log messages arrive a little after their packets)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _toe(ctx: RunContext) -> bool:
    return ctx.target.name == "toe"


class _Declined:
    """On `toe`, the engine's table holds nothing for the block's duration, so it declines every new flow."""

    def __init__(self, ctx: RunContext) -> None:
        self.engine = ctx.target.engine  # type: ignore[attr-defined]

    def __enter__(self) -> _Declined:
        self.before = self.engine.stats()["counters"].get("conn_fallback", 0)
        config = self.engine.config()
        self.capacity, self.policy = config["capacity"], config["policy"]
        self.engine.set(capacity=0, policy="fallback")
        return self

    def __exit__(self, *exc: object) -> None:
        self.engine.set(capacity=self.capacity, policy=self.policy)

    def fallbacks(self) -> int:
        return int(self.engine.stats()["counters"].get("conn_fallback", 0) - self.before)


def _nft(ctx: RunContext, rules: list[tuple[str, str]]) -> None:
    node = ctx.lab.node(ctx.server)
    node.run(["nft", "delete", "table", "inet", NFT_TABLE])
    done = node.run(["nft", "-f", "-"], input=ruleset(NFT_TABLE, rules))
    if done.returncode != 0:
        raise RuntimeError(f"nftables refused the claim rules on {ctx.server}: {done.stderr.strip()}")


def _counters(ctx: RunContext) -> Rules:
    return rule_counters(ctx.lab.node(ctx.server).run(["nft", "-j", "list", "table", "inet", NFT_TABLE],
                                                      check=True).stdout)


# --- TOE-6 ---------------------------------------------------------------------------------
def _netfilter(ctx: RunContext) -> Iterator[Check]:
    """Drop, count and log rules; the NFLOG listener binds before the rules load (nft's log takes the group then)."""
    log = NflogListener(ctx.lab.node(ctx.server), NFLOG_GROUP)
    try:
        yield from _netfilter_checks(ctx, log)
    finally:
        log.close()


def _netfilter_checks(ctx: RunContext, log: NflogListener) -> Iterator[Check]:
    p, client, addr = ctx.params, ctx.lab.node(ctx.client), ctx.address(ctx.server)
    rules = [("service-log", f'tcp dport {SERVICE["chargen"]} ct state new log prefix "{SERVICE_LOG}" '
                             f"group {NFLOG_GROUP}"),
             ("host-log", f'tcp dport {HOST_PORTS["chargen"]} ct state new log prefix "{HOST_LOG}" '
                          f"group {NFLOG_GROUP}"),
             ("service-drop", f"tcp dport {SERVICE['discard']} counter drop"),
             ("host-drop", f"tcp dport {HOST_PORTS['discard']} counter drop"),
             ("service-count", f"tcp dport {SERVICE['chargen']} ct state established counter"),
             ("host-count", f"tcp dport {HOST_PORTS['chargen']} ct state established counter")]
    size = 256 * 1024
    _nft(ctx, rules)
    host_refused = not connects(client, addr, HOST_PORTS["discard"], DROP_TIMEOUT_S)
    host_flow = download(client, addr, HOST_PORTS["chargen"], size, p.limit_s)
    service_refused = not connects(client, addr, SERVICE["discard"], DROP_TIMEOUT_S)
    service_flow = download(client, addr, SERVICE["chargen"], size, p.limit_s)
    c = _counters(ctx)
    _await(lambda: log.count(HOST_LOG) >= 1, LOG_WAIT_S)
    host_logged, service_logged = log.count(HOST_LOG), log.count(SERVICE_LOG)
    numbers = {"host_logged": host_logged, "service_logged": service_logged,
               "host_drop_pkts": c["host-drop"], "host_count_pkts": c["host-count"],
               "service_drop_pkts": c["service-drop"], "service_count_pkts": c["service-count"],
               "host_refused": host_refused, "service_refused": service_refused,
               "service_bytes": service_flow.bytes}
    precondition = (host_refused and c["host-drop"] > 0 and c["host-count"] > 0 and host_logged >= 1
                    and host_flow.complete)
    yield ctx.check("netfilter-host-flow", "RFC2979", precondition,
                    f"the host rules dropped the handshake to host port {HOST_PORTS['discard']} "
                    f"({c['host-drop']} packets), logged {host_logged} new connection(s) to host port "
                    f"{HOST_PORTS['chargen']} (NFLOG) and counted {c['host-count']} established packets of its "
                    f"{host_flow.bytes}-byte download",
                    numbers=numbers, claims=("TOE-6",))
    if _toe(ctx):
        ok = (precondition and not service_refused and c["service-drop"] == 0 and c["service-count"] == 0
              and service_logged == 0 and service_flow.complete)
        seen = (f"the offloaded flows passed the same rules by: port {SERVICE['discard']} "
                f"{'refused' if service_refused else 'connected'} ({c['service-drop']} packets dropped), a "
                f"{service_flow.bytes}-byte download from port {SERVICE['chargen']} logged {service_logged} "
                f"time(s) and counted {c['service-count']} packets")
    else:
        ok = (precondition and service_refused and c["service-drop"] > 0 and c["service-count"] > 0
              and service_logged >= 1 and service_flow.complete)
        seen = (f"the service ports met the rules like the host ports: port {SERVICE['discard']} "
                f"{'refused' if service_refused else 'connected'} ({c['service-drop']} packets dropped), the "
                f"download from port {SERVICE['chargen']} logged {service_logged} time(s) with {c['service-count']} "
                "established packets counted")
    yield ctx.check("netfilter-service-flow", "RFC2979", ok, seen + ("" if precondition else
                    "; precondition failed: the rules did not act on the host-stack flow"),
                    numbers=numbers, claims=("TOE-6",))
    if not _toe(ctx):
        yield ctx.skip("netfilter-declined-flow", "RFC2979", "the kernel declines no flow: every flow is the host "
                       "stack's already", claims=("TOE-6", "TOE-17"))
        return
    before, logged_before = _counters(ctx), log.count(SERVICE_LOG)
    with _Declined(ctx) as declined:
        refused = not connects(client, addr, SERVICE["discard"], DROP_TIMEOUT_S)
        flow = download(client, addr, SERVICE["chargen"], size, p.limit_s)
        fallbacks = declined.fallbacks()
    after = _counters(ctx)
    _await(lambda: log.count(SERVICE_LOG) > logged_before, LOG_WAIT_S)
    logged = log.count(SERVICE_LOG) - logged_before
    dropped, counted = after["service-drop"] - before["service-drop"], after["service-count"] - before["service-count"]
    yield ctx.check("netfilter-declined-flow", "RFC2979",
                    fallbacks >= 1 and refused and dropped > 0 and counted > 0 and logged >= 1 and flow.complete,
                    f"with the engine's table at capacity 0 it declined {fallbacks} flow(s) to the host stack, "
                    f"where port {SERVICE['discard']} was {'refused' if refused else 'connected'} ({dropped} "
                    f"packets dropped) and the {flow.bytes}-byte download from port {SERVICE['chargen']} was logged "
                    f"{logged} time(s) with {counted} packets counted",
                    numbers={"fallbacks": fallbacks, "dropped": dropped, "counted": counted, "logged": logged,
                             "bytes": flow.bytes},
                    claims=("TOE-6", "TOE-17"))
    ctx.lab.node(ctx.server).run(["nft", "delete", "table", "inet", NFT_TABLE])


# --- TOE-7 ---------------------------------------------------------------------------------
def _judge_limit(ctx: RunContext, kind: str, requirement: str, limit_mbit: float, host: Flow, service: Flow,
                 declined: Flow | None, setting: str) -> Iterator[Check]:
    numbers = {"limit_mbit": limit_mbit, "host_mbit": round(host.mbit_per_s, 2),
               "service_mbit": round(service.mbit_per_s, 2), "host_bytes": host.bytes,
               "service_bytes": service.bytes}
    if declined is not None:
        numbers["declined_mbit"] = round(declined.mbit_per_s, 2)
    precondition = limited(host, limit_mbit) and host.complete
    yield ctx.check(f"{kind}-host-flow", requirement, precondition,
                    f"{setting} held the host-stack flow to {host.mbit_per_s:.1f} Mbit/s against a limit of "
                    f"{limit_mbit:g} ({host.bytes} bytes{'' if host.complete else ', incomplete: ' + host.error})",
                    numbers=numbers, claims=("TOE-7",))
    if _toe(ctx):
        ok = precondition and bypassed(service, limit_mbit)
        seen = (f"the offloaded flow went {service.mbit_per_s:.1f} Mbit/s past the {limit_mbit:g} Mbit/s "
                f"{kind} ({service.mbit_per_s / limit_mbit:.1f} times the limit)")
    else:
        ok = precondition and limited(service, limit_mbit)
        seen = f"the service-port flow was held to {service.mbit_per_s:.1f} Mbit/s like the host-port flow"
    yield ctx.check(f"{kind}-service-flow", requirement, ok,
                    seen + ("" if precondition else f"; precondition failed: the {kind} did not limit the host flow"),
                    numbers=numbers, claims=("TOE-7",))
    if declined is not None:
        yield ctx.check(f"{kind}-declined-flow", requirement, limited(declined, limit_mbit) and declined.complete,
                        f"a flow the engine declined went through the host stack at {declined.mbit_per_s:.1f} Mbit/s "
                        f"against the {limit_mbit:g} Mbit/s {kind}", numbers=numbers, claims=("TOE-7", "TOE-17"))


def _shaper(ctx: RunContext, hif: str) -> Iterator[Check]:
    p, client, addr = ctx.params, ctx.lab.node(ctx.client), ctx.address(ctx.server)
    node, size = ctx.lab.node(ctx.server), p.transfer_kib * 1024
    rate = f"{p.shape_mbit:g}mbit"
    node.run(["tc", "qdisc", "add", "dev", hif, "root", "handle", "1:", "htb", "default", "10", "r2q", "1000"],
             check=True)
    try:
        node.run(["tc", "class", "add", "dev", hif, "parent", "1:", "classid", "1:10", "htb", "rate", rate,
                  "ceil", rate], check=True)
        host = download(client, addr, HOST_PORTS["chargen"], size, p.limit_s)
        service = download(client, addr, SERVICE["chargen"], size, p.limit_s)
        declined = None
        if _toe(ctx):
            with _Declined(ctx):
                declined = download(client, addr, SERVICE["chargen"], size, p.limit_s)
    finally:
        node.run(["tc", "qdisc", "del", "dev", hif, "root"])
    yield from _judge_limit(ctx, "shaper", "RFC2475", p.shape_mbit, host, service, declined,
                            f"HTB at {rate} on {ctx.server}:{hif}")


def _policer(ctx: RunContext) -> Iterator[Check]:
    """An nftables byte-rate policer on input: judged by its own drop counter, since its bucket holds one second.

    nft's `limit rate over R bytes/second burst B` fills to R x 1 s + B before it drops, so
    each upload is sized past that and a limited flow is one the policer dropped from.
    """
    p, client, addr = ctx.params, ctx.lab.node(ctx.client), ctx.address(ctx.server)
    rate = p.police_kbyte_s * 1000
    size = 2 * (rate + POLICE_BURST)
    police = f"limit rate over {p.police_kbyte_s} kbytes/second burst {POLICE_BURST // 1000} kbytes counter drop"
    _nft(ctx, [("host-police", f"tcp dport {HOST_PORTS['discard']} {police}"),
               ("service-police", f"tcp dport {SERVICE['discard']} {police}")])
    try:
        host = upload(client, addr, HOST_PORTS["discard"], size, p.limit_s)
        service = upload(client, addr, SERVICE["discard"], size, p.limit_s)
        counted = _counters(ctx)
        declined, declined_drops = None, 0
        if _toe(ctx):
            with _Declined(ctx):
                declined = upload(client, addr, SERVICE["discard"], size, p.limit_s)
            declined_drops = _counters(ctx)["service-police"] - counted["service-police"]
    finally:
        ctx.lab.node(ctx.server).run(["nft", "delete", "table", "inet", NFT_TABLE])
    host_drops, service_drops = counted["host-police"], counted["service-police"]
    limit_mbit = rate * 8 / 1e6
    numbers = {"limit_mbit": limit_mbit, "upload_bytes": size, "host_dropped_pkts": host_drops,
               "service_dropped_pkts": service_drops, "host_mbit": round(host.mbit_per_s, 2),
               "service_mbit": round(service.mbit_per_s, 2)}
    precondition = host_drops > 0 and host.complete
    setting = f"an nftables policer at {p.police_kbyte_s} kbytes/s"
    yield ctx.check("policer-host-flow", "RFC2475", precondition,
                    f"{setting} dropped {host_drops} packets of a {size}-byte upload to host port "
                    f"{HOST_PORTS['discard']}, which went {host.mbit_per_s:.1f} Mbit/s"
                    + ("" if host.complete else f" and did not complete ({host.error})"),
                    numbers=numbers, claims=("TOE-7",))
    if _toe(ctx):
        ok = precondition and service_drops == 0 and bypassed(service, limit_mbit)
        seen = (f"the offloaded upload to port {SERVICE['discard']} lost {service_drops} packets to it and went "
                f"{service.mbit_per_s:.1f} Mbit/s against the {limit_mbit:g} Mbit/s rate")
    else:
        ok = precondition and service_drops > 0 and service.complete
        seen = f"the upload to port {SERVICE['discard']} was policed like the host-port one ({service_drops} dropped)"
    yield ctx.check("policer-service-flow", "RFC2475", ok,
                    seen + ("" if precondition else "; precondition failed: the policer did not act on the host flow"),
                    numbers=numbers, claims=("TOE-7",))
    if declined is not None:
        yield ctx.check("policer-declined-flow", "RFC2475", declined_drops > 0 and declined.complete,
                        f"an upload the engine declined met the policer in the host stack: {declined_drops} packets "
                        f"dropped, {declined.mbit_per_s:.1f} Mbit/s",
                        numbers={**numbers, "declined_dropped_pkts": declined_drops}, claims=("TOE-7", "TOE-17"))


# --- TOE-17 -------------------------------------------------------------------------------
def _declined_echo(ctx: RunContext) -> Iterator[Check]:
    if not _toe(ctx):
        yield ctx.skip("declined-flow-byte-exact", "RFC9293 3.10.7.4",
                       "the kernel declines no flow: every flow is the host stack's already", claims=("TOE-17",))
        return
    size = ctx.params.transfer_kib * 1024
    with _Declined(ctx) as declined:
        echo = echo_transfer(ctx, size, ctx.params.limit_s, port=SERVICE["echo"])
        fallbacks = declined.fallbacks()
    yield ctx.check("declined-flow-byte-exact", "RFC9293 3.10.7.4", fallbacks >= 1 and echo.exact,
                    f"the engine declined {fallbacks} flow(s); {echo.bytes} of {echo.size} bytes echoed through "
                    f"the host stack came back {'identical (SHA-256)' if echo.exact else 'short or different'}",
                    numbers={"fallbacks": fallbacks, "bytes": echo.bytes, "seconds": round(echo.seconds, 3)},
                    claims=("TOE-17",), integrity=True)
