"""The endpoint on real interfaces: the sans-IO `EndpointCore` between a wire and the host stack.

    wire (AF_PACKET on the node's veth) --from_wire--> EndpointCore --TxFrame--> wire
                 |  frames the engine does not consume, vnet header unchanged
                 v
    host kernel (a TAP with the node's address and MAC) --everything--> wire, unchanged

Frames cross with their virtio-net headers, so a peer's 64 KiB GSO super-frame reaches the
engine (or the host) as one frame, and the engine's own TSO frames leave as one write that
the veth hands to the peer whole. The per-frame path reads into the driver's preallocated
buffer and hands a memoryview to the core: no parsing here, no copy, no logging.

`EndpointSettings` is the configuration both the process and a lab's `engine:` block use.
"""
from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from toe_engine.apps import APPS, App
from toe_engine.endpoint import EndpointConfig, EndpointCore
from toe_engine.io.afpacket import AfPacketDriver
from toe_engine.io.driver import FrameDriver
from toe_engine.io.ring import PacketRingDriver
from toe_engine.offload.rx_gro import RxGro
from toe_engine.resources import ResourceConfig
from toe_engine.resources.policy import ExhaustionPolicy
from toe_engine.runtime.control import Handler
from toe_engine.runtime.datapath import EndpointDataPath
from toe_engine.runtime.loop import MAX_BUSY_POLL_US, EventLoop
from toe_engine.runtime.migrate import migration_request
from toe_engine.runtime.queue_counters import queue_counters
from toe_engine.runtime.sockets import SocketApi
from toe_engine.tcp import congestion
from toe_engine.tcp.config import LOSS_DETECTION, TcpConfig

DEFAULT_SERVICES: dict[int, str] = {9: "discard", 7: "echo", 19: "chargen", 80: "http"}
#: TCP settings for bulk transfers over a veth: windows that cover a fast link's BDP many
#: times over, 64 KiB TSO sends, and a delayed ACK short enough not to throttle the peer.
DEFAULT_TCP: dict[str, Any] = {"rcv_buf": 4 * 1024 * 1024, "snd_buf": 4 * 1024 * 1024, "wscale": 8,
                               "delayed_ack": 0.005, "tso_segments": 44, "rto_min": 0.2, "rto_initial": 1.0}
TCP_FIELDS = frozenset(f.name for f in fields(TcpConfig))
MAX_TSO_FRAME = 65535 - 120
SETTABLE = ("capacity", "policy", "services", "addresses", "tcp", "gro", "ack_defer", "busy_poll")
#: TCP settings `set` may change on a running engine: limits every connection reads when it applies them,
#: and the congestion control new connections start with (an offload NIC's firmware choice).
RUNTIME_TCP_FIELDS = frozenset({"retries2", "syn_retries", "synack_retries", "congestion", "loss_detection"})



class EndpointSettingsError(ValueError):
    """The endpoint configuration is invalid; the message names the field."""


