"""`syn_flood`: spoofed SYNs fill the target's half-open table while a legitimate client connects.

For each exhaustion policy the target supports (`Target.policies()`; the kernel's are
tcp_syncookies 1, 0 and 2) the attacker sends spoofed SYNs at a set rate for a few seconds
from pre-built frames (`scenarios.flood`), while a client opens echo connections at a fixed
pace with kernel sockets, each in its own thread so one slow handshake does not delay the
next (an open-loop schedule). Then the half-open count is polled until it falls back to
about zero (with a deadline), and the client connects again.

A policy is judged by what its name promises: `deny` must show the denial (legitimate
connections fail or wait for SYN retransmission, >= 1 s) and count it (listen drops); every
other policy (`syncookie`, `syncookie-always`, the engine's `fallback`) must keep >= 99 % of
legitimate connections succeeding during the flood, within a limit that allows the client's
SYN retransmissions (1, 3 and 7 s), and answer them promptly: the median handshake must not
wait behind the flood. Every policy must let the table recover and serve normally afterwards.
Each verdict requires the flood to have arrived and (for policies that keep state) to have
filled the half-open table to its limit; otherwise it measured nothing and fails.

A target that counts what its receive queues miss (the engine: `rx_missed_errors`) must also
account for every SYN that reached its interface: answered (a cookie, a new half-open entry's
SYN-ACK, a repeated one), refused or rate-limited, handed to the host, or counted as missed,
whatever rate it kept up with (the check's numbers say which rate that was). The engine's
queues and receive ring are scenario parameters (`queues`, `rx_ring`), as in ethtool -L / -G.
The engine reads from a TPACKET_V3 ring by default, sized like a NIC's (`rx_ring`, 0 for one
read per frame): when it falls behind, a legitimate SYN that finds room waits behind at most the
flood SYNs the ring holds (the check states how many, and what wait that is at the rate
handled), and one that finds it full is missed and retried by its client after a second: which
of the two dominates the median is what the share missed says.

The spoofed sources are routed, in the server's namespace, back to the attacker, which does
not forward and so drops the SYN-ACKs: the flood and its answers stay on the lab's bridge.
The server's SYN-ACK retries are lowered (topology parameter) so half-open entries expire in
seconds, which is what bounds the recovery.
"""
from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import Field, field_validator

from lab.tools import wait_for_line

from toe_engine.io.ring import RingSettings

from . import flood
from .cpu_cost import namespace_times
from .framework import Check, RunContext, ScenarioParams, scenario
from .queues import ENGINE_PROCESS
from .targets import reading

if TYPE_CHECKING:
    from lab.node import Node

ATTACKER, CLIENT, SERVER = "attacker", "client", "server"
#: Policies whose promise is to refuse what does not fit; every other policy promises to serve.
REFUSING_POLICIES = frozenset({"deny"})
#: Policies that keep no half-open state at all (a cookie for every SYN): the table must stay empty.
STATELESS_POLICIES = frozenset({"syncookie-always"})
#: Share of the SYNs sent that must reach the target's interface for the run to count as a flood.
ARRIVED_SHARE = 0.9
#: The RFC 4987 section that describes each policy's defence.
POLICY_REQUIREMENT = {"syncookie": "RFC4987 3.6", "syncookie-always": "RFC4987 3.6", "deny": "RFC4987 2",
                      "fallback": "RFC4987 3.7"}
#: Kernel counters shown as evidence besides the standard ones, when the target has them.
EXTRA_COUNTERS = ("TcpExtListenOverflows", "TcpExtTCPReqQFullDrop", "TcpExtTCPReqQFullDoCookies")
#: "About zero": the half-open count the table must fall back to after the flood.
RECOVERED_AT = 2
SLOW_HANDSHAKE_S = 1.0  # the first SYN retransmission (RFC 6298's initial RTO)
#: The engine's counters that account for each SYN reaching its interface: answered (a cookie, a new half-open
#: entry's SYN-ACK, a repeated SYN-ACK), rate-limited, refused, handed to the host, or missed by its receive queues.
SYN_ACCOUNTING = ("syncookies_sent", "conn_offloaded", "synack_repeated", "synack_rtx_limited", "conn_denied",
                  "rx_to_host", "rx_missed_errors")
#: Frames besides the flood's per legitimate connection (SYN, ACK, data, FIN, their retransmissions), and
#: background frames (ARP, IPv6 neighbour discovery): the accounting's tolerance, both ways.
FRAMES_PER_LEGIT = 10
BACKGROUND_FRAMES = 100


