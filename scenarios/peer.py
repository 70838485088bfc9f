"""A Scapy-crafted TCP peer speaking from a kernel namespace of the lab.

The peer owns one connection (one source port). It sends frames it built itself on an
AF_PACKET socket opened inside the node's namespace, and reads the target's answers from the
same socket, whose BPF filter (attached before the socket is bound, so nothing unfiltered
slips in) passes only the target's segments to that port. The socket queues replies from
the moment it is bound, so a reply can never be missed between sending and reading: reading
waits on the socket (select) with a deadline, never sleeps.

The node's own kernel knows nothing of the connection and would answer the target's
segments with RSTs; an nftables table in the node's namespace drops those while the peer is
open and is deleted when it closes.
"""
from __future__ import annotations

import ctypes
import json
import random
import select
import socket
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from scapy.arch.common import compile_filter
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw


if TYPE_CHECKING:
    from lab.lab import Lab

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23
SO_ATTACH_FILTER = 26
DLT_EN10MB = 1
SEQ_MOD = 1 << 32
TcpOptions = list[tuple[str, Any]]


class PeerTimeout(AssertionError):
    """The awaited segment did not come before the deadline."""


def seq_add(seq: int, n: int) -> int:
    return (seq + n) % SEQ_MOD


def flag_set(tcp: TCP) -> str:
    """The segment's flags as sorted letters ("AS" for SYN+ACK), for order-free comparison."""
    return "".join(sorted(str(tcp.flags)))