class EndpointSettings(BaseModel):
    """What an endpoint engine is told: its interfaces, identity, services and resources.

    `addresses` and `mac` are the host's (a lab fills them in from the topology); the
    engine answers for exactly those addresses. `tcp` overrides `DEFAULT_TCP` field by field.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    wire: str = "eth0"
    tap: str = "toe0"
    mac: str | None = Field(None, pattern=r"^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$")
    addresses: list[str] = []
    broadcasts: list[str] = []  # subnet broadcast addresses of the wire: never a valid source
    services: dict[int, str] = dict(DEFAULT_SERVICES)
    capacity: int = Field(1024, ge=0)
    embryonic_limit: int | None = Field(None, ge=0)
    policy: str = "fallback"
    tx_offload: bool = True
    tap_offloads: bool = True
    gro: bool = True  # receive coalescing of each batch's in-order segments (ethtool -K gro; offload.rx_gro)
    #: One ACK per connection for the in-order data of a read that brought `budget` segments (the engine
    #: was behind: a backlog), as Linux sends one for what it works through from a socket's backlog
    #: (net.ipv4.tcp_backlog_ack_defer, on by default); shorter reads ACK every second full segment (SHLD-19).
    ack_defer: bool = True
    mtu: int | None = Field(None, ge=576, le=65535)
    tcp: dict[str, Any] = {}
    secret: str | None = None
    budget: int = Field(64, ge=1)
    buffer_memory: int = Field(128 * 1024 * 1024, ge=65536)  # bytes all connections' buffers may hold (like tcp_mem)
    conn_memory: int | None = Field(None, ge=4096)  # bytes one connection may hold; None: 2 x (snd_buf + rcv_buf)
    #: More wire ports on the same network, with the wire's MAC and addresses: active-backup failover
    #: (toe_engine.runtime.failover), the active port's carrier read every `miimon_ms`.
    standby: list[str] = []
    miimon_ms: int = Field(10, ge=1, le=10_000)
    # receive ring and queues (ethtool -G rx, -C rx-frames/rx-usecs, -L combined, -X): runtime.queues
    rx_ring: int = Field(0, ge=0)  # frames of a TPACKET_V3 ring on the wire; 0: one read per frame
    rx_frames: int = Field(64, ge=1)
    rx_usecs: int = Field(1000, ge=1, le=1_000_000)
    queues: int | None = Field(None, ge=1, le=16)  # None: one queue in this process; N: N queue processes
    #: One queue only: stay on the core the engine starts on (runtime.process.pin_to_current_cpu). Off by
    #: default: on a busy machine a pinned engine waits for its core where an unpinned one moves on.
    pin: bool = False
    #: Microseconds the loop polls for frames before it sleeps (net.core.busy_poll's rule; runtime.loop):
    #: a poll-mode engine that answers without a wake-up's latency at the price of its core's idle time.
    busy_poll: int = Field(0, ge=0, le=MAX_BUSY_POLL_US)
    rss_table: list[int] | None = None
    rss_key: str | None = None

    @field_validator("addresses")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        return [str(ipaddress.ip_interface(a).ip) for a in value]

    @field_validator("services")
    @classmethod
    def _services(cls, value: dict[int, str]) -> dict[int, str]:
        return check_services(value)

    @field_validator("policy")
    @classmethod
    def _policy(cls, value: str) -> str:
        ExhaustionPolicy.parse(value)
        return value

    @field_validator("tcp")
    @classmethod
    def _tcp(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(value) - TCP_FIELDS)
        if unknown:
            raise ValueError(f"unknown TCP setting {unknown[0]!r}")
        TcpConfig(**{**DEFAULT_TCP, **value})
        return value

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        if value is not None:
            bytes.fromhex(value)
        return value

    @model_validator(mode="after")
    def _queues(self) -> EndpointSettings:
        from toe_engine.runtime.queues import check_queue_settings

        check_queue_settings(self)
        return self

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> EndpointSettings:
        """Validate configuration data; EndpointSettingsError names the offending field."""
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"]) or "config"
            message = "unknown field" if error["type"] == "extra_forbidden" else error["msg"]
            raise EndpointSettingsError(f"{where}: {message.removeprefix('Value error, ')}") from None

    @classmethod
    def load(cls, text_or_path: str) -> EndpointSettings:
        """From a JSON document or the path of a file holding one."""
        text = text_or_path if text_or_path.lstrip().startswith("{") else Path(text_or_path).read_text()
        try:
            return cls.parse(json.loads(text))
        except json.JSONDecodeError as exc:
            raise EndpointSettingsError(f"config is not valid JSON: {exc}") from None

    def tcp_config(self, mtu: int) -> TcpConfig:
        """TCP settings for a link of `mtu`: MSS from the MTU, TSO only if the device segments."""
        values = {**DEFAULT_TCP, **self.tcp}
        mss = values.pop("mss", None) or mtu - 40
        tso = values.pop("tso_segments")
        tso = max(1, min(tso, MAX_TSO_FRAME // mss)) if self.tx_offload else 1
        return TcpConfig(mss=mss, tso_segments=tso, **values)

    def endpoint_config(self, mac: bytes, mtu: int) -> EndpointConfig:
        if not self.addresses:
            raise EndpointSettingsError("addresses: an endpoint needs at least one address to answer for")
        return EndpointConfig(
            mac=mac, addresses=tuple(ipaddress.ip_address(a).packed for a in self.addresses),
            services=dict(self.services), tcp=self.tcp_config(mtu),
            resources=ResourceConfig(capacity=self.capacity, embryonic_limit=self.embryonic_limit,
                                     buffer_memory_bytes=self.buffer_memory, conn_memory_bytes=self.conn_memory,
                                     policy=ExhaustionPolicy.parse(self.policy)),
            tx_offload=self.tx_offload, secret=bytes.fromhex(self.secret) if self.secret else None,
            subnet_broadcasts=frozenset(ipaddress.ip_address(b).packed for b in self.broadcasts))


def check_services(value: Mapping[Any, str]) -> dict[int, str]:
    """`{port: application}` with ports in range and known applications."""
    out: dict[int, str] = {}
    for port, app in value.items():
        number = int(port)
        if not 1 <= number <= 65535:
            raise ValueError(f"service port {number} is outside 1..65535")
        if app not in APPS:
            raise ValueError(f"unknown application {app!r} on port {number}; known ones are {', '.join(APPS)}")
        out[number] = app
    return out


def check_busy_poll(value: object) -> int:
    """Busy-poll microseconds as `set` takes them: a whole number within EndpointSettings' bounds."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_BUSY_POLL_US:
        raise ValueError(f"busy_poll must be whole microseconds from 0 to {MAX_BUSY_POLL_US}, got {value!r}")
    return value


