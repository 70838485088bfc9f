"""Struct-based wire codec: Ethernet, ARP, IPv4, IPv6, ICMP/ICMPv6 and TCP, without Scapy."""
from __future__ import annotations

from toe_engine.codec.drop import DropReason
from toe_engine.codec.frame import (
    ParsedFrame,
    PartialCsumFrame,
    build_ip_frame,
    build_tcp_frame,
    build_tcp_frame_partial,
    parse_frame,
)

__all__ = [
    "DropReason",
    "ParsedFrame",
    "PartialCsumFrame",
    "build_ip_frame",
    "build_tcp_frame",
    "build_tcp_frame_partial",
    "parse_frame",
]
