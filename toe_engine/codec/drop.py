"""Why a frame could not be parsed; the string value doubles as a counter name suffix."""
from __future__ import annotations

from enum import StrEnum


class DropReason(StrEnum):
    ETH_TRUNCATED = "eth_truncated"
    VLAN_TRUNCATED = "vlan_truncated"
    ARP_TRUNCATED = "arp_truncated"
    IPV4_TRUNCATED = "ipv4_truncated"
    IPV4_BAD_VERSION = "ipv4_bad_version"
    IPV4_BAD_IHL = "ipv4_bad_ihl"
    IPV4_BAD_TOTAL_LEN = "ipv4_bad_total_len"
    IPV4_BAD_CHECKSUM = "ipv4_bad_checksum"
    IPV6_TRUNCATED = "ipv6_truncated"
    IPV6_BAD_VERSION = "ipv6_bad_version"
    IPV6_BAD_PAYLOAD_LEN = "ipv6_bad_payload_len"
    IPV6_BAD_EXT_HEADER = "ipv6_bad_ext_header"
    TCP_TRUNCATED = "tcp_truncated"
    TCP_BAD_DATA_OFFSET = "tcp_bad_data_offset"
    TCP_BAD_OPTION = "tcp_bad_option"
    TCP_BAD_CHECKSUM = "tcp_bad_checksum"
    ICMP_TRUNCATED = "icmp_truncated"
    ICMP_BAD_CHECKSUM = "icmp_bad_checksum"

    @property
    def is_checksum_error(self) -> bool:
        """Checksum failures are counted apart from malformed headers (rx_csum_errors)."""
        return self in _CHECKSUM_ERRORS


_CHECKSUM_ERRORS = frozenset(
    {DropReason.IPV4_BAD_CHECKSUM, DropReason.TCP_BAD_CHECKSUM, DropReason.ICMP_BAD_CHECKSUM}
)
