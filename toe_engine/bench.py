"""`toelab bench core`: the engine core's cost, in memory, with no I/O.

Bulk transfer throughput in MB per CPU-second with MSS-sized frames and with 64 KiB
super-frames (TSO on the sender, GSO-style delivery), and the per-frame cost of an
in-order data segment with 1, 1,000 and 64,000 connections open (it should stay flat:
demultiplexing is a dict lookup and timers are a heap).
"""
from __future__ import annotations

import argparse
import time

from rich.table import Table

from lab.bench import BENCHES
from toe_engine.codec import build_tcp_frame
from toe_engine.endpoint import EndpointConfig, EndpointCore
from toe_engine.impair import ImpairmentSpec
from toe_engine.resources import ResourceConfig
from toe_engine.segment import ACK, SYN, Segment, TcpOptions
from toe_engine.tcp.config import TcpConfig
from toe_engine.testing import IP_B, MAC_A, MAC_B, FrameHarness

DISCARD = 9
BUF = 4 * 1024 * 1024


def bulk_mb_per_cpu_s(size: int, tso_segments: int, super_frames: bool, rx_csum_offload: bool) -> tuple[float, int]:
    """MB of payload echoed per CPU-second of both cores together, and frames carried."""
    harness = FrameHarness(a_to_b=ImpairmentSpec(), b_to_a=ImpairmentSpec(), super_frames=super_frames,
                           rx_csum_offload=rx_csum_offload,
                           tcp=TcpConfig(tso_segments=tso_segments, rcv_buf=BUF, snd_buf=BUF, wscale=8))
    start = time.process_time()
    intact, _ = harness.echo_transfer(size)
    cpu = time.process_time() - start
    if not intact:
        raise RuntimeError("the benchmark transfer was not byte-exact")
    return 2 * size / 1e6 / cpu, harness.frames  # echo moves every byte twice


def _client_ip(i: int) -> bytes:
    return bytes([198, 18 + (i >> 16), (i >> 8) & 0xFF, i & 0xFF])  # RFC 2544 benchmarking range


def per_frame_cost_us(open_connections: int, frames: int = 20000) -> float:
    """Microseconds per in-order 1448-byte data frame on one connection among `open_connections`."""
    core = EndpointCore(EndpointConfig(MAC_B, (IP_B,), services={DISCARD: "discard"},
                                       tcp=TcpConfig(rcv_buf=BUF, wscale=8, delayed_ack=0.04),
                                       resources=ResourceConfig(capacity=open_connections + 1,
                                                                pool_bytes=1 << 34), secret=b"bench"))
    now = 1.0
    last = None
    for i in range(open_connections):
        ip, port, isn = _client_ip(i), 1024 + i % 60000, 1000
        core.neighbors.learn(ip, MAC_A)
        syn = Segment(port, DISCARD, isn, 0, SYN, 65535, b"", TcpOptions(mss=1460, wscale=8, sack_permitted=True))
        core.from_wire(build_tcp_frame(MAC_A, MAC_B, ip, IP_B, syn), now, csum_ok=True)
        synack = core.poll_wire()[-1]
        ack_of = int.from_bytes(synack.frame[38:42], "big") + 1
        core.from_wire(build_tcp_frame(MAC_A, MAC_B, ip, IP_B, Segment(port, DISCARD, isn + 1, ack_of, ACK, 4096)),
                       now, csum_ok=True)
        core.poll_wire()
        last = (ip, port, isn + 1, ack_of)
    assert last is not None and len(core.stack) == open_connections
    ip, port, seq, ack = last
    payload = bytes(1448)
    batch = [build_tcp_frame(MAC_A, MAC_B, ip, IP_B, Segment(port, DISCARD, (seq + k * 1448) & 0xFFFFFFFF, ack, ACK,
                                                            4096, payload)) for k in range(frames)]
    start = time.perf_counter()
    for frame in batch:
        core.from_wire(frame, now, csum_ok=True)
        core.poll_wire()
    elapsed = time.perf_counter() - start
    if core.apps and sum(a.received for a in core.apps.values()) < frames * 1448:
        raise RuntimeError("the benchmark frames were not all delivered")
    return elapsed / frames * 1e6


def bench_core(args: argparse.Namespace) -> Table:
    table = Table(title="engine core in memory (no I/O): bulk echo and per-frame cost")
    for column in ("measurement", "result", "frames"):
        table.add_column(column, justify="right")
    size = 16 * 1024 * 1024
    for label, tso, whole, offload in (("MSS frames, software checksums", 1, False, False),
                                       ("MSS frames, checksum offload", 1, False, True),
                                       ("64 KiB super-frames (TSO+GSO)", 44, True, True)):
        rate, frames = bulk_mb_per_cpu_s(size, tso, whole, offload)
        table.add_row(f"bulk echo, {label}", f"{rate:.1f} MB/CPU-s ({rate * 8 / 1000:.2f} Gbit/CPU-s)", str(frames))
    for n in (1, 1000, 64000):
        table.add_row(f"in-order 1448 B data frame, {n} connections open", f"{per_frame_cost_us(n):.1f} µs/frame", "20000")
    return table


BENCHES["core"] = (False, bench_core)


def _forwarding_gbit(params: dict[str, str], seconds: float) -> float:
    from lab.lab import Lab
    from lab.render import load_topology
    from lab.tools import iperf

    with Lab.up(load_topology("middlebox_chain", params)) as lab:
        return iperf(lab, "h1", "h2", seconds=seconds).gbit_per_s


def bench_middlebox(args: argparse.Namespace) -> Table:
    """Forwarding throughput of the engine middlebox next to a kernel router, same run."""
    table = Table(title="forwarding h1 -> mb -> h2 (iperf3), engine middlebox vs kernel router, same run")
    for column in ("forwarding node", "Gbit/s", "ratio to kernel"):
        table.add_column(column, justify="right")
    kernel = _forwarding_gbit({"mb_kind": "router"}, args.seconds)
    table.add_row("kernel router (GRO off)", f"{kernel:.2f}", "1.00")
    for label, params in (("engine, router mode", {"mode": "router"}),
                          ("engine, bridge mode", {"mode": "bridge"}),
                          ("engine, router mode, GRO", {"mode": "router", "coalesce": "gro"})):
        rate = _forwarding_gbit(params, args.seconds)
        table.add_row(label, f"{rate:.2f}", f"{rate / kernel:.2f}")
    return table


BENCHES["middlebox"] = (True, bench_middlebox)
