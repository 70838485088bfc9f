"""Reading nftables `log group N` messages (NFLOG over netfilter netlink) in a node's namespace.

A lab node's netfilter cannot log to the kernel's syslog (net.netfilter.nf_log_all_netns is 0
outside the initial namespace, and a scenario does not change the host's settings), so a
rule logs to an NFLOG group and this listener, bound to the group inside the node, counts the
messages by their prefix: what `ulogd` would read.
"""
from __future__ import annotations

import socket
import struct
import threading
from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lab.node import Node

NETLINK_NETFILTER = 12
NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET, NFULNL_MSG_CONFIG = 0, 1
NFULA_CFG_CMD, NFULNL_CFG_CMD_BIND = 1, 1
NFULA_CFG_QTHRESH = 5
NFULA_PREFIX = 10
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLMSG_ERROR = 2
_NLMSG = struct.Struct("=IHHII")
_NFGEN = struct.Struct("=BBH")
_NLA = struct.Struct("=HH")


def config_message(group: int, seq: int = 1) -> bytes:
    """The NFULNL_MSG_CONFIG request that binds this socket to log group `group` and has each
    message sent at once (queue threshold 1; the kernel's default batches 100 or waits a second)."""
    bind = _NLA.pack(_NLA.size + 1, NFULA_CFG_CMD) + bytes([NFULNL_CFG_CMD_BIND]) + b"\0" * 3
    qthresh = _NLA.pack(_NLA.size + 4, NFULA_CFG_QTHRESH) + struct.pack("!I", 1)
    body = _NFGEN.pack(socket.AF_UNSPEC, 0, socket.htons(group)) + bind + qthresh
    kind = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG
    return _NLMSG.pack(_NLMSG.size + len(body), kind, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def prefixes(datagram: bytes) -> list[str]:
    """The log prefix of every NFULNL_MSG_PACKET message in one netlink datagram."""
    out = []
    offset = 0
    while offset + _NLMSG.size <= len(datagram):
        length, kind, _flags, _seq, _pid = _NLMSG.unpack_from(datagram, offset)
        if length < _NLMSG.size:
            break
        if kind == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET:
            at, end = offset + _NLMSG.size + _NFGEN.size, offset + length
            while at + _NLA.size <= end:
                nla_len, nla_type = _NLA.unpack_from(datagram, at)
                if nla_len < _NLA.size:
                    break
                if nla_type & 0x7FFF == NFULA_PREFIX:
                    out.append(datagram[at + _NLA.size:at + nla_len].split(b"\0", 1)[0].decode(errors="replace"))
                at += (nla_len + 3) & ~3
        offset += (length + 3) & ~3
    return out


class NflogListener:
    """Counts NFLOG messages of one group in a node's namespace, by prefix, while it runs."""

    def __init__(self, node: Node, group: int) -> None:
        with node.inside():
            self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self._sock.bind((0, 0))
        self._sock.settimeout(2.0)
        self._sock.send(config_message(group))
        answer = self._sock.recv(65536)
        length, kind = _NLMSG.unpack_from(answer)[:2]
        if kind == NLMSG_ERROR and struct.unpack_from("=i", answer, _NLMSG.size)[0] != 0:
            self._sock.close()
            raise OSError(f"NFLOG group {group} bind refused in {node.name}'s namespace")
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._read, name="nflog", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                datagram = self._sock.recv(1 << 16)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.counts.update(prefixes(datagram))

    def count(self, prefix: str) -> int:
        with self._lock:
            return self.counts[prefix]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1.0)
        self._sock.close()
