"""The virtio-net header (`struct virtio_net_hdr`) that TAP and AF_PACKET put before each frame.

It is how toelab exchanges 64 KiB TCP super-frames and partial checksums with the kernel: the
header says "this is one GSO frame to cut into `gso_size` segments" and "the checksum at
`csum_start + csum_offset` still has to be completed". The kernel writes its fields in the
host's byte order for legacy virtio (TAP with TUNSETVNETLE/BE off, and AF_PACKET's
PACKET_VNET_HDR), which is little-endian on x86 and arm64; `VNET_BYTE_ORDER` follows the host
so the codec stays right on a big-endian machine too.
"""
from __future__ import annotations

import struct
import sys
from typing import Final, NamedTuple

VNET_HDR_LEN: Final = 10

VNET_F_NEEDS_CSUM: Final = 1
VNET_F_DATA_VALID: Final = 2

VNET_GSO_NONE: Final = 0
VNET_GSO_TCPV4: Final = 1
VNET_GSO_UDP: Final = 3
VNET_GSO_TCPV6: Final = 4
VNET_GSO_ECN: Final = 0x80

VNET_BYTE_ORDER: Final = "<" if sys.byteorder == "little" else ">"
_VNET: Final = struct.Struct(VNET_BYTE_ORDER + "BBHHHH")
assert _VNET.size == VNET_HDR_LEN

_Buffer = bytes | bytearray | memoryview


class VnetHeader(NamedTuple):
    """One decoded `struct virtio_net_hdr`; the default is "plain frame, checksums complete"."""

    flags: int = 0
    gso_type: int = VNET_GSO_NONE
    hdr_len: int = 0
    gso_size: int = 0
    csum_start: int = 0
    csum_offset: int = 0

    @property
    def needs_csum(self) -> bool:
        return bool(self.flags & VNET_F_NEEDS_CSUM)

    @property
    def data_valid(self) -> bool:
        return bool(self.flags & VNET_F_DATA_VALID)

    @property
    def gso_kind(self) -> int:
        """The GSO type without the ECN bit."""
        return self.gso_type & ~VNET_GSO_ECN

    @property
    def is_gso(self) -> bool:
        return self.gso_kind != VNET_GSO_NONE

    def pack(self) -> bytes:
        return _VNET.pack(*self)

    def pack_into(self, buffer: bytearray | memoryview, offset: int = 0) -> None:
        _VNET.pack_into(buffer, offset, *self)

    @classmethod
    def unpack(cls, buffer: _Buffer, offset: int = 0) -> VnetHeader:
        return cls._make(_VNET.unpack_from(buffer, offset))


PLAIN_VNET_HEADER: Final = VnetHeader()
PLAIN_VNET_BYTES: Final = PLAIN_VNET_HEADER.pack()
