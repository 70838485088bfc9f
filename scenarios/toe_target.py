"""The `toe` target: toelab's engine as an endpoint in front of the server node's kernel stack.

`start` puts the engine on the scenario's server node (lab.endpoint_nodes.start_endpoint):
the engine terminates the service ports itself and hands everything else, and every flow it
cannot hold, to the node's kernel, where lab.services serves the same ports. Settings
a topology gives the server as kernel sysctls are given to the engine as its own equivalents
(`ENGINE_SYSCTLS`), so a scenario that lowers, say, the SYN-ACK retries does so on both targets.

Counters come from the engine's control socket under the engine's names; `standard_counters`
maps toelab's names onto them.
"""
from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any, ClassVar

from lab.endpoint_nodes import start_endpoint

from .targets import SERVICE_PORTS, Target, TargetUnavailable

if TYPE_CHECKING:
    from lab.engine_nodes import EngineHandle
    from lab.lab import Lab

#: A server sysctl -> (where the engine keeps the equivalent: "tcp" or "resources", its field there).
#: The SYN backlog is the engine's embryonic limit: how many SYN-RECEIVED entries it holds before
#: its exhaustion policy decides, as the kernel's backlog is where tcp_syncookies takes over.
ENGINE_SYSCTLS: dict[str, tuple[str, str]] = {
    "net.ipv4.tcp_synack_retries": ("tcp", "synack_retries"),
    "net.ipv4.tcp_syn_retries": ("tcp", "syn_retries"),
    "net.ipv4.tcp_retries2": ("tcp", "retries2"),
    "net.ipv4.tcp_max_syn_backlog": ("resources", "embryonic_limit"),
}


def engine_settings(sysctls: dict[str, str | int], wire: str) -> dict[str, Any]:
    """The endpoint's `engine:` settings for a server with these sysctls on interface `wire`."""
    settings: dict[str, Any] = {"wire": wire}
    tcp: dict[str, int] = {}
    for key, (section, field) in ENGINE_SYSCTLS.items():
        if key in sysctls:
            value = int(sysctls[key])
            if section == "tcp":
                tcp[field] = value
            else:
                settings[field] = value
    if tcp:
        settings["tcp"] = tcp
    return settings


class ToeTarget(Target):
    """The engine endpoint on the server node, read and steered through its control socket."""

    name = "toe"
    standard_counters: ClassVar[dict[str, str]] = {
        "rx_csum_errors": "rx_csum_errors", "out_segments": "tx_segments", "in_segments": "rx_segments",
        "retransmits": "retransmits", "resets_sent": "rst_sent", "syncookies_sent": "syncookies_sent",
        "syncookies_ok": "syncookies_ok", "syncookies_failed": "syncookies_failed", "listen_drops": "conn_denied",
        "timeouts": "rto_expired"}
    #: The engine's exhaustion policies (lab.endpoint's `policy` setting) by toelab's policy names.
    POLICIES: ClassVar[dict[str, str]] = {"fallback": "fallback", "deny": "deny:drop", "syncookie": "syncookie"}

    def __init__(self) -> None:
        self._engine: EngineHandle | None = None

    def start(self, lab: Lab, node: str) -> dict[str, int]:
        interfaces = lab.spec.interfaces_of(node)
        if len(interfaces) != 1:
            raise TargetUnavailable(
                f"the engine endpoint terminates TCP on one interface and answers each flow towards the neighbour it "
                f"came from, without a routing table; node {node} has {len(interfaces)} interfaces "
                f"({', '.join(interfaces)}) and routes its replies by destination")
        wire = interfaces[0]
        # The node's own `engine:` block (a topology may give the toe target queues or a ring), then the sysctls' equivalents.
        settings = {**lab.spec.nodes[node].engine, **engine_settings(lab.spec.nodes[node].sysctls, wire)}
        self._engine = start_endpoint(lab, lab.node(node), settings)
        services = {app: int(port) for port, app in self._engine.config()["services"].items()}
        return {name: services[name] for name in SERVICE_PORTS if name in services}

    @property
    def engine(self) -> EngineHandle:
        if self._engine is None:
            raise RuntimeError("the toe target is not started")
        return self._engine

    def counters(self) -> dict[str, int]:
        if self._engine is None:
            return {}
        # The engine creates a counter on its first increment; the ones it maps to toelab's
        # standard names exist from the start, at 0.
        counters: dict[str, int] = {**dict.fromkeys(self.standard_counters.values(), 0),
                                    **self._engine.stats()["counters"]}
        return counters

    def policies(self) -> tuple[str, ...]:
        return tuple(self.POLICIES)

    def set_policy(self, name: str) -> dict[str, int | str]:
        """The engine's exhaustion policy; what it applies to is the embryonic limit (the server's SYN backlog)."""
        if name not in self.POLICIES:
            return super().set_policy(name)
        config = self.engine.set(policy=self.POLICIES[name])
        return _settings(config, "policy", "capacity", "embryonic_limit")

    def half_open(self) -> int | None:
        """The engine's embryonic (SYN-RECEIVED) table entries; flows handed to the kernel are the kernel's."""
        if self._engine is None:
            return None
        return int(self._engine.stats()["gauges"]["table_embryonic"])

    def half_open_limit(self, port: int) -> int | None:
        """The engine's embryonic limit: the SYN-RECEIVED entries it holds before its policy decides."""
        if self._engine is None:
            return None
        return int(self._engine.config()["embryonic_limit"])

    def add_address(self, lab: Lab, node: str, cidr: str) -> None:
        """The kernel side gets it on the TAP (so it answers ARP for it), the engine answers TCP for it."""
        interface = ipaddress.ip_interface(cidr)
        config = self.engine.config()
        lab.node(node).run(["ip", "addr", "add", str(interface), "dev", config["tap"]], check=True)
        self.engine.set(addresses=[*config["addresses"], str(interface.ip)])

    def set_retries(self, r2: int) -> dict[str, int | str]:
        config = self.engine.set(tcp={"retries2": r2})
        return {"tcp.retries2": config["tcp"]["retries2"]}


def _settings(config: dict[str, Any], *names: str) -> dict[str, int | str]:
    """The named settings of an engine config that have a value, as a scenario's evidence."""
    return {name: config[name] for name in names if isinstance(config.get(name), (int, str))}
