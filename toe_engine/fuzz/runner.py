"""A fuzzing run: live flows driven and mutated, frames of every family, invariants per batch.

One EndpointCore (echo, discard, chargen and HTTP on a small table, so fuzzed connection
requests fill it and the exhaustion policy answers) faces an IPv4 and an IPv6 peer, each
keeping a few flows alive with in-order traffic while the families aim frames at them. The
clock advances by 1/rate per frame and timers run when due, as in the runtime. Any
exception out of the engine is counted by the place it was raised; the first at each place
is saved as a reproducer (the run's seed, policy and frame index replay it exactly, and
the frames before it are kept for reading). The run is deterministic for a seed.
"""
from __future__ import annotations

import json
import random
import resource
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from toe_engine.codec import parse_frame
from toe_engine.endpoint import EndpointConfig, EndpointCore
from toe_engine.fuzz.generator import FAMILIES, PATTERN_LEN, FuzzTarget, stream_offset
from toe_engine.fuzz.invariants import DropTally, check
from toe_engine.fuzz.peer import MASK, PeerFlow, WirePeer
from toe_engine.resources import ExhaustionPolicy, ResourceConfig
from toe_engine.segment import ACK, FIN, PSH, RST, SYN, Segment, TcpOptions
from toe_engine.tcp.connection import State
from toe_engine.testing import IP_A, IP_B, MAC_A, MAC_B, device_transmit

IP6_A = bytes.fromhex("20010db8000000000000000000000001")
IP6_B = bytes.fromhex("20010db8000000000000000000000002")
SERVICES = {7: "echo", 9: "discard", 19: "chargen", 80: "http"}
FLOW_PORTS = range(40000, 60000)
POLICIES = ("fallback", "deny:drop", "deny:rst", "syncookie")
RECENT_FRAMES = 64
#: New connection requests fill the table in a few frames; rarer, they leave the live flows room to open.
FAMILY_WEIGHTS = {"connection_churn": 0.25, "cookie_guess": 0.5}
MAX_VIOLATIONS_KEPT = 20


@dataclass(frozen=True)
class Identity:
    """Who the fuzzed engine and its peers are: documentation addresses unless a lab's are given."""

    client_mac: bytes = MAC_A
    server_mac: bytes = MAC_B
    client_ips: tuple[bytes, bytes] = (IP_A, IP6_A)  # IPv4, IPv6
    server_ips: tuple[bytes, bytes] = (IP_B, IP6_B)


@dataclass(frozen=True)
class FuzzConfig:
    frames: int
    policy: str = "fallback"
    seed: int = 0
    batch: int = 64  # frames between invariant checks
    capacity: int = 64  # table slots: small, so fuzzed SYNs fill it
    flows: int = 6  # live flows kept per peer
    legit_share: float = 0.35  # frames that are a flow's in-order traffic rather than a family's
    rate: float = 5_000.0  # frames per simulated second: timers, RTOs and expiry all get their turn
    buffer_memory_bytes: int = 32 * 1024 * 1024
    reproducer_dir: Path | None = None
    stop_at: int | None = None  # replay: stop after this frame index

    def __post_init__(self) -> None:
        ExhaustionPolicy.parse(self.policy)
        if self.frames < 0 or self.batch < 1 or self.capacity < 1:
            raise ValueError("frames must be >= 0, batch and capacity >= 1")


