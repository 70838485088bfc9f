"""The engine's socket API on its control socket: the system calls of a script, on the engine's TCP.

Requests are {"cmd": "sock", "op": ...} in the protocol of toelab's agents (socket, bind,
listen, accept, connect, read, write, shutdown, close, setsockopt, getsockopt, fcntl, poll,
reset; see scenarios/pkt/agent.py); answers are {"ret": n} or {"ret": -1, "errno": "NAME"}.
The engine's loop must never block, so a call on a blocking socket that cannot complete yet
answers {"retry": true} and the caller asks again. A write takes what the send buffer has room
for and says how much (a short count), where a blocking Linux write would wait to take it all.

What a socket needs from TCP it gets from the stack's application interface (TcpStack) and, for
listening ports and events, from EndpointCore: its `socket_ports` make a port's SYNs the
engine's, an accepted or connected flow is served by a `SocketApp` that leaves received data
in the receive buffer (so the window closes when the script does not read, as a socket's does)
and turns Reset and Error events into the errno the next call returns.
"""
from __future__ import annotations

import errno as errno_module
import ipaddress
from dataclasses import dataclass, field, replace
from typing import Any

from toe_engine.apps.base import App, AppConnection
from toe_engine.endpoint import EndpointCore
from toe_engine.segment import FourTuple
from toe_engine.tcp.connection import State, TcpError

#: Event reasons (toe_engine.tcp events) -> errno.
ERRNO_OF_REASON = {"reset": "ECONNRESET", "connection timed out": "ETIMEDOUT", "retransmission timeout": "ETIMEDOUT",
                   "keepalive timeout": "ETIMEDOUT", "user timeout": "ETIMEDOUT",
                   "host unreachable": "EHOSTUNREACH", "net unreachable": "ENETUNREACH",
                   "port unreachable": "ECONNREFUSED", "protocol unreachable": "ENOPROTOOPT",
                   "admin prohibited": "EHOSTUNREACH"}
#: Options kept per socket; those with an effect on TCP are applied to the connection too.
INT_OPTIONS = {"TCP_USER_TIMEOUT": 0, "SO_REUSEADDR": 0, "SO_KEEPALIVE": 0, "SO_RCVBUF": 0, "SO_SNDBUF": 0, "SO_OOBINLINE": 0,
               "TCP_NODELAY": 0, "TCP_KEEPIDLE": 7200, "TCP_KEEPINTVL": 75, "TCP_KEEPCNT": 9, "TCP_MAXSEG": 0,
               "IP_TTL": 64, "IP_TOS": 0}
SENDING_STATES = frozenset({State.ESTABLISHED, State.CLOSE_WAIT})


@dataclass
class Sock:
    """One socket of the API: new, listening, connecting or connected."""

    handle: int
    nonblock: bool = False
    port: int | None = None
    listening: bool = False
    key: FourTuple | None = None
    connected: bool = False
    blocking_connect: bool = False
    error: str | None = None  # for the next call and SO_ERROR
    reported: bool = False  # the error was returned once (then writes say EPIPE)
    closed_by_peer: bool = False
    gone: bool = False  # the TCB is reaped
    shut_wr: bool = False
    queue: list[int] = field(default_factory=list)  # accepted connections not yet accept()ed
    urgent_taken: int | None = None  # the RCV.UP whose urgent octet recv(MSG_OOB) returned
    options: dict[str, Any] = field(default_factory=dict)


class SocketApp(App):
    """Serves one connection of a socket: data stays in TCP until the socket reads it."""

    def __init__(self, conn: AppConnection, sock: Sock) -> None:
        super().__init__(conn)
        self.sock = sock

    def receive_room(self) -> int:
        return 0

    def on_connected(self) -> None:
        self.sock.connected = True

    def on_peer_closed(self) -> None:
        self.sock.closed_by_peer = True

    def on_error(self, reason: str, fatal: bool) -> None:
        if fatal:
            self.sock.error = _errno_for(reason, self.sock.connected)

    def on_closed(self) -> None:
        self.sock.gone = True


