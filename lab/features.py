"""Ethtool offload features (tso, gso, gro, lro, rx/tx checksum, sg): set them and read them back.

Uses the SIOCETHTOOL ioctl (ETHTOOL_GFEATURES / ETHTOOL_SFEATURES, what `ethtool -k/-K`
do) on an AF_INET socket. The kernel resolves the interface name in the socket's network
namespace, so a `FeatureControl` opened while the thread is inside a lab namespace controls
that namespace's interfaces without forking `ethtool`. All wanted features go in one
SFEATURES request, so dependencies between them (tso needs sg and tx checksum) are resolved
by the kernel at once; the result is read back and any difference is an error.
"""
from __future__ import annotations

import ctypes
import fcntl
import socket
import struct

from .errors import BackendError
from .spec import ETHTOOL_FEATURES

SIOCETHTOOL = 0x8946
ETHTOOL_GSTRINGS = 0x1B
ETHTOOL_GSSET_INFO = 0x37
ETHTOOL_GFEATURES = 0x3A
ETHTOOL_SFEATURES = 0x3B
ETH_SS_FEATURES = 4
ETH_GSTRING_LEN = 32
IFNAMSIZ = 16

AVAILABLE, ACTIVE = 0, 2  # fields of struct ethtool_get_features_block (available, requested, active, never_changed)
#: Kernel features switched together with a toelab feature, as `ethtool -K tso|tx|sg` switches them;
#: the toelab feature reads as on if any of them is on, like `ethtool -k` shows it.
COMPANIONS: dict[str, tuple[str, ...]] = {
    "tso": ("tx-tcp-ecn-segmentation", "tx-tcp-mangleid-segmentation", "tx-tcp6-segmentation",
            "tx-tcp-accecn-segmentation"),
    "tx_csum": ("tx-checksum-ipv4", "tx-checksum-ipv6", "tx-checksum-fcoe-crc", "tx-checksum-sctp"),
    "sg": ("tx-scatter-gather-fraglist",),
}

_feature_bits: dict[str, int] | None = None  # kernel feature string -> bit index (global per kernel)


class FeatureControl:
    """Offload features of the interfaces of the namespace this was opened in."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> FeatureControl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ioctl(self, ifname: str, data: ctypes.Array[ctypes.c_char]) -> int:
        # struct ifreq: the name, then (in the union) a pointer to the ethtool command.
        ifreq = bytearray(struct.pack(f"{IFNAMSIZ}sP", ifname.encode(), ctypes.addressof(data)) + bytes(16))
        try:
            return fcntl.ioctl(self._sock.fileno(), SIOCETHTOOL, ifreq, True)
        except OSError as exc:
            raise BackendError(f"interface {ifname!r}: ethtool request failed: {exc.strerror}") from None

    def _bits(self, ifname: str) -> dict[str, int]:
        global _feature_bits
        if _feature_bits is None:
            info = ctypes.create_string_buffer(struct.pack("IIQI", ETHTOOL_GSSET_INFO, 0, 1 << ETH_SS_FEATURES, 0))
            self._ioctl(ifname, info)
            count = struct.unpack_from("I", info.raw, 16)[0]
            strings = ctypes.create_string_buffer(struct.pack("III", ETHTOOL_GSTRINGS, ETH_SS_FEATURES, count)
                                                  + bytes(count * ETH_GSTRING_LEN))
            self._ioctl(ifname, strings)
            raw = strings.raw[12:]
            names = [raw[i * ETH_GSTRING_LEN:(i + 1) * ETH_GSTRING_LEN].split(b"\0", 1)[0].decode()
                     for i in range(count)]
            _feature_bits = {name: i for i, name in enumerate(names)}
        return _feature_bits

    def _get(self, ifname: str) -> tuple[list[tuple[int, int, int, int]], dict[str, int]]:
        bits = self._bits(ifname)
        blocks = (len(bits) + 31) // 32
        buf = ctypes.create_string_buffer(struct.pack("II", ETHTOOL_GFEATURES, blocks) + bytes(blocks * 16))
        self._ioctl(ifname, buf)
        return [struct.unpack_from("IIII", buf.raw, 8 + 16 * i) for i in range(blocks)], bits

    def read(self, ifname: str) -> dict[str, bool]:
        """toelab feature name -> active, for every feature toelab knows (as `ethtool -k` shows it)."""
        blocks, bits = self._get(ifname)
        return {name: any(_bit(blocks, bits[k], ACTIVE) for k in _members(name, bits)) for name in ETHTOOL_FEATURES}

    def apply(self, ifname: str, wanted: dict[str, bool], where: str = "") -> dict[str, bool]:
        """Ask for `wanted` features, read back, and raise naming the first one the kernel refused."""
        where = where or f"interface {ifname}"
        unknown = sorted(set(wanted) - set(ETHTOOL_FEATURES))
        if unknown:
            raise BackendError(f"{where}: unknown offload feature {unknown[0]!r}; known ones are {', '.join(ETHTOOL_FEATURES)}")
        if not wanted:
            return self.read(ifname)
        blocks, bits = self._get(ifname)
        valid = [0] * len(blocks)
        requested = [0] * len(blocks)
        for name, on in wanted.items():
            primary = ETHTOOL_FEATURES[name]
            for kernel_name in _members(name, bits):
                bit = bits[kernel_name]
                if kernel_name != primary and not _bit(blocks, bit, AVAILABLE):
                    continue  # a fixed companion bit (tx-checksum-ipv4 on veth): leave it
                valid[bit // 32] |= 1 << (bit % 32)
                if on:
                    requested[bit // 32] |= 1 << (bit % 32)
        payload = struct.pack("II", ETHTOOL_SFEATURES, len(blocks))
        payload += b"".join(struct.pack("II", v, r) for v, r in zip(valid, requested))
        self._ioctl(ifname, ctypes.create_string_buffer(payload))
        state = self.read(ifname)
        for name, on in wanted.items():
            if state[name] != on:
                fixed = not _bit(blocks, bits[ETHTOOL_FEATURES[name]], AVAILABLE)
                why = "the device cannot change it" if fixed else f"it reads back {'on' if state[name] else 'off'}"
                raise BackendError(f"{where}: offload feature {name} ({ETHTOOL_FEATURES[name]}) "
                                   f"{'on' if on else 'off'} was refused by the kernel: {why}")
        return state


def _members(name: str, bits: dict[str, int]) -> list[str]:
    """The kernel features a toelab feature stands for, as ethtool's `tso`, `tx` and `sg` do."""
    return [k for k in (ETHTOOL_FEATURES[name],) + COMPANIONS.get(name, ()) if k in bits]


def _bit(blocks: list[tuple[int, int, int, int]], bit: int, field: int) -> bool:
    return bool(blocks[bit // 32][field] & (1 << (bit % 32)))