@dataclass
class FuzzReport:
    config: FuzzConfig
    frames: int = 0
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    exceptions: Counter[str] = field(default_factory=Counter)
    reproducers: dict[str, str] = field(default_factory=dict)
    violations: int = 0
    violation_samples: list[str] = field(default_factory=list)
    families: Counter[str] = field(default_factory=Counter)
    counters: dict[str, int] = field(default_factory=dict)
    peak_rss_kib: int = 0
    rss_samples: list[tuple[int, int]] = field(default_factory=list)  # (frames, RSS KiB)
    flows_opened: int = 0
    echoed_bytes: int = 0

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.cpu_seconds if self.cpu_seconds else 0.0

    @property
    def rss_growth_per_million_kib(self) -> float | None:
        """RSS growth per million frames after the first million (warm-up), or None if too short."""
        later = [(f, r) for f, r in self.rss_samples if f >= 1_000_000]
        if len(later) < 2:
            return None
        (f0, r0), (f1, r1) = later[0], later[-1]
        return (r1 - r0) / ((f1 - f0) / 1_000_000) if f1 > f0 else None

    def as_dict(self) -> dict[str, object]:
        return {"frames": self.frames, "policy": self.config.policy, "seed": self.config.seed,
                "cpu_seconds": round(self.cpu_seconds, 2), "wall_seconds": round(self.wall_seconds, 2),
                "frames_per_s": round(self.frames_per_s), "exceptions": dict(self.exceptions),
                "reproducers": self.reproducers, "violations": self.violations,
                "violation_samples": self.violation_samples, "families": dict(self.families),
                "counters": self.counters, "peak_rss_kib": self.peak_rss_kib,
                "rss_growth_per_million_kib": self.rss_growth_per_million_kib, "rss_samples": self.rss_samples,
                "flows_opened": self.flows_opened, "echoed_bytes": self.echoed_bytes}


