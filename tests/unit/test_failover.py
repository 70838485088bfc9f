"""Active-backup port failover of the engine endpoint, with fake ports and a fake loop (no root)."""
from __future__ import annotations

import struct
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from lab.endpoint_nodes import validate_endpoint
from lab.render import load_topology
from lab.spec import EngineSettingsError
from scenarios.failover import longest_gap
from toe_engine.counters import Counters
from toe_engine.runtime.failover import PortFailover, gratuitous_arp

MAC, IP = bytes.fromhex("020000000003"), bytes([10, 0, 20, 3])


class FakePort:
    def __init__(self, name: str, queued: int = 0) -> None:
        self.ifname, self.queued, self.sent = name, queued, []

    def frames(self, budget: int) -> Iterator[memoryview]:
        while self.queued:
            self.queued -= 1
            yield memoryview(b"x")

    def send(self, header: bytes, frame: bytes) -> bool:
        self.sent.append(frame)
        return True


class FakeLoop:
    def __init__(self) -> None:
        self.readers: dict[object, object] = {}
        self.sources: list[tuple[object, object]] = []

    def clock(self) -> float:
        return 0.0

    def add_reader(self, source: object, callback: object) -> None:
        assert source not in self.readers
        self.readers[source] = callback

    def remove_reader(self, source: object) -> None:
        del self.readers[source]

    def add_deadline_source(self, next_deadline: object, on_due: object) -> None:
        self.sources.append((next_deadline, on_due))


def _runtime(active: FakePort) -> SimpleNamespace:
    core = SimpleNamespace(counters=Counters(), addresses=frozenset({IP, bytes(16)}), config=SimpleNamespace(mac=MAC))
    runtime = SimpleNamespace(wire=active, core=core, flushed=0)
    runtime.pump_wire = lambda now: 0
    runtime.flush = lambda: setattr(runtime, "flushed", runtime.flushed + 1)
    return runtime


def test_gratuitous_arp_announces_our_address_from_our_mac() -> None:
    frame = gratuitous_arp(MAC, IP)
    assert frame[:6] == b"\xff" * 6 and frame[6:12] == MAC and frame[12:14] == b"\x08\x06"
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = struct.unpack("!HHBBH6s4s6s4s", frame[14:42])
    assert (htype, ptype, hlen, plen, op) == (1, 0x0800, 6, 4, 1) and sha == MAC and spa == tpa == IP


def test_losing_carrier_moves_to_the_standby_port_and_announces_from_it() -> None:
    eth0, eth1 = FakePort("eth0"), FakePort("eth1", queued=3)
    carrier = {"eth0": True, "eth1": True}
    runtime, loop = _runtime(eth0), FakeLoop()
    loop.add_reader(eth0, runtime.pump_wire)  # what EndpointRuntime.attach registered
    failover = PortFailover(runtime, [eth1], lambda name: carrier[name], miimon_ms=10)
    failover.attach(loop)
    loop.readers[eth1](0.0)
    assert runtime.core.counters["standby_rx_dropped"] == 3
    next_due, check = loop.sources[0]
    check(0.0)
    assert next_due() == pytest.approx(0.01) and runtime.wire is eth0 and not eth0.sent
    carrier["eth0"] = False
    check(0.02)
    assert runtime.wire is eth1 and failover.active == "eth1"
    assert loop.readers[eth1] is runtime.pump_wire and loop.readers[eth0] is not runtime.pump_wire
    assert eth1.sent == [gratuitous_arp(MAC, IP)]  # IPv4 addresses only
    counters = runtime.core.counters
    assert counters["failovers"] == 1 and counters["garp_sent"] == 1 and runtime.flushed == 1
    carrier["eth1"] = False
    check(0.03)  # no port with carrier: stay put
    assert runtime.wire is eth1 and counters["failovers"] == 1


def test_standby_ports_must_be_other_interfaces_of_the_node() -> None:
    spec = load_topology("two_port_bridge", {})
    node = spec.nodes["t1"].model_copy(update={"engine": {"wire": "eth0", "standby": ["eth2"]}})
    with pytest.raises(EngineSettingsError, match="standby: 'eth2' is not another of the node's interfaces"):
        validate_endpoint(node, spec.interfaces_of("t1"))
    ok = spec.nodes["t1"].model_copy(update={"engine": {"wire": "eth0", "standby": ["eth1"]}})
    validate_endpoint(ok, spec.interfaces_of("t1"))


def test_longest_gap_after_the_failure() -> None:
    assert longest_gap([0.1, 0.2, 1.0, 1.05], since=0.15, until=1.05) == pytest.approx(0.8)
    assert longest_gap([], since=1.0, until=4.0) == pytest.approx(3.0)


def test_the_kernel_is_shut_out_of_every_wire_port() -> None:
    from lab.endpoint_nodes import wire_ruleset

    one = wire_ruleset("eth0")
    assert one.count("hook ingress") == 1 and 'device "eth0"' in one and "chain in {" in one
    two = wire_ruleset("eth0", "eth1")
    assert two.count("policy drop") == 2 and 'device "eth1"' in two and "chain in_standby0 {" in two
    wire_chain = one[:one.rindex("}")]  # the one-port table without its closing brace
    assert two.startswith(wire_chain)  # the wire's chain comes first, as it was
