"""The engine's applications served from kernel sockets: discard, echo, chargen and http.

A `kernel` target and the host half of a `toe` node answer on the same ports as the engine's
built-in applications, and must answer the same way, so they run the very same App classes
(toe_engine.apps) over kernel sockets: one epoll loop, one `SocketConnection` per accepted
socket standing in for the engine's connection. Run inside a node as

    python -m lab.services discard=9 echo=7 chargen=19 http=80

It prints `ready` once every listener is bound, which is the event starters wait for.
Hundreds of connections (a fallback flood, an HTTP connection-rate run) cost no threads.
"""
from __future__ import annotations

import selectors
import socket
import sys

from toe_engine.apps import APPS, App

CHUNK = 256 * 1024
SEND_SPACE = 256 * 1024  # what `send_space` reports while the socket last took everything
SERVICE_NAMES = tuple(APPS)


class SocketConnection:
    """An accepted kernel socket behind the engine's AppConnection interface."""

    def __init__(self, sock: socket.socket, loop: Services) -> None:
        self.sock = sock
        self.loop = loop
        self.app: App | None = None
        self.blocked = False  # the last send did not take everything: wait for writability
        self.peer_closed = False
        self.closed = False

    # --- AppConnection ---------------------------------------------------------------
    def send(self, data: bytes | bytearray | memoryview) -> int:
        if self.closed or not data:
            return 0
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.close()
            return 0
        self.blocked = sent < len(data)
        return sent

    def send_space(self) -> int:
        return 0 if self.blocked or self.closed else SEND_SPACE

    def shutdown(self) -> None:
        if not self.closed:
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.loop.forget(self)
        self.sock.close()
        if self.app is not None:
            self.app.on_closed()

    def set_nodelay(self, on: bool) -> None:
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(on))

    # --- events from the loop -----------------------------------------------------------
    def on_events(self, events: int) -> None:
        assert self.app is not None
        try:
            if events & selectors.EVENT_WRITE:
                self.blocked = False
                self.app.on_writable()
            if events & selectors.EVENT_READ and not self.closed:
                self._read()
        except OSError:
            self.close()
        if not self.closed:
            self.loop.update(self)

    def _read(self) -> None:
        assert self.app is not None
        room = self.app.receive_room()
        if room <= 0:
            return
        try:
            data = self.sock.recv(min(CHUNK, room))
        except BlockingIOError:
            return
        if data:
            self.app.on_data(data)
        else:
            self.peer_closed = True
            self.app.on_peer_closed()

    def interest(self) -> int:
        """Read while the app takes bytes and the peer has not closed; write while a send is pending."""
        assert self.app is not None
        events = selectors.EVENT_WRITE if self.blocked else 0
        if not self.peer_closed and self.app.receive_room() > 0:
            events |= selectors.EVENT_READ
        return events


class Services:
    """Listeners by service name and port, and the connections they accepted, in one epoll loop."""

    def __init__(self, services: list[tuple[str, int]]) -> None:
        self.selector = selectors.EpollSelector()
        self.registered: set[SocketConnection] = set()
        for name, port in services:
            listener = listen(port)
            self.selector.register(listener, selectors.EVENT_READ, (listener, APPS[name]))

    def _accept(self, listener: socket.socket, app_class: type[App]) -> None:
        try:
            sock, _ = listener.accept()
        except BlockingIOError:
            return
        sock.setblocking(False)
        conn = SocketConnection(sock, self)
        conn.app = app_class(conn)
        conn.app.on_connected()
        if not conn.closed:
            self.update(conn)

    def update(self, conn: SocketConnection) -> None:
        events = conn.interest()
        if conn in self.registered:
            if events:
                self.selector.modify(conn.sock, events, conn)
            else:
                self.selector.unregister(conn.sock)
                self.registered.discard(conn)
        elif events:
            self.selector.register(conn.sock, events, conn)
            self.registered.add(conn)

    def forget(self, conn: SocketConnection) -> None:
        if conn in self.registered:
            self.selector.unregister(conn.sock)
            self.registered.discard(conn)

    def run(self) -> None:
        while True:
            for key, events in self.selector.select():
                if isinstance(key.data, SocketConnection):
                    key.data.on_events(events)
                else:
                    self._accept(*key.data)


def listen(port: int) -> socket.socket:
    """A non-blocking dual-stack listener on every address of the namespace."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


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
        server = Services(parse_services(argv))
    except (ValueError, OSError) as exc:
        print(f"services: {exc}", file=sys.stderr)
        return 2
    print("ready", flush=True)
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
