"""SIGINT and SIGTERM as exceptions, so every `with` block and `finally` tears down what it made.

SIGINT is Python's KeyboardInterrupt (exit 130); SIGTERM becomes `Terminated`, a SystemExit
with status 143. `teardown_shielded` holds both while something is being removed, so a
second Ctrl-C during teardown is delivered only once teardown is over.
"""
from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class Terminated(SystemExit):
    """SIGTERM arrived: unwinds like an exception so teardown runs, then exits 143."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


def raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


def install() -> None:
    """Make SIGINT raise KeyboardInterrupt and SIGTERM raise Terminated in this (main) thread."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, raise_terminated)
        signal.signal(signal.SIGINT, signal.default_int_handler)


@contextmanager
def teardown_shielded() -> Iterator[None]:
    """Hold SIGINT and SIGTERM while tearing down, so a second Ctrl-C cannot cut teardown short."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
