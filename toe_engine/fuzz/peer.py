"""A scripted TCP peer on the wire of one EndpointCore: crafts frames for its flows and reads
the engine's answers back, so tests and the fuzzer can drive live connections frame by frame.

It keeps, per flow, what it sent and what came back in order, which is what the fuzzer's
byte-integrity invariant compares against.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from toe_engine.codec import build_tcp_frame, parse_frame
from toe_engine.endpoint import EndpointCore
from toe_engine.segment import ACK, FIN, RST, SYN, Segment, TcpOptions
from toe_engine.testing import device_transmit

MASK = 0xFFFFFFFF


@dataclass
class PeerFlow:
    """One connection as the peer sees it."""

    sport: int
    dport: int
    iss: int
    snd_nxt: int = 0  # next sequence number the peer sends
    rcv_nxt: int | None = None  # next sequence number expected from the engine (None before SYN-ACK)
    sent: bytearray = field(default_factory=bytearray)  # payload the peer sent in order
    received: bytearray = field(default_factory=bytearray)  # in-order bytes the engine sent
    sent_bytes: int = 0
    received_bytes: int = 0
    fin_received: bool = False
    reset: bool = False
    synacks: int = 0
    server_iss: int | None = None  # the engine's ISN, from its first SYN-ACK
    checked: bool = False  # what arrives must be `WirePeer.expect` (an echo of the flow's stream)

    def __post_init__(self) -> None:
        self.snd_nxt = (self.iss + 1) & MASK


class WirePeer:
    """A client at (mac, ip) talking to the engine `core` at (server_mac, server_ip)."""

    def __init__(self, core: EndpointCore, mac: bytes, ip: bytes, server_mac: bytes, server_ip: bytes,
                 record: bool = True) -> None:
        self.core, self.mac, self.ip = core, mac, ip
        self.record = record  # keep the bytes sent and received (False: count them only)
        self.server_mac, self.server_ip = server_mac, server_ip
        self.now = 0.0
        self.flows: dict[tuple[int, int], PeerFlow] = {}
        self.frames_to_us = 0  # frames the engine sent on our flows
        self.wrong_mac = 0  # ... of which to a MAC that is not ours
        self.other_frames = 0  # frames the engine sent elsewhere (ARP, other peers, other flows)
        #: the bytes a checked flow must receive at a stream offset; a difference counts in `mismatches`
        self.expect: Callable[[PeerFlow, int, int], bytes] | None = None
        self.mismatches = 0

    # --- building ------------------------------------------------------------------------------
    def segment(self, flow: PeerFlow, flags: int, payload: bytes = b"", *, seq: int | None = None,
                ack: int | None = None, window: int = 65535, options: TcpOptions | None = None) -> Segment:
        if ack is None:
            ack = flow.rcv_nxt or 0
        return Segment(flow.sport, flow.dport, flow.snd_nxt if seq is None else seq & MASK, ack & MASK, flags,
                       window, payload, options or TcpOptions())

    def frame(self, seg: Segment) -> bytes:
        return bytes(build_tcp_frame(self.mac, self.server_mac, self.ip, self.server_ip, seg))

    # --- sending -------------------------------------------------------------------------------
    def deliver(self, frame: bytes | bytearray, advance: float = 0.0) -> bool:
        """Give one frame to the engine, then read what it answered."""
        self.now += advance
        consumed = self.core.from_wire(frame, self.now)
        self.collect()
        return consumed

    def send(self, flow: PeerFlow, flags: int, payload: bytes = b"", advance: float = 0.001, **kw: object) -> bool:
        """Send an in-sequence segment of `flow` (seq and ack from its state) and account for it."""
        seg = self.segment(flow, flags, payload, **kw)  # type: ignore[arg-type]
        consumed = self.deliver(self.frame(seg), advance)
        if "seq" not in kw:
            flow.snd_nxt = (flow.snd_nxt + len(payload) + (1 if flags & (SYN | FIN) else 0)) & MASK
            flow.sent_bytes += len(payload)
            if self.record:
                flow.sent += payload
        return consumed

    def open(self, dport: int, sport: int, iss: int = 1000, options: TcpOptions | None = None) -> PeerFlow:
        """SYN, then the third-handshake ACK once the SYN-ACK is back."""
        flow = PeerFlow(sport, dport, iss)
        self.flows[(sport, dport)] = flow
        self.deliver(self.frame(Segment(sport, dport, iss, 0, SYN, 65535, b"",
                                        options or TcpOptions(mss=1460))), 0.001)
        if flow.rcv_nxt is not None:
            self.send(flow, ACK)
        return flow

    def ack(self, flow: PeerFlow, advance: float = 0.001, window: int = 65535) -> bool:
        return self.send(flow, ACK, advance=advance, window=window)

    # --- receiving -----------------------------------------------------------------------------
    def collect(self) -> None:
        for tx in self.core.poll_wire():
            for raw in device_transmit(tx):
                self.take(raw)

    def take(self, raw: bytes) -> bool:
        """Read one frame the engine sent; False if it is not for one of our flows."""
        parsed = parse_frame(raw)
        seg = parsed.tcp
        flow = self.flows.get((seg.dst_port, seg.src_port)) if parsed.ip_dst == self.ip and seg else None
        if flow is None:
            self.other_frames += 1
            return False
        self.frames_to_us += 1
        if parsed.eth_dst != self.mac:
            self.wrong_mac += 1
        if flow.reset:
            return True  # a flow whose connection is gone: what comes for it is not checked
        if seg.flags & RST:
            flow.reset = True
            return True
        if seg.flags & SYN:
            flow.synacks += 1
            if flow.rcv_nxt is None:
                flow.rcv_nxt = (seg.seq + 1) & MASK
                flow.server_iss = seg.seq
            return True
        if flow.rcv_nxt is None:
            return True
        offset = (flow.rcv_nxt - seg.seq) & MASK
        payload = bytes(seg.payload)
        if offset < len(payload):
            fresh = payload[offset:]
            if self.expect is not None and flow.checked and fresh != self.expect(flow, flow.received_bytes, len(fresh)):
                self.mismatches += 1
            flow.received_bytes += len(fresh)
            if self.record:
                flow.received += fresh
            flow.rcv_nxt = (flow.rcv_nxt + len(payload) - offset) & MASK
        if seg.flags & FIN and (seg.seq + len(payload)) & MASK == flow.rcv_nxt:
            flow.rcv_nxt = (flow.rcv_nxt + 1) & MASK
            flow.fin_received = True
        return True
