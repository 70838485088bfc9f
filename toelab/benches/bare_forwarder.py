"""The least a user-space AF_PACKET forwarder can do: the ceiling the engine middlebox is measured against.

    python -m toelab.benches.bare_forwarder IFACE_A IFACE_B

Run in a node whose two ports carry no addresses (`middlebox_chain` with mb_kind=host,
mode=bridge). It opens both ports as the engine middlebox does (toe_engine.io.AfPacketDriver:
a virtio-net header per frame, so GSO super-frames cross whole and partial checksums stay
partial; PACKET_IGNORE_OUTGOING; 8 MiB socket buffers), waits in epoll, and sends each frame it
reads (os.readv into the port's one receive buffer) out of the other port unchanged (os.write),
up to the middlebox's budget of frames per port and wake-up. No parse, no stage, no per-frame
counters beyond a frame and byte sum: whatever the engine's middlebox costs beyond this process
is its own code, and what this process costs is the two copies (kernel to user and back) and the
two system calls any user-space forwarder on these sockets pays.

With --spin it never sleeps in epoll; with --busy-poll US it polls that long before each sleep,
the engine's busy_poll rule (runtime.loop), so the two busy-polling rows compare like for like.

It prints "ready" once both ports are open; SIGTERM or SIGINT stop it at the next wake-up (a
signal wake-up descriptor in the same epoll), and it prints one JSON line of what it carried.
A port that does not exist is one sentence on stderr and exit status 2; a port that fails while
forwarding (other than a full send queue, which drops the frame) is one sentence and status 1.
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from toe_engine.io import AfPacketDriver, FrameDriver, IoSetupError
from toe_engine.runtime.loop import MAX_BUSY_POLL_US

if TYPE_CHECKING:
    from lab.lab import Lab

#: Frames taken from one port per wake-up before the other gets its turn: the middlebox's default.
BUDGET = 64
PROG = "bare_forwarder"
MODULE = "toelab.benches.bare_forwarder"
READY_TIMEOUT_S = 15.0
_WOULD_DROP = (errno.EAGAIN, errno.ENOBUFS)


@dataclass
class Carried:
    """What one direction carried: frames and bytes read (virtio-net headers included), and frames
    its sink refused for want of room (dropped, as a full NIC queue would)."""

    frames: int = 0
    bytes: int = 0
    dropped: int = 0


def forward(a: FrameDriver, b: FrameDriver, stop_fd: int, budget: int = BUDGET,
            spin: bool = False, busy_poll: float = 0.0) -> tuple[Carried, Carried]:
    """Forward between `a` and `b` until `stop_fd` is readable; what went a to b and b to a.

    `spin` polls epoll without ever sleeping (no wake-up latency, a core's worth of CPU);
    `busy_poll` (seconds) polls that long before each sleep, the engine's rule (runtime.loop)."""
    a_to_b, b_to_a = Carried(), Carried()
    # per readable fd: (fd to write, the iovec and view of the source's receive buffer, its tally)
    ways = {a.fd: (b.fd, [a.rx_view], a.rx_view, a_to_b), b.fd: (a.fd, [b.rx_view], b.rx_view, b_to_a)}
    readv, write = os.readv, os.write
    with select.epoll() as epoll:
        for fd in (a.fd, b.fd, stop_fd):
            epoll.register(fd, select.EPOLLIN)
        poll, clock = epoll.poll, time.monotonic
        while True:
            events = poll(0) if spin or busy_poll else []
            if busy_poll and not events:
                until = clock() + busy_poll
                while not events and clock() < until:
                    events = poll(0)
            if not events and not spin:
                events = poll(-1)
            for fd, _ in events:
                if fd == stop_fd:
                    return a_to_b, b_to_a
                out, iov, view, carried = ways[fd]
                count = total = dropped = 0
                while count < budget:
                    try:
                        n = readv(fd, iov)
                    except BlockingIOError:
                        break
                    count += 1
                    total += n
                    try:
                        write(out, view[:n])
                    except OSError as exc:
                        if exc.errno not in _WOULD_DROP:
                            raise
                        dropped += 1
                carried.frames += count
                carried.bytes += total
                carried.dropped += dropped


def _stop_descriptor() -> int:
    """A pipe's read end that becomes readable on SIGTERM or SIGINT (the interpreter writes the signal to it)."""
    read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)
    return read_end


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description="bare user-space AF_PACKET forwarder between two ports "
                                                            "(a benchmark reference, not the engine)")
    parser.add_argument("a", metavar="IFACE_A", help="one port (an interface of this namespace)")
    parser.add_argument("b", metavar="IFACE_B", help="the other port")
    parser.add_argument("--spin", action="store_true", help="busy-poll: never sleep in epoll (takes a whole core)")
    parser.add_argument("--busy-poll", type=int, default=0, metavar="US",
                        help="poll this many microseconds before each sleep (the engine's busy_poll rule)")
    args = parser.parse_args(argv)
    if not 0 <= args.busy_poll <= MAX_BUSY_POLL_US:
        print(f"{PROG}: --busy-poll must be from 0 to {MAX_BUSY_POLL_US} microseconds, got {args.busy_poll}",
              file=sys.stderr)
        return 2
    if args.a == args.b:
        print(f"{PROG}: both ports are {args.a!r}; a forwarder needs two interfaces", file=sys.stderr)
        return 2
    stop_fd = _stop_descriptor()
    drivers: list[AfPacketDriver] = []
    try:
        try:
            for ifname in (args.a, args.b):
                drivers.append(AfPacketDriver(ifname))
        except IoSetupError as exc:
            print(f"{PROG}: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:
            print(f"{PROG}: cannot open an AF_PACKET socket on {ifname!r}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        print("ready", flush=True)
        try:
            a_to_b, b_to_a = forward(drivers[0], drivers[1], stop_fd, spin=args.spin, busy_poll=args.busy_poll / 1e6)
        except OSError as exc:
            print(f"{PROG}: forwarding between {args.a!r} and {args.b!r} failed: {exc.strerror or exc}", file=sys.stderr)
            return 1
    finally:
        for driver in drivers:
            driver.close()
    print(json.dumps({"a_to_b": vars(a_to_b), "b_to_a": vars(b_to_a)}), flush=True)
    return 0


class BareForwarder:
    """The bare forwarder running in a lab node, between two of its ports: `stop()` ends it (its PID
    only) and returns what it carried each way."""

    def __init__(self, lab: Lab, node: str = "mb", ports: tuple[str, str] = ("eth0", "eth1"),
                 spin: bool = False, busy_poll_us: int = 0) -> None:
        from lab.tools import wait_for_line

        argv = [sys.executable, "-m", MODULE, *ports, *(["--spin"] if spin else []),
                *([f"--busy-poll={busy_poll_us}"] if busy_poll_us else [])]
        self.proc = lab.node(node).popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.pid = self.proc.pid
        self.carried: dict[str, Any] | None = None
        self.stderr = ""
        try:
            wait_for_line(self.proc, "ready", what=f"bare forwarder on node {node}", timeout_s=READY_TIMEOUT_S)
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"{exc} ({self.stderr or 'nothing on stderr'})") from None

    def stop(self) -> dict[str, Any]:
        """Stop it (SIGTERM, then SIGKILL after 10 s) and return its JSON line, {} if it printed none."""
        if self.carried is not None:
            return self.carried
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            out, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate(timeout=5)
        self.stderr = err.decode(errors="replace").strip()
        lines = [line for line in out.decode(errors="replace").splitlines() if line.startswith("{")]
        self.carried = json.loads(lines[-1]) if lines else {}
        return self.carried


if __name__ == "__main__":
    sys.exit(main())
