"""ICMP errors as the TCP layer understands them (RFC 9293 3.9.1.1 and RFC 5927)."""
from __future__ import annotations

from enum import Enum


class IcmpError(Enum):
    NET_UNREACHABLE = "net unreachable"
    HOST_UNREACHABLE = "host unreachable"
    PROTOCOL_UNREACHABLE = "protocol unreachable"
    PORT_UNREACHABLE = "port unreachable"
    FRAG_NEEDED = "fragmentation needed"  # IPv4; IPv6's Packet Too Big maps here as well
    SOURCE_ROUTE_FAILED = "source route failed"
    ADMIN_PROHIBITED = "administratively prohibited"
    SOURCE_QUENCH = "source quench"
    TIME_EXCEEDED = "time exceeded"
    PARAMETER_PROBLEM = "parameter problem"


HARD_ERRORS = frozenset({IcmpError.PROTOCOL_UNREACHABLE, IcmpError.PORT_UNREACHABLE})
"""Errors that abort a connection, and only in SYN-SENT: RFC 5927 section 4.1 treats them as
soft errors in synchronized states, where they are a cheap way to attack a connection."""

IPV6_MIN_MTU = 1280


def usable_pmtu(mtu: int, ipv6: bool, min_pmtu_v4: int) -> int | None:
    """The path MTU an ICMP report of `mtu` sets, or None to ignore the report.

    As Linux does: an IPv4 frag-needed below `net.ipv4.route.min_pmtu` (552) sets the floor
    instead (RFC 1191 leaves the floor to the host); an IPv6 packet-too-big below the IPv6
    minimum link MTU is discarded (RFC 8201 section 4; Linux's tcp_v6_err since 5.14).
    """
    if ipv6:
        return mtu if mtu >= IPV6_MIN_MTU else None
    return max(mtu, min_pmtu_v4)
