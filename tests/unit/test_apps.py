"""The built-in applications against a fake connection: bytes in, bytes out."""
from __future__ import annotations

from toe_engine.apps import APPS, Chargen, Echo, HttpResponder
from toe_engine.apps.simple import chargen_pattern


class FakeConn:
    def __init__(self, space: int = 1 << 20) -> None:
        self.space, self.out, self.closed = space, bytearray(), False

    def send(self, data: bytes | memoryview) -> int:
        n = min(len(data), self.space)
        self.out += bytes(data[:n])
        self.space -= n
        return n

    def send_space(self) -> int:
        return self.space

    def shutdown(self) -> None:
        self.closed = True

    def close(self) -> None:
        self.closed = True


def test_registry_names() -> None:
    assert set(APPS) == {"discard", "echo", "chargen", "http"}


def test_echo_returns_every_byte_even_when_the_buffer_is_short() -> None:
    conn = FakeConn(space=5)
    app = Echo(conn)
    app.on_data(b"hello world")
    assert bytes(conn.out) == b"hello"
    conn.space = 100
    app.on_writable()
    assert bytes(conn.out) == b"hello world"
    app.on_peer_closed()
    assert conn.closed


def test_chargen_fills_the_window_with_rfc864_lines() -> None:
    conn = FakeConn(space=1000)
    Chargen(conn).on_connected()
    assert len(conn.out) == 1000
    assert bytes(conn.out[:74]) == bytes(range(32, 104)) + b"\r\n"
    assert bytes(conn.out) == (chargen_pattern(0) * 2)[:1000]


def test_chargen_tops_up_a_send_buffer_with_views_and_the_stream_stays_the_pattern() -> None:
    """As a bulk sender's ACKs free two segments at a time: every top-up continues RFC 864's
    stream exactly, and is handed over as a view of the pattern, not a new copy of 60 KB."""
    conn = FakeConn(space=100_000)
    handed: list[object] = []
    send = conn.send
    conn.send = lambda data: (handed.append(data), send(data))[1]  # type: ignore[method-assign]
    app = Chargen(conn)
    app.on_connected()
    for _ in range(200):
        conn.space += 2896
        app.on_writable()
    total = 100_000 + 200 * 2896
    period = len(Chargen.PATTERN)
    assert bytes(conn.out) == (Chargen.PATTERN * (total // period + 2))[:total]
    assert handed and all(type(d) is memoryview and len(d) == period for d in handed)


def test_http_keepalive_then_close() -> None:
    conn = FakeConn()
    app = HttpResponder(conn)
    app.on_data(b"GET /10 HTTP/1.1\r\nHost: x\r\n\r\nGET /3 HTTP/1.1\r\nConnection: close\r\n\r\n")
    text = bytes(conn.out)
    assert text.count(b"HTTP/1.1 200 OK") == 2
    assert b"Content-Length: 10\r\nServer: toelab\r\n\r\n" + b"x" * 10 in text
    assert text.endswith(b"Connection: close\r\n\r\nxxx")
    assert conn.closed and app.requests == 2


def test_http_bad_request_closes() -> None:
    conn = FakeConn()
    HttpResponder(conn).on_data(b"BREW /pot HTCPCP/1.0\r\n\r\n")
    assert bytes(conn.out).startswith(b"HTTP/1.1 400 Bad Request")
    assert conn.closed


def test_echo_stops_taking_data_when_its_peer_stops_reading() -> None:
    conn = FakeConn(space=0)
    app = Echo(conn)
    app.on_data(b"x" * Echo.PENDING_LIMIT)
    assert app.receive_room() == 0
    conn.space = 1000
    app.on_writable()
    assert app.receive_room() == 1000