def check_on_off(name: str, value: object) -> bool:
    """An ethtool-style feature switch: on/off (or true/false)."""
    if isinstance(value, bool):
        return value
    if value in ("on", "off"):
        return value == "on"
    raise ValueError(f"{name} must be on or off, got {value!r}")


def check_addresses(value: object) -> tuple[bytes, ...]:
    """A non-empty list of IP addresses (strings), packed."""
    if not isinstance(value, list) or not value:
        raise ValueError(f"addresses must be a non-empty list of IP addresses, got {value!r}")
    return tuple(ipaddress.ip_address(str(a)).packed for a in value)


def check_runtime_tcp(current: TcpConfig, value: object) -> dict[str, Any]:
    """TCP changes a running engine accepts (RUNTIME_TCP_FIELDS), validated against the settings in force."""
    if not isinstance(value, Mapping):
        raise ValueError(f"tcp must be an object of TCP settings, got {value!r}")
    unknown = sorted(set(value) - RUNTIME_TCP_FIELDS)
    if unknown:
        raise ValueError(f"tcp: {unknown[0]!r} cannot change at run time; these can: {', '.join(sorted(RUNTIME_TCP_FIELDS))}")
    for name, number in value.items():
        if name == "congestion":
            if number not in congestion.ALGORITHMS:
                raise ValueError(f"tcp.congestion must be one of {', '.join(sorted(congestion.ALGORITHMS))}, "
                                 f"got {number!r}")
            continue
        if name == "loss_detection":
            if number not in LOSS_DETECTION:
                raise ValueError(f"tcp.loss_detection must be one of {', '.join(LOSS_DETECTION)}, got {number!r}")
            continue
        if not isinstance(number, int) or isinstance(number, bool) or number < 0:
            raise ValueError(f"tcp.{name} must be a non-negative integer, got {number!r}")
    TcpConfig(**{**asdict(current), **value})
    return dict(value)


