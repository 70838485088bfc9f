"""Ethernet II header, with 802.1Q / 802.1ad tags skipped and the outer VLAN TCI kept."""
from __future__ import annotations

import struct
from typing import Final

ETH_HLEN: Final = 14
ETH_ALEN: Final = 6
ETHERTYPE_IPV4: Final = 0x0800
ETHERTYPE_ARP: Final = 0x0806
ETHERTYPE_IPV6: Final = 0x86DD
ETHERTYPE_VLAN: Final = 0x8100
ETHERTYPE_QINQ: Final = 0x88A8
BROADCAST: Final = b"\xff" * 6

ETH_HEADER: Final = struct.Struct("!6s6sH")
_VLAN_TYPES: Final = (ETHERTYPE_VLAN, ETHERTYPE_QINQ)


class EthernetHeader:
    """Parsed link header; `l3_offset` is where the network header starts (after any tags)."""

    __slots__ = ("dst", "src", "ethertype", "vlan_tci", "l3_offset")

    def __init__(self, dst: bytes, src: bytes, ethertype: int, vlan_tci: int | None, l3_offset: int) -> None:
        self.dst = dst
        self.src = src
        self.ethertype = ethertype
        self.vlan_tci = vlan_tci
        self.l3_offset = l3_offset


def parse_ethernet(buf: memoryview) -> EthernetHeader | None:
    """Parse the link header; None if the frame is too short for it or for a VLAN tag."""
    if len(buf) < ETH_HLEN:
        return None
    dst, src, ethertype = ETH_HEADER.unpack_from(buf, 0)
    offset = ETH_HLEN
    vlan_tci: int | None = None
    while ethertype in _VLAN_TYPES:
        if len(buf) < offset + 4:
            return None
        tci, ethertype = struct.unpack_from("!HH", buf, offset)
        if vlan_tci is None:
            vlan_tci = tci
        offset += 4
    return EthernetHeader(bytes(dst), bytes(src), ethertype, vlan_tci, offset)


def build_ethernet(dst: bytes, src: bytes, ethertype: int) -> bytes:
    """An untagged Ethernet II header."""
    return ETH_HEADER.pack(dst, src, ethertype)


def mac_to_bytes(mac: str) -> bytes:
    """'aa:bb:cc:dd:ee:ff' -> 6 bytes."""
    return bytes.fromhex(mac.replace(":", "").replace("-", ""))


def mac_to_str(mac: bytes) -> str:
    """6 bytes -> 'aa:bb:cc:dd:ee:ff'."""
    return mac.hex(":")
