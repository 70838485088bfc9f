"""The middlebox: two ports, a stage pipeline per direction, bridge or router mode.

Per direction the pipeline is: receive coalescing (off | gro | lro) -> router (router mode
only) -> TSO (optional) -> impairments. Coalescing comes first because it models the ingress
NIC; impairments come last because they model the egress link, so with TSO on they act on
MSS-sized frames as a real wire would, and with TSO off a GSO super-frame is one unit (as
netem sees it). A direction without any stage forwards straight from the receive buffer.

Configuration, counters and run-time changes (`update`) are plain data, so the control
socket and tests drive the same object. Counters per direction are those of `ethtool -S`
style: fwd_frames/fwd_bytes (frames sent on the egress port other than ones the middlebox
made itself), fwd_in_place (of those, the frames the router patched where they were read),
rx_malformed (frames whose headers contradict themselves, dropped), router drops and ICMP,
gro_merged, lro_merged, tso_segments, and the impairment statistics prefixed `impair_`.

A router-mode direction whose pipeline is the router alone, or GRO then the router, forwards
the common frame in place in the receive buffer (`RouterStage.forward_in_place`; behind GRO
only a super-frame while GRO holds nothing, which GRO would hand on as it came) and gives
the pipeline only the rest.
"""
from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from toe_engine.counters import Counters
from toe_engine.impair import ImpairmentSpec, ImpairmentSpecError
from toe_engine.io.driver import FrameDriver
from toe_engine.io.netns_enter import in_netns
from toe_engine.io.vnet import PLAIN_VNET_BYTES
from toe_engine.runtime.forwarder import Forwarder, InPlace
from toe_engine.runtime.loop import MAX_BUSY_POLL_US, EventLoop
from toe_engine.runtime.router import ROUTER_COUNTERS, Port, Route, Router, RouterStage
from toe_engine.runtime.stages import (
    GroStage,
    ImpairStage,
    LroStage,
    Pipeline,
    PipelineStage,
    TsoStage,
)

DIRECTIONS = ("a_to_b", "b_to_a")
MIDDLEBOX_COUNTERS = ("fwd_frames", "fwd_bytes", "fwd_in_place", "rx_malformed", *ROUTER_COUNTERS, "gro_merged", "lro_merged", "tso_segments")
KERNEL_FORWARDING_SYSCTLS = ("net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding")
_NO_IMPAIRMENT = ImpairmentSpec()


class MiddleboxConfigError(ValueError):
    """The middlebox configuration is invalid; the message names the field."""


class DirectionConfig(BaseModel):
    """What one direction does: coalescing on ingress, TSO on egress, seeded impairments."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    coalesce: Literal["off", "gro", "lro"] = "off"
    tso: bool = False
    impairments: ImpairmentSpec = _NO_IMPAIRMENT
    seed: int = 0


class StaticRoute(BaseModel):
    """A route beyond the connected subnets: `dst` (a prefix) via a neighbour on one port."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dst: str
    via: str

    @field_validator("dst")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return str(ipaddress.ip_network(value, strict=False))

    @field_validator("via")
    @classmethod
    def _address(cls, value: str) -> str:
        return str(ipaddress.ip_address(value))


