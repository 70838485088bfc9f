"""A lab node: run commands and start processes inside its network namespace.

Processes are spawned while the calling thread has stepped into the node's namespace
(`netns.entered`), rather than with `ip netns exec` or a `preexec_fn` that calls setns in
the child: a forked child inherits the spawning thread's network namespace, so nothing needs
to run in the child, subprocess may use vfork, and no extra `ip` process is forked. The cost
is that /sys is not remounted, so /sys/class/net shows the root namespace's interfaces;
tools that matter here (ip, ethtool, tcpdump, nft, ping, iperf3) use netlink and ioctls and
are not affected. Run `ip netns exec NAME ...` as the command when sysfs must match.
"""
from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import netns
from .errors import BackendError


@dataclass(frozen=True)
class RunResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def argv_of(cmd: str | list[str]) -> list[str]:
    """A string is a shell command line; a list is an argv."""
    return ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)


class Node:
    """One node of a running lab (one named network namespace)."""

    def __init__(self, name: str, kind: str, netns_name: str,
                 on_spawn: Callable[[Node, subprocess.Popen[Any], list[str]], None]) -> None:
        self.name = name
        self.kind = kind
        self.netns = netns_name
        self._on_spawn = on_spawn

    def __repr__(self) -> str:
        return f"<Node {self.name} ({self.kind}) in {self.netns}>"

    def run(self, cmd: str | list[str], timeout: float = 30, check: bool = False,
            input: str | None = None) -> RunResult:
        """Run a command to completion inside the node; output is captured as text."""
        argv = argv_of(cmd)
        with netns.entered(self.netns):
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            stdout, stderr = proc.communicate(input, timeout=timeout)
        except BaseException:
            proc.kill()
            proc.communicate()
            raise
        result = RunResult(proc.returncode, stdout, stderr)
        if check and result.returncode != 0:
            raise BackendError(f"node {self.name}: {cmd!r} exited with {result.returncode}: {stderr.strip()[-500:]}")
        return result

    def popen(self, cmd: str | list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a process inside the node and leave it running.

        The lab records its PID and kills it (with its process group) at teardown. It leads a
        new session unless `start_new_session=False` is given, so the whole group it spawns
        can be killed and a terminal's Ctrl-C reaches the lab, not the process directly.
        """
        argv = argv_of(cmd)
        kwargs.setdefault("start_new_session", True)
        with netns.entered(self.netns):
            proc = subprocess.Popen(argv, **kwargs)
        self._on_spawn(self, proc, argv)
        return proc

    @property
    def namespace_path(self) -> Path:
        """The node's namespace as a file (/run/netns/NAME): its inode identifies the namespace."""
        return netns.path_of(self.netns)

    @contextmanager
    def inside(self) -> Iterator[None]:
        """Step the calling thread into the node's namespace: sockets made meanwhile belong to the node.

            with lab.node("h1").inside():
                sock = socket.create_connection((lab.address("h2"), 7))
        """
        with netns.entered(self.netns):
            yield

    def write_sysctls(self, settings: dict[str, str | int]) -> None:
        """Set net.* sysctls of the node (`{"net.ipv4.tcp_syncookies": 1}`); BackendError names a refused one."""
        from .netlink import write_sysctls

        write_sysctls(self.netns, settings)