class _PendingConnect:
    """What EndpointCore calls once an active open completes; hears an error before that."""

    def __init__(self, sock: Sock) -> None:
        self.sock = sock

    def __call__(self, conn: AppConnection) -> SocketApp:
        return SocketApp(conn, self.sock)

    def on_error(self, reason: str, fatal: bool) -> None:
        if fatal:
            self.sock.error = "ECONNREFUSED" if reason == "reset" else _errno_for(reason, False)


def _errno_for(reason: str, connected: bool) -> str:
    if reason == "reset" and not connected:
        return "ECONNREFUSED"
    return ERRNO_OF_REASON.get(reason, "EIO")


class _Retry(Exception):
    """The call would block on a blocking socket: ask again."""


class _Fail(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class SocketApi:
    """The socket calls of one engine endpoint, answered between two batches of frames."""

    def __init__(self, core: EndpointCore) -> None:
        self.core = core
        self.socks: dict[int, Sock] = {}
        self._next = 3

    # --- dispatch ------------------------------------------------------------------------------
    def handle(self, request: dict[str, Any], now: float) -> dict[str, Any]:
        op = request.get("op")
        method = getattr(self, f"op_{op}", None) if isinstance(op, str) else None
        if method is None:
            return {"ret": -1, "errno": "ENOSYS"}
        try:
            answer: dict[str, Any] = method(request, now)
        except _Retry:
            answer = {"retry": True}
        except _Fail as exc:
            answer = {"ret": -1, "errno": exc.name}
        except (TcpError, ValueError):
            answer = {"ret": -1, "errno": "EINVAL"}
        except Exception as exc:  # an engine fault must not take the engine down with the control request
            self.core.counters.inc("sock_api_errors")
            answer = {"ret": -1, "errno": "EIO", "error": f"{type(exc).__name__}: {exc}"}
        self.core.on_timer(now)  # runs the events and frames the call set in motion (and any timer due now)
        return answer

    def _sock(self, request: dict[str, Any]) -> Sock:
        sock = self.socks.get(request.get("h"))  # type: ignore[arg-type]
        if sock is None:
            raise _Fail("EBADF")
        return sock

    def _new(self) -> Sock:
        sock = Sock(self._next)
        self._next += 1
        self.socks[sock.handle] = sock
        return sock

    # --- calls -------------------------------------------------------------------------------------
    def op_socket(self, request: dict[str, Any], now: float) -> dict[str, Any]:
        if request.get("family", "AF_INET") != "AF_INET":
            raise _Fail("EAFNOSUPPORT")
        return {"ret": self._new().handle}

    def op_bind(self, request: dict[str, Any], now: float) -> dict[str, Any]:
        sock = self._sock(request)
        port = int(request.get("port", 0))
        if request.get("ip") and ipaddress.ip_address(str(request["ip"])).packed not in self.core.config.addresses:
            raise _Fail("EADDRNOTAVAIL")
        if port in self.core.socket_ports or port in self.core.config.services:
            raise _Fail("EADDRINUSE")
        sock.port = port
        return {"ret": 0}

    def op_listen(self, request: dict[str, Any], now: float) -> dict[str, Any]:
        sock = self._sock(request)
        if sock.port is None:
            raise _Fail("EDESTADDRREQ")
        core = self.core
        if not sock.listening:
            core.stack.listen(None, sock.port, backlog=max(1, int(request.get("backlog", 1))))
            core.socket_ports[sock.port] = lambda conn, listener=sock: self._accepted(listener, conn)
            core.resources.set_offload_ports(set(core.config.services) | set(core.socket_ports))
            sock.listening = True
        return {"ret": 0}

    def _accepted(self, listener: Sock, conn: AppConnection) -> SocketApp:
        sock = self._new()
        sock.key = conn.key  # type: ignore[attr-defined]
        sock.connected = True
        sock.options = dict(listener.options)  # options set on the listener pass to its connections
        listener.queue.append(sock.handle)
        self._apply_options(sock, None)
        return SocketApp(conn, sock)

    def op_accept(self, request: dict[str, Any], now: float) -> dict[str, Any]:
        sock = self._sock(request)
        if not sock.listening:
            raise _Fail("EINVAL")
        if sock.queue:
            return {"ret": sock.queue.pop(0)}
        return self._would_block(sock)

    def op_connect(self, request: dict[str, Any], now: float) -> dict[str, Any]:
        sock = self._sock(request)
        if sock.key is None:
            core = self.core
            local = next((a for a in core.config.addresses if len(a) == 4), core.config.addresses[0])
            remote = ipaddress.ip_address(str(request["ip"])).packed
            try:
                sock.key = core.connect(local, remote, int(request["port"]), _PendingConnect(sock), now)  # type: ignore[arg-type]
            except TcpError:
                raise _Fail("ENETUNREACH") from None  # MUST-46: no OPEN to a broadcast or multicast address
            self._apply_options(sock, now)
            if sock.nonblock:
                raise _Fail("EINPROGRESS")
            sock.blocking_connect = True
        if sock.error is not None and not sock.connected:
            sock.blocking_connect = False
            raise _Fail(self._take_error(sock))
        if sock.connected:
            if sock.blocking_connect:
                sock.blocking_connect = False
                return {"ret": 0}
            raise _Fail("EISCONN")
        if sock.nonblock:
            raise _Fail("EALREADY")
        raise _Retry

    def op_write(self, request: dict[str, Any], now: float) -> dict[str, Any]:
        sock = self._sock(request)
        if "MSG_OOB" in request.get("flags", []):
            raise _Fail("EOPNOTSUPP")  # the engine receives urgent data but sends none
        if sock.error is not None:
            raise _Fail("EPIPE" if sock.reported else self._take_error(sock))
        if sock.key is None or sock.shut_wr or self.core.stack.state(sock.key) not in SENDING_STATES:
            if sock.key is not None and not sock.connected:
                return self._would_block(sock)
            raise _Fail("EPIPE")
        taken = self.core.stack.send(sock.key, bytes(int(request.get("n", 0))), now)
        if taken == 0 and int(request.get("n", 0)) > 0:
            return self._would_block(sock)
        return {"ret": taken}

    def op_read(self, request: dict[str, Any], now: float) -> dict[str, Any]:
        sock = self._sock(request)
        flags = request.get("flags", [])
        if sock.key is None:
            raise _Fail("ENOTCONN")
        stack = self.core.stack
        if "MSG_PEEK" in flags and "MSG_OOB" not in flags:
            conn = stack.connection(sock.key)
            if conn is not None and conn.rcv_buf:
                return {"ret": min(len(conn.rcv_buf), int(request.get("n", 0)))}  # left where it is
        if "MSG_OOB" in flags:
            if self._urgent_octet(sock) is None:
                raise _Fail("EINVAL")  # no urgent data (or it was read): Linux's answer
            sock.urgent_taken = stack.connection(sock.key).rcv_up  # type: ignore[union-attr]
            return {"ret": 1}
        if stack.connection(sock.key) is not None:
            data = self._read_to_mark(sock, int(request.get("n", 0)), now)
            if data:
                return {"ret": len(data)}
        if sock.error is not None:
            raise _Fail(self._take_error(sock))
        if stack.at_eof(sock.key) and (sock.connected or sock.gone):
            return {"ret": 0}
        return self._would_block(sock)

    def op_shutdown(self, request: dict[str, Any], now: float) -> dict[str, Any]:
        sock = self._sock(request)
        if sock.key is None or not sock.connected:
            raise _Fail("ENOTCONN")
        if request.get("how", "SHUT_WR") in ("SHUT_WR", "SHUT_RDWR") and not sock.shut_wr:
            sock.shut_wr = True
            if self.core.stack.connection(sock.key) is not None:
                self.core.stack.shutdown(sock.key, now)
        return {"ret": 0}

    def op_close(self, request: dict[str, Any], now: float) -> dict[str, Any]:
        self._close(self._sock(request), now)
        return {"ret": 0}

    def _close(self, sock: Sock, now: float) -> None:
        core = self.core
        self.socks.pop(sock.handle, None)
        if sock.listening and sock.port is not None:
            core.stack.unlisten(None, sock.port)
            core.socket_ports.pop(sock.port, None)
            core.resources.set_offload_ports(set(core.config.services) | set(core.socket_ports))
            for handle in sock.queue:
                queued = self.socks.get(handle)
                if queued is not None:
                    self._close(queued, now)
        if sock.key is not None and core.stack.connection(sock.key) is not None:
            linger = sock.options.get("SO_LINGER") or {}
            if linger.get("onoff") and not linger.get("linger"):
                core.stack.abort(sock.key, now)  # SO_LINGER {1, 0}: close is an abort (RST)
            else:
                core.stack.close(sock.key, now)

    def op_setsockopt(self, request: dict[str, Any], now: float) -> dict[str, Any]:
        sock = self._sock(request)
        name = request.get("name")
        value = request.get("value")
        if name == "SO_LINGER":
            if not isinstance(value, dict):
                raise _Fail("EINVAL")
            sock.options[name] = {"onoff": int(value.get("onoff", 0)), "linger": int(value.get("linger", 0))}
        elif name in INT_OPTIONS:
            if not isinstance(value, int):
                raise _Fail("EINVAL")
            if name in ("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT") and value < 1 or (
                    name == "TCP_USER_TIMEOUT" and value < 0):
                raise _Fail("EINVAL")
            if name in ("IP_TTL",) and not 1 <= value <= 255 and value != -1:
                raise _Fail("EINVAL")
            sock.options[name] = value
        else:
            raise _Fail("ENOPROTOOPT")
        self._apply_options(sock, now)
        return {"ret": 0}

    def op_getsockopt(self, request: dict[str, Any], now: float) -> dict[str, Any]:
        sock = self._sock(request)
        name = request.get("name")
        if name == "SO_ERROR":
            return {"ret": 0, "value": _errno_number(self._take_error(sock)) if sock.error else 0}
        if name == "SO_LINGER":
            return {"ret": 0, "value": sock.options.get(name, {"onoff": 0, "linger": 0})}
        if name not in INT_OPTIONS:
            raise _Fail("ENOPROTOOPT")
        conn = self.core.stack.connection(sock.key) if sock.key is not None else None
        cfg = conn.cfg if conn is not None else self.core.config.tcp
        live = {"SO_RCVBUF": cfg.rcv_buf, "SO_SNDBUF": cfg.snd_buf,
                "TCP_MAXSEG": conn.snd_mss if conn is not None else cfg.mss,
                "SO_KEEPALIVE": int(conn.keepalive) if conn is not None else None,
                "TCP_NODELAY": int(conn.nodelay) if conn is not None else None}
        value = sock.options.get(name)
        if value is None or name in ("TCP_MAXSEG",):
            value = live.get(name)
        if value is None:
            value = INT_OPTIONS[name]
        return {"ret": 0, "value": int(value)}

    def op_fcntl(self, request: dict[str, Any], now: float) -> dict[str, Any]:
        sock = self._sock(request)
        if request.get("command") == "F_GETFL":
            return {"ret": 2 | (0o4000 if sock.nonblock else 0), "flags": ["O_RDWR"] + (["O_NONBLOCK"] if sock.nonblock else [])}
        if request.get("command") != "F_SETFL":
            raise _Fail("EINVAL")
        sock.nonblock = "O_NONBLOCK" in request.get("flags", [])
        return {"ret": 0}

    def op_poll(self, request: dict[str, Any], now: float) -> dict[str, Any]:
        revents = []
        for entry in request.get("fds", []):
            sock = self.socks.get(entry.get("h"))
            ready = self._revents(sock) if sock is not None else ["POLLNVAL"]
            revents.append([name for name in ready if name in entry.get("events", []) or
                            name in ("POLLERR", "POLLHUP", "POLLNVAL")])
        count = sum(1 for r in revents if r)
        if not count and int(request.get("timeout_ms", 0)) != 0:
            raise _Retry
        return {"ret": count, "revents": revents}

    def _revents(self, sock: Sock) -> list[str]:
        stack = self.core.stack
        if sock.listening:
            return ["POLLIN"] if sock.queue else []
        out = []
        alive = sock.key is not None and stack.connection(sock.key) is not None
        readable = alive and stack.readable(sock.key) > 0  # type: ignore[arg-type]
        if readable or sock.closed_by_peer or sock.error:
            out.append("POLLIN")
        if self._urgent_octet(sock) is not None:
            out.append("POLLPRI")
        if sock.connected and alive and not sock.shut_wr and stack.state(sock.key) in SENDING_STATES \
                and stack.send_space(sock.key) > 0:  # type: ignore[arg-type]
            out.append("POLLOUT")
        if sock.closed_by_peer:
            out.append("POLLRDHUP")
        if sock.error:
            out.append("POLLERR")
        if sock.error or (sock.closed_by_peer and sock.shut_wr) or (sock.gone and sock.connected):
            out.append("POLLHUP")
        return out

    def op_reset(self, request: dict[str, Any], now: float) -> dict[str, Any]:
        """The script ended: close every socket it left open."""
        for sock in list(self.socks.values()):
            if sock.listening:
                self._close(sock, now)
        for sock in list(self.socks.values()):
            self._close(sock, now)
        return {"ret": 0}

    # --- urgent data (BSD's reading, as Linux's: the pointer is the first non-urgent octet, the octet
    # before it is the urgent one, taken out of the stream unless SO_OOBINLINE) -----------------------
    def _urgent_octet(self, sock: Sock) -> int | None:
        """The sequence number of the urgent octet not yet read out of band, once it has arrived."""
        conn = self.core.stack.connection(sock.key) if sock.key is not None else None
        up = getattr(conn, "rcv_up", None)
        if conn is None or up is None or up == sock.urgent_taken or sock.options.get("SO_OOBINLINE"):
            return None
        return up - 1 if up - 1 < conn.rcv_nxt else None

    def _read_to_mark(self, sock: Sock, n: int, now: float) -> bytes:
        """Up to n in-band bytes: a read stops at the urgent mark, and the urgent octet is not in-band."""
        stack, key = self.core.stack, sock.key
        conn = stack.connection(key)  # type: ignore[arg-type]
        up = getattr(conn, "rcv_up", None)
        if conn is None or up is None or sock.options.get("SO_OOBINLINE"):
            return stack.recv(key, n, now)  # type: ignore[arg-type]
        first = conn.rcv_nxt - len(conn.rcv_buf)
        if first == up - 1:
            stack.recv(key, 1, now)  # type: ignore[arg-type]  # the urgent octet, out of band
            first += 1
        if first < up - 1 < first + n:
            n = up - 1 - first
        return stack.recv(key, n, now)  # type: ignore[arg-type]

    # --- helpers -------------------------------------------------------------------------------------
    def _would_block(self, sock: Sock) -> dict[str, Any]:
        if sock.nonblock:
            raise _Fail("EAGAIN")
        raise _Retry

    def _take_error(self, sock: Sock) -> str:
        error = sock.error or "EIO"
        sock.reported = True
        return error

    def _apply_options(self, sock: Sock, now: float | None) -> None:
        """Options with an effect on TCP, on the socket's connection (once it has one)."""
        if sock.key is None:
            return
        stack, key = self.core.stack, sock.key
        conn = stack.connection(key)
        if conn is None:
            return
        options = sock.options
        tuned = {field_name: float(options[name]) if field_name != "keepalive_probes" else int(options[name])
                 for name, field_name in (("TCP_KEEPIDLE", "keepalive_idle"), ("TCP_KEEPINTVL", "keepalive_interval"),
                                          ("TCP_KEEPCNT", "keepalive_probes")) if name in options}
        if "TCP_USER_TIMEOUT" in options:
            tuned["user_timeout"] = options["TCP_USER_TIMEOUT"] / 1000  # milliseconds, as Linux takes it
        if options.get("SO_SNDBUF"):
            tuned["snd_buf"] = max(int(options["SO_SNDBUF"]), 1)  # what send() may queue from now on
        if tuned:
            conn.cfg = replace(conn.cfg, **tuned)  # per connection: the listener's config is shared
        if "TCP_NODELAY" in options:
            stack.set_nodelay(key, bool(options["TCP_NODELAY"]), now)
        if "SO_KEEPALIVE" in options or set(tuned) - {"user_timeout", "snd_buf"}:
            stack.set_keepalive(key, bool(options.get("SO_KEEPALIVE", conn.keepalive)), now)  # re-arms the timer
        if "IP_TTL" in options or "IP_TOS" in options:
            self.core.ip_fields[key] = (int(options.get("IP_TTL", 64)), int(options.get("IP_TOS", 0)))


def _errno_number(name: str) -> int:
    return int(getattr(errno_module, name, errno_module.EIO))
