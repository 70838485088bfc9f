"""A script's system calls as agent requests, and their answers judged against the script.

The script's file descriptors (the `= 3` of socket()) are its own names; the agent's handles
are mapped onto them here, so an agent never needs to hand out the numbers a script expects.
`...` for an address means the script's other end (connect) or the target's own address and the
run's listening port (bind), as packetdrill fills them in.
"""
from __future__ import annotations

import errno as errno_module
from dataclasses import dataclass, field
from typing import Any

from .model import Syscall

READS = frozenset({"read", "recv", "recvfrom"})
WRITES = frozenset({"write", "send", "sendto"})
SUPPORTED = READS | WRITES | {"socket", "bind", "listen", "accept", "connect", "close", "shutdown", "fcntl",
                              "poll", "setsockopt", "getsockopt"}
#: What the agent protocol carries: these message flags, levels and options, nothing else.
MSG_FLAGS = frozenset({"MSG_OOB", "MSG_PEEK", "MSG_DONTWAIT", "MSG_WAITALL"})
LEVELS = frozenset({"SOL_SOCKET", "IPPROTO_TCP", "SOL_TCP", "IPPROTO_IP", "SOL_IP"})
OPTIONS = frozenset({"SO_ERROR", "SO_RCVBUF", "SO_SNDBUF", "SO_REUSEADDR", "SO_KEEPALIVE", "SO_LINGER",
                     "SO_OOBINLINE", "TCP_NODELAY", "TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT",
                     "TCP_USER_TIMEOUT", "TCP_MAXSEG", "IP_TTL", "IP_TOS", "IP_OPTIONS"})


class CallError(ValueError):
    """A call the runner cannot turn into a request (an fd the script never opened, an unknown call)."""


@dataclass
class Endpoints:
    """Where the script's `...` addresses point: the target's listening port, the peer's address and port."""

    bind_port: int
    remote_ip: str
    remote_port: int
    ipv6: bool = False
    local_ip: str = ""  # the target's own address, for bind(); "" binds to any


@dataclass
class FdMap:
    handles: dict[int, int] = field(default_factory=dict)

    def handle(self, fd: Any) -> int:
        if not isinstance(fd, int) or fd not in self.handles:
            raise CallError(f"file descriptor {fd!r} was never opened by the script")
        return self.handles[fd]


def unsupported(call: Syscall) -> str | None:
    """Why the agents cannot make this call as written, or None: found before a script runs."""
    args = call.args
    if call.name not in SUPPORTED:
        return f"system call {call.name}() is not supported"
    if call.name in READS | WRITES and len(args) > 3:
        unknown = [f for f in _names(args[3]) if f not in MSG_FLAGS]
        if unknown:
            return f"{call.name}() flag {unknown[0]} is not supported"
    if call.name in ("setsockopt", "getsockopt"):
        if len(args) < 3 or args[1] not in LEVELS or args[2] not in OPTIONS:
            return f"{call.name}() of {args[1] if len(args) > 1 else '?'}/{args[2] if len(args) > 2 else '?'} is not supported"
    if call.name == "socket" and args and args[0] not in (None, "AF_INET", "AF_INET6"):
        return f"socket() family {args[0]} is not supported"
    if call.name == "socket" and len(args) > 1 and args[1] not in (None, "SOCK_STREAM"):
        return f"socket() type {args[1]} is not supported (TCP only)"
    return None


