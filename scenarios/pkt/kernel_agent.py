"""The kernel's agent: real socket calls in the namespace it runs in, one JSON request per stdin line.

    python -m scenarios.pkt.kernel_agent

The protocol is scenarios.pkt.agent's. Only the standard library is imported, so it starts in
a few tens of milliseconds; every socket it made goes when its stdin closes.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import select
import socket
import struct
import sys
from typing import Any

LEVELS = {"SOL_SOCKET": socket.SOL_SOCKET, "IPPROTO_TCP": socket.IPPROTO_TCP, "SOL_TCP": socket.IPPROTO_TCP,
          "IPPROTO_IP": socket.IPPROTO_IP, "SOL_IP": socket.IPPROTO_IP}
OPTIONS = {name: getattr(socket, name) for name in (
    "SO_ERROR", "SO_RCVBUF", "SO_SNDBUF", "SO_REUSEADDR", "SO_KEEPALIVE", "SO_LINGER", "SO_OOBINLINE",
    "TCP_NODELAY", "TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT", "TCP_USER_TIMEOUT", "TCP_MAXSEG",
    "TCP_CORK", "TCP_QUICKACK", "TCP_SYNCNT", "IP_TTL", "IP_TOS", "IP_OPTIONS") if hasattr(socket, name)}
MSG_FLAGS = {"MSG_OOB": socket.MSG_OOB, "MSG_PEEK": socket.MSG_PEEK, "MSG_DONTWAIT": socket.MSG_DONTWAIT,
             "MSG_WAITALL": socket.MSG_WAITALL}
POLL_BITS = {"POLLIN": select.POLLIN, "POLLOUT": select.POLLOUT, "POLLERR": select.POLLERR,
             "POLLHUP": select.POLLHUP, "POLLPRI": select.POLLPRI, "POLLRDHUP": 0x2000, "POLLNVAL": select.POLLNVAL}
SHUT = {"SHUT_RD": socket.SHUT_RD, "SHUT_WR": socket.SHUT_WR, "SHUT_RDWR": socket.SHUT_RDWR}


class Agent:
    def __init__(self) -> None:
        self.socks: dict[int, socket.socket] = {}
        self.next = 3

    def add(self, sock: socket.socket) -> int:
        handle = self.next
        self.next += 1
        self.socks[handle] = sock
        return handle

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        method = getattr(self, f"op_{op}", None)
        if method is None:
            return {"ret": -1, "errno": "ENOSYS"}
        try:
            self.announce_block(req)
            return method(req)  # type: ignore[no-any-return]
        except KeyError:
            return {"ret": -1, "errno": "EBADF"}
        except OSError as exc:
            return {"ret": -1, "errno": errno.errorcode.get(exc.errno or 0, "EIO")}
        except (TypeError, ValueError, OverflowError):  # a malformed request, not the stack's doing
            return {"ret": -1, "errno": "EINVAL"}

    def sock(self, req: dict[str, Any]) -> socket.socket:
        return self.socks[int(req["h"])]

    def announce_block(self, req: dict[str, Any]) -> None:
        """Say {"blocking": true} before a call on a blocking socket that will not complete at once."""
        op = req.get("op")
        if op == "poll":
            if req.get("timeout_ms", 0) and not self.op_poll({**req, "timeout_ms": 0})["ret"]:
                _say({"blocking": True})
            return
        if op not in ("accept", "read", "write", "connect") or int(req.get("h", -1)) not in self.socks:
            return
        sock = self.sock(req)
        if not sock.getblocking():
            return
        if op == "connect":
            _say({"blocking": True})
            return
        if op == "write":
            ready = select.select([], [sock], [], 0)[1]
        else:
            ready = select.select([sock], [], [], 0)[0]
        if not ready:
            _say({"blocking": True})

    def op_socket(self, req: dict[str, Any]) -> dict[str, Any]:
        family = socket.AF_INET6 if req.get("family") == "AF_INET6" else socket.AF_INET
        return {"ret": self.add(socket.socket(family, socket.SOCK_STREAM))}

    def op_bind(self, req: dict[str, Any]) -> dict[str, Any]:
        sock = self.sock(req)
        sock.bind((req.get("ip", ""), int(req["port"])))
        return {"ret": 0}

    def op_listen(self, req: dict[str, Any]) -> dict[str, Any]:
        self.sock(req).listen(int(req.get("backlog", 1)))
        return {"ret": 0}

    def op_accept(self, req: dict[str, Any]) -> dict[str, Any]:
        conn, _ = self.sock(req).accept()
        if self.sock(req).getblocking() is False:
            conn.setblocking(True)  # accept(2) does not pass O_NONBLOCK on (Python's would)
        return {"ret": self.add(conn)}

    def op_connect(self, req: dict[str, Any]) -> dict[str, Any]:
        code = self.sock(req).connect_ex((req["ip"], int(req["port"])))
        if code:
            return {"ret": -1, "errno": errno.errorcode.get(code, "EIO")}
        return {"ret": 0}

    def op_write(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"ret": self.sock(req).send(bytes(int(req["n"])), _flags(req))}

    def op_read(self, req: dict[str, Any]) -> dict[str, Any]:
        data = self.sock(req).recv(int(req["n"]), _flags(req))
        return {"ret": len(data)}

    def op_shutdown(self, req: dict[str, Any]) -> dict[str, Any]:
        self.sock(req).shutdown(SHUT[req.get("how", "SHUT_WR")])
        return {"ret": 0}

    def op_close(self, req: dict[str, Any]) -> dict[str, Any]:
        self.socks.pop(int(req["h"])).close()
        return {"ret": 0}

    def op_setsockopt(self, req: dict[str, Any]) -> dict[str, Any]:
        level, name = _option(req)
        value = req.get("value")
        if isinstance(value, dict):
            raw = struct.pack("ii", int(value.get("onoff", 0)), int(value.get("linger", 0)))
            self.sock(req).setsockopt(level, name, raw)
        elif isinstance(value, str):  # bytes, one character each (IP_OPTIONS)
            self.sock(req).setsockopt(level, name, value.encode("latin-1"))
        else:
            self.sock(req).setsockopt(level, name, int(value or 0))
        return {"ret": 0}

    def op_getsockopt(self, req: dict[str, Any]) -> dict[str, Any]:
        level, name = _option(req)
        if req.get("name") == "SO_LINGER":
            onoff, linger = struct.unpack("ii", self.sock(req).getsockopt(level, name, 8))
            return {"ret": 0, "value": {"onoff": onoff, "linger": linger}}
        return {"ret": 0, "value": self.sock(req).getsockopt(level, name)}

    def op_fcntl(self, req: dict[str, Any]) -> dict[str, Any]:
        fd = self.sock(req).fileno()
        if req.get("command") == "F_GETFL":
            flags = fcntl.fcntl(fd, fcntl.F_GETFL)
            return {"ret": flags, "flags": ["O_RDWR"] + (["O_NONBLOCK"] if flags & os.O_NONBLOCK else [])}
        self.sock(req).setblocking("O_NONBLOCK" not in req.get("flags", []))
        return {"ret": 0}

    def op_poll(self, req: dict[str, Any]) -> dict[str, Any]:
        poller = select.poll()
        wanted = []
        for entry in req["fds"]:
            fd = self.socks[int(entry["h"])].fileno()
            bits = 0
            for name in entry.get("events", []):
                bits |= POLL_BITS[name]
            poller.register(fd, bits)
            wanted.append(fd)
        ready = dict(poller.poll(int(req.get("timeout_ms", 0))))
        revents = [[n for n, b in POLL_BITS.items() if b and ready.get(fd, 0) & b] for fd in wanted]
        return {"ret": sum(1 for fd in wanted if ready.get(fd)), "revents": revents}

    def op_reset(self, req: dict[str, Any]) -> dict[str, Any]:
        for sock in self.socks.values():
            sock.close()
        self.socks.clear()
        return {"ret": 0}


def _flags(req: dict[str, Any]) -> int:
    bits = 0
    for name in req.get("flags", []):
        bits |= MSG_FLAGS[name]
    return bits


def _option(req: dict[str, Any]) -> tuple[int, int]:
    try:
        return LEVELS[req["level"]], OPTIONS[req["name"]]
    except KeyError:
        raise OSError(errno.ENOPROTOOPT, "unknown option") from None


def _say(answer: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()


def main() -> int:
    agent = Agent()
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            answer = agent.handle(request) if isinstance(request, dict) else {"ret": -1, "errno": "EINVAL"}
        except json.JSONDecodeError:
            answer = {"ret": -1, "errno": "EINVAL"}
        _say(answer)
    agent.op_reset({})
    return 0


if __name__ == "__main__":
    sys.exit(main())
