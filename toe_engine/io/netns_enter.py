"""Enter a network namespace in the calling thread only, and come back.

Sockets and TAP devices belong to the namespace their creator was in when it made them and stay
there, so a driver only needs to be inside the namespace while it opens its file descriptor.
`setns(2)` with CLONE_NEWNET changes just the calling thread, which lets one process (and one
event loop) hold interfaces of several namespaces. Python 3.11 has no `os.setns`, hence ctypes.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Iterator
from contextlib import contextmanager

from toe_engine.io.errors import NamespaceNotFoundError

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.setns.argtypes = (ctypes.c_int, ctypes.c_int)
_libc.unshare.argtypes = (ctypes.c_int,)


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    """Move the calling thread into the namespace that `fd` refers to."""
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns(fd {fd}): {os.strerror(err)}")


def unshare(flags: int = CLONE_NEWNET) -> None:
    """Give the calling thread new namespaces of the kinds in `flags`."""
    if _libc.unshare(flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare({flags:#x}): {os.strerror(err)}")


def netns_path(name: str) -> str:
    return os.path.join(NETNS_RUN_DIR, name)


def open_netns(name: str) -> int:
    """An O_RDONLY descriptor of the named namespace; a clear error if it does not exist."""
    try:
        return os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NamespaceNotFoundError(name) from None


@contextmanager
def in_netns(netns: str | int | None) -> Iterator[None]:
    """Run the body with the calling thread in `netns` (a /run/netns name or an open fd).

    `None` means "stay where you are", so callers can pass an optional namespace straight in.
    The thread's original namespace is restored on exit, also when the body raises.
    """
    if netns is None:
        yield
        return
    target_fd = open_netns(netns) if isinstance(netns, str) else netns
    home_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(target_fd)
        try:
            yield
        finally:
            setns(home_fd)
    finally:
        os.close(home_fd)
        if isinstance(netns, str):
            os.close(target_fd)
