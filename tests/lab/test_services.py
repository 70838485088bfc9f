"""lab.services: the engine's applications over kernel sockets answer exactly as the engine's do."""
from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from lab.pytest_plugin import MakeLab
from lab.tools import wait_for_line
from toe_engine.apps import HttpResponder

pytestmark = pytest.mark.root

CLIENT = r"""
import socket, sys, json, hashlib
addr = sys.argv[1]
out = {}
# echo: 1 MiB of varied bytes comes back byte-exact
payload = bytes((i * 7 + i // 251) & 0xFF for i in range(1 << 20))
with socket.create_connection((addr, 7), timeout=10) as s:
    s.sendall(payload)
    s.shutdown(socket.SHUT_WR)
    back = b""
    while chunk := s.recv(65536):
        back += chunk
out["echo_exact"] = back == payload
# chargen: the server sends until we close
with socket.create_connection((addr, 19), timeout=10) as s:
    got = b""
    while len(got) < 200000:
        got += s.recv(65536)
out["chargen_bytes"] = len(got)
# discard: takes everything, sends nothing, closes after our FIN
with socket.create_connection((addr, 9), timeout=10) as s:
    s.sendall(bytes(300000))
    s.shutdown(socket.SHUT_WR)
    out["discard_reply"] = s.recv(10).hex()
# http: two keep-alive requests then a close
with socket.create_connection((addr, 80), timeout=10) as s:
    s.sendall(b"GET /1000 HTTP/1.1\r\nHost: x\r\n\r\nGET /5 HTTP/1.1\r\nConnection: close\r\n\r\n")
    answer = b""
    while chunk := s.recv(65536):
        answer += chunk
out["http"] = answer.decode("latin-1")
print(json.dumps(out))
"""


class _Memory:
    """An AppConnection that keeps what the app sends, to hear the engine's own answer."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = False

    def send(self, data: bytes | memoryview) -> int:
        self.out += data
        return len(data)

    def send_space(self) -> int:
        return 1 << 20

    def shutdown(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def set_nodelay(self, on: bool) -> None:
        pass


def test_kernel_services_answer_like_the_engine(make_lab: MakeLab) -> None:
    import json

    lab = make_lab("two_hosts")
    server = lab.node("h2").popen([sys.executable, "-m", "lab.services", "echo=7", "discard=9", "chargen=19",
                                   "http=80"], stdout=subprocess.PIPE)
    wait_for_line(server, "ready", "services on h2")
    done = lab.node("h1").run([sys.executable, "-c", CLIENT, lab.address("h2")], timeout=60, check=True)
    seen = json.loads(done.stdout)
    assert seen["echo_exact"] is True
    assert seen["chargen_bytes"] >= 200000
    assert seen["discard_reply"] == ""
    engine = _Memory()
    app = HttpResponder(engine)
    app.on_data(b"GET /1000 HTTP/1.1\r\nHost: x\r\n\r\nGET /5 HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert seen["http"] == engine.out.decode("latin-1")
    assert seen["http"].count("HTTP/1.1 200 OK") == 2 and engine.closed


def test_unknown_service_is_refused() -> None:
    done = subprocess.run([sys.executable, "-m", "lab.services", "gopher=70"], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 2
    assert "unknown service 'gopher=70'" in done.stderr


def test_listener_is_dual_stack() -> None:
    from lab.services import listen

    sock = listen(0)
    try:
        assert sock.family == socket.AF_INET6
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
    finally:
        sock.close()
