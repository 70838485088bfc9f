"""`addresses`: what a TCP does with the IP layer around a SYN: options, bad addresses, several local addresses.

- IPv4 options TCP does not understand (NOPs and an RFC 4727 experimental option) on the SYN
  and on data are ignored: the handshake and the echo go on as without them (MUST-50).
- A SYN sent to a broadcast or multicast address, in a frame addressed to the target's own
  MAC so only the IP layer can tell, is discarded without a SYN-ACK or RST (MUST-57).
- A SYN from a broadcast or multicast source address is discarded likewise (MUST-63).
- With a second address on the target's interface, each connection's segments all leave from
  the address its SYN was sent to (MUST-45: a passive connection uses its own local address).

"Discarded" is judged against a fence: after the bad SYNs, a good connection is opened and
echoes; anything answering a bad SYN would have arrived before the fence's answer. A separate
socket on the peer's interface catches answers to the bad SYNs' ports from any source.
"""
from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.utils import checksum

from .framework import Check, RunContext, scenario
from .peer import Peer, PeerTimeout, describe, seq_add, tcp_payload

#: NOP, NOP, then an RFC 4727 experimental option (type 94: not copied, class 2, number 30) with 4 bytes of data.
UNKNOWN_IP_OPTIONS = bytes([1, 1, 94, 6, 0x12, 0x34, 0x56, 0x78])
LIMITED_BROADCAST = "255.255.255.255"
#: All-hosts: the one multicast group every IPv4 host has joined, so the IP layer delivers it.
ALL_HOSTS = "224.0.0.1"


@scenario("addresses", purpose="IP around a SYN: unknown IPv4 options ignored, SYNs to or from broadcast and "
          "multicast addresses discarded, each connection answering from the address it was opened to.",
          topology="two_hosts", topology_params={"mtu": 1500, "tso": "false"},
          covers=("MUST-45", "MUST-50", "MUST-57", "MUST-63"), claims=("TOE-5",))
def run(ctx: RunContext) -> Iterator[Check]:
    ctx.progress("unknown IPv4 options")
    yield from _ip_options(ctx)
    ctx.progress("SYNs to and from broadcast and multicast addresses")
    yield from _bad_addresses(ctx)
    ctx.progress("two local addresses")
    yield from _two_addresses(ctx)


# --- crafting -----------------------------------------------------------------------------------------
def with_ip_options(frame: Ether, options: bytes) -> Ether:
    """The frame with `options` (a multiple of 4 bytes) inserted into its IPv4 header; the TCP checksum is unchanged."""
    if len(options) % 4:
        raise ValueError("IPv4 options must fill whole 32-bit words")
    raw = bytes(frame)
    ihl = (raw[14] & 0x0F) * 4
    header = bytearray(raw[14:14 + ihl] + options)
    header[0] = 0x40 | len(header) // 4
    struct.pack_into("!H", header, 2, len(header) + len(raw) - 14 - ihl)
    struct.pack_into("!H", header, 10, 0)
    struct.pack_into("!H", header, 10, checksum(bytes(header)))
    return Ether(raw[:14] + bytes(header) + raw[14 + ihl:])


def with_addresses(frame: Ether, *, src: str | None = None, dst: str | None = None) -> Ether:
    """The frame with another IPv4 source or destination (the Ethernet header stays); checksums recomputed."""
    copy = frame.copy()
    if src is not None:
        copy[IP].src = src
    if dst is not None:
        copy[IP].dst = dst
    del copy[IP].chksum
    del copy[TCP].chksum
    return Ether(bytes(copy))


@contextmanager
def echo_peer(ctx: RunContext, dst: str | None = None) -> Iterator[Peer]:
    with Peer(ctx.lab, ctx.client, dst or ctx.address(ctx.server), ctx.port("echo"), rng=ctx.rng, timeout_s=2.0) as peer:
        try:
            yield peer
        finally:
            if peer.peer_isn is not None:
                peer.abort()


def echo_roundtrip(peer: Peer, payload: bytes) -> bytes:
    """Send `payload` in one segment and read as many bytes back; b"" when echo stays silent."""
    peer.send_data(payload)
    try:
        return peer.receive(len(payload))[0]
    except PeerTimeout:
        return b""


