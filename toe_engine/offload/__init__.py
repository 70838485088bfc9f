"""Offload stages a NIC would do in hardware: checksum, TSO, GRO and LRO, on wire bytes."""
from __future__ import annotations

from toe_engine.offload.csum import complete_partial_checksum, fill_checksums, rx_parse, tx_checksum
from toe_engine.offload.gro import CoalescedFrame, Gro
from toe_engine.offload.lro import Lro
from toe_engine.offload.tso import segment_frame

__all__ = [
    "CoalescedFrame",
    "Gro",
    "Lro",
    "complete_partial_checksum",
    "fill_checksums",
    "rx_parse",
    "segment_frame",
    "tx_checksum",
]
