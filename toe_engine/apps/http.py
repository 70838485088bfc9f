"""A small HTTP/1.1 responder for connection-intensive load: fixed-size bodies, keep-alive.

`GET /<n>` answers with an n-byte body (default size otherwise); `Connection: close` or
HTTP/1.0 without keep-alive closes after the response, as servers do. Requests are answered
one at a time: the next is parsed once the current response is all in the send buffer, and
bodies are cut from one shared block as the buffer takes them, so a client asking for many
large bodies costs no more memory than one send buffer. A client's half-close ends its
requests, not the responses it is owed: those are finished, then the connection closes.
"""
from __future__ import annotations

from .base import App, AppConnection

DEFAULT_BODY = 128
MAX_BODY = 16 * 1024 * 1024
MAX_HEADER = 16 * 1024
MAX_BODY_DIGITS = len(str(MAX_BODY))
_FILL = memoryview(b"x" * 65536)
#: A body up to this size goes into the send buffer with its head, in one send.
INLINE_BODY = 1024
_INLINE_FILL = b"x" * INLINE_BODY
#: Response heads by (status, length, close), built once: a connection-rate load asks for few.
_HEADS: dict[tuple[bytes, int, bool], bytes] = {}
_HEADS_LIMIT = 1024


class HttpResponder(App):
    def __init__(self, conn: AppConnection) -> None:
        super().__init__(conn)
        self.buffer = b""
        self.head = b""  # response header not yet in the send buffer
        self.body_left = 0  # body bytes not yet in the send buffer
        self.close_after = False
        self.peer_closed = False
        self.requests = 0

    def receive_room(self) -> int:
        return 0 if self.closed or self.close_after else max(0, MAX_HEADER + 1 - len(self.buffer))

    def buffered_bytes(self) -> int:
        return len(self.buffer) + len(self.head)

    def on_data(self, data: bytes | memoryview) -> None:
        super().on_data(data)
        self.buffer += bytes(data)
        self.on_writable()

    def on_peer_closed(self) -> None:
        self.peer_closed = True
        self.on_writable()

    def on_writable(self) -> None:
        while not self.closed:
            if self.head or self.body_left:
                if not self._send_response():
                    return  # the send buffer is full: Writable comes back
                continue
            if self.close_after or not self._next_request():
                break
        if not self.closed and (self.close_after or self.peer_closed):
            self.close()

    def _next_request(self) -> bool:
        """Start the response to the next complete request; False if there is none yet."""
        head, sep, rest = self.buffer.partition(b"\r\n\r\n")
        if sep:
            self.buffer = rest
            self.respond(head)
            return True
        if len(self.buffer) > MAX_HEADER:
            self.buffer = b""
            self._start(b"431 Request Header Fields Too Large", 0, False, close=True)
            return True
        return False

    def respond(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split()
        self.requests += 1
        if len(parts) != 3 or parts[0] not in (b"GET", b"HEAD"):
            self._start(b"400 Bad Request", 0, False, close=True)
            return
        path = parts[1].lstrip(b"/")
        if path.isdigit():
            length = MAX_BODY if len(path.lstrip(b"0")) > MAX_BODY_DIGITS else min(int(path), MAX_BODY)
        else:
            length = DEFAULT_BODY
        connection = _connection_header(lines)
        keep = connection == b"keep-alive" if parts[2] == b"HTTP/1.0" else connection != b"close"
        self._start(b"200 OK", length, parts[0] == b"GET", close=not keep)

    def _start(self, status: bytes, length: int, send_body: bool, *, close: bool) -> None:
        self.close_after = close
        head = _HEADS.get((status, length, close))
        if head is None:
            head = (b"HTTP/1.1 " + status + b"\r\nContent-Length: " + str(length).encode()
                    + b"\r\nServer: toelab\r\n" + (b"Connection: close\r\n" if close else b"") + b"\r\n")
            if len(_HEADS) < _HEADS_LIMIT:
                _HEADS[(status, length, close)] = head
        if send_body and length <= INLINE_BODY:
            self.head = head + _INLINE_FILL[:length]  # one send, so head and body leave in one segment
            self.body_left = 0
        else:
            self.head = head
            self.body_left = length if send_body else 0

    def _send_response(self) -> bool:
        """Move the current response into the send buffer; False when the buffer is full first."""
        if self.head:
            sent = self.send(self.head)
            self.head = self.head[sent:]
            if self.head:
                return False
        while self.body_left:
            sent = self.send(_FILL[:min(self.body_left, len(_FILL))])
            if not sent:
                return False
            self.body_left -= sent
        return True


def _connection_header(lines: list[bytes]) -> bytes | None:
    """The value of the last Connection header among a request's header lines, lower case."""
    value = None
    for line in lines[1:]:
        name, sep, rest = line.partition(b":")
        if sep and name.strip().lower() == b"connection":
            value = rest.strip().lower()
    return value