def request_for(call: Syscall, fds: FdMap, where: Endpoints) -> dict[str, Any]:
    """The agent request for one system call of the script."""
    name, args = call.name, call.args
    problem = unsupported(call)
    if problem:
        raise CallError(problem)
    if name == "socket":
        return {"op": "socket", "family": "AF_INET6" if where.ipv6 or (args and args[0] == "AF_INET6") else "AF_INET"}
    if name == "poll":
        entries = args[0] if args and isinstance(args[0], list) else []
        return {"op": "poll", "fds": [{"h": fds.handle(e.get("fd")), "events": _names(e.get("events"))} for e in entries],
                "timeout_ms": int(args[2]) if len(args) > 2 and isinstance(args[2], int) else 0}
    request: dict[str, Any] = {"op": name, "h": fds.handle(args[0] if args else None)}
    if name == "bind":
        request["port"] = where.bind_port
        if where.local_ip:
            request["ip"] = where.local_ip
    elif name == "listen":
        request["backlog"] = args[1] if len(args) > 1 and isinstance(args[1], int) else 1
    elif name == "connect":
        request.update(ip=_sin_addr(args[1] if len(args) > 1 else None) or where.remote_ip, port=where.remote_port)
    elif name in READS or name in WRITES:
        request["op"] = "read" if name in READS else "write"
        request["n"] = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
        request["flags"] = _names(args[3]) if len(args) > 3 else []
    elif name == "shutdown":
        request["how"] = args[1] if len(args) > 1 else "SHUT_WR"
    elif name == "fcntl":
        request["command"] = args[1] if len(args) > 1 else "F_GETFL"
        request["flags"] = _names(args[2]) if len(args) > 2 else []
    elif name in ("setsockopt", "getsockopt"):
        if len(args) < 3:
            raise CallError(f"{name}() needs a level and an option name")
        request.update(level=args[1], name=args[2])
        if name == "setsockopt":
            request["value"] = _option_value(args[3] if len(args) > 3 else None)
    return request


def judge(call: Syscall, answer: dict[str, Any], fds: FdMap) -> str | None:
    """What is wrong with the answer, in packetdrill's words, or None; records new file descriptors."""
    ret, errno = answer.get("ret"), answer.get("errno")
    if call.name in ("socket", "accept") and isinstance(ret, int) and ret >= 0 and isinstance(call.ret, int):
        fds.handles[call.ret] = ret
        ret = call.ret
    if call.ret is not None and ret != call.ret:
        got = f"{ret}" + (f" with errno {errno}" if errno else "")
        return f"expected result {call.ret} but got {got}"
    if call.errno is not None and errno != call.errno:
        return f"expected errno {call.errno} but got {errno or 'none'}"
    if call.name == "getsockopt" and len(call.args) > 3:
        wanted = _option_value(call.args[3])
        if wanted is not None and not _same_value(wanted, answer.get("value")):
            return f"getsockopt {call.args[2]}: expected {wanted} but got {answer.get('value')}"
    if call.name == "poll" and call.args and isinstance(call.args[0], list):
        for entry, got in zip(call.args[0], answer.get("revents", [])):
            if "revents" in entry and sorted(_names(entry["revents"])) != sorted(got):
                return f"poll fd {entry.get('fd')}: expected revents {entry['revents']} but got {'|'.join(got) or 0}"
    return None


def _sin_addr(value: Any) -> str | None:
    """The address of `{sin_addr=inet_addr("a.b.c.d"), ...}`, or None for `...`."""
    if isinstance(value, dict) and isinstance(value.get("sin_addr"), dict):
        call = value["sin_addr"]
        if call.get("call") == "inet_addr" and call.get("args"):
            return str(call["args"][0])
    return None


def _names(value: Any) -> list[str]:
    if value is None or value == 0:
        return []
    if isinstance(value, str):
        return [part for part in value.split("|") if part]
    if isinstance(value, list):
        return [n for v in value for n in _names(v)]
    return [str(value)]


def _option_value(value: Any) -> Any:
    if isinstance(value, list):
        return _option_value(value[0]) if value else None
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if k != "..."}
    return value


def _same_value(wanted: Any, got: Any) -> bool:
    if isinstance(wanted, str) and hasattr(errno_module, wanted):
        wanted = getattr(errno_module, wanted)  # getsockopt(SO_ERROR) written as [ECONNREFUSED]
    if isinstance(wanted, dict) and isinstance(got, dict):
        return all(got.get(k) == v for k, v in wanted.items() if v is not None)
    return bool(wanted == got)
