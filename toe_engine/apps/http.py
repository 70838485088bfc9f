"""A small HTTP/1.1 responder for connection-intensive load: fixed-size bodies, keep-alive.

`GET /<n>` answers with an n-byte body (default size otherwise); `Connection: close` or
HTTP/1.0 without keep-alive closes after the response, as servers do. Requests are answered
one at a time: the next is parsed once the current response is all in the send buffer, and
bodies are cut from one shared block as the buffer takes them, so a client asking for many
large bodies costs no more memory than one send buffer. A client's half-close ends its
requests, not the responses it is owed: those are finished, then the connection closes.
"""
from __future__ import annotations

from typing import Final

from .base import App, AppConnection

DEFAULT_BODY: Final = 128
MAX_BODY: Final = 16 * 1024 * 1024
MAX_HEADER: Final = 16 * 1024
MAX_BODY_DIGITS: Final = len(str(MAX_BODY))
_FILL: Final = memoryview(b"x" * 65536)
#: A body up to this size goes into the send buffer with its head, in one send.
INLINE_BODY: Final = 1024
_INLINE_FILL: Final = b"x" * INLINE_BODY
#: What a request head is answered with (what to send first, body bytes after it, close after),
#: worked out once per distinct short head: a connection-rate load sends the same few again and again.
_ANSWERS: Final[dict[bytes, tuple[bytes, int, bool]]] = {}
_ANSWERS_LIMIT: Final = 1024
_ANSWERED_HEAD: Final = 512  # longer heads are parsed each time, not kept


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

    def on_data(self, data: bytes | bytearray | memoryview) -> None:
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
        self.requests += 1
        answer = _ANSWERS.get(head)
        if answer is None:
            answer = _answer(head)
            if len(head) <= _ANSWERED_HEAD and len(_ANSWERS) < _ANSWERS_LIMIT:
                _ANSWERS[head] = answer
        self.head, self.body_left, self.close_after = answer

    def _start(self, status: bytes, length: int, send_body: bool, *, close: bool) -> None:
        self.head, self.body_left, self.close_after = _response(status, length, send_body, close)

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


def _answer(head: bytes) -> tuple[bytes, int, bool]:
    """The response to one request head (without its blank line): see _response."""
    lines = head.split(b"\r\n")
    parts = lines[0].split()
    if len(parts) != 3 or parts[0] not in (b"GET", b"HEAD"):
        return _response(b"400 Bad Request", 0, False, True)
    path = parts[1].lstrip(b"/")
    if path.isdigit():
        length = MAX_BODY if len(path.lstrip(b"0")) > MAX_BODY_DIGITS else min(int(path), MAX_BODY)
    else:
        length = DEFAULT_BODY
    connection = _connection_header(lines)
    keep = connection == b"keep-alive" if parts[2] == b"HTTP/1.0" else connection != b"close"
    return _response(b"200 OK", length, parts[0] == b"GET", not keep)


def _response(status: bytes, length: int, send_body: bool, close: bool) -> tuple[bytes, int, bool]:
    """(bytes to send first, body bytes to stream after them, close once sent). A body of up to
    INLINE_BODY bytes rides in the first part, so head and body go in one send and one segment."""
    head = (b"HTTP/1.1 " + status + b"\r\nContent-Length: " + str(length).encode()
            + b"\r\nServer: toelab\r\n" + (b"Connection: close\r\n" if close else b"") + b"\r\n")
    if send_body and length <= INLINE_BODY:
        return head + _INLINE_FILL[:length], 0, close
    return head, length if send_body else 0, close


def _connection_header(lines: list[bytes]) -> bytes | None:
    """The value of the last Connection header among a request's header lines, lower case."""
    value = None
    for line in lines[1:]:
        name, sep, rest = line.partition(b":")
        if sep and name.strip().lower() == b"connection":
            value = rest.strip().lower()
    return value
