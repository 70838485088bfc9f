"""What must hold in an EndpointCore after any frames at all.

Checked after every batch of fuzzed frames; each broken rule is one sentence naming the
connection and the values, so a run's report says what broke without a debugger.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from toe_engine.codec.drop import DropReason
from toe_engine.endpoint import OOO_BLOCK_COST, EndpointCore
from toe_engine.fuzz.peer import WirePeer
from toe_engine.tcp.connection import State

STATES = frozenset(State)
#: A segment may take a connection past its memory bound by one payload before the next check.
MEMORY_SLACK = 64 * 1024


@dataclass
class DropTally:
    """Drop reasons as the parser gives them, to compare with the engine's drop counters."""

    reasons: Counter[DropReason] = field(default_factory=Counter)

    def add(self, reason: DropReason | None) -> None:
        if reason is not None:
            self.reasons[reason] += 1

    def expected(self) -> tuple[int, int]:
        """(rx_malformed, rx_csum_errors) the engine must have counted."""
        csum = sum(n for r, n in self.reasons.items() if r.is_checksum_error)
        return sum(self.reasons.values()) - csum, csum


def check(core: EndpointCore, peers: list[WirePeer], drops: DropTally) -> list[str]:
    """Every rule broken now (an empty list when all hold)."""
    broken: list[str] = []
    stack = core.stack
    memory = core.buffer_memory
    keys = stack.connections()
    for key in keys:
        conn = stack.connection(key)
        if conn is None:
            broken.append(f"{key}: listed but has no TCB")
            continue
        where = f"{key} in {conn.state.name}"
        if conn.state not in STATES:
            broken.append(f"{where}: state {conn.state!r} is not one of the eleven")
        if conn.snd_una > conn.snd_nxt:
            broken.append(f"{where}: SND.UNA {conn.snd_una} > SND.NXT {conn.snd_nxt}")
        if conn.snd_wnd < 0 or conn.max_snd_wnd < 0:
            broken.append(f"{where}: send window {conn.snd_wnd} (max {conn.max_snd_wnd}) is negative")
        if conn.rcv_adv - conn.rcv_nxt > (0xFFFF << conn.rcv_wscale):
            broken.append(f"{where}: receive window {conn.rcv_adv - conn.rcv_nxt} exceeds what the field can say")
        if len(conn.rcv_buf) > conn.cfg.rcv_buf or len(conn.snd_buf) > conn.cfg.snd_buf:
            broken.append(f"{where}: buffers {len(conn.snd_buf)}/{len(conn.rcv_buf)} exceed their sizes")
        app = core.apps.get(key)
        held = (len(conn.snd_buf) + len(conn.rcv_buf) + conn.ooo.bytes_held + OOO_BLOCK_COST * len(conn.ooo)
                + (app.buffered_bytes() if app is not None else 0))
        if held != memory.held(key):
            broken.append(f"{where}: holds {held} bytes, buffer memory accounts {memory.held(key)}")
        if held > memory.conn_limit + MEMORY_SLACK:
            broken.append(f"{where}: holds {held} bytes, over the per-connection bound {memory.conn_limit}")
    if memory.total > memory.total_limit + MEMORY_SLACK:
        broken.append(f"buffer memory {memory.total} over the engine bound {memory.total_limit}")
    if len(memory) > len(keys):
        broken.append(f"buffer memory accounts {len(memory)} connections, {len(keys)} are alive")
    if core.next_hops() > len(keys):
        broken.append(f"{core.next_hops()} next hops remembered for {len(keys)} connections")
    occupancy = core.resources.table.occupancy
    admitted = sum(1 for k in keys if stack.connection(k).admitted)
    if occupancy != admitted:
        broken.append(f"connection table holds {occupancy} entries for {admitted} admitted connections")
    malformed, csum = drops.expected()
    counted = (core.counters["rx_malformed"], core.counters["rx_csum_errors"])
    if counted != (malformed, csum):
        broken.append(f"drop counters (malformed, checksum) {counted} != parser's drop reasons {(malformed, csum)}")
    for peer in peers:
        if peer.mismatches:
            broken.append(f"{peer.mismatches} segments to {peer.ip.hex()} were not a prefix of the stream sent")
        if peer.wrong_mac:
            broken.append(f"{peer.wrong_mac} frames of {peer.ip.hex()}'s connections went to another MAC")
    return broken
