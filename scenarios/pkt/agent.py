"""The agent interface: how a script's system calls reach the TCP stack under test.

One small protocol, JSON lines, one request and one answer per line, for every target:

    {"op": "socket"}                                     -> {"ret": H}         H: the agent's socket handle
    {"op": "bind", "h": H, "port": P, "ip": "10.0.0.2"}  -> {"ret": 0}         ip: the target's own address
    {"op": "listen", "h": H, "backlog": N}               -> {"ret": 0}
    {"op": "accept", "h": H}                             -> {"ret": H2}
    {"op": "connect", "h": H, "ip": "10.0.0.1", "port": P} -> {"ret": 0}
    {"op": "write", "h": H, "n": N, "flags": ["MSG_OOB"]}   -> {"ret": n}       N bytes of zeros
    {"op": "read", "h": H, "n": N, "flags": []}          -> {"ret": n}         MSG_OOB; MSG_PEEK if it can
    {"op": "shutdown", "h": H, "how": "SHUT_WR"}         -> {"ret": 0}
    {"op": "close", "h": H}                              -> {"ret": 0}
    {"op": "setsockopt", "h": H, "level": "SOL_SOCKET", "name": "SO_KEEPALIVE", "value": 1}  -> {"ret": 0}
    {"op": "getsockopt", "h": H, "level": "IPPROTO_TCP", "name": "TCP_NODELAY"}  -> {"ret": 0, "value": 1}
    {"op": "fcntl", "h": H, "command": "F_SETFL", "flags": ["O_RDWR", "O_NONBLOCK"]}  -> {"ret": 0}
    {"op": "poll", "fds": [{"h": H, "events": ["POLLIN"]}], "timeout_ms": T}  -> {"ret": n, "revents": [[...]]}
    {"op": "reset"}                                      -> {"ret": 0}         close everything: the script ended

A failing call answers {"ret": -1, "errno": "ECONNREFUSED"}; a request the agent does not know
answers {"ret": -1, "errno": "ENOSYS"}; an option it does not know {"ret": -1, "errno": "ENOPROTOOPT"}.
Values are ints, except SO_LINGER ({"onoff": 1, "linger": 0}) and IP_OPTIONS (a string, one
character per byte). A call on a blocking socket that cannot complete yet either blocks, after a
line {"blocking": true} saying so (a process agent does), or answers {"retry": true} and is asked
again (an agent inside an event loop, such as the engine's, must not block). Either way the runner
learns that the call blocks, as packetdrill does, without guessing from how long it takes. No
request has a field "cmd": a control socket may carry its own verb there.

`kernel` is a process in the target's namespace making real socket calls (scenarios.pkt.kernel_agent,
on stdin/stdout); `toe` is the engine's control socket, where the same requests go as {"cmd": "sock", ...}.
Any other stack implements the same requests on either transport.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lab.lab import Lab

#: How long a blocking call may stay unanswered before the agent is taken to be stuck.
CALL_LIMIT_S = 30.0
RETRY_INTERVAL_S = 0.002


class AgentError(RuntimeError):
    """The agent itself failed (died, answered garbage): the script cannot go on."""


class Agent(ABC):
    """A target's system-call side. `call` may block (for a blocking call) and is run off the timeline's thread."""

    @abstractmethod
    def request(self, request: dict[str, Any], blocked: threading.Event | None = None) -> dict[str, Any]:
        """One request, one answer, as the protocol above; `blocked` is set if the agent says the call blocks."""

    def call(self, request: dict[str, Any], blocked: threading.Event | None = None) -> dict[str, Any]:
        """A request, asked again while the agent says it would block; `blocked` is set once it does."""
        deadline = time.monotonic() + CALL_LIMIT_S
        poll_ends = time.monotonic() + request["timeout_ms"] / 1000 if request.get("timeout_ms", 0) > 0 else None
        while True:
            answer = self.request(request, blocked)
            if not answer.get("retry"):
                return answer
            if blocked is not None:
                blocked.set()
            if poll_ends is not None and time.monotonic() >= poll_ends:
                request = {**request, "timeout_ms": 0}  # poll's timeout ran out: ask for the answer as it is now
            elif time.monotonic() > deadline:
                raise AgentError(f"{request['op']} did not complete within {CALL_LIMIT_S} s")
            time.sleep(RETRY_INTERVAL_S)  # the engine's event loop runs meanwhile; this is its poll interval

    def close(self) -> None:
        """End the session: every socket of the script goes."""


class KernelAgent(Agent):
    """scenarios.pkt.kernel_agent running in the target's namespace; requests on its stdin."""

    def __init__(self, lab: Lab, node: str) -> None:
        # run as a file, not `-m`: the package's imports (pydantic, Scapy) would slow every start
        argv = [sys.executable, "-S", str(Path(__file__).with_name("kernel_agent.py"))]
        self.proc = lab.node(node).popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.request({"op": "reset"})  # up and answering before the script's clock starts

    def request(self, request: dict[str, Any], blocked: threading.Event | None = None) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            while True:
                line = self.proc.stdout.readline()
                if not line:
                    raise AgentError(f"the kernel agent exited (status {self.proc.poll()})")
                answer: dict[str, Any] = json.loads(line)
                if not answer.get("blocking"):
                    return answer
                if blocked is not None:
                    blocked.set()
        except (BrokenPipeError, ValueError) as exc:
            raise AgentError(f"the kernel agent is gone: {exc}") from None

    def close(self) -> None:
        """Ended at once: a call may still be blocked in it, and its exit closes every socket anyway."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass


class ControlAgent(Agent):
    """An engine that answers socket requests on its control socket as {"cmd": "sock", ...}."""

    def __init__(self, control: Any) -> None:
        self.control = control  # anything with request(dict) -> dict (lab.engine_nodes.EngineHandle)

    def request(self, request: dict[str, Any], blocked: threading.Event | None = None) -> dict[str, Any]:
        try:
            answer: dict[str, Any] = self.control.request({"cmd": "sock", **request})
        except Exception as exc:  # the handle's own error type lives in lab/, which agents do not import
            raise AgentError(f"the engine did not answer {request['op']}: {exc}") from None
        return answer

    def close(self) -> None:
        self.request({"op": "reset"})


def agent_for(target: Any, lab: Lab, node: str) -> Callable[[], Agent]:
    """How to make a session agent for a started target: `kernel` by process, `toe` by its control socket."""
    if target.name == "kernel":
        return lambda: KernelAgent(lab, node)
    engine = getattr(target, "engine", None)
    if engine is None:
        raise AgentError(f"target {target.name} has no agent: it needs a socket-API control socket like the engine's")
    return lambda: ControlAgent(engine)
