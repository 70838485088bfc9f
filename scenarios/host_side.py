"""The host side of a server node, and kernel-socket flows to it, for the claim scenarios.

A claim about offload is a comparison between flows the host stack carries and flows the
engine carries, on the same node in the same run. On the `kernel` target every flow is the
host stack's; on `toe` the engine terminates its service ports and the node's kernel sits
behind the engine's TAP. So the claim scenarios give the server node a second set of
services on ports the engine does not serve (`HOST_PORTS`): whatever the target, flows to
them are host-stack flows, the yardstick the service-port flows are measured against.

The host stack's interface is the one holding the server's address (eth0 for the kernel,
the TAP for the engine): a shaper, a netfilter rule or a sysctl placed there is placed on
the host stack exactly.

Client flows run in this process, with sockets opened inside the client node, so a
download or an upload costs no fork and is timed where its bytes arrive.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lab.tools import wait_for_line

if TYPE_CHECKING:
    from lab.lab import Lab
    from lab.node import Node

#: Host-stack services on ports the engine does not serve, by application.
HOST_PORTS: dict[str, int] = {"echo": 5007, "discard": 5009, "chargen": 5019}
CHUNK = 1 << 16


@dataclass(frozen=True)
class Flow:
    """One client flow: bytes moved, how long it took, whether all of them moved."""

    size: int
    bytes: int
    seconds: float
    error: str = ""

    @property
    def complete(self) -> bool:
        return self.bytes >= self.size and not self.error

    @property
    def mbit_per_s(self) -> float:
        return self.bytes * 8 / max(self.seconds, 1e-9) / 1e6


def host_interface(lab: Lab, node: str, address: str) -> str:
    """The interface of `node` that holds `address`: where the host stack meets the node's traffic."""
    out = lab.node(node).run(["ip", "-o", "addr", "show", "to", address], check=True).stdout.split()
    if len(out) < 2:
        raise RuntimeError(f"no interface of node {node} holds {address}")
    return out[1].split("@")[0]


@contextmanager
def host_services(lab: Lab, node: str) -> Iterator[dict[str, int]]:
    """Kernel services on HOST_PORTS in `node`, for as long as the block runs."""
    argv = [sys.executable, "-m", "lab.services"] + [f"{a}={p}" for a, p in HOST_PORTS.items()]
    proc = lab.node(node).popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for_line(proc, "ready", what=f"host-stack services on {node}")
        yield dict(HOST_PORTS)
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def client_socket(node: Node) -> socket.socket:
    """A TCP socket of `node`'s namespace (a socket belongs to the namespace it was created in)."""
    with node.inside():
        return socket.socket(socket.AF_INET, socket.SOCK_STREAM)


def download(node: Node, address: str, port: int, size: int, limit_s: float) -> Flow:
    """Read `size` bytes from a chargen service; timed from the first byte asked to the last received."""
    got, error = 0, ""
    sock = client_socket(node)
    start = time.monotonic()
    try:
        with sock:
            _connect(sock, address, port, limit_s)
            deadline = start + limit_s
            while got < size:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = sock.recv(CHUNK)
                if not chunk:
                    error = "closed early"
                    break
                got += len(chunk)
    except OSError as exc:
        error = f"{type(exc).__name__}: {exc}"
    return Flow(size, got, time.monotonic() - start, error)


def upload(node: Node, address: str, port: int, size: int, limit_s: float) -> Flow:
    """Send `size` bytes to a discard service and wait for its FIN, so every byte is counted as received."""
    block = bytes(CHUNK)
    sent, error = 0, ""
    sock = client_socket(node)
    start = time.monotonic()
    try:
        with sock:
            _connect(sock, address, port, limit_s)
            while sent < size:
                sent += sock.send(block[:min(CHUNK, size - sent)])
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(max(0.01, start + limit_s - time.monotonic()))
            if sock.recv(1):
                error = "discard answered with data"
    except OSError as exc:
        error = f"{type(exc).__name__}: {exc}"
    return Flow(size, sent, time.monotonic() - start, error)


