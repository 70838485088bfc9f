"""A small HTTP/1.1 responder for connection-intensive load: fixed-size bodies, keep-alive.

`GET /<n>` answers with an n-byte body (default size otherwise); `Connection: close` or
HTTP/1.0 without keep-alive closes after the response, as servers do.
"""
from __future__ import annotations

from .base import App, AppConnection

DEFAULT_BODY = 128
MAX_BODY = 16 * 1024 * 1024
MAX_HEADER = 16 * 1024


class HttpResponder(App):
    def __init__(self, conn: AppConnection) -> None:
        super().__init__(conn)
        self.buffer = b""
        self.outbox = b""
        self.close_after = False
        self.requests = 0

    def on_data(self, data: bytes | memoryview) -> None:
        super().on_data(data)
        self.buffer += bytes(data)
        while b"\r\n\r\n" in self.buffer and not self.close_after:
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            self.respond(head)
        if len(self.buffer) > MAX_HEADER:
            self.outbox += b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            self.close_after, self.buffer = True, b""
        self.on_writable()

    def respond(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split()
        headers = {k.strip().lower(): v.strip().lower() for k, _, v in (line.partition(b":") for line in lines[1:])}
        self.requests += 1
        if len(parts) != 3 or parts[0] not in (b"GET", b"HEAD"):
            status, length, send_body, self.close_after = b"400 Bad Request", 0, False, True
        else:
            path = parts[1].lstrip(b"/")
            status, length, send_body = b"200 OK", min(int(path), MAX_BODY) if path.isdigit() else DEFAULT_BODY, parts[0] == b"GET"
            connection = headers.get(b"connection")
            keep = connection == b"keep-alive" if parts[2] == b"HTTP/1.0" else connection != b"close"
            self.close_after = not keep
        self.outbox += (b"HTTP/1.1 " + status + b"\r\nContent-Length: " + str(length).encode()
                        + b"\r\nServer: toelab\r\n" + (b"Connection: close\r\n" if self.close_after else b"")
                        + b"\r\n" + (b"x" * length if send_body else b""))

    def on_writable(self) -> None:
        if self.outbox:
            sent = self.send(self.outbox)
            self.outbox = self.outbox[sent:]
        if not self.outbox and self.close_after:
            self.conn.close()
