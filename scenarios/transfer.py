"""Bulk transfers from a kernel client to a target's services, and what their captures show.

Shared by the scenarios and benchmarks that move bulk data through a forwarding node (`loss`,
`lro_router`, `reordering`, `toelab bench loss`), all with the one client of `scenarios.clients`:
an echo transfer whose returned bytes are hashed (byte-exact delivery), a chargen download
timed by the client (throughput), a long-lived echo conversation, and readings of a capture taken on the sender's side:
retransmissions and the duplicate ACKs that came before them (RFC 5681 3.2), and the times
at which one segment was sent again and again (RFC 6298 backoff).
"""
from __future__ import annotations

import bisect
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab.tools import wait_for_line

from . import clients
from .wire import TcpFrame, tcp_frames

if TYPE_CHECKING:
    from lab.lab import Lab

    from .framework import RunContext

SEQ_MOD = 1 << 32
#: The client, run as a script: it needs only the standard library, so it starts without loading toelab.
CLIENT = (sys.executable, clients.__file__)
CAPTURE_POLL_S = 0.02


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


def _client(lab: Lab, node: str, args: list[Any], limit_s: float) -> dict[str, Any]:
    """Run `scenarios.clients` in `node` and return the JSON line it printed."""
    result = lab.node(node).run([*CLIENT, *map(str, args)], timeout=limit_s + 15)
    if not result.stdout.strip():
        raise RuntimeError(f"the client on {node} reported nothing: {result.stderr.strip()[-300:]}")
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def echo_bytes(lab: Lab, node: str, address: str, port: int, size: int, seed: int, limit_s: float) -> EchoResult:
    """From `node`, send `size` random bytes (seeded) to an echo service and hash what comes back within `limit_s`."""
    out = _client(lab, node, ["echo", address, port, size, seed, limit_s], limit_s)
    exact = out["bytes"] == size and out["got_sha256"] == out["sent_sha256"]
    return EchoResult(size, out["bytes"], out["seconds"], exact)


def download(lab: Lab, node: str, address: str, port: int, size: int, limit_s: float) -> DownloadResult:
    """From `node`, read `size` bytes from a chargen service; how many came within `limit_s` and how fast."""
    out = _client(lab, node, ["chargen", address, port, size, limit_s], limit_s)
    return DownloadResult(size, out["bytes"], out["seconds"])


def echo_transfer(ctx: RunContext, size: int, limit_s: float, port: int | None = None, address: str | None = None
                  ) -> EchoResult:
    """Send `size` seeded random bytes from the client to the target's echo service and hash what comes back."""
    return echo_bytes(ctx.lab, ctx.client, address or ctx.address(ctx.server), port or ctx.port("echo"), size,
                      ctx.rng.randrange(1 << 30), limit_s)


def chargen_download(ctx: RunContext, size: int, limit_s: float) -> DownloadResult:
    """Read `size` bytes from the target's chargen service; how many came within `limit_s` and how fast."""
    return download(ctx.lab, ctx.client, ctx.address(ctx.server), ctx.port("chargen"), size, limit_s)


class EchoConversation:
    """One long-lived echo connection from a node, driven message by message."""

    def __init__(self, lab: Lab, node: str, address: str, port: int) -> None:
        argv = [*CLIENT, "conversation", address, str(port)]
        self.proc = lab.node(node).popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        wait_for_line(self.proc, "connected", what="echo client")

    def send(self, size: int) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{size}\n".encode())
        self.proc.stdin.flush()

    def echoed(self, timeout_s: float) -> None:
        wait_for_line(self.proc, "echoed", what="echo reply", timeout_s=timeout_s)

    def round_trip(self, size: int, timeout_s: float = 5.0) -> None:
        self.send(size)
        self.echoed(timeout_s)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


# --- reading a sender-side capture ------------------------------------------------------------

@dataclass(frozen=True)
class Retransmission:
    """A segment sent again from the first unacknowledged byte, and what preceded it."""

    ts: float
    duplicate_acks: int
    since_third_duplicate_s: float | None
    since_original_s: float
    first_at_ack: bool = True  # the first retransmission at this cumulative ACK (a later one resends a lost resend)


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
    resent_at: set[int] = set()
    out: list[Retransmission] = []
    for f in frames:
        if (f.src, f.sport) == sender and f.payload_len > 0:
            start = _ahead(f.seq, base)
            end = start + f.payload_len
            if highest is None or end > highest:
                originals.append((max(start, highest or start), end, f.ts))
                highest = end
            elif ack_value is not None and start == ack_value:
                first_sent = _first_sent(originals, start, f.ts)
                third = dup_times[2] if len(dup_times) >= 3 else None
                out.append(Retransmission(f.ts, len(dup_times), None if third is None else f.ts - third,
                                          f.ts - first_sent, start not in resent_at))
                resent_at.add(start)
        elif (f.dst, f.dport) == sender and "A" in f.flags and not set(f.flags) & set("SFR"):
            ack = _ahead(f.ack, base)
            if ack_value is None or ack > ack_value:
                ack_value, dup_times = ack, []
            elif ack == ack_value and f.payload_len == 0 and highest is not None and highest > ack:
                dup_times.append(f.ts)
    return out


def resend_delays(frames: list[TcpFrame], sender: tuple[str, int]) -> list[float]:
    """For each segment `sender` sent again (any byte range, not only the first unacknowledged one), the time
    since its first byte was first sent: how long the loss took to repair."""
    data = [f for f in frames if (f.src, f.sport) == sender and f.payload_len > 0]
    if not data:
        return []
    base = data[0].seq
    originals: list[tuple[int, int, float]] = []  # (start, end, first send time), in sequence order
    highest: int | None = None
    out = []
    for f in data:
        start = _ahead(f.seq, base)
        end = start + f.payload_len
        if highest is None or end > highest:
            if highest is not None and start < highest:
                out.append(f.ts - _first_sent(originals, start, f.ts))
            originals.append((max(start, highest or start), end, f.ts))
            highest = end
        else:
            out.append(f.ts - _first_sent(originals, start, f.ts))
    return out


def _first_sent(originals: list[tuple[int, int, float]], start: int, default: float) -> float:
    index = bisect.bisect_right(originals, (start, SEQ_MOD, 0.0)) - 1
    return originals[index][2] if index >= 0 else default


def send_times(frames: list[TcpFrame], sender: tuple[str, int], payload_len: int) -> list[float]:
    """When `sender` sent (and re-sent) its first segment of exactly `payload_len` bytes."""
    mine = [f for f in frames if (f.src, f.sport) == sender and f.payload_len == payload_len]
    return [f.ts for f in mine if f.seq == mine[0].seq] if mine else []


def wait_for_capture(pcap: Path, condition: Callable[[list[TcpFrame]], bool], timeout_s: float) -> bool:
    """Read a growing capture until its frames satisfy `condition` or the time is up; whether they did.

    tcpdump hands packets over one by one and drops what it has not read yet when it is stopped,
    so a transfer that took milliseconds can end before its frames reach the file: stop the
    capture only once it holds what the check is about.
    """
    deadline = time.monotonic() + timeout_s
    while not condition(read_frames(pcap)):
        if time.monotonic() > deadline:
            return False
        time.sleep(CAPTURE_POLL_S)
    return True


def read_frames(pcap: Path) -> list[TcpFrame]:
    """The capture's TCP frames; a record being written as we read is left out."""
    return tcp_frames(pcap)
