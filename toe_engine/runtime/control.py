"""The middlebox control socket: a Unix stream socket speaking JSON lines.

One request per line, one answer per line:

    {"cmd": "stats"}                      -> {"ok": true, "counters": {...}, "directions": ...,
                                              "drivers": {...}, "impairments": {...},
                                              "build": "compiled" | "pure"}
    {"cmd": "config"}                     -> {"ok": true, "config": {...}}
    {"cmd": "set", "direction": "both",   -> {"ok": true, "config": {...}}
     "impairments": {"loss": 5}, "seed": 7, "coalesce": "gro", "tso": false}

A bad request gets {"ok": false, "error": "one sentence"} and the connection stays usable.
The server is a pair of readers on the middlebox's own event loop, so a request is answered
between two batches of frames and never races the data path.
"""
from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from typing import Any

from toe_engine import native
from toe_engine.runtime.loop import EventLoop

Handler = Callable[[dict[str, Any], float], dict[str, Any]]

MAX_REQUEST = 64 * 1024
_SET_FIELDS = ("coalesce", "tso", "impairments", "seed")


class ControlServer:
    """Listens on `path` and answers each JSON line with `handler(request, now)`."""

    def __init__(self, path: str, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self._abstract = path.startswith("\0")  # Linux abstract name: no file, gone with its socket
        if not self._abstract and os.path.exists(path):
            os.unlink(path)
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(path)
        self._listener.listen(8)
        self._listener.setblocking(False)
        self._clients: dict[int, tuple[socket.socket, bytearray]] = {}
        self._loop: EventLoop | None = None

    def attach(self, loop: EventLoop) -> None:
        self._loop = loop
        loop.add_reader(self._listener, self._accept)

    def _accept(self, now: float) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        client.setblocking(False)
        self._clients[client.fileno()] = (client, bytearray())
        assert self._loop is not None
        loop = self._loop
        loop.add_reader(client, lambda when, fd=client.fileno(): self._read(fd, when))

    def _read(self, fd: int, now: float) -> None:
        client, pending = self._clients[fd]
        try:
            data = client.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data or len(pending) + len(data) > MAX_REQUEST:
            self._drop(fd)
            return
        pending += data
        while b"\n" in pending:
            line, _, rest = bytes(pending).partition(b"\n")
            pending[:] = rest
            if line.strip():
                answer = self._answer(line, now)
                try:
                    client.setblocking(True)
                    client.sendall(json.dumps(answer).encode() + b"\n")
                    client.setblocking(False)
                except OSError:
                    self._drop(fd)
                    return

    def _answer(self, line: bytes, now: float) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except json.JSONDecodeError as exc:
            return {"ok": False, "error": f"request is not valid JSON: {exc}"}
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            return {"ok": False, "error": 'a request is a JSON object with a "cmd" string'}
        try:
            answer = {"ok": True, **self.handler(request, now)}
        except ValueError as exc:
            return {"ok": False, "error": str(exc)}
        if request["cmd"] == "stats":
            answer["build"] = native.build()  # which engine build this process runs (toe_engine/native.py)
        return answer

    def _drop(self, fd: int) -> None:
        client, _ = self._clients.pop(fd)
        if self._loop is not None:
            self._loop.remove_reader(client)
        client.close()

    def close(self) -> None:
        for fd in list(self._clients):
            self._drop(fd)
        if self._loop is not None:
            self._loop.remove_reader(self._listener)
        self._listener.close()
        if self._abstract:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def middlebox_handler(middlebox: Any) -> Handler:
    """The request handler for a `Middlebox`: stats, config and set."""

    def handle(request: dict[str, Any], now: float) -> dict[str, Any]:
        cmd = request["cmd"]
        if cmd == "stats":
            return middlebox.stats()
        if cmd == "config":
            return {"config": middlebox.describe()}
        if cmd == "set":
            unknown = set(request) - {"cmd", "direction", *_SET_FIELDS}
            if unknown:
                raise ValueError(f"set: unknown field(s) {', '.join(sorted(unknown))}; "
                                 f"known: direction, {', '.join(_SET_FIELDS)}")
            changes = {key: request[key] for key in _SET_FIELDS if key in request}
            middlebox.update(request.get("direction", "both"), changes, now)
            return {"config": middlebox.describe()}
        raise ValueError(f"unknown cmd {cmd!r}: use stats, config or set")

    return handle


def control_request(path: str, request: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """Send one request to a control socket and return its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(json.dumps(request).encode() + b"\n")
        answer = bytearray()
        while not answer.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"control socket {path} closed before answering")
            answer += chunk
    result: dict[str, Any] = json.loads(answer)
    return result
