"""Kernel-socket TCP services for the `kernel` target: discard, echo, chargen and http.

Run inside the server's namespace as `python -m scenarios.kernel_services discard=9 echo=7
chargen=19 http=80`; it prints `ready` once every listener is bound, which is the event the target
waits for. One thread per connection keeps it simple; these serve a handful of connections.
"""
from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Callable

CHARGEN_BLOCK = bytes(range(32, 127)) * 690  # ~64 KiB of printable bytes per send
HTTP_DEFAULT_BODY = 128
HTTP_MAX_BODY = 16 * 1024 * 1024
HTTP_MAX_HEADER = 16 * 1024


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


def http_response(head: bytes) -> tuple[bytes, bool]:
    """The response to one request head and whether to keep the connection, as the engine's responder answers.

    `GET /<n>` has an n-byte body; `Connection: close`, or HTTP/1.0 without keep-alive, closes
    after the response, which makes the server the side that closes first.
    """
    lines = head.split(b"\r\n")
    parts = lines[0].split()
    headers = {k.strip().lower(): v.strip().lower() for k, _, v in (line.partition(b":") for line in lines[1:])}
    if len(parts) != 3 or parts[0] not in (b"GET", b"HEAD"):
        status, length, send_body, keep = b"400 Bad Request", 0, False, False
    else:
        path = parts[1].lstrip(b"/")
        length = min(int(path), HTTP_MAX_BODY) if path.isdigit() else HTTP_DEFAULT_BODY
        status, send_body = b"200 OK", parts[0] == b"GET"
        connection = headers.get(b"connection")
        keep = connection == b"keep-alive" if parts[2] == b"HTTP/1.0" else connection != b"close"
    return (b"HTTP/1.1 " + status + b"\r\nContent-Length: " + str(length).encode() + b"\r\nServer: toelab\r\n"
            + (b"" if keep else b"Connection: close\r\n") + b"\r\n" + (b"x" * length if send_body else b"")), keep


def http(conn: socket.socket) -> None:
    buffer = b""
    while True:
        while b"\r\n\r\n" not in buffer:
            if len(buffer) > HTTP_MAX_HEADER:
                conn.sendall(b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\n"
                             b"Connection: close\r\n\r\n")
                return
            data = conn.recv(1 << 16)
            if not data:
                return
            buffer += data
        head, buffer = buffer.split(b"\r\n\r\n", 1)
        response, keep = http_response(head)
        conn.sendall(response)
        if not keep:
            return


SERVICES: dict[str, Callable[[socket.socket], None]] = {"discard": discard, "echo": echo, "chargen": chargen,
                                                        "http": http}


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
