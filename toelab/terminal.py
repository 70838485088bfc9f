"""Run a command on a pseudo-terminal and pass it through: output as it comes, keys in, Ctrl-C to it.

The command gets a new session whose controlling terminal is the pty, so it line-buffers
and behaves as at a prompt. When the user's own stdin is a terminal it is put in raw mode
for the command's lifetime (as `ssh -t` does): every key, Ctrl-C included, goes to the
command through the pty, whose line discipline turns Ctrl-C into SIGINT for the command's
process group and never for the shell. Without a terminal (tests, scripts) output is still
streamed, and a SIGINT the shell receives is passed on to the command instead of ending
the shell. A command that ignores SIGINT gets SIGKILL at the second interrupt.
"""
from __future__ import annotations

import fcntl
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import tty
from contextlib import contextmanager, nullcontext
from typing import IO, Callable, ContextManager, Iterator

from lab.interrupts import rearm

Spawn = Callable[..., "subprocess.Popen[bytes]"]
DRAIN_S = 0.05


def _make_controlling_terminal() -> None:  # runs in the child, after setsid (start_new_session)
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


@contextmanager
def _raw(fd: int) -> Iterator[None]:
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def run_on_pty(argv: list[str], out: IO[str], spawn: Spawn = subprocess.Popen,
               stdin: IO[str] | None = None) -> int:
    """Run `argv` (via `spawn`, e.g. a lab node's popen) on a new pty; its exit status (128+N for signal N)."""
    stdin = stdin if stdin is not None else sys.stdin
    interactive = stdin.isatty() and out is sys.stdout
    master, slave = os.openpty()
    if interactive:
        size = fcntl.ioctl(stdin.fileno(), termios.TIOCGWINSZ, struct.pack("HHHH", 0, 0, 0, 0))
        fcntl.ioctl(slave, termios.TIOCSWINSZ, size)
    try:
        proc = spawn(argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                     preexec_fn=_make_controlling_terminal)
    finally:
        os.close(slave)
    raw: ContextManager[None] = _raw(stdin.fileno()) if interactive else nullcontext()
    try:
        with raw:
            _pump(proc, master, out, stdin.fileno() if interactive else None)
    finally:
        os.close(master)
    code = proc.wait()
    return 128 - code if code < 0 else code


def _pump(proc: subprocess.Popen[bytes], master: int, out: IO[str], keys: int | None) -> None:
    interrupts = 0
    while True:
        try:
            fds = [master] + ([keys] if keys is not None else [])
            ready, _, _ = select.select(fds, [], [], DRAIN_S)
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every holder of the pty's other side is gone
                    data = b""
                if not data:
                    return
                out.write(data.decode(errors="replace"))
                out.flush()
            if keys is not None and keys in ready:
                os.write(master, os.read(keys, 4096) or b"\x04")
            if not ready and proc.poll() is not None:
                return  # exited, and nothing more to read (a background child may hold the pty open)
        except KeyboardInterrupt:
            interrupts += 1
            _signal_group(proc, signal.SIGINT if interrupts == 1 else signal.SIGKILL)
            rearm()  # this Ctrl-C was for the command; the next one may be for the shell again


def _signal_group(proc: subprocess.Popen[bytes], signum: int) -> None:
    try:
        os.killpg(proc.pid, signum)
    except ProcessLookupError:
        pass
