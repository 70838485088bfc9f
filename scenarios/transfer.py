"""Bulk transfers from a kernel client to a target's services, and what their captures show.

Shared by the scenarios that move bulk data through a forwarding node (`loss`, `lro_router`):
an echo transfer whose returned bytes are hashed (byte-exact delivery), a chargen download
timed by the client (throughput), and readings of a capture taken on the sender's side:
retransmissions and the duplicate ACKs that came before them (RFC 5681 3.2), and the times
at which one segment was sent again and again (RFC 6298 backoff).
"""
from __future__ import annotations

import bisect
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .wire import TcpFrame, tcp_frames

if TYPE_CHECKING:
    from .framework import RunContext

SEQ_MOD = 1 << 32

ECHO_CLIENT = r"""
import hashlib, json, random, socket, sys, threading, time
addr, port, size, seed, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
data = random.Random(seed).randbytes(size)
sock = socket.create_connection((addr, port), timeout=limit)
start = time.monotonic()
threading.Thread(target=sock.sendall, args=(data,), daemon=True).start()
digest, got, deadline = hashlib.sha256(), 0, start + limit
while got < size:
    sock.settimeout(max(0.01, deadline - time.monotonic()))
    try:
        chunk = sock.recv(1 << 16)
    except (socket.timeout, OSError):
        break
    if not chunk:
        break
    digest.update(chunk)
    got += len(chunk)
print(json.dumps({"bytes": got, "seconds": time.monotonic() - start,
                  "sent_sha256": hashlib.sha256(data).hexdigest(), "got_sha256": digest.hexdigest()}))
"""

CHARGEN_CLIENT = r"""
import json, socket, sys, time
addr, port, size, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
sock = socket.create_connection((addr, port), timeout=limit)
start = time.monotonic()
got, deadline = 0, start + limit
while got < size:
    sock.settimeout(max(0.01, deadline - time.monotonic()))
    try:
        chunk = sock.recv(1 << 16)
    except (socket.timeout, OSError):
        break
    if not chunk:
        break
    got += len(chunk)
print(json.dumps({"bytes": got, "seconds": time.monotonic() - start}))
"""


@dataclass(frozen=True)
class EchoResult:
    size: int
    bytes: int
    seconds: float
    exact: bool

    @property
    def mbit_per_s(self) -> float:
        return self.bytes * 8 / max(self.seconds, 1e-9) / 1e6


@dataclass(frozen=True)
class DownloadResult:
    size: int
    bytes: int
    seconds: float

    @property
    def complete(self) -> bool:
        return self.bytes >= self.size

    @property
    def mbit_per_s(self) -> float:
        return self.bytes * 8 / max(self.seconds, 1e-9) / 1e6


def _run_json(ctx: RunContext, script: str, args: list[Any], limit_s: float) -> dict[str, Any]:
    result = ctx.lab.node(ctx.client).run([sys.executable, "-c", script, *map(str, args)], timeout=limit_s + 15)
    if not result.stdout.strip():
        raise RuntimeError(f"the client on {ctx.client} reported nothing: {result.stderr.strip()[-300:]}")
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def echo_transfer(ctx: RunContext, size: int, limit_s: float, port: int | None = None, address: str | None = None
                  ) -> EchoResult:
    """Send `size` seeded random bytes to the echo service and hash what comes back within `limit_s`."""
    out = _run_json(ctx, ECHO_CLIENT, [address or ctx.address(ctx.server), port or ctx.port("echo"), size,
                                       ctx.rng.randrange(1 << 30), limit_s], limit_s)
    exact = out["bytes"] == size and out["got_sha256"] == out["sent_sha256"]
    return EchoResult(size, out["bytes"], out["seconds"], exact)


def chargen_download(ctx: RunContext, size: int, limit_s: float) -> DownloadResult:
    """Read `size` bytes from the chargen service; how many came within `limit_s` and how fast."""
    out = _run_json(ctx, CHARGEN_CLIENT, [ctx.address(ctx.server), ctx.port("chargen"), size, limit_s], limit_s)
    return DownloadResult(size, out["bytes"], out["seconds"])


# --- reading a sender-side capture ------------------------------------------------------------

@dataclass(frozen=True)
class Retransmission:
    """A segment sent again from the first unacknowledged byte, and what preceded it."""

    ts: float
    duplicate_acks: int
    since_third_duplicate_s: float | None
    since_original_s: float


def _ahead(a: int, b: int) -> int:
    """How far `a` is ahead of `b` in sequence space (negative if behind)."""
    diff = (a - b) % SEQ_MOD
    return diff - SEQ_MOD if diff >= SEQ_MOD // 2 else diff


def retransmissions_after_duplicate_acks(frames: list[TcpFrame], sender: tuple[str, int]) -> list[Retransmission]:
    """Retransmissions of the first unacknowledged byte by `sender` (addr, port), with the duplicate ACKs before each.

    A duplicate ACK (RFC 5681 2) is a pure ACK from the receiver that repeats the highest
    acknowledgment number seen while data is outstanding. The capture must be taken on the
    sender's side, where frames appear in the order the sender sent and saw them.
    """
    data = [f for f in frames if (f.src, f.sport) == sender and f.payload_len > 0]
    if not data:
        return []
    base = data[0].seq
    originals: list[tuple[int, int, float]] = []  # (start, end, first send time), in sequence order
    highest = None
    ack_value: int | None = None
    dup_times: list[float] = []
    out: list[Retransmission] = []
    for f in frames:
        if (f.src, f.sport) == sender and f.payload_len > 0:
            start = _ahead(f.seq, base)
            end = start + f.payload_len
            if highest is None or end > highest:
                originals.append((max(start, highest or start), end, f.ts))
                highest = end
            elif ack_value is not None and start == ack_value:
                index = bisect.bisect_right(originals, (start, SEQ_MOD, 0.0)) - 1
                first_sent = originals[index][2] if index >= 0 else f.ts
                third = dup_times[2] if len(dup_times) >= 3 else None
                out.append(Retransmission(f.ts, len(dup_times), None if third is None else f.ts - third,
                                          f.ts - first_sent))
        elif (f.dst, f.dport) == sender and "A" in f.flags and not set(f.flags) & set("SFR"):
            ack = _ahead(f.ack, base)
            if ack_value is None or ack > ack_value:
                ack_value, dup_times = ack, []
            elif ack == ack_value and f.payload_len == 0 and highest is not None and highest > ack:
                dup_times.append(f.ts)
    return out


def send_times(frames: list[TcpFrame], sender: tuple[str, int], payload_len: int) -> list[float]:
    """When `sender` sent (and re-sent) its first segment of exactly `payload_len` bytes."""
    mine = [f for f in frames if (f.src, f.sport) == sender and f.payload_len == payload_len]
    return [f.ts for f in mine if f.seq == mine[0].seq] if mine else []


def read_frames(pcap: Path) -> list[TcpFrame]:
    """The capture's TCP frames; a record being written as we read is left out."""
    return tcp_frames(pcap)
