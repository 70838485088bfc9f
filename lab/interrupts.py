"""SIGINT and SIGTERM as exceptions, so every `with` block and `finally` tears down what it made.

SIGINT is Python's KeyboardInterrupt (exit 130); SIGTERM becomes `Terminated`, a SystemExit
with status 143. With `install()` (the toelab command) only the first signal raises: later
ones while that one unwinds are noted and said, never raised into the teardown that is
running, so a second Ctrl-C cannot cut teardown short. `teardown_shielded` also holds both
signals while a lab is removed, for programs that did not install these handlers.
`note(activity)` records what the process is doing, so an interruption can say it.
"""
from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any


class Terminated(SystemExit):
    """SIGTERM arrived: unwinds like an exception so teardown runs, then exits 143."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


def raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


_state: dict[str, object] = {"activity": "", "unwinding": None}


def note(activity: str) -> None:
    """What this process is doing now, in a few words ("running syn_flood on toe: flooding")."""
    _state["activity"] = activity


def activity() -> str:
    return str(_state["activity"])


def received() -> int | None:
    """The signal being unwound from, if any."""
    value = _state["unwinding"]
    return value if isinstance(value, int) else None


def _first_signal_raises(signum: int, frame: FrameType | None) -> None:
    if _state["unwinding"] is not None:
        os.write(2, b"toelab: still removing what it made; it stops as soon as that is done\n")
        return
    _state["unwinding"] = signum
    if signum == signal.SIGTERM:
        raise Terminated()
    raise KeyboardInterrupt


def rearm() -> None:
    """After a Ctrl-C that was handled (it stopped one shell command), the next one raises again."""
    _state["unwinding"] = None


def settle() -> None:
    """The command is done: a signal from now until the process exits changes nothing, so it raises nothing."""
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)  # SIG_IGN, which Python's own shutdown leaves in place


Handlers = dict[int, Any]


def install() -> Handlers:
    """SIGINT raises KeyboardInterrupt and SIGTERM raises Terminated, once; later ones wait for teardown.

    Returns the handlers it replaced, for `restore`.
    """
    previous: Handlers = {}
    if threading.current_thread() is threading.main_thread():
        _state["unwinding"] = None
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, _first_signal_raises)
    return previous


def restore(previous: Handlers) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


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
