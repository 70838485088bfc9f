"""Two endpoint cores joined frame by frame through seeded impairments, on a fake clock.

This is the engine-level harness: real frames (codec, checksums, TSO, coalescing off),
the real resource model and applications, and `toe_engine.impair.Impairer` in each
direction, so a 10 MB transfer under loss, reordering, duplication and delay is checked
byte for byte without a network or a clock. The "device" between core and channel
completes checksums and segments TSO super-frames the way a NIC (or veth) would.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from toe_engine.apps.base import App, AppConnection
from toe_engine.endpoint import EndpointConfig, EndpointCore, TxFrame
from toe_engine.impair import Impairer, ImpairmentSpec
from toe_engine.offload.csum import complete_partial_checksum
from toe_engine.offload.tso import segment_frame
from toe_engine.resources import ResourceConfig
from toe_engine.tcp.config import TcpConfig

IP_A = bytes([192, 0, 2, 1])  # TEST-NET-1: documentation addresses, never on any wire
IP_B = bytes([192, 0, 2, 2])
MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")
ECHO_PORT = 7


def device_transmit(tx: TxFrame, super_frames: bool = False) -> list[bytes]:
    """What a NIC makes of a frame the engine handed it: checksums completed, TSO applied.

    With `super_frames` a TSO frame crosses whole, as a GSO packet crosses a veth pair.
    """
    frame = bytearray(tx.frame)
    if tx.gso_size and not super_frames:
        return [bytes(f) for f in segment_frame(frame, tx.gso_size)]
    if tx.csum_start:
        complete_partial_checksum(frame, tx.csum_start, tx.csum_offset)
    return [bytes(frame)]


class BulkEchoClient(App):
    """Sends `payload` and collects what the echo service returns."""

    payload = b""

    def __init__(self, conn: AppConnection) -> None:
        super().__init__(conn)
        self.offset = 0
        self.echoed = bytearray()
        self.closed = False

    def on_connected(self) -> None:
        self.on_writable()

    def on_writable(self) -> None:
        while self.offset < len(self.payload):
            sent = self.send(memoryview(self.payload)[self.offset:self.offset + 65536])
            if not sent:
                return
            self.offset += sent

    def on_data(self, data: bytes | bytearray | memoryview) -> None:
        super().on_data(data)
        self.echoed += data
        if len(self.echoed) >= len(self.payload):
            self.conn.close()

    def on_closed(self) -> None:
        self.closed = True


@dataclass
class FrameHarness:
    """Client core A and server core B (echo on port 7) joined by two impairers."""

    a_to_b: ImpairmentSpec = field(default_factory=lambda: ImpairmentSpec(delay_ms=1))
    b_to_a: ImpairmentSpec = field(default_factory=lambda: ImpairmentSpec(delay_ms=1))
    tcp: TcpConfig = field(default_factory=TcpConfig)
    resources: ResourceConfig = field(default_factory=ResourceConfig)
    tx_offload: bool = True
    super_frames: bool = False  # TSO frames cross the wire whole (veth-style GSO)
    rx_csum_offload: bool = False  # the receiving "device" vouches for checksums
    seed: int = 0
    now: float = 0.0

    def __post_init__(self) -> None:
        secret = self.seed.to_bytes(8, "big") * 2
        self.a = EndpointCore(EndpointConfig(MAC_A, (IP_A,), services={}, tcp=self.tcp, tx_offload=self.tx_offload,
                                             secret=b"a" + secret))
        self.b = EndpointCore(EndpointConfig(MAC_B, (IP_B,), services={ECHO_PORT: "echo"}, tcp=self.tcp,
                                             resources=self.resources, tx_offload=self.tx_offload, secret=b"b" + secret))
        self.a.neighbors.learn(IP_B, MAC_B)
        self.wire_ab = Impairer(self.a_to_b, self.seed)
        self.wire_ba = Impairer(self.b_to_a, self.seed + 1)
        self.frames = 0

    def _move(self) -> None:
        """Carry frames until nothing more is due now: answers can make answers."""
        moved = True
        while moved:
            moved = False
            for core, wire in ((self.a, self.wire_ab), (self.b, self.wire_ba)):
                for tx in core.poll_wire():
                    moved = True
                    for frame in device_transmit(tx, self.super_frames):
                        wire.submit(frame, self.now)
            for wire, core in ((self.wire_ab, self.b), (self.wire_ba, self.a)):
                for frame in wire.poll(self.now):
                    moved = True
                    self.frames += 1
                    core.from_wire(frame, self.now, self.rx_csum_offload)

    def run_until(self, done: "callable[[], bool]", limit_s: float = 600.0) -> bool:
        """Advance the fake clock event by event until `done()` or `limit_s` of simulated time."""
        self._move()
        while not done():
            deadlines = [d for d in (self.wire_ab.next_deadline(), self.wire_ba.next_deadline(),
                                     self.a.next_deadline(), self.b.next_deadline()) if d is not None]
            if not deadlines or min(deadlines) > limit_s:
                return False
            self.now = max(self.now, min(deadlines))
            self.a.on_timer(self.now)
            self.b.on_timer(self.now)
            self._move()
        return True

    def echo_transfer(self, size: int) -> tuple[bool, BulkEchoClient]:
        """Send `size` seeded random bytes to B's echo service; True if they came back intact."""
        payload = random.Random(self.seed).randbytes(size)
        client = type("Client", (BulkEchoClient,), {"payload": payload})
        key = self.a.connect(IP_A, IP_B, ECHO_PORT, client, self.now)
        self._move()
        apps: list[BulkEchoClient] = []

        def finished() -> bool:
            app = self.a.apps.get(key)
            if app is not None and not apps:
                apps.append(app)  # type: ignore[arg-type]
            return bool(apps) and len(apps[0].echoed) >= size and self.a.stack.connection(key) is None

        completed = self.run_until(finished)
        app = apps[0] if apps else BulkEchoClient(None)  # type: ignore[arg-type]
        intact = completed and hashlib.sha256(app.echoed).digest() == hashlib.sha256(payload).digest()
        return intact, app