class SynFloodParams(ScenarioParams):
    rate: int = Field(200_000, ge=1000, le=2_000_000, description="spoofed SYNs per second")
    min_rate: int = Field(30_000, ge=0, le=2_000_000,
                          description="achieved rate below which a run does not count as a flood (the machine was busy)")
    workers: int = Field(2, ge=1, le=8, description="flood processes sharing the rate")
    flood_s: float = Field(3.0, gt=0, le=30, description="seconds of flood per policy")
    pool: int = Field(4096, ge=16, le=65536, description="distinct pre-built SYN frames")
    spoof: str = Field("10.99.0.0/16", description="IPv4 prefix of the spoofed sources (lab-internal)")
    legit_interval_s: float = Field(0.05, gt=0, le=1, description="pace of the legitimate client's connections")
    legit_after: int = Field(20, ge=1, le=1000, description="legitimate connections after the flood")
    legit_timeout_s: float = Field(8.0, gt=0, le=30, description="a legitimate connect+echo slower than this fails "
                                   "(8 s allows the client's SYN retransmissions at 1, 3 and 7 s)")
    prompt_ms: float = Field(20.0, gt=0, le=10_000,
                             description="median legitimate connect() time a serving policy must keep under the flood")
    recovery_deadline_s: float = Field(8.0, gt=0, le=120, description="time allowed for the table to empty")
    min_success: float = Field(0.99, ge=0, le=1, description="legitimate success rate a serving policy must keep")
    policies: str = Field("", description="comma-separated policies to run (empty: all the target supports)")
    queues: int = Field(0, ge=0, le=8, description="engine queue processes fed by RSS (ethtool -L combined N); "
                        "0: one queue in the engine's own process (the kernel target ignores it)")
    rx_ring: int = Field(256, ge=0, le=1 << 20, description="frames of the engine's receive ring (ethtool -G rx N): "
                         "MTU slots, each holding several flood SYNs (256: about 3,400 of them, 17 ms at 200,000/s); "
                         "0: one read per frame (the kernel target ignores it)")

    @field_validator("spoof")
    @classmethod
    def _spoof_is_ipv4_prefix(cls, value: str) -> str:
        try:
            network = ipaddress.IPv4Network(value)
        except ValueError:
            raise ValueError("must be an IPv4 prefix such as 10.99.0.0/16") from None
        if network.num_addresses < 256:
            raise ValueError("must hold at least 256 addresses (a /24 or wider)")
        return value


@scenario("syn_flood", purpose="Spoofed SYN flood at a set rate against each exhaustion policy: legitimate "
          "success and handshake latency during and after, half-open table occupancy and recovery, policy counters.",
          topology="syn_flood", params=SynFloodParams,
          topology_params=lambda p: {"spoof": p.spoof, "queues": p.queues, "rx_ring": p.rx_ring},
          covers=("RFC4987 2", "RFC4987 3.3", "RFC4987 3.6", "RFC4987 3.7"),
          server=SERVER, client=CLIENT, claims=("TOE-3", "TOE-4"), whole_machine=True)
def run(ctx: RunContext) -> Iterator[Check]:
    p = ctx.params
    wanted = [name.strip() for name in p.policies.split(",") if name.strip()] or list(ctx.target.policies())
    if not wanted:
        yield ctx.skip("policy", "RFC4987 2", f"target {ctx.target.name} declares no exhaustion policies")
        return
    for policy in wanted:
        yield from _run_policy(ctx, policy)


@dataclass(frozen=True)
class Attempt:
    """One legitimate connection: when it started, how long connect() and the whole echo took."""

    started_s: float
    connect_s: float | None
    total_s: float | None
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


