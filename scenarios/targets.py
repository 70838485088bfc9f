"""Targets: the TCP implementation a scenario tests, started on the scenario's server node.

Every target offers the same services on the same ports (discard, echo, chargen, http) and its
own counters, so a scenario is written once and run against each. `kernel` is the Linux stack of
the server's namespace; `toe` is toelab's engine as an endpoint on that node.
"""
from __future__ import annotations

import subprocess
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from lab.tools import wait_for_line

if TYPE_CHECKING:
    from lab.lab import Lab

#: Well-known ports, as the engine's built-in applications use them too.
SERVICE_PORTS: dict[str, int] = {"echo": 7, "discard": 9, "chargen": 19, "http": 80}


#: Counters every target reports, under these names or mapped by `Target.standard_counters`.
STANDARD_COUNTERS = ("rx_csum_errors", "out_segments", "in_segments", "retransmits", "resets_sent",
                     "syncookies_sent", "syncookies_ok", "syncookies_failed", "listen_drops", "timeouts")


class TargetUnavailable(Exception):
    """This target cannot run here (yet); the message is the skip reason."""


class Target(ABC):
    """A TCP implementation under test, serving on one node of a lab."""

    name: ClassVar[str]
    #: toelab's names for counters every target has -> this target's own names for them.
    standard_counters: ClassVar[dict[str, str]] = {name: name for name in STANDARD_COUNTERS}

    def unavailable_reason(self) -> str | None:
        """Why this target cannot run at all, or None; checked before a lab is built."""
        return None

    @abstractmethod
    def start(self, lab: Lab, node: str) -> dict[str, int]:
        """Start serving on `node`; returns the services' ports by name (`discard`, `echo`, `chargen`, `http`)."""

    @abstractmethod
    def counters(self) -> dict[str, int]:
        """The target's counters now (names are the target's own), for deltas and evidence."""

    def stop(self) -> None:
        """Stop what `start` started; the lab's teardown kills anything left."""

    # --- resource-exhaustion policy (SYN floods, full tables) -------------------------
    # A target names the policies it can be switched to; scenarios run each one and judge it
    # by what its name promises. Shared names: `syncookie` (answer with SYN cookies once the
    # table is full: keep serving), `deny` (drop what does not fit: refuse), `fallback`
    # (hand what does not fit to another stack: keep serving). A target may add its own.
    def policies(self) -> tuple[str, ...]:
        """The policies `set_policy` accepts, in the order a scenario should try them."""
        return ()

    def set_policy(self, name: str) -> dict[str, int | str]:
        """Switch the running target to policy `name`; returns the settings applied, as evidence."""
        raise ValueError(f"target {self.name} has no policy {name!r} (it has: {', '.join(self.policies()) or 'none'})")

    def half_open(self) -> int | None:
        """Connections in SYN-RECEIVED now (the table a SYN flood fills), or None if it cannot tell."""
        return None

    def half_open_limit(self, port: int) -> int | None:
        """How many SYN-RECEIVED entries the listener on `port` holds under the current policy before
        the policy decides (the table is full), or None if it cannot tell; a flood must reach it."""
        return None

    # --- settings some scenarios change -----------------------------------------------
    # A target that cannot make a change raises NotImplementedError with the reason, which
    # the scenario turns into a skip of the checks that need it.
    def add_address(self, lab: Lab, node: str, cidr: str) -> None:
        """Serve on one more IPv4 address `cidr` (address/prefix) of `node`'s first interface, on the target's side."""
        raise NotImplementedError(f"target {self.name} cannot add an address to its interface")

    def set_retries(self, r2: int) -> dict[str, int | str]:
        """Give up a connection after `r2` unanswered retransmissions (RFC 9293 R2); returns the settings applied."""
        raise NotImplementedError(f"target {self.name} cannot change its retransmission limit R2")


