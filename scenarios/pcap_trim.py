"""Cut a run's pcaps to their headers and the first payload bytes, so reports stay small.

A scenario analyses its full captures while it runs; what the report keeps afterwards is
evidence to open in Wireshark, where headers (Ethernet, IP, TCP with its options) and the
start of each payload tell the story. Each TCP or UDP packet keeps its headers and
PAYLOAD_BYTES of payload; ICMP (whose errors quote the packet that caused them) and
anything else keep up to SNAPLEN. Each packet keeps its original length in the record
header, so Wireshark shows it as "packet size limited during capture". The trimmed file
is gzipped beside the original's name (`x.pcap` -> `x.pcap.gz`, which Wireshark, tshark
and Scapy open as they are; `zcat x.pcap.gz | tcpdump -r -` for tcpdump), and `relink`
points checks' evidence at it. The pcap I/O is Scapy's.
"""
from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from scapy.error import Scapy_Exception
from scapy.utils import RawPcapReader, RawPcapWriter

#: Ethernet (14) + IPv6 (40) + TCP with the largest options (60) + 64 bytes: the most any packet keeps.
SNAPLEN = 14 + 40 + 60 + 64
PAYLOAD_BYTES = 16
_ETH_IPV4, _ETH_IPV6, _ETH_VLAN = 0x0800, 0x86DD, 0x8100
_TCP, _UDP = 6, 17


def kept_length(frame: bytes, payload_bytes: int = PAYLOAD_BYTES) -> int:
    """How much of an Ethernet frame to keep: through its TCP/UDP header plus `payload_bytes`, else SNAPLEN."""
    try:
        offset, ethertype = 14, int.from_bytes(frame[12:14], "big")
        if ethertype == _ETH_VLAN:
            offset, ethertype = 18, int.from_bytes(frame[16:18], "big")
        if ethertype == _ETH_IPV4:
            proto, l4 = frame[offset + 9], offset + (frame[offset] & 0x0F) * 4
        elif ethertype == _ETH_IPV6:
            proto, l4 = frame[offset + 6], offset + 40
        else:
            return min(len(frame), SNAPLEN)
        if proto == _TCP:
            end = l4 + (frame[l4 + 12] >> 4) * 4
        elif proto == _UDP:
            end = l4 + 8
        else:
            return min(len(frame), SNAPLEN)
    except IndexError:  # shorter than its headers say: keep what there is, up to SNAPLEN
        return min(len(frame), SNAPLEN)
    return min(len(frame), end + payload_bytes, SNAPLEN)


def trim_pcap(path: Path, snaplen: int = SNAPLEN) -> Path:
    """Replace one pcap by `path.gz`, every packet cut to its headers and first payload bytes (at most
    `snaplen`); the new file's path."""
    tmp = path.with_name(path.name + ".trim")
    reader = RawPcapReader(str(path))
    writer = None
    try:
        for data, meta in reader:
            if writer is None:
                writer = RawPcapWriter(str(tmp), linktype=reader.linktype, snaplen=snaplen, sync=False)
                writer.write_header(None)
            keep = min(kept_length(data), snaplen)
            writer.write_packet(data[:keep], sec=meta.sec, usec=meta.usec, caplen=keep, wirelen=meta.wirelen)
    finally:
        reader.close()
        if writer is not None:
            writer.close()
    source = tmp if writer is not None else path  # no packets: the file is only its header already
    target = path.with_name(path.name + ".gz")
    with source.open("rb") as raw, gzip.open(target, "wb", compresslevel=6) as packed:
        shutil.copyfileobj(raw, packed)
    tmp.unlink(missing_ok=True)
    path.unlink()
    return target


def trim_pcaps(root: Path, snaplen: int = SNAPLEN) -> dict[Path, Path]:
    """Trim and gzip every *.pcap below `root`; {old resolved path: new path}. Unreadable files stay as they are."""
    renamed = {}
    for path in sorted(root.rglob("*.pcap")):
        try:
            renamed[path.resolve()] = trim_pcap(path, snaplen)
        except (OSError, EOFError, ValueError, TypeError, Scapy_Exception):  # not a pcap after all: keep it
            continue
    return renamed


def relink(checks: Iterable[Any], renamed: dict[Path, Path]) -> None:
    """Point the checks' pcap evidence at the trimmed files (paths keep their relative or absolute form)."""
    for check in checks:
        pcaps = check.evidence.pcaps
        for i, pcap in enumerate(pcaps):
            new = renamed.get(Path(pcap).resolve())
            if new is None and not Path(pcap).exists() and Path(pcap + ".gz").exists():
                new = Path(pcap + ".gz")  # trimmed earlier (by another report of the same results)
            if new is not None:
                pcaps[i] = str(Path(pcap).with_name(new.name))