class LegitClient:
    """Opens echo connections at a fixed pace from a node, each attempt in its own thread."""

    def __init__(self, node: Node, address: str, port: int, *, count: int, interval_s: float,
                 timeout_s: float) -> None:
        self.node, self.address, self.port = node, address, port
        self.count, self.interval_s, self.timeout_s = count, interval_s, timeout_s
        self.attempts: list[Attempt] = []
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []
        self._scheduler = threading.Thread(target=self._schedule, name="legit-client", daemon=True)

    def start(self) -> LegitClient:
        self._scheduler.start()
        return self

    def join(self) -> list[Attempt]:
        """Wait for every attempt (each is bounded by the timeout) and return them in start order."""
        self._scheduler.join()
        for worker in self._workers:
            worker.join()
        return sorted(self.attempts, key=lambda a: a.started_s)

    def _schedule(self) -> None:
        start = time.monotonic()
        with self.node.inside():  # sockets belong to the namespace they were created in
            for i in range(self.count):
                delay = start + i * self.interval_s - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                worker = threading.Thread(target=self._attempt, args=(sock, time.monotonic() - start), daemon=True)
                self._workers.append(worker)
                worker.start()

    def _attempt(self, sock: socket.socket, started_s: float) -> None:
        payload = b"toelab-legit"
        begin = time.monotonic()
        connect_s = None
        try:
            with sock:
                sock.settimeout(self.timeout_s)
                sock.connect((self.address, self.port))
                connect_s = time.monotonic() - begin
                sock.settimeout(max(0.01, self.timeout_s - connect_s))
                sock.sendall(payload)
                echoed = b""
                while len(echoed) < len(payload):
                    chunk = sock.recv(len(payload) - len(echoed))
                    if not chunk:
                        raise ConnectionError("closed before the echo")
                    echoed += chunk
            attempt = Attempt(started_s, connect_s, time.monotonic() - begin)
        except OSError as exc:
            attempt = Attempt(started_s, connect_s, None, type(exc).__name__)
        with self._lock:
            self.attempts.append(attempt)