class KernelTarget(Target):
    """The Linux stack of the server namespace, serving with kernel sockets."""

    name = "kernel"
    standard_counters = {"rx_csum_errors": "TcpInCsumErrors", "out_segments": "TcpOutSegs",
                         "in_segments": "TcpInSegs", "retransmits": "TcpRetransSegs", "resets_sent": "TcpOutRsts",
                         "syncookies_sent": "TcpExtSyncookiesSent", "syncookies_ok": "TcpExtSyncookiesRecv",
                         "syncookies_failed": "TcpExtSyncookiesFailed", "listen_drops": "TcpExtListenDrops",
                         "timeouts": "TcpExtTCPTimeouts"}

    #: Policies as values of net.ipv4.tcp_syncookies in the server's namespace.
    SYNCOOKIE_POLICIES: ClassVar[dict[str, int]] = {"syncookie": 1, "deny": 0, "syncookie-always": 2}

    def __init__(self) -> None:
        self._lab: Lab | None = None
        self._node = ""
        self._proc: subprocess.Popen[Any] | None = None

    def start(self, lab: Lab, node: str) -> dict[str, int]:
        self._lab, self._node = lab, node
        argv = [sys.executable, "-m", "lab.services"] + [f"{n}={p}" for n, p in SERVICE_PORTS.items()]
        self._proc = lab.node(node).popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        wait_for_line(self._proc, "ready", what=f"kernel services on {node}")
        return dict(SERVICE_PORTS)

    def counters(self) -> dict[str, int]:
        """/proc/net/snmp and /proc/net/netstat of the server namespace, as `nstat` names them."""
        if self._lab is None:
            return {}
        with self._lab.node(self._node).inside():
            return read_snmp_counters()

    def policies(self) -> tuple[str, ...]:
        return tuple(self.SYNCOOKIE_POLICIES)

    def set_policy(self, name: str) -> dict[str, int | str]:
        """`syncookie`, `deny` and `syncookie-always` are tcp_syncookies 1, 0 and 2 in the server namespace."""
        if name not in self.SYNCOOKIE_POLICIES or self._lab is None:
            return super().set_policy(name)
        settings: dict[str, int | str] = {"net.ipv4.tcp_syncookies": self.SYNCOOKIE_POLICIES[name]}
        self._lab.node(self._node).write_sysctls(settings)
        return settings

    def half_open(self) -> int | None:
        """Request sockets (state 03, SYN_RECV) in /proc/net/tcp and tcp6 of the server namespace."""
        if self._lab is None:
            return None
        with self._lab.node(self._node).inside():
            return count_tcp_state(SYN_RECV)

    def half_open_limit(self, port: int) -> int | None:
        """The listener's accept backlog (`ss` Send-Q); without SYN cookies Linux drops SYNs already once
        a quarter of tcp_max_syn_backlog is left (tcp_conn_request)."""
        if self._lab is None:
            return None
        node = self._lab.node(self._node)
        listing = node.run(["ss", "-Hltn", f"sport = :{port}"], check=True).stdout.split()
        if len(listing) < 3:
            return None
        backlog = int(listing[2])
        sysctl = lambda name: int(node.run(["sysctl", "-n", name], check=True).stdout)  # noqa: E731
        if sysctl("net.ipv4.tcp_syncookies") == 0:
            max_syn_backlog = sysctl("net.ipv4.tcp_max_syn_backlog")
            return min(backlog, max_syn_backlog - (max_syn_backlog >> 2))
        return backlog

    def add_address(self, lab: Lab, node: str, cidr: str) -> None:
        lab.node(node).run(["ip", "addr", "add", cidr, "dev", lab.spec.interfaces_of(node)[0]], check=True)

    def set_retries(self, r2: int) -> dict[str, int | str]:
        """net.ipv4.tcp_retries2 of the server namespace.

        Linux reads R2 as a time: as long as R2 retransmissions take, backed off from the 200 ms minimum RTO.
        """
        if self._lab is None:
            raise NotImplementedError("the kernel target is not started")
        settings: dict[str, int | str] = {"net.ipv4.tcp_retries2": r2}
        self._lab.node(self._node).write_sysctls(settings)
        return settings

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        if self._proc is not None and self._proc.stdout is not None:
            self._proc.stdout.close()
        self._proc = None


def _toe_target() -> type[Target]:
    from .toe_target import ToeTarget  # imported late: it subclasses Target, defined here
    return ToeTarget


#: target name -> a function giving its class (late, so either module may be imported first)
TARGETS: dict[str, Callable[[], type[Target]]] = {"kernel": lambda: KernelTarget, "toe": _toe_target}


def make(name: str) -> Target:
    try:
        return TARGETS[name]()()
    except KeyError:
        raise ValueError(f"unknown target {name!r}: use {', '.join(TARGETS)}") from None


def read_snmp_counters() -> dict[str, int]:
    """Counters of the calling thread's network namespace (`TcpInCsumErrors`, `TcpExtTCPTimeouts` ...).

    /proc/thread-self/net follows the thread's namespace, so this reads a lab namespace
    without forking `nstat` when called inside a node (`Node.inside`).
    """
    out: dict[str, int] = {}
    for name in ("snmp", "netstat"):
        with open(f"/proc/thread-self/net/{name}", encoding="ascii") as f:
            lines = f.read().splitlines()
        for header, values in zip(lines[::2], lines[1::2]):
            prefix, _, keys = header.partition(":")
            for key, value in zip(keys.split(), values.partition(":")[2].split()):
                out[prefix + key] = int(value)
    return out


SYN_RECV = 3  # the kernel's TCP_SYN_RECV, as /proc/net/tcp writes it: "03"


def count_tcp_state(state: int) -> int:
    """Sockets of the calling thread's namespace in `state` (IPv4 and IPv6), from /proc/thread-self/net/tcp*."""
    wanted = f"{state:02X}"
    count = 0
    for name in ("tcp", "tcp6"):
        with open(f"/proc/thread-self/net/{name}", encoding="ascii") as f:
            next(f)
            count += sum(1 for line in f if line.split(maxsplit=4)[3] == wanted)
    return count


class UnknownCounter(LookupError):
    """A scenario asked for a counter the target does not report: a wrong name, never a zero."""


def delta(before: dict[str, int], after: dict[str, int], *names: str) -> dict[str, int]:
    """How much each named counter grew between two readings.

    A name in neither reading is an error: read as 0, a misspelt or missing counter would let a
    check that needs it to grow fail for the wrong reason, or one that needs it to stay put pass.
    A counter that first appears in `after` grew from 0.
    """
    _require(names, before, after)
    return {n: after.get(n, 0) - before.get(n, 0) for n in names}


def reading(counters: dict[str, int], name: str) -> int:
    """One counter of a reading; a name the target does not report is an error, not 0."""
    _require((name,), counters)
    return counters[name]


def _require(names: tuple[str, ...], *readings: dict[str, int]) -> None:
    missing = [n for n in names if not any(n in r for r in readings)]
    if missing:
        have = ", ".join(sorted(readings[-1])[:40]) or "none"
        raise UnknownCounter(f"the target has no counter {', '.join(map(repr, missing))} (it has: {have})")