class Peer:
    """One crafted TCP connection from `node` to `dst:dport`; use as a context manager."""

    def __init__(self, lab: Lab, node: str, dst: str, dport: int, *, rng: random.Random,
                 sport: int | None = None, timeout_s: float = 2.0, also_to: tuple[str, ...] = ()) -> None:
        self.lab, self.node, self.dst, self.dport = lab, node, dst, dport
        self.iface = lab.spec.interfaces_of(node)[0]
        self.src = lab.address(node)
        #: Other addresses of the node the target's segments may be sent to (a source route's first hop).
        self.also_to = also_to
        self.sport = sport if sport is not None else rng.randrange(20000, 60000)
        self.timeout_s = timeout_s
        self.isn = rng.getrandbits(32)
        self.snd_nxt = self.isn
        self.rcv_nxt = 0
        self.peer_isn: int | None = None
        #: Set when the handshake negotiated timestamps; then every segment carries one.
        self.timestamps = False
        self.ts_val = rng.getrandbits(31)
        self.ts_recent = 0
        #: Every frame the target sent this peer, in order of arrival (evidence).
        self.received: list[Ether] = []
        #: Frames read while waiting for something else.
        self.unexpected: list[Ether] = []
        self._sock: socket.socket | None = None
        self._src_mac = ""
        self._dst_mac = ""
        self._table = f"toelab_peer_{self.sport}"

    # --- lifecycle -----------------------------------------------------------------------
    def __enter__(self) -> Peer:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Drop the node kernel's RSTs for this port, resolve MACs, open the filtered socket."""
        node = self.lab.node(self.node)
        node.run(["nft", "-f", "-"], check=True, input=(
            f"table ip {self._table} {{\n chain out {{\n  type filter hook output priority 0; policy accept;\n"
            f"  tcp sport {self.sport} tcp flags & rst == rst drop\n }}\n}}\n"))
        try:
            self._dst_mac = self._next_hop_mac()
            to = " or ".join(f"dst host {a}" for a in (self.src, *self.also_to))
            self._sock = self.open_socket(f"tcp and src host {self.dst} and ({to}) "
                                           f"and src port {self.dport} and dst port {self.sport}")
            self._src_mac = self._sock.getsockname()[4].hex(":")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self.lab.node(self.node).run(["nft", "delete", "table", "ip", self._table])

    def open_socket(self, bpf: str) -> socket.socket:
        """An AF_PACKET socket on the peer's interface passing only `bpf`; also for answers to other ports.

        Created, filtered, then bound: an unbound AF_PACKET socket (protocol 0) receives nothing.
        """
        program = compile_filter(bpf, linktype=DLT_EN10MB)
        fprog = struct.pack("HL", program.bf_len, ctypes.addressof(program.bf_insns.contents))
        with self.lab.node(self.node).inside():
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            sock.bind((self.iface, ETH_P_ALL))
        except BaseException:
            sock.close()
            raise
        return sock

    def _next_hop_mac(self) -> str:
        """The MAC the node's kernel would send to for `dst` (resolved with one ping if needed)."""
        node = self.lab.node(self.node)
        route = json.loads(node.run(["ip", "-j", "route", "get", self.dst], check=True).stdout)[0]
        hop = route.get("gateway", self.dst)
        for attempt in range(2):
            neigh = json.loads(node.run(["ip", "-j", "neigh", "show", "to", hop, "dev", route["dev"]],
                                        check=True).stdout)
            if neigh and neigh[0].get("lladdr"):
                return str(neigh[0]["lladdr"])
            node.run(["ping", "-n", "-c", "1", "-W", "1", hop])
        raise RuntimeError(f"node {self.node} cannot resolve the MAC address of {hop}")

    # --- crafting and sending ------------------------------------------------------------
    def segment(self, flags: str = "A", payload: bytes = b"", *, seq: int | None = None, ack: int | None = None,
                window: int = 65535, options: TcpOptions | bytes | None = None, sport: int | None = None,
                bad_checksum: bool = False) -> Ether:
        """A frame from this peer; seq/ack default to the connection's next values.

        `options` as bytes go on the wire verbatim (padded with zeros to a 32-bit boundary),
        which is how malformed options are sent. Once timestamps are negotiated, every
        segment without explicit options carries one.
        """
        ack_value = self.rcv_nxt if ack is None else ack
        if options is None and self.timestamps and "S" not in flags:
            self.ts_val = (self.ts_val + 1) % SEQ_MOD
            options = [("Timestamp", (self.ts_val, self.ts_recent))]
        raw_options = options if isinstance(options, bytes) else b""
        raw_options += bytes(-len(raw_options) % 4)
        tcp = TCP(sport=self.sport if sport is None else sport, dport=self.dport,
                  seq=self.snd_nxt if seq is None else seq, ack=ack_value if "A" in flags else 0,
                  flags=flags, window=window,
                  options=[] if isinstance(options, bytes) else (options or []))
        if raw_options:
            tcp.dataofs = 5 + len(raw_options) // 4
        frame = Ether(src=self._src_mac, dst=self._dst_mac) / IP(src=self.src, dst=self.dst) / tcp
        if raw_options or payload:
            frame = frame / Raw(raw_options + payload)
        frame = Ether(bytes(frame))
        if bad_checksum:
            frame[TCP].chksum ^= 0x5555  # never 0xFFFF apart, so never an equivalent one's-complement zero
            frame = Ether(bytes(frame))
        return frame

    def send(self, *frames: Ether) -> None:
        assert self._sock is not None, "peer is not open"
        for frame in frames:
            self._sock.send(bytes(frame))

    def send_data(self, payload: bytes, *, seq: int | None = None, flags: str = "PA",
                  bad_checksum: bool = False, options: TcpOptions | None = None) -> Ether:
        """Send payload at `seq` (default: next); the connection advances only for in-order, valid data."""
        frame = self.segment(flags, payload, seq=seq, bad_checksum=bad_checksum, options=options)
        self.send(frame)
        if (seq is None or seq == self.snd_nxt) and not bad_checksum:
            self.snd_nxt = seq_add(self.snd_nxt, len(payload))
        return frame

    # --- receiving -------------------------------------------------------------------------
    def next_frame(self, deadline: float) -> Ether | None:
        """The next frame from the target, or None once `deadline` (monotonic) passes."""
        assert self._sock is not None, "peer is not open"
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([self._sock], [], [], max(0.0, remaining))
        if not ready:
            return None
        frame = Ether(self._sock.recv(1 << 17))
        self.received.append(frame)
        stamp = option_value(frame, "Timestamp")
        if stamp is not None:
            self.ts_recent = stamp[0]
        return frame

    def drain(self) -> list[Ether]:
        """Frames already queued, without waiting: what arrived before a fence reply did."""
        frames = []
        while (frame := self.next_frame(time.monotonic())) is not None:
            frames.append(frame)
        return frames

    def expect(self, flags: str | None = None, *, ack: int | None = None, seq: int | None = None,
               payload: bool | None = None, where: Callable[[TCP], bool] | None = None,
               timeout_s: float | None = None) -> Ether:
        """Wait for the first target segment matching all given conditions; others go to `unexpected`.

        flags compare as a set ("SA" matches SYN+ACK exactly); payload True/False asks for
        data or none. Raises PeerTimeout, naming what did arrive, at the deadline.
        """
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        skipped: list[Ether] = []
        while (frame := self.next_frame(deadline)) is not None:
            tcp = frame[TCP]
            if ((flags is None or flag_set(tcp) == "".join(sorted(flags)))
                    and (ack is None or tcp.ack == ack) and (seq is None or tcp.seq == seq)
                    and (payload is None or bool(tcp_payload(frame)) == payload)
                    and (where is None or where(tcp))):
                self.unexpected.extend(skipped)
                return frame
            skipped.append(frame)
        self.unexpected.extend(skipped)
        wanted = ", ".join(f"{k}={v}" for k, v in (("flags", flags), ("ack", ack), ("seq", seq), ("payload", payload))
                           if v is not None) or "any segment"
        seen = "; ".join(describe(f) for f in skipped) or "nothing"
        raise PeerTimeout(f"no segment with {wanted} from {self.dst}:{self.dport} within "
                          f"{self.timeout_s if timeout_s is None else timeout_s} s (saw: {seen})")

    # --- conversations ----------------------------------------------------------------------
    def handshake(self, options: TcpOptions | bytes | None = None, window: int = 65535,
                  ack_window: int | None = None) -> Ether:
        """SYN, SYN-ACK, ACK; returns the SYN-ACK. Options default to MSS 1460.

        `window` goes in the SYN (never scaled), `ack_window` (default: the same) in the ACK
        that completes the handshake, where a negotiated scale applies. Timestamps count as
        negotiated when both the SYN and the SYN-ACK carry one; later TSvals continue from the SYN's.
        """
        syn = self.segment("S", seq=self.isn, window=window,
                           options=[("MSS", 1460)] if options is None else options)
        self.send(syn)
        synack = self.expect("SA", ack=seq_add(self.isn, 1))
        syn_stamp = option_value(syn, "Timestamp")
        self.timestamps = syn_stamp is not None and option_value(synack, "Timestamp") is not None
        if syn_stamp is not None:
            self.ts_val = syn_stamp[0]
        self.peer_isn = synack[TCP].seq
        self.snd_nxt = seq_add(self.isn, 1)
        self.rcv_nxt = seq_add(self.peer_isn, 1)
        self.send(self.segment("A", window=window if ack_window is None else ack_window))
        return synack

    def receive(self, nbytes: int, *, window: int = 65535, timeout_s: float | None = None) -> tuple[bytes, list[Ether]]:
        """Read `nbytes` of in-order data, acknowledging each new segment; returns data and segments.

        Out-of-order or repeated segments are answered with a duplicate ACK and not kept.
        """
        data = bytearray()
        segments: list[Ether] = []
        while len(data) < nbytes:
            frame = self.expect(payload=True, timeout_s=timeout_s)
            tcp = frame[TCP]
            if tcp.seq == self.rcv_nxt:
                chunk = tcp_payload(frame)
                data += chunk
                segments.append(frame)
                self.rcv_nxt = seq_add(self.rcv_nxt, len(chunk))
            self.send(self.segment("A", window=window))
        return bytes(data), segments

    def abort(self) -> None:
        """Reset the connection so the target forgets it at once."""
        self.send(self.segment("R", ack=0))


def tcp_payload(frame: Packet) -> bytes:
    """The TCP payload, trimmed to the IP total length (Ethernet padding is not data)."""
    ip = frame[IP]
    tcp = frame[TCP]
    length = ip.len - ip.ihl * 4 - tcp.dataofs * 4
    return bytes(tcp.payload)[:max(0, length)]


def describe(frame: Packet) -> str:
    tcp = frame[TCP]
    return f"{flag_set(tcp)} seq={tcp.seq} ack={tcp.ack} len={len(tcp_payload(frame))}"


def option_value(frame: Packet, name: str) -> Any:
    """The value of the segment's first option called `name` (Scapy's names: MSS, WScale, Timestamp), or None."""
    for kind, value in frame[TCP].options:
        if kind == name:
            return value
    return None


def raw_options(frame: Packet) -> bytes:
    """The TCP options exactly as they were on the wire (not as Scapy would rebuild them)."""
    start = 14 + frame[IP].ihl * 4
    return bytes(frame.original)[start + 20:start + frame[TCP].dataofs * 4]