class EndpointRuntime(EndpointDataPath):
    """Moves frames between the wire, the engine and the host (the data path, runtime.datapath);
    answers the control socket."""

    def __init__(self, core: EndpointCore, wire: FrameDriver, host: FrameDriver,
                 settings: EndpointSettings, budget: int = 64) -> None:
        super().__init__(core, wire, host, budget, RxGro(core.counters) if settings.gro else None,
                         settings.ack_defer)
        self.settings = settings
        self.wire_kernel_drops = 0
        self.queue = 0  # which of the node's queues this is (runtime.queues), for its counters
        self.loop: EventLoop | None = None
        self.busy_poll = settings.busy_poll  # µs, the loop's while attached (`set` changes both)

    def attach(self, loop: EventLoop) -> None:
        self.clock, self.loop = loop.clock, loop
        loop.busy_poll = self.busy_poll / 1e6
        loop.add_reader(self.wire, self.pump_wire)
        loop.add_reader(self.host, self.pump_host)
        loop.add_deadline_source(self.core.next_deadline, self.on_due)
        loop.add_deadline_source(self._ring_held, self.pump_wire)

    def _ring_held(self) -> float | None:
        """Due at once while the wire is a ring with a block handed over: its readiness alone can miss one
        (PacketRingDriver.held_deadline). Asked of the wire in use, which failover may change."""
        wire = self.wire
        return wire.held_deadline() if isinstance(wire, PacketRingDriver) else None

    # --- control --------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Engine counters (with application byte totals), resource gauges and driver counters."""
        core = self.core
        counters = core.counters.snapshot()
        live = list(core.apps.values())
        counters["app_rx_bytes"] = counters.get("app_rx_bytes", 0) + sum(app.received for app in live)
        counters["app_tx_bytes"] = counters.get("app_tx_bytes", 0) + sum(app.sent for app in live)
        if isinstance(self.wire, AfPacketDriver):
            self.wire_kernel_drops += self.wire.kernel_statistics()[1]
        drivers = {self.wire.ifname: {**asdict(self.wire.counters), "kernel_drops": self.wire_kernel_drops},
                   self.host.ifname: asdict(self.host.counters)}
        counters.update(queue_counters(self.queue, self.wire.counters, self.wire_kernel_drops))
        if self.loop is not None:  # wake-ups whose frames the busy poll found (EndpointSettings.busy_poll)
            counters["busy_polled"] = self.loop.stats.busy_polled
        return {"mode": "endpoint", "counters": counters, "gauges": core.resources.gauges(),
                "connections": len(core.stack), "drivers": drivers}

    def connections(self) -> list[dict[str, Any]]:
        """Offloaded connections with their TCP state, then flows handed to the host."""
        rows = self.core.connections()
        for key in self.core.resources.passed:
            rows.append({"local": f"{_ip(key.local_ip)}:{key.local_port}",
                         "remote": f"{_ip(key.remote_ip)}:{key.remote_port}",
                         "state": "host", "offloaded": False, "app": "", "snd_mss": 0})
        return rows

    def describe(self) -> dict[str, Any]:
        core = self.core
        policy = core.resources.policy
        policy_text = policy.kind.value + (f":{policy.deny_action.value}" if policy.kind.value == "deny" else "")
        tcp = core.config.tcp
        return {"wire": self.wire.ifname, "tap": self.host.ifname,
                "addresses": [_ip(a) for a in core.config.addresses],
                "services": {str(port): app for port, app in core.config.services.items()},
                "capacity": core.resources.table.capacity, "embryonic_limit": core.resources.table.embryonic_limit,
                "policy": policy_text, "tx_offload": core.config.tx_offload,
                "tap_offloads": self.settings.tap_offloads, "gro": self.gro is not None, "ack_defer": self.ack_defer,
                "mss": tcp.mss, "tso_segments": tcp.tso_segments,
                "tcp": {name: getattr(tcp, name) for name in sorted(RUNTIME_TCP_FIELDS)},
                "queues": 1, "rx_ring": self.settings.rx_ring, "rx_frames": self.settings.rx_frames,
                "rx_usecs": self.settings.rx_usecs, "busy_poll": self.busy_poll,
                **({"ring": self.wire.ring.geometry()} if isinstance(self.wire, PacketRingDriver) else {})}

    def update(self, changes: Mapping[str, Any]) -> None:
        """Change capacity, policy, services, addresses, TCP limits, GRO, ACK deferral or busy polling at run
        time; all are checked before any applies."""
        capacity = changes.get("capacity")
        if capacity is not None and (not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 0):
            raise ValueError(f"capacity must be a non-negative integer, got {capacity!r}")
        policy = ExhaustionPolicy.parse(str(changes["policy"])) if "policy" in changes else None
        services = check_services(changes["services"]) if "services" in changes else None
        addresses = check_addresses(changes["addresses"]) if "addresses" in changes else None
        tcp = check_runtime_tcp(self.core.config.tcp, changes["tcp"]) if "tcp" in changes else None
        gro = check_on_off("gro", changes["gro"]) if "gro" in changes else None
        ack_defer = check_on_off("ack_defer", changes["ack_defer"]) if "ack_defer" in changes else None
        busy_poll = check_busy_poll(changes["busy_poll"]) if "busy_poll" in changes else None
        core = self.core
        if busy_poll is not None:
            self.busy_poll = busy_poll
            if self.loop is not None:
                self.loop.busy_poll = busy_poll / 1e6
        if gro is not None and gro != (self.gro is not None):  # between batches: nothing is held
            self.gro = RxGro(core.counters) if gro else None
        if ack_defer is not None:  # between batches: no ACK is waiting
            self.ack_defer = ack_defer
        if capacity is not None:
            core.resources.set_capacity(capacity)
        if policy is not None:
            core.resources.set_policy(policy)
        if addresses is not None:
            core.set_addresses(addresses)
        for name, value in (tcp or {}).items():
            setattr(core.config.tcp, name, value)
        if services is not None:
            for port in set(core.config.services) - set(services):
                core.stack.unlisten(None, port)
            for port in set(services) - set(core.config.services):
                core.stack.listen(None, port, backlog=max(core.resources.table.capacity, 128))
            served: dict[int, str | type[App]] = dict(services)
            core.config.services = served
            core.resources.set_offload_ports(services)