def read_all(sock: socket.socket) -> list[Ether]:
    """Frames already queued on a non-blocking read of `sock`."""
    frames = []
    sock.setblocking(False)
    while True:
        try:
            frames.append(Ether(sock.recv(1 << 16)))
        except BlockingIOError:
            return frames


# --- IPv4 options --------------------------------------------------------------------------------------
def _ip_options(ctx: RunContext) -> Iterator[Check]:
    payload = b"options-ignored " * 40
    with echo_peer(ctx) as peer:
        syn = peer.segment("S", seq=peer.isn, options=[("MSS", 1460)])
        peer.send(with_ip_options(syn, UNKNOWN_IP_OPTIONS))
        try:
            synack = peer.expect("SA", ack=seq_add(peer.isn, 1))
        except PeerTimeout:
            synack = None
        echoed = b""
        if synack is not None:
            peer.peer_isn = synack[TCP].seq
            peer.snd_nxt, peer.rcv_nxt = seq_add(peer.isn, 1), seq_add(synack[TCP].seq, 1)
            peer.send(with_ip_options(peer.segment("A"), UNKNOWN_IP_OPTIONS))
            peer.send(with_ip_options(peer.segment("PA", payload), UNKNOWN_IP_OPTIONS))
            peer.snd_nxt = seq_add(peer.snd_nxt, len(payload))
            try:
                echoed = peer.receive(len(payload))[0]
            except PeerTimeout:
                pass
    came_back = "exactly" if echoed == payload else f"as {len(echoed)} bytes"
    yield ctx.check("unknown-ip-options-ignored", "MUST-50", synack is not None and echoed == payload,
                    f"a SYN carrying IPv4 options {UNKNOWN_IP_OPTIONS.hex()} (NOPs and unknown type 94) "
                    f"{'drew a SYN-ACK' if synack is not None else 'drew no SYN-ACK'}, and {len(payload)} bytes of "
                    f"data with the same options came back {came_back}",
                    numbers={"synack": synack is not None, "echoed": len(echoed)})


# --- broadcast and multicast addresses --------------------------------------------------------------
@dataclass(frozen=True)
class BadSyn:
    id: str
    requirement: str
    what: str
    src: str | None = None
    dst: str | None = None


def _bad_syns(ctx: RunContext) -> list[BadSyn]:
    subnet = str(ctx.lab.spec.addresses(ctx.server)[ctx.iface(ctx.server)][0].network.broadcast_address)
    return [
        BadSyn("syn-to-broadcast-dropped[limited]", "MUST-57", f"to {LIMITED_BROADCAST}", dst=LIMITED_BROADCAST),
        BadSyn("syn-to-broadcast-dropped[subnet]", "MUST-57", f"to the subnet broadcast {subnet}", dst=subnet),
        BadSyn("syn-to-multicast-dropped", "MUST-57", f"to the multicast group {ALL_HOSTS}", dst=ALL_HOSTS),
        BadSyn("syn-from-broadcast-dropped[limited]", "MUST-63", f"from {LIMITED_BROADCAST}", src=LIMITED_BROADCAST),
        BadSyn("syn-from-broadcast-dropped[subnet]", "MUST-63", f"from the subnet broadcast {subnet}", src=subnet),
        BadSyn("syn-from-multicast-dropped", "MUST-63", f"from the multicast address {ALL_HOSTS}", src=ALL_HOSTS),
    ]


