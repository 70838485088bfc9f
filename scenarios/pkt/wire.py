"""The script's side of the wire: injected segments leave from the peer node, expected ones are read there.

Built on scenarios.peer.Peer, which drops the peer node kernel's RSTs for the script's port
(the kernel knows nothing of the script's connection) and resolves the target's MAC. Frames
from the target are read on an AF_PACKET socket filtered to the script's two ports, with the
kernel's receive timestamp (SO_TIMESTAMPNS), so a segment's time is when it arrived, not
when the timeline got round to it. Every frame either way is kept for the run's pcap.
"""
from __future__ import annotations

import random
import select
import socket
import struct
import time
from typing import TYPE_CHECKING, Any

from scapy.layers.inet import ICMP, IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from scenarios.peer import Peer

if TYPE_CHECKING:
    from pathlib import Path

    from lab.lab import Lab

SO_TIMESTAMPNS = 35
DLT_EN10MB = 1  # Ethernet, for a pcap that may hold no frame
_TIMESPEC = struct.Struct("ll")
#: What an ICMP error quotes of the target's segment: its IP header and TCP header.
QUOTED_BYTES = 40


class Wire:
    """One script's conversation from `node` with the target at `target_ip`."""

    def __init__(self, lab: Lab, node: str, target_ip: str, *, target_port: int, peer_ports: list[int]) -> None:
        self.target_ip = target_ip
        self.peer_ip = lab.address(node)
        self.target_port = target_port
        self.peer_ports = peer_ports
        #: one Peer per connection of the script, each keeping the node kernel's RSTs off its port
        self.peers = [Peer(lab, node, target_ip, target_port, rng=random.Random(0), sport=port) for port in peer_ports]
        self.peer = self.peers[0]
        self.frames: list[Ether] = []
        self._sock: socket.socket | None = None
        self._template: Ether | None = None

    def __enter__(self) -> Wire:
        opened: list[Peer] = []
        try:
            for peer in self.peers:
                peer.open()
                opened.append(peer)
            self._template = self.peer.segment("A")
            ports = " or ".join(f"port {p}" for p in [self.target_port, *self.peer_ports])
            self._sock = self.peer.open_socket(
                f"src host {self.target_ip} and dst host {self.peer_ip} and ((tcp and ({ports})) or icmp)")
            self._sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        except BaseException:
            for peer in opened:
                peer.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._sock is not None:
            self._sock.close()
        for peer in self.peers:
            peer.close()

    def send_tcp(self, tcp: TCP) -> float:
        """Send a segment from the peer to the target; returns when (time.time())."""
        return self.send_ip(IP(src=self.peer_ip, dst=self.target_ip) / tcp)

    def send_burst(self, segments: list[TCP]) -> float:
        """Several segments back to back: all built before the first leaves."""
        frames = [self._frame(IP(src=self.peer_ip, dst=self.target_ip) / tcp) for tcp in segments]
        for frame in frames:
            self.peer.send(frame)
        sent = time.time()
        for frame in frames:
            frame.time = sent
        self.frames.extend(frames)
        return sent

    def send_icmp(self, icmp_type: int, code: int, mtu: int | None, quoted: TCP) -> float:
        inner = IP(src=self.target_ip, dst=self.peer_ip) / quoted
        icmp = ICMP(type=icmp_type, code=code, nexthopmtu=mtu or 0)
        return self.send_ip(IP(src=self.peer_ip, dst=self.target_ip) / icmp / bytes(inner)[:QUOTED_BYTES])

    def _frame(self, packet: IP | IPv6) -> Ether:
        assert self._template is not None
        return Ether(bytes(Ether(src=self._template.src, dst=self._template.dst) / packet))

    def send_ip(self, packet: IP | IPv6) -> float:
        frame = self._frame(packet)
        self.peer.send(frame)
        sent = time.time()
        frame.time = sent
        self.frames.append(frame)
        return sent

    def receive(self, deadline: float) -> tuple[float, Ether] | None:
        """The next frame from the target and its arrival time, or None at `deadline` (time.time())."""
        assert self._sock is not None
        while True:
            remaining = deadline - time.time()
            ready, _, _ = select.select([self._sock], [], [], max(0.0, remaining))
            if not ready:
                return None
            data, ancillary, _, _ = self._sock.recvmsg(1 << 17, 64)
            stamp = time.time()
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= _TIMESPEC.size:
                    seconds, nanos = _TIMESPEC.unpack_from(value)
                    stamp = seconds + nanos / 1e9
            frame = Ether(data)
            frame.time = stamp
            self.frames.append(frame)
            if frame.haslayer(TCP) or frame.haslayer(ICMP):
                return stamp, frame

    def write_pcap(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        wrpcap(str(path), self.frames, linktype=DLT_EN10MB)
        return path


def tcp_of(frame: Any) -> TCP | None:
    return frame[TCP] if frame.haslayer(TCP) and not frame.haslayer(ICMP) else None