def _connect(sock: socket.socket, address: str, port: int, timeout_s: float) -> None:
    sock.settimeout(timeout_s)
    sock.connect((address, port))


def connects(node: Node, address: str, port: int, timeout_s: float) -> bool:
    """Whether a handshake to `address:port` completes within `timeout_s`."""
    sock = client_socket(node)
    with sock:
        sock.settimeout(timeout_s)
        try:
            sock.connect((address, port))
        except OSError:
            return False
    return True


def hold_open(node: Node, address: str, port: int, timeout_s: float = 3.0) -> socket.socket:
    """An established connection, left open for the caller to close; its local port identifies it."""
    sock = client_socket(node)
    sock.settimeout(timeout_s)
    sock.connect((address, port))
    return sock


@dataclass(frozen=True)
class SetupBatch:
    """Sequential connect-and-close to one port: how many completed, in what time, at what CPU to this thread."""

    ok: int
    seconds: float
    client_cpu_s: float

    @property
    def per_s(self) -> float:
        return self.ok / max(self.seconds, 1e-9)


def setup_batch(node: Node, address: str, port: int, count: int, timeout_s: float) -> SetupBatch:
    """`count` sequential connect-and-close from `node`; the CPU is the calling thread's, to the nanosecond,
    which includes the kernel work done in its context (its own TCP, and over loopback the peer's too)."""
    ok = 0
    start, cpu = time.monotonic(), time.thread_time()
    for _ in range(count):
        ok += connects(node, address, port, timeout_s)
    return SetupBatch(ok, time.monotonic() - start, time.thread_time() - cpu)


def rx_packets(node: Node, iface: str) -> int:
    """Frames `iface` of `node` has received (its /proc/net/dev row, read from inside the node)."""
    with node.inside():
        text = Path("/proc/thread-self/net/dev").read_text()
    received = net_dev_rx_packets(text, iface)
    if received is None:
        raise RuntimeError(f"node {node.name} has no interface {iface}")
    return received


def net_dev_rx_packets(text: str, iface: str) -> int | None:
    """The received-packets column of `iface`'s row in /proc/net/dev text; None without such a row."""
    for line in text.splitlines():
        name, colon, fields = line.partition(":")
        if colon and name.strip() == iface:
            return int(fields.split()[1])
    return None


@dataclass(frozen=True)
class Stream:
    """A download read for a set time: cumulative bytes at each sample time (seconds from the start)."""

    port: int
    samples: tuple[tuple[float, int], ...]
    error: str = ""

    def bytes_between(self, start_s: float, end_s: float) -> int:
        """Bytes received from `start_s` to `end_s`, from the samples nearest inside the window."""
        inside = [(t, n) for t, n in self.samples if start_s <= t <= end_s]
        return inside[-1][1] - inside[0][1] if len(inside) >= 2 else 0


def stream(node: Node, address: str, port: int, duration_s: float, start: threading.Barrier) -> Stream:
    """Read a chargen service for `duration_s` once every flow sharing `start` is ready, sampling as bytes arrive.

    The socket connects first, then waits at the barrier, so flows sharing one start together.
    """
    sock = client_socket(node)
    samples: list[tuple[float, int]] = []
    got, error = 0, ""
    try:
        with sock:
            _connect(sock, address, port, duration_s)
            start.wait(timeout=duration_s)
            begin = time.monotonic()
            end = begin + duration_s
            samples.append((0.0, 0))
            while (now := time.monotonic()) < end:
                sock.settimeout(max(0.01, end - now))
                try:
                    chunk = sock.recv(CHUNK)
                except TimeoutError:
                    break
                if not chunk:
                    error = "closed early"
                    break
                got += len(chunk)
                samples.append((time.monotonic() - begin, got))
    except (OSError, threading.BrokenBarrierError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    return Stream(port, tuple(samples), error)
