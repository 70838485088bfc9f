"""Kernel-socket TCP services for the `kernel` target: discard, echo and chargen.

Run inside the server's namespace as `python -m scenarios.kernel_services discard=9 echo=7
chargen=19`; it prints `ready` once every listener is bound, which is the event the target
waits for. One thread per connection keeps it simple; these serve a handful of connections.
"""
from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Callable

CHARGEN_BLOCK = bytes(range(32, 127)) * 690  # ~64 KiB of printable bytes per send


def discard(conn: socket.socket) -> None:
    while conn.recv(1 << 16):
        pass


def echo(conn: socket.socket) -> None:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while data := conn.recv(1 << 16):
        conn.sendall(data)


def chargen(conn: socket.socket) -> None:
    conn.shutdown(socket.SHUT_RD)
    while True:
        conn.sendall(CHARGEN_BLOCK)


SERVICES: dict[str, Callable[[socket.socket], None]] = {"discard": discard, "echo": echo, "chargen": chargen}


def _serve_connection(handler: Callable[[socket.socket], None], conn: socket.socket) -> None:
    with conn:
        try:
            handler(conn)
        except OSError:
            pass


def _accept_loop(handler: Callable[[socket.socket], None], listener: socket.socket) -> None:
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_serve_connection, args=(handler, conn), daemon=True).start()


def listen(port: int) -> socket.socket:
    """A dual-stack listener on every address of the namespace."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", port))
    sock.listen(128)
    return sock


def main(argv: list[str]) -> int:
    threads = []
    for item in argv:
        name, _, port = item.partition("=")
        if name not in SERVICES or not port.isdigit():
            print(f"unknown service {item!r}: use NAME=PORT with NAME in {', '.join(SERVICES)}", file=sys.stderr)
            return 2
        listener = listen(int(port))
        threads.append(threading.Thread(target=_accept_loop, args=(SERVICES[name], listener), daemon=True))
    for thread in threads:
        thread.start()
    print("ready", flush=True)
    for thread in threads:
        thread.join()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