class MiddleboxConfig(BaseModel):
    """The whole middlebox: mode, the two interfaces (a, b), and each direction."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["bridge", "router"] = "bridge"
    a: str = "eth0"
    b: str = "eth1"
    a_to_b: DirectionConfig = DirectionConfig()
    b_to_a: DirectionConfig = DirectionConfig()
    routes: list[StaticRoute] = []
    coalesce_flush_timeout: float = 0.0
    record_decisions: bool = False
    budget: int = Field(64, ge=1)
    #: Microseconds the loop polls for frames before it sleeps (net.core.busy_poll's rule, as the endpoint's).
    busy_poll: int = Field(0, ge=0, le=MAX_BUSY_POLL_US)

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> MiddleboxConfig:
        """Validate configuration data; MiddleboxConfigError names the offending field."""
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"]) or "config"
            raise MiddleboxConfigError(f"{where}: {error['msg'].removeprefix('Value error, ')}") from None

    @classmethod
    def load(cls, text_or_path: str) -> MiddleboxConfig:
        """From a JSON document or the path of a file holding one."""
        text = text_or_path
        if not text_or_path.lstrip().startswith("{"):
            text = Path(text_or_path).read_text()
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MiddleboxConfigError(f"config is not valid JSON: {exc}") from None
        return cls.parse(data)


def update_direction(config: DirectionConfig, changes: Mapping[str, Any]) -> DirectionConfig:
    """A direction config with `changes` applied; impairment fields merge into the current ones."""
    merged = config.model_dump()
    for key, value in changes.items():
        if key == "impairments" and isinstance(value, Mapping):
            merged["impairments"] = {**config.impairments.model_dump(exclude_defaults=True), **value}
        else:
            merged[key] = value
    try:
        if isinstance(merged["impairments"], Mapping):
            merged["impairments"] = ImpairmentSpec.parse(merged["impairments"])
        return DirectionConfig.model_validate(merged)
    except ImpairmentSpecError as exc:
        raise MiddleboxConfigError(f"impairments: {exc}") from None
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        raise MiddleboxConfigError(f"{where}: {error['msg']}") from None


class Middlebox:
    """Forwards between drivers `a` and `b` through each direction's pipeline.

    `ports` (name, MAC, MTU, addresses of each interface) are needed in router mode; see
    `discover_port`. Call `attach(loop)` to run it.
    """

    def __init__(
        self,
        config: MiddleboxConfig,
        a: FrameDriver,
        b: FrameDriver,
        ports: tuple[Port, Port] | None = None,
    ) -> None:
        self.config = config
        self.drivers = (a, b)
        self.counters = {direction: Counters(MIDDLEBOX_COUNTERS) for direction in DIRECTIONS}
        self._originated = [[0, 0], [0, 0]]  # per port: frames, bytes the middlebox made itself
        self._loop: EventLoop | None = None
        self.forwarder = Forwarder(a, b, budget=config.budget)
        self._directions = {"a_to_b": self.forwarder.a_to_b, "b_to_a": self.forwarder.b_to_a}
        self.router: Router | None = None
        self._router_stages: dict[str, RouterStage] = {}
        if config.mode == "router":
            if ports is None:
                raise MiddleboxConfigError("router mode needs the ports' MACs, MTUs and addresses")
            routes = [_static_route(route, ports) for route in config.routes]
            self.router = Router(ports, self._transmit, routes,
                                 counters=[self.counters["a_to_b"], self.counters["b_to_a"]])
            self._router_stages = {"a_to_b": RouterStage(self.router, 0), "b_to_a": RouterStage(self.router, 1)}
        self.ports = ports
        self.pipelines = {direction: Pipeline() for direction in DIRECTIONS}
        self._impair: dict[str, ImpairStage | None] = dict.fromkeys(DIRECTIONS)
        self._direction_configs = {"a_to_b": config.a_to_b, "b_to_a": config.b_to_a}
        for direction in DIRECTIONS:
            self._configure(direction, self._direction_configs[direction], 0.0)

    # --- running ----------------------------------------------------------------------------
    def attach(self, loop: EventLoop) -> None:
        """Register both drivers and both pipelines' deadlines with `loop`, which busy-polls as configured."""
        loop.busy_poll, self._loop = self.config.busy_poll / 1e6, loop
        loop.add_reader(self.drivers[0], self._directions["a_to_b"].pump)
        loop.add_reader(self.drivers[1], self._directions["b_to_a"].pump)
        for direction in DIRECTIONS:
            pipeline = self.pipelines[direction]
            loop.add_deadline_source(pipeline.next_deadline, self._poller(direction, pipeline))

    def _poller(self, direction: str, pipeline: Pipeline) -> Callable[[float], None]:
        emit = self._directions[direction].emit

        def on_due(now: float) -> None:
            emit(pipeline.poll(now))

        return on_due

    def _transmit(self, port: int, frame: bytes) -> None:
        if self.drivers[port].send(PLAIN_VNET_BYTES, frame):
            originated = self._originated[port]
            originated[0] += 1
            originated[1] += len(frame)

    # --- configuration ------------------------------------------------------------------------
    def direction_config(self, direction: str) -> DirectionConfig:
        return self._direction_configs[direction]

    def update(self, direction: str, changes: Mapping[str, Any], now: float) -> None:
        """Change one direction ("a_to_b", "b_to_a" or "both") while running."""
        targets = DIRECTIONS if direction == "both" else (direction,)
        if any(target not in DIRECTIONS for target in targets):
            raise MiddleboxConfigError(f"direction must be a_to_b, b_to_a or both, not {direction!r}")
        new = {target: update_direction(self._direction_configs[target], changes) for target in targets}
        for target, config in new.items():
            self._configure(target, config, now)

    def _configure(self, direction: str, config: DirectionConfig, now: float) -> None:
        pipeline = self.pipelines[direction]
        counters = self.counters[direction]
        current = {type(stage): stage for stage in pipeline.stages}
        stages: list[PipelineStage] = []
        timeout = self.config.coalesce_flush_timeout
        if config.coalesce == "gro":
            stages.append(current.get(GroStage) or GroStage(counters, flush_timeout=timeout))  # type: ignore[arg-type]
        elif config.coalesce == "lro":
            stages.append(current.get(LroStage) or LroStage(counters, flush_timeout=timeout))  # type: ignore[arg-type]
        if direction in self._router_stages:
            stages.append(self._router_stages[direction])
        if config.tso:
            stages.append(current.get(TsoStage) or TsoStage(counters))  # type: ignore[arg-type]
        impair = self._impair[direction]
        if impair is None and config.impairments != _NO_IMPAIRMENT:
            impair = ImpairStage(config.impairments, config.seed, counters=counters,
                                 record=self.config.record_decisions)
            self._impair[direction] = impair
        elif impair is not None and (impair.spec != config.impairments or impair.seed != config.seed):
            impair.set_spec(config.impairments, config.seed)
        if impair is not None:
            stages.append(impair)
        released = pipeline.replace(stages, now)
        self._direction_configs[direction] = config
        forwarding = self._directions[direction]
        forwarding.stage = pipeline if pipeline else None
        forwarding.in_place = _in_place_path(stages, self._router_stages.get(direction))
        if released:
            forwarding.emit(released)

    # --- reporting ------------------------------------------------------------------------------
    def impairer_of(self, direction: str) -> ImpairStage | None:
        return self._impair[direction]

    def stats(self) -> dict[str, Any]:
        """Engine counters per direction and summed, driver counters, impairment statistics."""
        directions: dict[str, dict[str, int]] = {}
        impairments: dict[str, dict[str, int]] = {}
        for index, direction in enumerate(DIRECTIONS):
            egress = 1 - index
            values = self.counters[direction].snapshot()
            tx = self.drivers[egress].counters
            values["fwd_frames"] = tx.tx_frames - self._originated[egress][0]
            values["fwd_bytes"] = tx.tx_bytes - self._originated[egress][1]
            values["fwd_in_place"] = self._directions[direction].in_place_frames
            values["rx_malformed"] = self._directions[direction].malformed
            impair = self._impair[direction]
            impairment_stats = impair.stats() if impair is not None else {}
            impairments[direction] = impairment_stats
            for name, value in impairment_stats.items():
                values[f"impair_{name}"] = value
            directions[direction] = values
        totals: dict[str, int] = {}
        for values in directions.values():
            for name, value in values.items():
                totals[name] = totals.get(name, 0) + value
        if self._loop is not None:  # wake-ups whose frames the busy poll found (MiddleboxConfig.busy_poll)
            totals["busy_polled"] = self._loop.stats.busy_polled
        return {
            "mode": self.config.mode,
            "counters": totals,
            "directions": directions,
            "drivers": {driver.ifname: asdict(driver.counters) for driver in self.drivers},
            "impairments": impairments,
        }

    def describe(self) -> dict[str, Any]:
        """The configuration in force now (after run-time changes), as JSON-ready data."""
        data = self.config.model_dump(mode="json")
        for direction in DIRECTIONS:
            data[direction] = self._direction_configs[direction].model_dump(mode="json")
        if self.ports is not None:
            data["ports"] = [
                {"name": p.name, "mac": p.mac.hex(":"), "mtu": p.mtu, "addresses": [str(a) for a in p.addresses]}
                for p in self.ports
            ]
        return data