def _bad_addresses(ctx: RunContext) -> Iterator[Check]:
    """Each bad SYN from its own port, caught by one socket for all those ports; then the fence."""
    cases = _bad_syns(ctx)
    ports = ctx.rng.sample(range(20000, 60000), len(cases))
    with echo_peer(ctx) as peer:
        if peer.sport in ports:
            raise RuntimeError("the fence's port collides with a bad SYN's port")
        sock = peer.open_socket("tcp and (" + " or ".join(f"dst port {p}" for p in ports) + ")")
        try:
            for case, sport in zip(cases, ports):
                syn = peer.segment("S", seq=ctx.rng.getrandbits(32), sport=sport, options=[("MSS", 1460)])
                peer.send(with_addresses(syn, src=case.src, dst=case.dst))
            try:
                peer.handshake()
                fenced = echo_roundtrip(peer, b"toelab-fence") == b"toelab-fence"
            except PeerTimeout:
                fenced = False
            answers = read_all(sock)
        finally:
            sock.close()
    for case, sport in zip(cases, ports):
        mine = [f for f in answers if f[TCP].dport == sport]
        seen = "; ".join(f"{f[IP].src} {describe(f)}" for f in mine) or "nothing"
        yield ctx.check(case.id, case.requirement, fenced and not mine,
                        f"a SYN {case.what}, in a frame to the target's MAC, drew {seen} before a later good "
                        f"connection {'echoed its fence' if fenced else 'failed to echo its fence'}",
                        numbers={"answers": len(mine), "fence_echoed": fenced})


# --- two local addresses ------------------------------------------------------------------------------
def _second_address(ctx: RunContext) -> ipaddress.IPv4Interface:
    """The highest unused address of the server's subnet, with the subnet's prefix length."""
    first = ctx.lab.spec.addresses(ctx.server)[ctx.iface(ctx.server)][0]
    used = {ctx.address(ctx.server), ctx.address(ctx.client)}
    host = next(a for a in reversed(list(first.network.hosts())) if str(a) not in used)
    return ipaddress.IPv4Interface(f"{host}/{first.network.prefixlen}")


def _two_addresses(ctx: RunContext) -> Iterator[Check]:
    second = _second_address(ctx)
    try:
        ctx.target.add_address(ctx.lab, ctx.server, str(second))
    except NotImplementedError as exc:
        yield ctx.skip("replies-from-connection-address", "MUST-45", str(exc))
        return
    addresses = [ctx.address(ctx.server), str(second.ip)]
    with echo_peer(ctx, addresses[0]) as first, echo_peer(ctx, addresses[1]) as other:
        sock = first.open_socket(f"tcp and (dst port {first.sport} or dst port {other.sport})")
        try:
            echoed = _interleaved_connections([first, other])
            seen = read_all(sock)
        finally:
            sock.close()
    for peer, echo_ok in zip((first, other), echoed):
        mine = [f for f in seen if f[TCP].dport == peer.sport]
        wrong = [f for f in mine if f[IP].src != peer.dst]
        closed = any("F" in str(f[TCP].flags) for f in mine)
        yield ctx.check(f"replies-from-connection-address[{'first' if peer is first else 'second'}]", "MUST-45",
                        echo_ok and closed and bool(mine) and not wrong,
                        f"of {len(mine)} segments of a connection opened to {peer.dst} (handshake, echo, close, "
                        f"interleaved with one to {other.dst if peer is first else first.dst}), {len(wrong)} came from "
                        f"another address{'' if echo_ok and closed else ' and the exchange did not complete'}",
                        numbers={"segments": len(mine), "wrong_source": len(wrong), "echoed": echo_ok,
                                 "closed": closed})


def _interleaved_connections(peers: list[Peer]) -> list[bool]:
    """Open, echo and close every connection, step by step in turn; whether each echoed and closed cleanly."""
    ok = [True] * len(peers)
    steps = (lambda p: p.handshake(),
             lambda p: _expect_echo(p, f"to {p.dst}".encode() * 20),
             _close)
    for step in steps:
        for index, peer in enumerate(peers):
            if ok[index]:
                try:
                    step(peer)
                except PeerTimeout:
                    ok[index] = False
    return ok


def _expect_echo(peer: Peer, payload: bytes) -> None:
    if echo_roundtrip(peer, payload) != payload:
        raise PeerTimeout(f"echo of {len(payload)} bytes from {peer.dst} did not come back whole")


def _close(peer: Peer) -> None:
    """FIN from the peer; echo closes in turn; the peer acknowledges its FIN and the connection is gone."""
    peer.send(peer.segment("FA"))
    peer.snd_nxt = seq_add(peer.snd_nxt, 1)
    fin = peer.expect(where=lambda t: "F" in str(t.flags), ack=peer.snd_nxt)
    peer.rcv_nxt = seq_add(fin[TCP].seq, len(tcp_payload(fin)) + 1)
    peer.send(peer.segment("A"))
