"""Which MAC address to send to for an IP, learned from ARP and neighbour discovery only.

The rules are the kernel's (arp_process, ndisc_recv_ns/na): a request or solicitation aimed
at one of our addresses creates or refreshes its sender's entry; a reply or advertisement
updates an entry that exists or that we asked for, but not within `locktime` of the last
update (the first answer wins, as Linux's neigh locktime has it), and never creates one
unasked. A frame's source MAC alone teaches nothing, so a spoofed frame cannot redirect
traffic. Bounded, like a NIC's table: the oldest entry goes when it is full.
"""
from __future__ import annotations

from collections import OrderedDict

from toe_engine.codec.arp import ARP_REPLY, ARP_REQUEST, ArpPacket, build_arp
from toe_engine.codec.ethernet import build_ethernet
from toe_engine.checksum import IPPROTO_ICMPV6
from toe_engine.codec.frame import build_ip_frame
from toe_engine.codec.icmp import (
    ND_HOP_LIMIT,
    ND_NEIGHBOR_ADVERT,
    ND_NEIGHBOR_SOLICIT,
    ND_OPT_SOURCE_LLADDR,
    NeighborDiscovery,
    build_icmpv6,
)

BROADCAST = b"\xff" * 6
ETH_P_ARP = 0x0806
LOCKTIME = 1.0  # Linux's neigh locktime (1 s)
PENDING_LIMIT = 256


class NeighborTable:
    __slots__ = ("_macs", "_updated", "_pending", "limit", "locktime")

    def __init__(self, limit: int = 4096, locktime: float = LOCKTIME) -> None:
        self._macs: OrderedDict[bytes, bytes] = OrderedDict()
        self._updated: dict[bytes, float] = {}
        self._pending: OrderedDict[bytes, None] = OrderedDict()  # addresses we asked for
        self.limit = limit
        self.locktime = locktime

    def learn(self, ip: bytes, mac: bytes, now: float = 0.0) -> None:
        """Set an entry (configuration, or a solicitation aimed at us)."""
        self._pending.pop(ip, None)
        self._updated[ip] = now
        if self._macs.get(ip) == mac:
            return
        self._macs[ip] = mac
        self._macs.move_to_end(ip)
        if len(self._macs) > self.limit:
            old, _ = self._macs.popitem(last=False)
            self._updated.pop(old, None)

    def asked(self, ip: bytes) -> None:
        """We sent a request for `ip`: its reply may create the entry."""
        self._pending[ip] = None
        if len(self._pending) > PENDING_LIMIT:
            self._pending.popitem(last=False)

    def on_arp(self, arp: ArpPacket, ours: frozenset[bytes], now: float) -> None:
        if not _usable(arp.sender_mac) or arp.sender_ip in ours or arp.sender_ip == bytes(4):
            return
        if arp.op == ARP_REQUEST and arp.target_ip in ours:
            self.learn(arp.sender_ip, arp.sender_mac, now)
        elif arp.op in (ARP_REQUEST, ARP_REPLY):
            garp = arp.sender_ip == arp.target_ip
            self._answer(arp.sender_ip, arp.sender_mac, now, override=garp)

    def on_nd(self, nd: NeighborDiscovery, src_ip: bytes, ours: frozenset[bytes], now: float) -> None:
        if nd.lladdr is None or not _usable(nd.lladdr) or nd.target not in ours and nd.type == ND_NEIGHBOR_SOLICIT:
            return
        if nd.type == ND_NEIGHBOR_SOLICIT:
            if src_ip != bytes(16):  # duplicate address detection has no sender to learn
                self.learn(src_ip, nd.lladdr, now)
        elif nd.type == ND_NEIGHBOR_ADVERT and nd.target not in ours:
            self._answer(nd.target, nd.lladdr, now, override=nd.override and not nd.solicited)

    def _answer(self, ip: bytes, mac: bytes, now: float, *, override: bool) -> None:
        """A reply: fills an entry we asked for, updates a known one outside the lock time."""
        if ip in self._pending:
            self.learn(ip, mac, now)
        elif ip in self._macs and (override or now - self._updated.get(ip, 0.0) >= self.locktime):
            self.learn(ip, mac, now)

    def lookup(self, ip: bytes) -> bytes | None:
        return self._macs.get(ip)

    def __len__(self) -> int:
        return len(self._macs)


def _usable(mac: bytes) -> bool:
    """A unicast, non-zero MAC (a multicast or broadcast sender is forged)."""
    return not mac[0] & 1 and mac != bytes(6)


def arp_request(src_mac: bytes, src_ip: bytes, target_ip: bytes) -> bytes:
    """A broadcast ARP who-has for `target_ip`."""
    packet = ArpPacket(op=ARP_REQUEST, sender_mac=src_mac, sender_ip=src_ip, target_mac=b"\x00" * 6,
                       target_ip=target_ip)
    return build_ethernet(BROADCAST, src_mac, ETH_P_ARP) + build_arp(packet)


def neighbor_solicitation(src_mac: bytes, src_ip: bytes, target_ip: bytes) -> bytes:
    """An IPv6 neighbour solicitation for `target_ip` (RFC 4861 4.3), to its solicited-node multicast
    group, with our link-layer address: the IPv6 counterpart of `arp_request`."""
    group = b"\xff\x02" + bytes(9) + b"\x01\xff" + target_ip[13:]
    message = build_icmpv6(src_ip, group, ND_NEIGHBOR_SOLICIT, 0, 0,
                           target_ip + bytes((ND_OPT_SOURCE_LLADDR, 1)) + src_mac)
    return bytes(build_ip_frame(src_mac, b"\x33\x33" + group[12:], src_ip, group, IPPROTO_ICMPV6, message,
                                ttl=ND_HOP_LIMIT))
