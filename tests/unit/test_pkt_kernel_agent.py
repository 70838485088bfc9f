"""The kernel agent speaks the agent protocol with real sockets (on loopback, no root needed)."""
from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import scenarios.pkt

AGENT = Path(scenarios.pkt.__file__).with_name("kernel_agent.py")


class Talk:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-S", str(AGENT)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)

    def lines(self, request: dict) -> list[dict]:
        """Every line the agent writes for one request (a `blocking` notice, then the answer)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        out = [json.loads(self.proc.stdout.readline())]
        while out[-1].get("blocking"):
            out.append(json.loads(self.proc.stdout.readline()))
        return out

    def __call__(self, op: str, **fields: object) -> dict:
        return self.lines({"op": op, **fields})[-1]


@pytest.fixture
def agent() -> Iterator[Talk]:
    talk = Talk()
    yield talk
    talk.proc.kill()
    talk.proc.wait()


def listening(agent: Talk, port: int) -> int:
    listener = agent("socket")["ret"]
    assert agent("setsockopt", h=listener, level="SOL_SOCKET", name="SO_REUSEADDR", value=1) == {"ret": 0}
    assert agent("bind", h=listener, port=port, ip="127.0.0.1") == {"ret": 0}
    assert agent("listen", h=listener, backlog=1) == {"ret": 0}
    return listener


def test_a_loopback_connection_through_the_protocol(agent: Talk) -> None:
    listener = listening(agent, 47811)
    client = agent("socket")["ret"]
    assert agent("fcntl", h=client, command="F_SETFL", flags=["O_RDWR", "O_NONBLOCK"]) == {"ret": 0}
    assert agent("connect", h=client, ip="127.0.0.1", port=47811) == {"ret": -1, "errno": "EINPROGRESS"}
    conn = agent("accept", h=listener)["ret"]
    assert agent("getsockopt", h=client, level="SOL_SOCKET", name="SO_ERROR") == {"ret": 0, "value": 0}
    assert agent("write", h=client, n=100) == {"ret": 100}
    assert agent("poll", fds=[{"h": conn, "events": ["POLLIN"]}], timeout_ms=1000) == {"ret": 1,
                                                                                     "revents": [["POLLIN"]]}
    assert agent("read", h=conn, n=1000) == {"ret": 100}
    linger = {"onoff": 1, "linger": 0}
    assert agent("setsockopt", h=conn, level="SOL_SOCKET", name="SO_LINGER", value=linger) == {"ret": 0}
    assert agent("getsockopt", h=conn, level="SOL_SOCKET", name="SO_LINGER")["value"] == linger


def test_a_call_that_will_block_says_so_first(agent: Talk) -> None:
    listener = listening(agent, 47812)
    client = agent("socket")["ret"]
    assert agent("connect", h=client, ip="127.0.0.1", port=47812) == {"ret": 0}  # loopback completes at once
    conn = agent("accept", h=listener)["ret"]
    assert agent("fcntl", h=conn, command="F_GETFL")["flags"] == ["O_RDWR"]  # accept(2) passes no O_NONBLOCK
    assert agent.proc.stdin is not None and agent.proc.stdout is not None
    agent.proc.stdin.write(json.dumps({"op": "read", "h": conn, "n": 10}) + "\n")
    agent.proc.stdin.flush()
    assert json.loads(agent.proc.stdout.readline()) == {"blocking": True}  # then it blocks: nothing to read


def test_errors_are_errno_names(agent: Talk) -> None:
    assert agent("close", h=42) == {"ret": -1, "errno": "EBADF"}
    assert agent("frobnicate") == {"ret": -1, "errno": "ENOSYS"}
    s = agent("socket")["ret"]
    assert agent("setsockopt", h=s, level="SOL_TCP", name="TCP_FASTOPEN", value=1) == {"ret": -1, "errno": "ENOPROTOOPT"}
    assert agent("connect", h=s, ip="127.0.0.1", port=1) == {"ret": -1, "errno": "ECONNREFUSED"}
    assert agent("poll", fds="not a list") == {"ret": -1, "errno": "EINVAL"}
    assert agent("write", h=s, n="many") == {"ret": -1, "errno": "EINVAL"}
    assert agent("reset") == {"ret": 0}
    assert agent("close", h=s) == {"ret": -1, "errno": "EBADF"}
