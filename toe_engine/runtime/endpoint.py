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
import struct
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from toe_engine.apps import APPS, App
from toe_engine.endpoint import EndpointConfig, EndpointCore, TxFrame
from toe_engine.io.afpacket import AfPacketDriver
from toe_engine.io.driver import FrameDriver
from toe_engine.io.ring import PacketRingDriver
from toe_engine.io.vnet import (
    PLAIN_VNET_BYTES,
    VNET_BYTE_ORDER,
    VNET_F_DATA_VALID,
    VNET_F_NEEDS_CSUM,
    VNET_GSO_NONE,
    VNET_GSO_TCPV4,
    VNET_GSO_TCPV6,
    VNET_HDR_LEN,
)
from toe_engine.offload.rx_gro import Aggregate, Delivered, RxGro
from toe_engine.resources import ResourceConfig
from toe_engine.resources.policy import ExhaustionPolicy
from toe_engine.runtime.control import Handler
from toe_engine.runtime.loop import EventLoop
from toe_engine.runtime.migrate import migration_request
from toe_engine.runtime.queue_counters import queue_counters
from toe_engine.runtime.sockets import SocketApi
from toe_engine.synpath import SynFastPath
from toe_engine.tcp import congestion
from toe_engine.tcp.config import LOSS_DETECTION, TcpConfig

DEFAULT_SERVICES: dict[int, str] = {9: "discard", 7: "echo", 19: "chargen", 80: "http"}
#: TCP settings for bulk transfers over a veth: windows that cover a fast link's BDP many
#: times over, 64 KiB TSO sends, and a delayed ACK short enough not to throttle the peer.
DEFAULT_TCP: dict[str, Any] = {"rcv_buf": 4 * 1024 * 1024, "snd_buf": 4 * 1024 * 1024, "wscale": 8,
                               "delayed_ack": 0.005, "tso_segments": 44, "rto_min": 0.2, "rto_initial": 1.0}
TCP_FIELDS = frozenset(f.name for f in fields(TcpConfig))
MAX_TSO_FRAME = 65535 - 120
SETTABLE = ("capacity", "policy", "services", "addresses", "tcp", "gro", "ack_defer")
#: TCP settings `set` may change on a running engine: limits every connection reads when it applies them,
#: and the congestion control new connections start with (an offload NIC's firmware choice).
RUNTIME_TCP_FIELDS = frozenset({"retries2", "syn_retries", "synack_retries", "congestion", "loss_detection"})
MAX_LOGGED_ERRORS = 10
#: How many times the wire's budget of host frames one wake-up takes (see pump_host).
HOST_BUDGET_SHARE = 4

_VNET = struct.Struct(VNET_BYTE_ORDER + "BBHHHH")
_GSO_SIZE = struct.Struct(VNET_BYTE_ORDER + "H")  # at offset 4 of the virtio-net header, when gso_type is set
_CSUM_TRUSTED = VNET_F_NEEDS_CSUM | VNET_F_DATA_VALID
_ETHERTYPE_IPV6_HIGH = 0x86


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


def segments_in(batch: list[memoryview]) -> int:
    """The segments a batch of wire frames (virtio-net header first) carries: one per frame, and for
    a peer's GSO super-frame as many as its gso_size goes into its length."""
    segments = len(batch)
    for frame in batch:
        if frame[1]:  # gso_type
            segments += len(frame) // (_GSO_SIZE.unpack_from(frame, 4)[0] or len(frame)) - 1
    return segments


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


def tx_header(tx: TxFrame) -> bytes:
    """The virtio-net header for one engine frame: NEEDS_CSUM, and GSO TCPv4/v6 for TSO frames."""
    frame, gso_size, csum_start, csum_offset = tx
    if not csum_start:
        return PLAIN_VNET_BYTES
    hdr_len = csum_start + ((frame[csum_start + 12] >> 4) << 2)
    gso_type = VNET_GSO_NONE
    if gso_size:
        gso_type = VNET_GSO_TCPV6 if frame[12] == _ETHERTYPE_IPV6_HIGH else VNET_GSO_TCPV4
    return _VNET.pack(VNET_F_NEEDS_CSUM, gso_type, hdr_len, gso_size, csum_start, csum_offset)


