"""Micro-benchmark of the per-packet path: parse and build rates, checksum throughput,
TSO and GRO rates. Run: python tests/bench_codec.py"""
from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

from toe_engine.checksum import internet_checksum
from toe_engine.codec import build_tcp_frame, parse_frame
from toe_engine.offload import Gro, segment_frame
from toe_engine.segment import ACK, Segment, TcpOptions

MAC_A, MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
SRC, DST = socket.inet_pton(socket.AF_INET, "10.0.0.1"), socket.inet_pton(socket.AF_INET, "10.0.0.2")


def rate(action: Callable[[], object], seconds: float = 0.5) -> float:
    """Calls per second of `action`, measured over about `seconds`."""
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(100):
            action()
        count += 100
    return count / elapsed


def main() -> None:
    seg = Segment(40000, 80, 1, 2, ACK, 502, os.urandom(1448), TcpOptions(timestamp=(1, 2)))
    frame = bytes(build_tcp_frame(MAC_A, MAC_B, SRC, DST, seg))
    big = os.urandom(65536)
    print(f"parse_frame 1448 B + csum verify : {rate(lambda: parse_frame(frame)):>12,.0f} frames/s")
    print(f"parse_frame 1448 B, no verify    : {rate(lambda: parse_frame(frame, False)):>12,.0f} frames/s")
    print(f"build_tcp_frame 1448 B           : {rate(lambda: build_tcp_frame(MAC_A, MAC_B, SRC, DST, seg)):>12,.0f} frames/s")
    print(f"checksum 64 KiB                  : {rate(lambda: internet_checksum(big)) * 65536 / 1e6:>12,.0f} MB/s")
    super_seg = Segment(40000, 80, 1, 2, ACK, 502, big[:65000], TcpOptions(timestamp=(1, 2)))
    super_frame = bytes(build_tcp_frame(MAC_A, MAC_B, SRC, DST, super_seg))
    tso_rate = rate(lambda: segment_frame(super_frame, 1448))
    print(f"TSO 65000 B -> 45 frames         : {tso_rate:>12,.0f} sends/s ({tso_rate * 45:,.0f} frames/s)")
    frames = segment_frame(super_frame, 1448)

    def gro_burst() -> None:
        gro = Gro()
        for f in frames:
            gro.receive(f)
        gro.flush_all()

    gro_rate = rate(gro_burst)
    print(f"GRO 45 frames -> 1 aggregate     : {gro_rate:>12,.0f} bursts/s ({gro_rate * 45:,.0f} frames/s)")


if __name__ == "__main__":
    main()
