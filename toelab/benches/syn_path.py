"""`toelab bench syn_path`: the engine's CPU per flood SYN, fast path against the general path, in memory.

The frames are the flood generator's own (scenarios.flood: distinct spoofed sources, an MSS
option) and, for one row, SYNs with the options a Linux client sends (MSS, SACK, timestamps,
window scale). Each goes to an endpoint core whose table has no room for it (embryonic
limit 0), so the policy decides every SYN; the reference is the same core with its SYN fast
path switched off, in the same run. One more row sends the flood's SYNs through the endpoint
runtime (its receive loop, receive GRO as configured by default, the transmit of each answer)
on in-memory drivers, so the runtime's share shows without a system call. The figure is CPU
time (process time) per SYN, the best of a few rounds, so it holds on a busy machine; no
sockets, no lab.
"""
from __future__ import annotations

import argparse
import ipaddress
import random
import time

from scenarios.flood import build_syn_pool
from toe_engine.codec import build_tcp_frame
from toe_engine.endpoint import EndpointConfig, EndpointCore
from toe_engine.io.memory import MemoryDriver
from toe_engine.io.vnet import VNET_HDR_LEN
from toe_engine.resources import ExhaustionPolicy, ResourceConfig
from toe_engine.runtime.endpoint import EndpointRuntime, EndpointSettings
from toe_engine.segment import SYN, Segment, TcpOptions

from .rows import Measured, Row, row, table_of

SERVER_MAC, CLIENT_MAC = "02:00:00:00:05:03", "02:00:00:00:05:01"
SERVER_IP = "10.0.5.3"
SYNS = 20_000
ROUNDS = 3
#: (policy, what it does with a SYN, the SYNs' options: "flood" or "linux")
CASES: tuple[tuple[str, str, str], ...] = (
    ("syncookie", "answered with a cookie", "flood"),
    ("syncookie", "answered with a cookie, Linux client options", "linux"),
    ("deny:drop", "dropped and counted (deny)", "flood"),
    ("fallback", "handed to the host (fallback)", "flood"),
)
RUNTIME_LABEL = "answered with a cookie, through the endpoint runtime (in-memory drivers, its default receive GRO)"


def flood_frames(count: int, options: str, seed: int = 1) -> list[bytes]:
    """`count` distinct spoofed SYNs to the server's echo port: the flood generator's, or with Linux's options."""
    rng = random.Random(seed)
    if options == "flood":
        return build_syn_pool(count, src_mac=CLIENT_MAC, dst_mac=SERVER_MAC, dst=SERVER_IP, dport=7,
                              spoof=ipaddress.IPv4Network("10.99.0.0/16"), rng=rng)
    linux = TcpOptions(mss=1460, sack_permitted=True, timestamp=(0, 0), wscale=7)
    src_mac, dst_mac = bytes.fromhex(CLIENT_MAC.replace(":", "")), bytes.fromhex(SERVER_MAC.replace(":", ""))
    frames = []
    for i in range(count):
        linux.timestamp = (rng.getrandbits(32), 0)
        seg = Segment(1024 + i % 64000, 7, rng.getrandbits(32), 0, SYN, 64240, b"", linux)
        src = ipaddress.IPv4Address(int(ipaddress.IPv4Address("10.99.0.1")) + i).packed
        frames.append(bytes(build_tcp_frame(src_mac, dst_mac, src, ipaddress.IPv4Address(SERVER_IP).packed, seg)))
    return frames


def full_table_core(policy: str, fast: bool) -> EndpointCore:
    """An endpoint core serving echo whose table has no room for a SYN, with or without its SYN fast path."""
    config = EndpointConfig(bytes.fromhex(SERVER_MAC.replace(":", "")), (ipaddress.IPv4Address(SERVER_IP).packed,),
                            services={7: "echo"}, secret=b"toelab-bench",
                            resources=ResourceConfig(embryonic_limit=0, policy=ExhaustionPolicy.parse(policy)))
    core = EndpointCore(config)
    if not fast:
        core.syn_path = None
    return core


def syn_cpu_us(policy: str, fast: bool, frames: list[bytes]) -> float:
    """CPU microseconds per SYN for a fresh core under `policy` whose table has no room (best of ROUNDS)."""
    best = float("inf")
    for _ in range(ROUNDS):
        core = full_table_core(policy, fast)
        from_wire, poll = core.from_wire, core.poll_wire
        started = time.process_time()
        for frame in frames:
            from_wire(frame, 1000.0, False)  # checksums checked in software, as for a flood off a veth
            poll()
        best = min(best, (time.process_time() - started) / len(frames) * 1e6)
    return best


def runtime_syn_cpu_us(fast: bool, frames: list[bytes], budget: int = 64) -> float:
    """The same through EndpointRuntime.pump_wire on in-memory drivers, `budget` frames a batch (best of ROUNDS)."""
    with_header = [bytes(VNET_HDR_LEN) + frame for frame in frames]  # no checksum vouched for: checked in software
    best = float("inf")
    for _ in range(ROUNDS):
        wire, host = MemoryDriver("wire"), MemoryDriver("tap")
        settings = EndpointSettings.parse({"wire": "wire", "addresses": [SERVER_IP]})
        runtime = EndpointRuntime(full_table_core("syncookie", fast), wire, host, settings, budget)
        started = time.process_time()
        for start in range(0, len(with_header), budget):
            wire.put(with_header[start:start + budget])
            runtime.pump_wire(1000.0)
        best = min(best, (time.process_time() - started) / len(frames) * 1e6)
        if wire.counters.tx_frames != len(frames):
            raise RuntimeError(f"the runtime answered {wire.counters.tx_frames} of {len(frames)} flood SYNs")
    return best


def measure(count: int = SYNS) -> list[tuple[str, float, float]]:
    """(what the policy does, general path µs, fast path µs) for every case, same run."""
    pools = {options: flood_frames(count, options) for options in {options for *_, options in CASES}}
    measured = [(label, syn_cpu_us(policy, False, pools[options]), syn_cpu_us(policy, True, pools[options]))
                for policy, label, options in CASES]
    flood = pools["flood"]
    return measured + [(RUNTIME_LABEL, runtime_syn_cpu_us(False, flood), runtime_syn_cpu_us(True, flood))]


def syn_path_rows(measured: list[tuple[str, float, float]], syns: int = SYNS) -> list[Row]:
    """Rows of `bench syn_path`: fast path µs per SYN against the general path's, `syns` SYNs a round."""
    return [row("syn_path", f"engine CPU per flood SYN {label}: fast path (reference: general path)", "µs",
                round(general, 2), round(fast, 2), syns=syns, rounds=ROUNDS) for label, general, fast in measured]


def bench_syn_path(args: argparse.Namespace) -> Measured:
    rows = syn_path_rows(measure())
    return Measured(table_of("engine CPU per flood SYN at a full table, in memory: the SYN fast path against the "
                             "general path (same run, CPU time)", rows), rows)
