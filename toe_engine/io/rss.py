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

over the IP addresses and, for unfragmented TCP and UDP, the ports; an ICMP or ICMPv6 error
hashes on the header it quotes. Both directions of a flow give the same h (XOR is symmetric),
like ethtool's `xor` hash function, so an error quoting one of our segments reaches the queue
of its connection; and `flow_queue` in
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
_LD_W_IND, _LD_H_IND, _LD_B_IND = 0x40, 0x48, 0x50
_LD_IMM = 0x00
_LDX_B_MSH = 0xB1
_LD_MEM, _ST, _LDX_MEM = 0x60, 0x02, 0x61
_TAX = 0x07
_ALU_XOR_K, _ALU_XOR_X = 0xA4, 0xAC
_ALU_MUL_K, _ALU_RSH_K, _ALU_MOD_K = 0x24, 0x74, 0x94
_ALU_AND_K, _ALU_LSH_K, _ALU_ADD_X = 0x54, 0x64, 0x0C
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


class _Assembler:
    """Classic BPF with named jump targets, resolved to the forward offsets BPF wants."""

    def __init__(self) -> None:
        self.code: list[Instruction] = []
        self.labels: dict[str, int] = {}
        self.jumps: list[tuple[int, str | None, str | None]] = []

    def op(self, code: int, k: int = 0) -> None:
        self.code.append((code, 0, 0, k & _MASK))

    def jump(self, code: int, k: int, true: str | None = None, false: str | None = None) -> None:
        """A conditional jump: to `true`/`false` (a label), or on to the next instruction (None)."""
        self.jumps.append((len(self.code), true, false))
        self.op(code, k)

    def goto(self, label: str) -> None:
        self.jumps.append((len(self.code), label, None))
        self.op(_JA)

    def label(self, name: str) -> None:
        self.labels[name] = len(self.code)

    def assemble(self) -> list[Instruction]:
        code = list(self.code)
        for at, true, false in self.jumps:
            op, _, _, k = code[at]
            offsets = [self.labels[t] - at - 1 if t else 0 for t in (true, false)]
            if any(o < 0 for o in offsets) or (op != _JA and any(o > 255 for o in offsets)):
                raise AssertionError(f"BPF jump at {at} cannot reach its target")
            code[at] = (op, 0, 0, offsets[0]) if op == _JA else (op, offsets[0], offsets[1], k)
        return code