def endpoint_handler(runtime: EndpointRuntime) -> Handler:
    """The control-socket request handler: stats, conns, config, set, and sock (the socket API, runtime.sockets)."""
    sockets = SocketApi(runtime.core)

    def handle(request: dict[str, Any], now: float) -> dict[str, Any]:
        cmd = request["cmd"]
        if cmd == "sock":
            answer = sockets.handle(request, now)
            runtime.flush()
            return answer
        if cmd in ("adopt", "export"):  # connection migration with the host (runtime.migrate)
            answer = migration_request(runtime.core, request, now)
            runtime.flush()
            return answer
        if cmd == "stats":
            return runtime.stats()
        if cmd == "conns":
            return {"connections": runtime.connections()}
        if cmd == "config":
            return {"config": runtime.describe()}
        if cmd == "set":
            queued = sorted(set(request) & {"queues", "rx_ring", "rx_frames", "rx_usecs", "rss_table", "rss_key"})
            if queued:
                raise ValueError(f"set: {queued[0]} needs an engine started with `queues: N` in its engine settings "
                                 "(this one runs one queue in its own process)")
            unknown = set(request) - {"cmd", *SETTABLE}
            if unknown:
                raise ValueError(f"set: unknown field(s) {', '.join(sorted(unknown))}; known: {', '.join(SETTABLE)}")
            runtime.update({key: request[key] for key in SETTABLE if key in request})
            return {"config": runtime.describe()}
        raise ValueError(f"unknown cmd {cmd!r}: use stats, conns, config, set, sock, adopt or export")

    return handle


def _ip(packed: bytes) -> str:
    return str(ipaddress.ip_address(packed))
