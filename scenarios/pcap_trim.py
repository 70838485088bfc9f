"""Cut a run's pcaps to their headers and the first payload bytes, so reports stay small.

A scenario analyses its full captures while it runs; what the report keeps afterwards is
evidence to open in Wireshark, where headers (Ethernet, IP, TCP with options) and the start
of each payload tell the story. Each packet keeps its original length in the record header,
so Wireshark shows it as "packet size limited during capture". Files are rewritten in place.
"""
from __future__ import annotations

import os
from pathlib import Path

from scapy.error import Scapy_Exception
from scapy.utils import RawPcapReader, RawPcapWriter

#: Ethernet (14) + IPv6 (40) + TCP with the largest options (60) + 64 bytes of payload.
SNAPLEN = 14 + 40 + 60 + 64


def trim_pcap(path: Path, snaplen: int = SNAPLEN) -> tuple[int, int]:
    """Rewrite one pcap with every packet cut to `snaplen` bytes; (bytes before, bytes after)."""
    before = path.stat().st_size
    tmp = path.with_suffix(path.suffix + ".trim")
    reader = RawPcapReader(str(path))
    writer = None
    try:
        for data, meta in reader:
            if writer is None:
                writer = RawPcapWriter(str(tmp), linktype=reader.linktype, snaplen=snaplen, sync=False)
                writer.write_header(None)
            writer.write_packet(data[:snaplen], sec=meta.sec, usec=meta.usec,
                                caplen=min(len(data), snaplen), wirelen=meta.wirelen)
    finally:
        reader.close()
        if writer is not None:
            writer.close()
    if writer is None:  # no packets: the file is only its header already
        return before, before
    os.replace(tmp, path)
    return before, path.stat().st_size


def trim_pcaps(root: Path, snaplen: int = SNAPLEN) -> tuple[int, int]:
    """Trim every *.pcap below `root`; the total bytes before and after. Unreadable files are left as they are."""
    total_before = total_after = 0
    for path in sorted(root.rglob("*.pcap")):
        try:
            before, after = trim_pcap(path, snaplen)
        except (OSError, EOFError, ValueError, TypeError, Scapy_Exception):  # not a pcap after all (or a truncated one): keep it
            continue
        total_before += before
        total_after += after
    return total_before, total_after
