"""Receive-side scaling for packet sockets: a keyed symmetric flow hash and an indirection table,
compiled to the classic BPF program of a PACKET_FANOUT_CBPF group.

What the kernel's fanout modes allow: PACKET_FANOUT_HASH spreads by the kernel's own symmetric
flow hash, `hash * members >> 32` with a seed drawn at boot, so neither an indirection table nor
a hash key can be read or set. PACKET_FANOUT_CBPF hands every frame to a classic BPF program
that returns the index of the member socket (in the order they joined), and the program can be
replaced at any time (PACKET_FANOUT_DATA). This module computes, in that program:

    h = ((src ^ dst ^ key0) * 0x9E3779B1) ^ (sport ^ dport) ^ key1      (32-bit words, IPv6 folded)
    h = (h * 0x85EBCA6B) ^ ((h * 0x85EBCA6B) >> 16)
    queue = table[h % len(table)]

over the IP addresses and, for unfragmented TCP and UDP, the ports. Both directions of a flow
give the same h (XOR is symmetric), like ethtool's `xor` hash function, and `flow_queue` in
Python gives the same answer the kernel's program does, so a test or a scenario can say where
a flow must land. The table and the 8-byte key are settable like `ethtool -X ... weight` /
`hkey`: a real Toeplitz key is 40 bytes and needs bit-serial work that classic BPF can do only
in thousands of instructions. Fragments and non-IP frames (ARP) hash to 0.
"""
from __future__ import annotations

import ctypes
import ipaddress
import socket
import struct
from collections.abc import Sequence

from toe_engine.io.afpacket import SOL_PACKET

PACKET_FANOUT = 18
PACKET_FANOUT_DATA = 22
PACKET_FANOUT_CBPF = 6
PACKET_FANOUT_FLAG_IGNORE_OUTGOING = 0x4000

DEFAULT_TABLE_SIZE = 128  # what most NICs show in `ethtool -x`
MAX_TABLE_SIZE = 256
KEY_BYTES = 8
MUL1, MUL2 = 0x9E3779B1, 0x85EBCA6B
HASH_FUNCTION = "xor-multiply (symmetric)"
_MASK = 0xFFFFFFFF

# classic BPF opcodes (linux/filter.h)
_LD_W_ABS, _LD_H_ABS, _LD_B_ABS = 0x20, 0x28, 0x30
_LD_H_IND = 0x48
_LDX_B_MSH = 0xB1
_LD_MEM, _ST, _LDX_MEM = 0x60, 0x02, 0x61
_TAX = 0x07
_ALU_XOR_K, _ALU_XOR_X = 0xA4, 0xAC
_ALU_MUL_K, _ALU_RSH_K, _ALU_MOD_K = 0x24, 0x74, 0x94
_JEQ_K, _JSET_K, _JA = 0x15, 0x45, 0x05
_RET_K = 0x06
_SKF_AD_PROTOCOL = -0x1000 + 0
_NET = -0x100000  # SKF_NET_OFF: offsets from the network header, wherever skb->data is

Instruction = tuple[int, int, int, int]


def default_key() -> bytes:
    return bytes.fromhex("6d5a6d5a6d5a6d5a")  # the symmetric Toeplitz key's pattern; any 8 bytes do


def equal_table(queues: int, size: int = DEFAULT_TABLE_SIZE) -> list[int]:
    """`ethtool -X equal N`: entries round-robin over the queues."""
    return [i % queues for i in range(size)]


def weighted_table(weights: Sequence[int], size: int = DEFAULT_TABLE_SIZE) -> list[int]:
    """`ethtool -X weight W0 W1 ...`: each queue gets entries in proportion to its weight."""
    total = sum(weights)
    if total <= 0 or any(w < 0 for w in weights):
        raise ValueError(f"rss weights must be non-negative with a positive sum, got {list(weights)}")
    table: list[int] = []
    for queue, weight in enumerate(weights):
        table += [queue] * round(size * sum(weights[:queue + 1]) / total - len(table))
    return table


def check_table(table: Sequence[int], queues: int) -> list[int]:
    """An indirection table of 1..MAX_TABLE_SIZE entries, each a queue below `queues`."""
    if not 1 <= len(table) <= MAX_TABLE_SIZE:
        raise ValueError(f"rss_table must have 1 to {MAX_TABLE_SIZE} entries, got {len(table)}")
    bad = [q for q in table if not isinstance(q, int) or isinstance(q, bool) or not 0 <= q < queues]
    if bad:
        raise ValueError(f"rss_table entry {bad[0]!r} is not a queue of 0..{queues - 1}")
    return list(table)


def check_key(key: str) -> bytes:
    """An 8-byte key written as hex, with or without colons (`ethtool -X hkey` style)."""
    try:
        raw = bytes.fromhex(key.replace(":", ""))
    except ValueError:
        raise ValueError(f"rss_key must be {KEY_BYTES} bytes of hex, got {key!r}") from None
    if len(raw) != KEY_BYTES:
        raise ValueError(f"rss_key must be {KEY_BYTES} bytes of hex, got {len(raw)} bytes")
    return raw


def _words(packed: bytes) -> int:
    folded = 0
    for i in range(0, len(packed), 4):
        folded ^= int.from_bytes(packed[i:i + 4], "big")
    return folded


def flow_hash(src: str, dst: str, sport: int, dport: int, key: bytes) -> int:
    """The hash the fanout program computes for a flow (either direction)."""
    k0, k1 = struct.unpack(">II", key)
    h = (_words(ipaddress.ip_address(src).packed) ^ _words(ipaddress.ip_address(dst).packed) ^ k0) * MUL1 & _MASK
    h ^= (sport ^ dport) ^ k1
    h = h * MUL2 & _MASK
    return h ^ (h >> 16)