def program(table: Sequence[int], key: bytes) -> list[Instruction]:
    """The classic BPF program: frame -> member index, as `flow_queue` computes it.

    An ICMP error (destination unreachable, packet too big, time exceeded, parameter problem)
    hashes on the header it quotes: that is the flow's own, in the other direction, which the
    symmetric hash maps to the same queue, so PMTUD and friends reach the connection's queue.
    """
    k0, k1 = struct.unpack(">II", key)
    a = _Assembler()

    def fold(offsets: range, indexed: bool = False) -> None:
        """M[0] = the 32-bit words at `offsets` (from the network header, plus X if `indexed`) XORed."""
        load = _LD_W_IND if indexed else _LD_W_ABS
        a.op(load, _NET + offsets[0])
        for off in offsets[1:]:
            a.op(_ST, 3)
            a.op(load, _NET + off)
            a.op(_LDX_MEM, 3)
            a.op(_ALU_XOR_X)
            if indexed:  # X was borrowed: the outer header length again
                a.op(_LDX_B_MSH, _NET + 0)
        a.op(_ST, 0)

    def protocol(offset: int, ports: str, icmp: tuple[int, str] | None = None, indexed: bool = False) -> None:
        a.op(_LD_B_IND if indexed else _LD_B_ABS, _NET + offset)
        a.jump(_JEQ_K, socket.IPPROTO_TCP, true=ports)
        a.jump(_JEQ_K, socket.IPPROTO_UDP, true=ports)
        if icmp is not None:
            a.jump(_JEQ_K, icmp[0], true=icmp[1])
        a.goto("no_ports")

    def ports(sport: int, indexed: bool) -> None:
        """M[1] = source port XOR destination port, then on to the hash."""
        load = _LD_H_IND if indexed else _LD_H_ABS
        a.op(load, _NET + sport)
        a.op(_ST, 1)
        a.op(load, _NET + sport + 2)
        a.op(_LDX_MEM, 1)
        a.op(_ALU_XOR_X)
        a.goto("hashing")

    def errors_quoting_a_header(types: tuple[int, ...], inner: str) -> None:
        for icmp_type in types:
            a.jump(_JEQ_K, icmp_type, true=inner)
        a.goto("no_ports")

    a.op(_LD_H_ABS, _SKF_AD_PROTOCOL)
    a.jump(_JEQ_K, 0x0800, true="v4")
    a.jump(_JEQ_K, 0x86DD, true="v6")
    a.op(_RET_K, table[0])  # not IP: the first entry's queue
    # IPv4: ports behind a variable-length header, none in a fragment (MF or an offset)
    a.label("v4")
    fold(range(12, 20, 4))
    protocol(9, "ports4", (socket.IPPROTO_ICMP, "icmp4"))
    a.label("ports4")
    a.op(_LD_H_ABS, _NET + 6)
    a.jump(_JSET_K, 0x3FFF, true="no_ports")
    a.op(_LDX_B_MSH, _NET + 0)
    ports(0, indexed=True)
    a.label("icmp4")  # X = the outer header's length; the quoted header starts 8 bytes into the ICMP message
    a.op(_LD_H_ABS, _NET + 6)
    a.jump(_JSET_K, 0x3FFF, true="no_ports")
    a.op(_LDX_B_MSH, _NET + 0)
    a.op(_LD_B_IND, _NET + 0)
    errors_quoting_a_header((3, 4, 11, 12), "inner4")
    a.label("inner4")
    fold(range(8 + 12, 8 + 20, 4), indexed=True)
    protocol(8 + 9, "inner_ports4", indexed=True)
    a.label("inner_ports4")
    a.op(_LD_B_IND, _NET + 8)
    a.op(_ALU_AND_K, 0x0F)
    a.op(_ALU_LSH_K, 2)
    a.op(_ALU_ADD_X)
    a.op(_TAX)  # X = outer + quoted header lengths
    ports(8, indexed=True)
    # IPv6: eight address words, ports if the next header is TCP or UDP (no extension headers)
    a.label("v6")
    fold(range(8, 40, 4))
    protocol(6, "ports6", (socket.IPPROTO_ICMPV6, "icmp6"))
    a.label("ports6")
    ports(40, indexed=False)
    a.label("icmp6")
    a.op(_LD_B_ABS, _NET + 40)
    errors_quoting_a_header((1, 2, 3, 4), "inner6")
    a.label("inner6")  # the quoted IPv6 header at 48
    fold(range(48 + 8, 48 + 40, 4))
    protocol(48 + 6, "inner_ports6")
    a.label("inner_ports6")
    ports(88, indexed=False)
    a.label("no_ports")
    a.op(_LD_IMM, 0)
    a.label("hashing")
    a.op(_ST, 1)
    a.op(_LD_MEM, 0)
    a.op(_ALU_XOR_K, k0)
    a.op(_ALU_MUL_K, MUL1)
    a.op(_LDX_MEM, 1)
    a.op(_ALU_XOR_X)
    a.op(_ALU_XOR_K, k1)
    a.op(_ALU_MUL_K, MUL2)
    a.op(_ST, 2)
    a.op(_ALU_RSH_K, 16)
    a.op(_LDX_MEM, 2)
    a.op(_ALU_XOR_X)
    a.op(_ALU_MOD_K, len(table))
    for index, queue in enumerate(table):
        a.jump(_JEQ_K, index, false=f"entry{index + 1}")
        a.op(_RET_K, queue)
        a.label(f"entry{index + 1}")
    a.op(_RET_K, table[0])
    return a.assemble()


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
