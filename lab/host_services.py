"""Kernel-socket servers on the engine's ports: the host stack's half of a `toe` node.

A toe node answers on the same ports with two stacks: flows the engine offloads get its
built-in applications, flows it falls back on reach the host kernel through the TAP and
get these. Run in the node as

    python -m lab.host_services discard=9 echo=7 chargen=19 http=80

It prints `ready` once every listener is bound. One epoll loop serves every connection, so
hundreds of fallback flows (or an HTTP connection-rate run) cost no threads.
"""
from __future__ import annotations

import selectors
import socket
import sys
from collections.abc import Callable

CHUNK = 256 * 1024
ECHO_BACKLOG = 4 * 1024 * 1024  # stop reading while this much echo waits to be sent
CHARGEN_BLOCK = bytes(range(32, 127)) * 690
DEFAULT_BODY = 128
MAX_BODY = 16 * 1024 * 1024


class Connection:
    """One accepted socket and what it still has to send."""

    def __init__(self, sock: socket.socket, service: str) -> None:
        self.sock = sock
        self.service = service
        self.outbox = bytearray(CHARGEN_BLOCK if service == "chargen" else b"")
        self.inbox = b""
        self.peer_closed = False
        self.close_after = False

    def on_readable(self) -> None:
        data = self.sock.recv(CHUNK)
        if not data:
            self.peer_closed = True
            return
        if self.service == "echo":
            self.outbox += data
        elif self.service == "http":
            self.inbox += data
            while b"\r\n\r\n" in self.inbox and not self.close_after:
                head, self.inbox = self.inbox.split(b"\r\n\r\n", 1)
                self.outbox += http_response(head, self)

    def on_writable(self) -> None:
        sent = self.sock.send(self.outbox)
        del self.outbox[:sent]
        if self.service == "chargen" and len(self.outbox) < len(CHARGEN_BLOCK):
            self.outbox += CHARGEN_BLOCK

    @property
    def done(self) -> bool:
        if self.service == "chargen":
            return self.peer_closed
        return not self.outbox and (self.peer_closed or self.close_after)

    def interest(self) -> int:
        events = selectors.EVENT_WRITE if self.outbox else 0
        if not self.peer_closed and len(self.outbox) < ECHO_BACKLOG:
            events |= selectors.EVENT_READ
        return events


def http_response(head: bytes, conn: Connection) -> bytes:
    """The same answers as the engine's HTTP responder: `GET /<n>` gets an n-byte body."""
    lines = head.split(b"\r\n")
    parts = lines[0].split()
    headers = {k.strip().lower(): v.strip().lower() for k, _, v in (line.partition(b":") for line in lines[1:])}
    if len(parts) != 3 or parts[0] not in (b"GET", b"HEAD"):
        conn.close_after = True
        return b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    path = parts[1].lstrip(b"/")
    length = min(int(path), MAX_BODY) if path.isdigit() else DEFAULT_BODY
    connection = headers.get(b"connection")
    keep = connection == b"keep-alive" if parts[2] == b"HTTP/1.0" else connection != b"close"
    conn.close_after = not keep
    return (b"HTTP/1.1 200 OK\r\nContent-Length: " + str(length).encode() + b"\r\nServer: toelab-host\r\n"
            + (b"Connection: close\r\n" if conn.close_after else b"") + b"\r\n"
            + (b"x" * length if parts[0] == b"GET" else b""))


class HostServices:
    """Listeners by service name and port, and the connections they accepted."""

    def __init__(self, services: list[tuple[str, int]]) -> None:
        self.selector = selectors.EpollSelector()
        for name, port in services:
            listener = listen(port)
            self.selector.register(listener, selectors.EVENT_READ, self._acceptor(listener, name))

    def _acceptor(self, listener: socket.socket, service: str) -> Callable[[int], None]:
        def accept(events: int) -> None:
            try:
                sock, _ = listener.accept()
            except BlockingIOError:
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Connection(sock, service)
            self.selector.register(sock, conn.interest(), self._handler(conn))

        return accept

    def _handler(self, conn: Connection) -> Callable[[int], None]:
        def handle(events: int) -> None:
            try:
                if events & selectors.EVENT_READ:
                    conn.on_readable()
                if events & selectors.EVENT_WRITE or conn.outbox:
                    conn.on_writable()
            except BlockingIOError:
                pass
            except OSError:
                conn.peer_closed, conn.outbox = True, bytearray()
            if conn.done:
                self.selector.unregister(conn.sock)
                conn.sock.close()
                return
            self.selector.modify(conn.sock, conn.interest(), handle)

        return handle

    def run(self) -> None:
        while True:
            for key, events in self.selector.select():
                key.data(events)


def listen(port: int) -> socket.socket:
    """A non-blocking dual-stack listener on every address of the namespace."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


SERVICE_NAMES = ("discard", "echo", "chargen", "http")


def parse_services(argv: list[str]) -> list[tuple[str, int]]:
    """`NAME=PORT` arguments as (name, port) pairs; a service may serve several ports."""
    services: list[tuple[str, int]] = []
    for item in argv:
        name, _, port = item.partition("=")
        if name not in SERVICE_NAMES or not port.isdigit():
            raise ValueError(f"unknown service {item!r}: use NAME=PORT with NAME in {', '.join(SERVICE_NAMES)}")
        services.append((name, int(port)))
    return services


def main(argv: list[str]) -> int:
    try:
        server = HostServices(parse_services(argv))
    except (ValueError, OSError) as exc:
        print(f"host services: {exc}", file=sys.stderr)
        return 2
    print("ready", flush=True)
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