def rss_kib() -> int:
    """Resident set size now, from /proc (ru_maxrss only gives the peak)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * (resource.getpagesize() // 1024)


class FuzzRun:
    """State of one run; `run()` drives it to the configured frame count."""

    def __init__(self, config: FuzzConfig, identity: Identity = Identity()) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        resources = ResourceConfig(capacity=config.capacity, policy=ExhaustionPolicy.parse(config.policy),
                                   embryonic_limit=max(1, config.capacity // 2), embryonic_timeout=1.0,
                                   buffer_memory_bytes=config.buffer_memory_bytes)
        me = identity
        self.core = EndpointCore(EndpointConfig(me.server_mac, me.server_ips, services=dict(SERVICES),
                                                resources=resources, secret=config.seed.to_bytes(8, "big") * 2))
        self.peers = [WirePeer(self.core, me.client_mac, client, me.server_mac, server, record=False)
                      for client, server in zip(me.client_ips, me.server_ips)]
        pattern = self.rng.randbytes(PATTERN_LEN)
        self.target = FuzzTarget(self.rng, self.core, self.peers, pattern + pattern)
        for peer in self.peers:
            peer.expect = self.target.stream
        self.by_ip = {peer.ip: peer for peer in self.peers}
        self.drops = DropTally()
        self.report = FuzzReport(config)
        self.now = 0.0
        self.index = 0
        self.recent: deque[tuple[int, float, str]] = deque(maxlen=RECENT_FRAMES)
        self._next_port = self.rng.randrange(len(FLOW_PORTS))
        self._families = list(FAMILIES.items())
        self._weights = [FAMILY_WEIGHTS.get(name, 1.0) for name in FAMILIES]

    # --- the loop --------------------------------------------------------------------------
    def run(self, progress: Callable[[FuzzReport], None] | None = None, progress_every: int = 1_000_000) -> FuzzReport:
        config, report = self.config, self.report
        cpu0, wall0 = time.process_time(), time.monotonic()
        stop = config.frames if config.stop_at is None else min(config.frames, config.stop_at + 1)
        report.rss_samples.append((0, rss_kib()))
        while self.index < stop:
            self.step()
            if self.index % progress_every == 0:
                report.rss_samples.append((self.index, rss_kib()))
                report.cpu_seconds = time.process_time() - cpu0
                report.frames = self.index
                if progress is not None:
                    progress(report)
        self._check()
        report.frames = self.index
        report.cpu_seconds = time.process_time() - cpu0
        report.wall_seconds = time.monotonic() - wall0
        report.rss_samples.append((self.index, rss_kib()))
        report.peak_rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        report.counters = self.core.counters.snapshot()
        report.counters.update({f"gauge_{k}": v for k, v in self.core.resources.gauges().items()})
        report.echoed_bytes = sum(f.received_bytes for p in self.peers for f in p.flows.values() if f.checked)
        return report

    def step(self) -> bytes:
        """Make one fuzzed frame, feed it to the engine, check the invariants at a batch's end."""
        self._refill_flows()
        frame, family = self._next_frame()
        self.report.families[family] += 1
        self._deliver(frame, family)
        self.index += 1
        if self.index % self.config.batch == 0:
            self._check()
        return frame

    def _next_frame(self) -> tuple[bytes, str]:
        rng = self.rng
        if rng.random() < self.config.legit_share:
            made = self._legit()
            if made is not None:
                return made, "in_order_traffic"
        name, family = rng.choices(self._families, self._weights)[0]
        return family(self.target), name

    def _deliver(self, frame: bytes, family: str) -> None:
        self.now += 1.0 / self.config.rate
        self.recent.append((self.index, self.now, frame.hex()))
        self.drops.add(parse_frame(frame).drop_reason)
        core = self.core
        self._guard(lambda: core.from_wire(frame, self.now), "from_wire", family)
        deadline = core.next_deadline()
        if deadline is not None and deadline <= self.now:
            self._guard(lambda: core.on_timer(self.now), "on_timer", family)
        self._collect()

    def _guard(self, call: Callable[[], object], entry: str, family: str) -> None:
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - counting every escape is the point
            self._record_exception(exc, entry, family)
        if self.core.app_error_sites:
            for site, n in self.core.app_error_sites.items():
                self._record_site(f"application {site}", n, None, family)
            self.core.app_error_sites.clear()

    def _collect(self) -> None:
        conn = self.target.conn
        for peer in self.peers:  # a flow whose connection died is retired before anything else arrives
            for flow in peer.flows.values():
                if flow.rcv_nxt is None or flow.reset:
                    continue
                tcb = conn(peer, flow)
                if tcb is None:
                    flow.reset = True
                elif flow.checked and (tcb.irs & MASK != flow.iss or tcb.iss & MASK != flow.server_iss):
                    # A forged SYN-cookie answer off by a little in seq or ack passes the cookie check
                    # (in Linux too: the low bits only index the MSS table) and starts a stream elsewhere
                    # than this flow's: its bytes can no longer be checked.
                    flow.checked = False
        for tx in self.core.poll_wire():
            for raw in device_transmit(tx):
                dst = parse_frame(raw, verify_csum=False).ip_dst
                peer = self.by_ip.get(dst)
                if peer is not None:
                    peer.take(raw)

    # --- live flows ------------------------------------------------------------------------
    def _refill_flows(self) -> None:
        if self.index % 16:
            return
        for peer in self.peers:
            for key, flow in list(peer.flows.items()):
                dead = flow.reset
                stalled = flow.rcv_nxt is None and flow.synacks == 0 and self.rng.random() < 0.05
                if dead or stalled:
                    del peer.flows[key]
                    self._abandon(peer, flow)
            while len(peer.flows) < self.config.flows:
                self._open(peer)

    def _abandon(self, peer: WirePeer, flow: PeerFlow) -> None:
        """A peer giving up on a flow resets what the engine still holds of it, as a host would,
        so forgotten connections do not sit in the table for ever."""
        conn = self.target.conn(peer, flow)
        if conn is not None and conn.state is not State.SYN_RECEIVED:
            rst = Segment(flow.sport, flow.dport, conn.rcv_nxt & MASK, 0, RST, 0)
            self._deliver(peer.frame(rst), "in_order_traffic")

    def _open(self, peer: WirePeer) -> None:
        rng = self.rng
        self._next_port = (self._next_port + 1) % len(FLOW_PORTS)
        sport = FLOW_PORTS[self._next_port]
        dport = rng.choice((7, 7, 7, 9, 19, 80))
        flow = PeerFlow(sport, dport, rng.getrandbits(32), checked=dport == 7)
        peer.flows[(sport, dport)] = flow
        self.report.flows_opened += 1
        opts = TcpOptions(mss=rng.choice((536, 1220, 1460)), wscale=rng.choice((None, 0, 7)),
                          sack_permitted=rng.random() < 0.7,
                          timestamp=(rng.getrandbits(32), 0) if rng.random() < 0.5 else None)
        syn = Segment(sport, dport, flow.iss, 0, SYN, 65535, b"", opts)
        self._deliver(peer.frame(syn), "in_order_traffic")

    def _legit(self) -> bytes | None:
        """The next in-order frame of a random live flow: its stream, an ACK, or its end."""
        rng = self.rng
        peer = rng.choice(self.peers)
        waiting = [f for f in peer.flows.values() if f.rcv_nxt is None]
        if waiting and rng.random() < 0.1:  # a SYN not answered yet: send it again
            flow = rng.choice(waiting)
            return peer.frame(Segment(flow.sport, flow.dport, flow.iss, 0, SYN, 65535, b"", TcpOptions(mss=1460)))
        live = self.target.live()
        if live is None:
            return None
        peer, flow, conn = live
        if flow.reset:
            return None
        if conn is not None:
            flow.snd_nxt = conn.rcv_nxt & MASK  # the engine may hold injected bytes of the stream already
        roll = rng.random()
        if roll < 0.01:
            flags, payload = RST | ACK, b""
            flow.reset = True
        elif roll < 0.03:
            flags, payload = FIN | ACK, b""
        elif roll < 0.5 or flow.dport in (19,):
            flags, payload = ACK, b""
        elif flow.dport == 80:
            flags, payload = ACK | PSH, b"GET /%d HTTP/1.1\r\n\r\n" % rng.choice((0, 10, 5000, 100000))
        else:
            n = rng.choice((1, 100, 1448, 1448, 4000))
            flags, payload = ACK | PSH, self.target.stream(flow, stream_offset(flow, flow.snd_nxt), n)
        seg = Segment(flow.sport, flow.dport, flow.snd_nxt, flow.rcv_nxt or 0, flags, 65535, payload)
        return peer.frame(seg)

    # --- findings --------------------------------------------------------------------------
    def _check(self) -> None:
        broken = check(self.core, self.peers, self.drops)
        for peer in self.peers:
            peer.mismatches = peer.wrong_mac = 0  # counted once
        if broken:
            report = self.report
            report.violations += len(broken)
            for line in broken:
                if len(report.violation_samples) < MAX_VIOLATIONS_KEPT:
                    report.violation_samples.append(f"frame {self.index}: {line}")

    def _record_exception(self, exc: Exception, entry: str, family: str) -> None:
        frames = traceback.extract_tb(exc.__traceback__)
        inner = next((f for f in reversed(frames) if "toe_engine" in f.filename), frames[-1])
        site = f"{entry} -> {Path(inner.filename).name}:{inner.lineno} {type(exc).__name__}: {exc}"[:300]
        self._record_site(site, 1, "".join(traceback.format_exception(exc)), family)

    def _record_site(self, site: str, n: int, trace: str | None, family: str) -> None:
        report = self.report
        first = site not in report.exceptions
        report.exceptions[site] += n
        directory = self.config.reproducer_dir
        if first and directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / f"fuzz-{self.config.policy.replace(':', '-')}-{self.config.seed}-{self.index}.json"
            path.write_text(json.dumps({
                "site": site, "family": family, "policy": self.config.policy, "seed": self.config.seed,
                "frame_index": self.index, "replay": f"toelab fuzz --policy {self.config.policy} --seed "
                                                      f"{self.config.seed} --frames {self.index + 1}",
                "traceback": trace, "recent_frames": [{"index": i, "time": t, "hex": h} for i, t, h in self.recent],
            }, indent=1))
            report.reproducers[site] = str(path)


def fuzz(config: FuzzConfig, progress: Callable[[FuzzReport], None] | None = None) -> FuzzReport:
    return FuzzRun(config).run(progress)


def corpus(count: int, identity: Identity, policy: str = "fallback", seed: int = 0) -> list[bytes]:
    """`count` fuzzed frames for a real engine of that identity, made against an in-memory twin
    (so they aim at live flows' numbers there: on a real wire they are well-formed strangers)."""
    run = FuzzRun(FuzzConfig(frames=count, policy=policy, seed=seed), identity)
    return [run.step() for _ in range(count)]