def flow_queue(src: str, dst: str, sport: int, dport: int, table: Sequence[int], key: bytes) -> int:
    """The queue a TCP/UDP flow lands on."""
    return table[flow_hash(src, dst, sport, dport, key) % len(table)]


def program(table: Sequence[int], key: bytes) -> list[Instruction]:
    """The classic BPF program: frame -> member index, as `flow_queue` computes it."""
    k0, k1 = struct.unpack(">II", key)
    p: list[Instruction] = []

    def emit(code: int, k: int = 0, jt: int = 0, jf: int = 0) -> int:
        p.append((code, jt, jf, k & _MASK))
        return len(p) - 1

    # M[0]: address words folded; M[1]: ports folded (0 when there are none)
    emit(_LD_H_ABS, _SKF_AD_PROTOCOL)
    to_v4 = emit(_JEQ_K, 0x0800)
    to_v6 = emit(_JEQ_K, 0x86DD)
    emit(_RET_K, table[0])  # not IP: the first entry's queue
    portless: list[int] = []  # jumps to "no ports" (jf patched below)

    def fold_addresses_then_check_protocol(words: range, protocol_at: int) -> None:
        """M[0] = the address words XORed; then fall through for TCP or UDP, else to no_ports."""
        emit(_LD_W_ABS, _NET + words[0])
        for off in words[1:]:
            emit(_TAX)
            emit(_LD_W_ABS, _NET + off)
            emit(_ALU_XOR_X)
        emit(_ST, 0)
        emit(_LD_B_ABS, _NET + protocol_at)
        emit(_JEQ_K, socket.IPPROTO_TCP, 1, 0)
        portless.append(emit(_JEQ_K, socket.IPPROTO_UDP))

    # IPv4: source and destination, ports behind a variable header unless it is a fragment
    v4 = len(p)
    fold_addresses_then_check_protocol(range(12, 20, 4), 9)
    emit(_LD_H_ABS, _NET + 6)
    fragment = emit(_JSET_K, 0x3FFF)  # MF or an offset: a fragment, no ports (jt patched below)
    emit(_LDX_B_MSH, _NET + 0)
    emit(_LD_H_IND, _NET + 0)
    emit(_ST, 1)
    emit(_LD_H_IND, _NET + 2)
    emit(_LDX_MEM, 1)
    emit(_ALU_XOR_X)
    to_hash_v4 = emit(_JA)
    # IPv6: eight address words, then ports if the next header is TCP or UDP
    v6 = len(p)
    fold_addresses_then_check_protocol(range(8, 40, 4), 6)
    emit(_LD_H_ABS, _NET + 40)
    emit(_ST, 1)
    emit(_LD_H_ABS, _NET + 42)
    emit(_LDX_MEM, 1)
    emit(_ALU_XOR_X)
    to_hash_v6 = emit(_JA)
    no_ports = len(p)
    emit(0x00, 0)  # ld #0 (BPF_LD|BPF_IMM)
    hashing = len(p)
    emit(_ST, 1)
    emit(_LD_MEM, 0)
    emit(_ALU_XOR_K, k0)
    emit(_ALU_MUL_K, MUL1)
    emit(_LDX_MEM, 1)
    emit(_ALU_XOR_X)
    emit(_ALU_XOR_K, k1)
    emit(_ALU_MUL_K, MUL2)
    emit(_ST, 2)
    emit(_ALU_RSH_K, 16)
    emit(_LDX_MEM, 2)
    emit(_ALU_XOR_X)
    emit(_ALU_MOD_K, len(table))
    for index, queue in enumerate(table):
        emit(_JEQ_K, index, 0, 1)
        emit(_RET_K, queue)
    emit(_RET_K, table[0])

    def patch(at: int, *, jt: int | None = None, jf: int | None = None, k: int | None = None) -> None:
        code, old_jt, old_jf, old_k = p[at]
        p[at] = (code, old_jt if jt is None else jt, old_jf if jf is None else jf, old_k if k is None else k)

    patch(to_v4, jt=v4 - to_v4 - 1, jf=0)
    patch(to_v6, jt=v6 - to_v6 - 1, jf=0)
    patch(to_hash_v4, k=hashing - to_hash_v4 - 1)
    patch(to_hash_v6, k=hashing - to_hash_v6 - 1)
    for at in portless:
        patch(at, jt=0, jf=no_ports - at - 1)
    patch(fragment, jt=no_ports - fragment - 1, jf=0)
    return p


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


def attach_program(sock: socket.socket, instructions: Sequence[Instruction]) -> None:
    """Install (or replace) the fanout group's program through one of its member sockets."""
    filters = (_SockFilter * len(instructions))(*(_SockFilter(c, jt, jf, k) for c, jt, jf, k in instructions))
    fprog = struct.pack("HL", len(instructions), ctypes.addressof(filters))
    sock.setsockopt(SOL_PACKET, PACKET_FANOUT_DATA, fprog)


def join_group(sock: socket.socket, group: int) -> None:
    """Join fanout group `group` (CBPF mode, own transmissions ignored); member order = join order."""
    mode = PACKET_FANOUT_CBPF | PACKET_FANOUT_FLAG_IGNORE_OUTGOING
    sock.setsockopt(SOL_PACKET, PACKET_FANOUT, (group & 0xFFFF) | (mode << 16))