def percentile(values: list[float], q: float) -> float | None:
    """The q-quantile (0..1) by nearest rank, or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


#: Success and latency figures of a set of attempts (`summarize`), and its failures named by kind.
Summary = dict[str, float | int | str | None]


def summarize(attempts: list[Attempt]) -> Summary:
    """Success rate and connect() latency percentiles (ms) of a set of attempts."""
    latencies = [a.connect_s for a in attempts if a.ok and a.connect_s is not None]
    ms = lambda v: None if v is None else round(v * 1000, 2)  # noqa: E731
    return {"attempts": len(attempts), "succeeded": sum(a.ok for a in attempts),
            "success_rate": round(sum(a.ok for a in attempts) / len(attempts), 4) if attempts else 0.0,
            "connect_p50_ms": ms(percentile(latencies, 0.5)), "connect_p90_ms": ms(percentile(latencies, 0.9)),
            "connect_p99_ms": ms(percentile(latencies, 0.99)), "connect_max_ms": ms(max(latencies, default=None)),
            "slow_handshakes": sum(1 for v in latencies if v >= SLOW_HANDSHAKE_S),
            "failures": ", ".join(f"{n} {kind}" for kind, n in sorted(Counter(a.error for a in attempts if a.error).items()))}


# --- judging (pure, so each precondition can be shown to fail without a lab) ---------------------
def flood_arrived(sent: int, rate: float, received: int, min_rate: float) -> bool:
    """The flood happened: SYNs were sent, at a positive rate of at least `min_rate`, and reached the target."""
    return sent > 0 and rate > 0 and rate >= min_rate and received >= ARRIVED_SHARE * sent


def table_filled(peak: int, limit: int | None) -> bool:
    """The half-open table reached the size at which the policy takes over (a table never full tested nothing)."""
    return limit is not None and limit > 0 and peak >= limit


def table_recovered(peak: int, limit: int | None, left: int | None) -> bool:
    """The table filled during the flood and fell back to about zero afterwards."""
    return table_filled(peak, limit) and left is not None and left <= RECOVERED_AT


def table_stayed_empty(arrived: bool, peak: int) -> bool:
    """A stateless policy kept (about) nothing half-open while a flood that did arrive went on."""
    return arrived and peak <= RECOVERED_AT


def kept_serving(summary: Summary, min_success: float, loaded: bool) -> bool:
    """Legitimate connections were made under load (flood arrived, table full) and enough succeeded."""
    return loaded and bool(summary["attempts"]) and float(summary["success_rate"] or 0) >= min_success


def answered_promptly(summary: Summary, prompt_ms: float, loaded: bool) -> bool:
    """Under load, the median legitimate handshake was answered within `prompt_ms` (not queued behind the flood)."""
    p50 = summary["connect_p50_ms"]
    return loaded and bool(summary["attempts"]) and p50 is not None and float(p50) < prompt_ms


def was_denied(summary: Summary, min_success: float, loaded: bool) -> bool:
    """Under load, legitimate connections failed or waited for a SYN retransmission."""
    p50 = summary["connect_p50_ms"]
    slow = p50 is not None and float(p50) >= SLOW_HANDSHAKE_S * 1000
    return loaded and bool(summary["attempts"]) and (float(summary["success_rate"] or 0) < min_success or slow)


def syn_accounting(counters: dict[str, int]) -> int:
    """SYNs the engine answered, refused, handed on or counted as missed (SYN_ACCOUNTING summed)."""
    return sum(counters.get(name, 0) for name in SYN_ACCOUNTING)


def syns_accounted(arrived: bool, reached: int, accounted: int, slack: int) -> bool:
    """Under a flood that arrived, every frame that reached the interface is a SYN accounted for, but for
    at most `slack` frames of the legitimate client and the background, either way."""
    return arrived and reached > 0 and abs(reached - accounted) <= slack


def _latency_words(summary: Summary) -> str:
    if summary["connect_p50_ms"] is None:
        return "none connected"
    return f"connect p50 {summary['connect_p50_ms']} ms, p99 {summary['connect_p99_ms']} ms"


def _interface_json(ctx: RunContext, node: str, iface: str, stats: bool = False) -> dict:
    argv = ["ip", "-j"] + (["-s"] if stats else []) + ["link", "show", "dev", iface]
    return json.loads(ctx.lab.node(node).run(argv, check=True).stdout)[0]


def _rx_packets(ctx: RunContext, node: str) -> int:
    """Frames the node's interface received (netlink, so it reads the node's own namespace)."""
    return int(_interface_json(ctx, node, ctx.iface(node), stats=True)["stats64"]["rx"]["packets"])


def _policy_counters(ctx: RunContext) -> dict[str, int]:
    """The standard policy counters (toelab's names) and the extra kernel ones the target has."""
    raw = ctx.target.counters()
    names = ctx.target.standard_counters
    out = {std: reading(raw, names[std]) for std in ("syncookies_sent", "syncookies_ok", "syncookies_failed",
                                                     "listen_drops")}
    out.update({name: raw[name] for name in EXTRA_COUNTERS if name in raw})
    return out


def _await_recovery(ctx: RunContext, deadline_s: float) -> tuple[int | None, float]:
    """Poll the half-open count until it is about zero or the deadline passes: (last count, seconds)."""
    start = time.monotonic()
    count = ctx.target.half_open()
    while count is not None and count > RECOVERED_AT and time.monotonic() - start < deadline_s:
        time.sleep(0.1)
        count = ctx.target.half_open()
    return count, round(time.monotonic() - start, 2)


class _Flood:
    """The flood process in the attacker's node: started, awaited, its own report parsed."""

    def __init__(self, ctx: RunContext, seed: int) -> None:
        p = ctx.params
        argv = flood.argv(iface=ctx.iface(ATTACKER), src_mac=_interface_json(ctx, ATTACKER, ctx.iface(ATTACKER))["address"],
                          dst_mac=_interface_json(ctx, SERVER, ctx.iface(SERVER))["address"],
                          dst=ctx.address(SERVER), dport=ctx.port("echo"), spoof=p.spoof, rate=p.rate,
                          duration_s=p.flood_s, max_count=int(p.rate * p.flood_s), pool=p.pool, seed=seed,
                          workers=p.workers)
        self.flood_s = p.flood_s
        self.proc = ctx.lab.node(ATTACKER).popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._seen = wait_for_line(self.proc, flood.READY_LINE, what="the SYN flood")

    def running(self) -> bool:
        return self.proc.poll() is None

    def result(self) -> flood.FloodStats:
        assert self.proc.stdout is not None
        rest, _ = self.proc.communicate(timeout=self.flood_s + 15)
        return flood.parse_result(self._seen + rest.decode(errors="replace"))


def _run_policy(ctx: RunContext, policy: str) -> Iterator[Check]:
    p = ctx.params
    ctx.progress(f"policy {policy}: flooding at {p.rate} SYN/s for {p.flood_s} s")
    settings = ctx.target.set_policy(policy)
    before, rx_before, raw_before = _policy_counters(ctx), _rx_packets(ctx, SERVER), ctx.target.counters()
    cpu_before = namespace_times(ctx.lab.node(SERVER), precise=True)
    legit = dict(address=ctx.address(SERVER), port=ctx.port("echo"), interval_s=p.legit_interval_s,
                 timeout_s=p.legit_timeout_s)
    attack = _Flood(ctx, seed=ctx.rng.getrandbits(31))
    during_client = LegitClient(ctx.lab.node(CLIENT), count=max(1, int(p.flood_s / p.legit_interval_s)),
                                **legit).start()
    peak = 0
    while attack.running():
        peak = max(peak, ctx.target.half_open() or 0)
        time.sleep(0.1)
    stats = attack.result()
    at_end = ctx.target.half_open()
    rx = _rx_packets(ctx, SERVER) - rx_before
    ctx.progress(f"policy {policy}: waiting for the table to empty")
    left, recovery_s = _await_recovery(ctx, p.recovery_deadline_s)
    during = during_client.join()
    flood_counters = {k: v - before.get(k, 0) for k, v in _policy_counters(ctx).items()}
    raw_after = ctx.target.counters()
    engine_cpu_s = namespace_times(ctx.lab.node(SERVER), precise=True).since(cpu_before, matching=ENGINE_PROCESS)
    after = LegitClient(ctx.lab.node(CLIENT), count=p.legit_after, **legit).start().join()

    tag = f"[{policy}]"
    during_summary, after_summary = summarize(during), summarize(after)
    limit = ctx.target.half_open_limit(ctx.port("echo"))
    occupancy = {"half_open_peak": peak, "half_open_limit": limit, "half_open_at_flood_end": at_end,
                 "half_open_after": left, "recovery_s": recovery_s}
    flood_numbers = {"configured_rate": p.rate, "sent": stats.sent, "send_rate": round(stats.rate),
                     "received_at_target": rx, "receive_rate": round(rx / stats.elapsed_s) if stats.elapsed_s else 0,
                     "workers": stats.workers, "send_errors": stats.errors, "elapsed_s": stats.elapsed_s}
    arrived = flood_arrived(stats.sent, stats.rate, rx, min(p.min_rate, p.rate))
    yield ctx.check(f"flood-rate{tag}", "RFC4987 2", arrived,
                    f"the attacker sent {stats.sent} spoofed SYNs at {stats.rate:,.0f}/s (asked {p.rate:,}/s, at least "
                    f"{min(p.min_rate, p.rate):,}/s needed) and the target's interface received {rx} of them",
                    numbers=flood_numbers)

    stateless = policy in STATELESS_POLICIES
    loaded = arrived and (stateless or table_filled(peak, limit))
    load_words = ("" if loaded else f"; not a flood that filled the table (arrived: {arrived}, half-open peak "
                  f"{peak} of limit {limit}), so this measured nothing")
    numbers = {**during_summary, **occupancy, **{f"setting:{k}": v for k, v in settings.items()}}
    said = (f"{during_summary['succeeded']}/{during_summary['attempts']} legitimate connections succeeded during "
            f"the flood ({_latency_words(during_summary)}, {during_summary['slow_handshakes']} slower than "
            f"{SLOW_HANDSHAKE_S:.0f} s), half-open peak {peak} of limit {limit}{load_words}")
    requirement = POLICY_REQUIREMENT.get(policy, "RFC4987 3")
    if policy in REFUSING_POLICIES:
        yield ctx.check(f"legit-denied{tag}", requirement, was_denied(during_summary, p.min_success, loaded),
                        f"under {policy}, {said}", counters=flood_counters, numbers=numbers)
        drops = flood_counters["listen_drops"]
        yield ctx.check(f"denial-counted{tag}", requirement, drops > 0,
                        f"under {policy}, the target counted {drops} listen drops for the flood", counters=flood_counters)
    else:
        yield ctx.check(f"legit-served{tag}", requirement, kept_serving(during_summary, p.min_success, loaded),
                        f"under {policy}, {said}", counters=flood_counters, numbers=numbers)
        yield ctx.check(f"legit-prompt{tag}", requirement, answered_promptly(during_summary, p.prompt_ms, loaded),
                        f"under {policy}, the median legitimate handshake during the flood took "
                        f"{during_summary['connect_p50_ms']} ms (p90 {during_summary['connect_p90_ms']} ms; "
                        f"under {p.prompt_ms:g} ms needed){load_words}", numbers=numbers)
        if policy.startswith("syncookie"):
            sent, ok = flood_counters["syncookies_sent"], flood_counters["syncookies_ok"]
            yield ctx.check(f"cookies-counted{tag}", requirement, sent > 0 and ok > 0,
                            f"under {policy}, the target sent {sent} SYN cookies and accepted {ok} returned ones "
                            f"({flood_counters['syncookies_failed']} failed)", counters=flood_counters)
    if "rx_missed_errors" in raw_after:
        yield _accounting_check(ctx, tag, arrived, rx, stats, len(during), raw_before, raw_after, engine_cpu_s,
                                ring_holds(p.rx_ring, p.queues))
    else:
        yield ctx.skip(f"syns-accounted{tag}", "RFC4987 2", f"target {ctx.target.name} does not count what its "
                       "receive queues miss, so the SYNs it neither answered nor refused cannot be told apart")
    if stateless:
        yield ctx.check(f"table-stays-empty{tag}", "RFC4987 3.6", table_stayed_empty(arrived, peak),
                        f"under {policy}, with the flood arriving: {arrived}, the half-open count peaked at {peak} "
                        f"(at most {RECOVERED_AT} for a policy that keeps no state)", numbers=occupancy)
    else:
        yield ctx.check(f"table-recovers{tag}", "RFC4987 3.3", table_recovered(peak, limit, left),
                        f"the flood filled the half-open table to {peak} of its limit {limit}, and afterwards the "
                        f"count went from {at_end} to {left} in {recovery_s} s (deadline {p.recovery_deadline_s} s)",
                        numbers=occupancy)
    yield ctx.check(f"legit-after{tag}", "RFC4987 2", kept_serving(after_summary, p.min_success, loaded),
                    f"after the flood {after_summary['succeeded']}/{after_summary['attempts']} legitimate connections "
                    f"succeeded ({_latency_words(after_summary)}){load_words}",
                    numbers=after_summary)


def ring_holds(rx_ring: int, queues: int) -> int:
    """Flood SYNs the engine's receive rings hold at most (each queue has one of `rx_ring` frames); 0: no ring."""
    return RingSettings(rx_ring).frames_held(flood.SYN_FRAME_LEN) * max(1, queues) if rx_ring else 0


def _accounting_check(ctx: RunContext, tag: str, arrived: bool, reached: int, stats: flood.FloodStats, legit: int,
                      before: dict[str, int], after: dict[str, int], engine_cpu_s: float, holds: int) -> Check:
    """Every SYN that reached the interface answered, refused, handed on or counted missed; the rate kept up
    with, what the engine's processes spent per frame handled (CPU time, so it holds on a busy machine), and
    the longest a SYN let into a full ring waits at that rate (`holds` SYNs ahead of it)."""
    delta = {name: after.get(name, 0) - before.get(name, 0) for name in SYN_ACCOUNTING}
    accounted = syn_accounting(delta)
    slack = FRAMES_PER_LEGIT * legit + BACKGROUND_FRAMES
    seconds = stats.elapsed_s or 1.0
    missed = delta["rx_missed_errors"]
    handled = reached - missed
    cpu_us = engine_cpu_s / handled * 1e6 if handled > 0 else 0.0
    numbers = {**delta, "reached_interface": reached, "accounted": accounted, "slack": slack,
               "handled_per_s": round(handled / seconds), "offered_per_s": round(reached / seconds),
               "missed_share": round(missed / reached, 4) if reached else 0.0,
               "engine_cpu_s": round(engine_cpu_s, 3), "engine_cpu_us_per_frame": round(cpu_us, 2),
               "one_core_per_s": round(1e6 / cpu_us) if cpu_us else 0, "ring_holds_syns": holds,
               "ring_wait_ms_at_handled": round(holds / handled * seconds * 1000, 1) if handled > 0 and holds else 0.0}
    ring_words = (f"; its ring holds {holds:,} SYNs, {numbers['ring_wait_ms_at_handled']} ms of them at that rate"
                  if holds else "")
    return ctx.check(f"syns-accounted{tag}", "RFC4987 2", syns_accounted(arrived, reached, accounted, slack),
                     f"of {reached} frames that reached the interface ({numbers['offered_per_s']:,}/s), the target "
                     f"accounted for {accounted}: {delta['syncookies_sent']} cookies, {delta['conn_offloaded']} half-open "
                     f"entries, {delta['synack_repeated'] + delta['synack_rtx_limited']} repeats, {delta['conn_denied']} "
                     f"refused, {delta['rx_to_host']} to the host and {missed} missed by its receive queues (within "
                     f"{slack} frames of the legitimate client and background needed); it kept up with "
                     f"{numbers['handled_per_s']:,} frames/s, at {numbers['engine_cpu_us_per_frame']} µs of engine CPU "
                     f"each (one core's worth: {numbers['one_core_per_s']:,}/s){ring_words}", counters=delta, numbers=numbers)