class EndpointRuntime:
    """Moves frames between the wire, the engine and the host; answers the control socket."""

    def __init__(self, core: EndpointCore, wire: FrameDriver, host: FrameDriver,
                 settings: EndpointSettings, budget: int = 64) -> None:
        self.core, self.wire, self.host = core, wire, host
        self.settings = settings
        self.budget = budget
        self.wire_kernel_drops = 0
        self.queue = 0  # which of the node's queues this is (runtime.queues), for its counters
        self.clock: Callable[[], float] = time.monotonic
        self.gro: RxGro | None = RxGro(core.counters) if settings.gro else None
        self.ack_defer = settings.ack_defer

    def attach(self, loop: EventLoop) -> None:
        self.clock = loop.clock
        loop.add_reader(self.wire, self.pump_wire)
        loop.add_reader(self.host, self.pump_host)
        loop.add_deadline_source(self.core.next_deadline, self.on_due)
        loop.add_deadline_source(self._ring_held, self.pump_wire)

    def _ring_held(self) -> float | None:
        """Due at once while the wire is a ring with a block handed over: its readiness alone can miss one
        (PacketRingDriver.held_deadline). Asked of the wire in use, which failover may change."""
        wire = self.wire
        return wire.held_deadline() if isinstance(wire, PacketRingDriver) else None

    # --- data path ----------------------------------------------------------------------
    def pump_wire(self, now: float) -> int:
        """Frames from the wire: to the engine, or unchanged to the host if it declines them.

        The driver hands over what is waiting in batches (a ring driver a whole block each);
        replies queue up and leave in one go at the end (`commit_tx`), a plain driver has sent
        each already.

        With `ack_defer`, a read that brings `budget` segments is a backlog: from the batch that
        reaches it on, in-order data draws one ACK per connection at the read's end
        (EndpointCore.begin_batch). Linux defers the ACKs of a socket's backlog and nothing else
        (tcp_backlog_ack_defer), and a backlog forms only while the socket's owner is busy; likewise
        a read reaches the budget only when at least that many frames (or a few GSO frames of that
        many segments) were waiting, which happens when the engine was busy while they came, and then
        answering every second segment is the cost that keeps it behind. A shorter read found the
        engine keeping up (a sender bursts at most its window, a paced peer brings a few frames per
        read) and ACKs every second full-sized segment as it comes (SHLD-19): no stretch ACK from an
        engine that is not behind.
        """
        core, wire, budget, gro = self.core, self.wire, self.budget, self.gro
        defer, deferring, count, waiting, syn_path = self.ack_defer, False, 0, 0, core.syn_path
        try:
            for batch in wire.batches(budget):
                count += len(batch)
                if defer and not deferring:
                    waiting += segments_in(batch)
                    if waiting >= budget:
                        core.begin_batch()
                        deferring = True
                if syn_path is not None:  # a flood's SYNs first, all of the batch's in one call
                    batch = self._take_syns(syn_path, batch, now)
                now = self._frame_by_frame(batch, now) if gro is None else self._coalesced(batch, now, gro)
        finally:
            if deferring:
                core.end_batch(self.clock())
                if core.tx:
                    self.flush(commit=False)
        wire.commit_tx()
        return count

    def _take_syns(self, syn_path: SynFastPath, batch: list[memoryview], now: float) -> list[memoryview]:
        """The batch's bare SYNs that meet a full table, decided in one compiled loop (SynFastPath.take_batch):
        their SYN-ACKs queued for the wire, the host's written to it; returns the rest of the batch, in order."""
        host: list[memoryview] = []
        rest = syn_path.take_batch(batch, now, host)
        to_host = self.host.write_raw
        for frame in host:
            try:
                to_host(frame)
            except OSError:
                self.core.counters.inc("host_tx_errors")
        if syn_path.replies:
            self.wire.send_messages(syn_path.take_replies())
        return rest

    def _frame_by_frame(self, batch: list[memoryview], now: float) -> float:
        """One batch to the engine frame by frame; returns the time the next batch is handled at."""
        core = self.core
        from_wire, to_host, flush = core.from_wire, self.host.write_raw, self.flush
        for frame in batch:
            try:
                consumed = from_wire(frame[VNET_HDR_LEN:], now, bool(frame[0] & _CSUM_TRUSTED),
                                     _GSO_SIZE.unpack_from(frame, 4)[0] if frame[1] else 0)
            except Exception:  # one frame that trips the engine must not stop the node
                self._engine_error(frame[VNET_HDR_LEN:])
                consumed = True
            if not consumed:
                try:
                    to_host(frame)
                except OSError:
                    core.counters.inc("host_tx_errors")
            if core.tx:
                flush(commit=False)
                # A frame read after this reply may answer it (a peer's next SYN after our RST'd
                # SYN-ACK, say): it must not be handled as if it came before, so time moves on.
                now = self.clock()
        return now

    def _coalesced(self, batch: list[memoryview], now: float, gro: RxGro) -> float:
        """One batch with receive GRO: its segments coalesced per flow (offload.rx_gro), every
        aggregate handed to the engine once; returns the time the next batch is handled at."""
        core, counters = self.core, self.core.counters
        from_wire, to_host, flush, receive = core.from_wire, self.host.write_raw, self.flush, gro.receive
        out: list[Delivered] = []
        for wire_frame in batch:
            try:
                receive(wire_frame, out)
            except Exception:  # never expected (the coalescer only reads headers), never fatal
                self._engine_error(wire_frame[VNET_HDR_LEN:])
        gro.flush(out)
        for item in out:
            frame: bytes | memoryview
            if isinstance(item, Aggregate):
                frame, trusted, gso_size = item.frame, True, item.gso_size
                counters.inc("rx_frames", len(item.originals) - 1)  # wire frames, as without GRO
            else:
                frame, trusted = item[VNET_HDR_LEN:], bool(item[0] & _CSUM_TRUSTED)
                gso_size = _GSO_SIZE.unpack_from(item, 4)[0] if item[1] else 0  # a peer's GSO frame
            try:
                consumed = from_wire(frame, now, trusted, gso_size)
            except Exception:  # one frame that trips the engine must not stop the node
                self._engine_error(memoryview(frame))
                consumed = True
            if not consumed:  # the host gets the wire's frames, never an aggregate
                try:
                    for original in item.originals if isinstance(item, Aggregate) else (item,):
                        to_host(original)
                except OSError:
                    counters.inc("host_tx_errors")
            if core.tx:
                flush(commit=False)
                now = self.clock()
        return now

    def pump_host(self, now: float) -> int:
        """Frames the host kernel sends go to the wire as they are (header included), up to
        HOST_BUDGET_SHARE times the wire's budget per wake-up: the host's transmit path is not starved
        by a flooded receive path, as a NIC's is not (what the wire ring cannot hold is counted missed,
        what the host's queue cannot hold is lost uncounted)."""
        to_wire, wire = self.wire.write_raw, self.wire
        count = 0
        for frame in self.host.frames(self.budget * HOST_BUDGET_SHARE):
            try:
                to_wire(frame)
            except OSError:
                self.core.counters.inc("tx_errors")
            count += 1
        wire.commit_tx()
        return count

    def _engine_error(self, frame: memoryview) -> None:
        """Count a frame the engine raised on; the first few go to stderr (the node's log) in full."""
        counters = self.core.counters
        counters.inc("rx_engine_errors")
        if counters["rx_engine_errors"] <= MAX_LOGGED_ERRORS:
            print(f"endpoint: engine error on frame {bytes(frame[:256]).hex()}", file=sys.stderr)
            traceback.print_exc(file=sys.stderr)
            sys.stderr.flush()

    def on_due(self, now: float) -> None:
        self.core.on_timer(now)
        self.flush()

    def flush(self, commit: bool = True) -> None:
        """Send what the engine has for the wire; `commit=False` leaves a batching driver's queue
        for the caller to commit once."""
        send = self.wire.send
        for tx in self.core.poll_wire():
            try:
                send(tx_header(tx), tx.frame)
            except OSError:  # a frame the device refuses (EMSGSIZE, EINVAL) is lost, not fatal
                self.core.counters.inc("tx_errors")
        if commit:
            self.wire.commit_tx()

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
                "rx_usecs": self.settings.rx_usecs,
                **({"ring": self.wire.ring.geometry()} if isinstance(self.wire, PacketRingDriver) else {})}

    def update(self, changes: Mapping[str, Any]) -> None:
        """Change capacity, policy, services, addresses, TCP limits, GRO or ACK deferral at run time; all are
        checked before any applies."""
        capacity = changes.get("capacity")
        if capacity is not None and (not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 0):
            raise ValueError(f"capacity must be a non-negative integer, got {capacity!r}")
        policy = ExhaustionPolicy.parse(str(changes["policy"])) if "policy" in changes else None
        services = check_services(changes["services"]) if "services" in changes else None
        addresses = check_addresses(changes["addresses"]) if "addresses" in changes else None
        tcp = check_runtime_tcp(self.core.config.tcp, changes["tcp"]) if "tcp" in changes else None
        gro = check_on_off("gro", changes["gro"]) if "gro" in changes else None
        ack_defer = check_on_off("ack_defer", changes["ack_defer"]) if "ack_defer" in changes else None
        core = self.core
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