class _PastGro:
    """The router's in-place path behind GRO, for the frames GRO hands on at once: super-frames
    untouched, segments without payload with their checksum completed (after the router's
    rewrite, which changes nothing the TCP checksum covers)."""

    def __init__(self, gro: GroStage, router: RouterStage) -> None:
        self.gro = gro
        self.router = router

    def __call__(self, buf: bytearray, n: int) -> bool:
        gro = self.gro
        if gro.passes_untouched(buf):
            return self.router.forward_in_place(buf, n)
        if gro.passes_plain(buf, n) and self.router.forward_in_place(buf, n):
            gro.hand_on_plain(buf, n)
            return True
        return False


def _in_place_path(stages: list[PipelineStage], router: RouterStage | None) -> InPlace | None:
    """The in-place path of a direction whose stages are the router alone, or GRO then the router
    (GRO hands a super-frame on as it came while it holds nothing); None for any other pipeline."""
    if router is None or not stages or stages[-1] is not router:
        return None
    if len(stages) == 1:
        return router.forward_in_place
    if len(stages) == 2 and isinstance(stages[0], GroStage):
        return _PastGro(stages[0], router)
    return None


def _static_route(route: StaticRoute, ports: tuple[Port, Port]) -> Route:
    via = ipaddress.ip_address(route.via)
    for index, port in enumerate(ports):
        if any(via in address.network for address in port.addresses if address.version == via.version):
            return Route(ipaddress.ip_network(route.dst), index, via.packed)
    raise MiddleboxConfigError(f"routes: next hop {route.via} is on neither port's subnet")


def discover_port(ifname: str, netns: str | int | None = None) -> Port:
    """Read an interface's MAC, MTU and addresses from the kernel of its namespace."""
    from pyroute2 import IPRoute

    with in_netns(netns):
        ipr = IPRoute()
    try:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            raise MiddleboxConfigError(f"interface {ifname!r} does not exist in namespace {netns or 'current'}")
        index = found[0]
        link = ipr.get_links(index)[0]
        mac = bytes.fromhex(link.get_attr("IFLA_ADDRESS").replace(":", ""))
        mtu = int(link.get_attr("IFLA_MTU"))
        addresses: list[ipaddress.IPv4Interface | ipaddress.IPv6Interface] = [
            ipaddress.ip_interface(f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}")
            for msg in ipr.get_addr(index=index)
        ]
    finally:
        ipr.close()
    return Port(ifname, mac, mtu, addresses)


def disable_kernel_forwarding(netns: str | int | None = None) -> None:
    """Router mode: the node's kernel keeps its addresses but must not forward (we do)."""
    with in_netns(netns):
        for key in KERNEL_FORWARDING_SYSCTLS:
            Path("/proc/sys", key).write_text("0\n")
