"""A session: scripts run one after another against one started target of one lab, each on fresh
ports, each with its verdict (pass, fail at a line, unsupported lines, error) and its pcap.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .agent import Agent, AgentError
from .library import label
from .model import Icmp, Script, Syscall
from .parse import MAX_CONNECTIONS
from .syscalls import Endpoints, unsupported
from .timeline import Failed, Timeline
from .wire import Wire

if TYPE_CHECKING:
    from lab.lab import Lab

#: The MSS of the lab the runs build (two_hosts at its default MTU of 1500).
LINK_MSS = 1460


@dataclass
class ScriptResult:
    """One script on one target: pass, fail (at a line), unsupported (not run) or error (the runner broke)."""

    script: str
    target: str
    verdict: str
    requirements: list[str]
    line: int | None = None
    message: str = ""
    unsupported: list[tuple[int, str]] = field(default_factory=list)
    duration_s: float = 0.0
    pcap: str | None = None

    def summary(self) -> str:
        where = f"{self.script}:{self.line}" if self.line else self.script
        if self.verdict == "pass":
            return f"{self.script}: pass on {self.target} ({self.duration_s:.2f} s)"
        if self.verdict == "unsupported":
            listed = "; ".join(f"line {n}: {why}" for n, why in self.unsupported)
            return f"{self.script}: not run on {self.target}, unsupported: {listed}"
        pcap = f" (pcap: {self.pcap})" if self.pcap else ""
        return f"{where}: {self.verdict} on {self.target}: {self.message}{pcap}"

    def to_json(self) -> dict[str, Any]:
        return {"script": self.script, "target": self.target, "verdict": self.verdict,
                "requirements": self.requirements, "line": self.line, "message": self.message,
                "unsupported": [{"line": n, "reason": r} for n, r in self.unsupported],
                "duration_s": round(self.duration_s, 3), "pcap": self.pcap}


class Session:
    """Runs scripts one after another against one started target of one lab (the lab is reused)."""

    def __init__(self, lab: Lab, target: str, server: str, client: str, make_agent: Callable[[], Agent],
                 outdir: Path, *, first_port: int = 8080) -> None:
        self.lab, self.target, self.server, self.client = lab, target, server, client
        self.make_agent = make_agent
        self.outdir = outdir
        self._next_port = first_port
        self.target_ip = lab.address(server)
        self._agent: Agent | None = None

    def _ports(self, connections: int) -> tuple[int, list[int]]:
        """A fresh listening port and peer ports per script, so no script meets another's leftovers."""
        port = self._next_port
        self._next_port += 1
        base = 30000 + (port % 8000) * MAX_CONNECTIONS
        return port, [base + n for n in range(connections)]

    def _release(self, agent: Agent, reuse: bool) -> None:
        """The script's sockets go; after a pass the agent serves the next script (a failed script may
        have left a call blocked in it, so that agent is ended instead)."""
        try:
            if reuse:
                agent.request({"op": "reset"})
                self._agent = agent
            else:
                agent.close()
        except AgentError:
            self._agent = None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """End the agent kept for the next script."""
        if self._agent is not None:
            self._release(self._agent, reuse=False)
            self._agent = None

    def shell(self, command: str) -> str | None:
        """Run a backtick command in the target's node: None, or what it said on failing."""
        result = self.lab.node(self.server).run(["sh", "-c", command])
        return None if result.ok else result.stderr.strip()[:200] or f"exit status {result.returncode}"

    def run(self, script: Script) -> ScriptResult:
        result = ScriptResult(label(Path(script.path)), self.target, "pass", list(script.requirements))
        result.unsupported = unsupported_lines(script)
        if result.unsupported:
            result.verdict = "unsupported"
            return result
        started = time.monotonic()
        bind_port, peer_ports = self._ports(script.connections())
        try:
            with Wire(self.lab, self.client, self.target_ip, target_port=bind_port, peer_ports=peer_ports) as wire:
                agent = self._agent or self.make_agent()
                self._agent = None
                try:
                    where = Endpoints(bind_port, wire.peer_ip, peer_ports[0], local_ip=self.target_ip)
                    Timeline(script, wire, agent, where, self.shell).run()
                except Failed as exc:
                    result.verdict, result.line, result.message = "fail", exc.line, str(exc)
                finally:
                    self._release(agent, reuse=result.verdict == "pass")
                    name = result.script.replace("/", "-")
                    result.pcap = str(wire.write_pcap(self.outdir / f"{name}-{self.target}.pcap"))
        except Exception as exc:  # the runner must report, never crash, whatever a script does
            result.verdict, result.message = "error", f"{type(exc).__name__}: {exc}"
        result.duration_s = time.monotonic() - started
        return result


def unsupported_lines(script: Script) -> list[tuple[int, str]]:
    """What in the script this runner cannot run, by line: the parser's findings, calls, options."""
    found = list(script.unsupported())
    for event in script.events:
        if isinstance(event.action, Syscall) and (why := unsupported(event.action)):
            found.append((event.line, why))
        elif isinstance(event.action, Icmp) and event.action.direction == ">":
            found.append((event.line, "expecting an ICMP message from the target is not supported"))
    version = script.options.get("ip_version", "ipv4")
    if version != "ipv4":
        found.append((script.option_lines.get("ip_version", 0), f"--ip_version={version}: the wire side speaks IPv4 only"))
    mss = script.options.get("mss")
    if mss is not None and mss != str(LINK_MSS):
        found.append((script.option_lines.get("mss", 0),
                      f"--mss={mss}: the lab's link gives an MSS of {LINK_MSS}, and a run does not change it"))
    return sorted(found)

