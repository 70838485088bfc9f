"""Which MAC address to send to for an IP: learned from the wire, asked for with ARP.

The endpoint shares its host's address, so it learns next hops from the frames its
peers send (their source MAC is where replies go) and from ARP traffic it sees pass.
Bounded, like a NIC's table: the oldest entry goes when it is full.
"""
from __future__ import annotations

from collections import OrderedDict

from toe_engine.codec.arp import ArpPacket, build_arp
from toe_engine.codec.ethernet import build_ethernet

BROADCAST = b"\xff" * 6
ETH_P_ARP = 0x0806


class NeighborTable:
    __slots__ = ("_macs", "limit")

    def __init__(self, limit: int = 4096) -> None:
        self._macs: OrderedDict[bytes, bytes] = OrderedDict()
        self.limit = limit

    def learn(self, ip: bytes, mac: bytes) -> None:
        if self._macs.get(ip) == mac:
            return
        self._macs[ip] = mac
        self._macs.move_to_end(ip)
        if len(self._macs) > self.limit:
            self._macs.popitem(last=False)

    def lookup(self, ip: bytes) -> bytes | None:
        return self._macs.get(ip)

    def __len__(self) -> int:
        return len(self._macs)


def arp_request(src_mac: bytes, src_ip: bytes, target_ip: bytes) -> bytes:
    """A broadcast ARP who-has for `target_ip`."""
    packet = ArpPacket(op=1, sender_mac=src_mac, sender_ip=src_ip, target_mac=b"\x00" * 6, target_ip=target_ip)
    return build_ethernet(BROADCAST, src_mac, ETH_P_ARP) + build_arp(packet)
