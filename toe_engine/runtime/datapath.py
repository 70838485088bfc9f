"""The endpoint's data path: frames between the wire, the engine core and the host, batch by batch.

Apart from the runtime's control side (runtime.endpoint) because it runs for every frame and is
compiled with the core (toe_engine.native): what it adds per frame (a read's ACK deferral, the
SYN fast path's share of a batch, receive GRO, handing declined frames to the host, the
virtio-net header of each transmit) would otherwise run interpreted between compiled calls.
"""
from __future__ import annotations

import struct
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any, Final

from mypy_extensions import mypyc_attr

from toe_engine.endpoint import EndpointCore, TxFrame
from toe_engine.io.driver import FrameDriver
from toe_engine.io.vnet import (
    PLAIN_VNET_BYTES,
    VNET_BYTE_ORDER,
    VNET_F_DATA_VALID,
    VNET_F_NEEDS_CSUM,
    VNET_GSO_NONE,
    VNET_GSO_TCPV4,
    VNET_GSO_TCPV6,
    VNET_HDR_LEN,
)
from toe_engine.offload.rx_gro import Aggregate, Delivered, RxGro
from toe_engine.synpath import SynFastPath

MAX_LOGGED_ERRORS: Final = 10
#: Host frames one wake-up takes at most: the TAP's whole transmit queue (its txqueuelen, 1,000), since
#: what the host sends while the queue is full is lost uncounted (see pump_host).
HOST_QUEUE_FRAMES: Final = 1024

_VNET: Final = struct.Struct(VNET_BYTE_ORDER + "BBHHHH")
_GSO_SIZE: Final = struct.Struct(VNET_BYTE_ORDER + "H")  # at offset 4 of the virtio-net header, when gso_type is set
_CSUM_TRUSTED: Final = VNET_F_NEEDS_CSUM | VNET_F_DATA_VALID
_ETHERTYPE_IPV6_HIGH: Final = 0x86


def segments_in(batch: list[Any]) -> int:
    """The segments a batch of wire frames (virtio-net header first) carries: one per frame, and for
    a peer's GSO super-frame as many as its gso_size goes into its length."""
    segments = len(batch)
    for frame in batch:
        if frame[1]:  # gso_type
            segments += len(frame) // (_GSO_SIZE.unpack_from(frame, 4)[0] or len(frame)) - 1
    return segments


def tx_header(tx: TxFrame) -> bytes:
    """The virtio-net header for one engine frame: NEEDS_CSUM, and GSO TCPv4/v6 for TSO frames."""
    frame, gso_size, csum_start, csum_offset = tx
    if not csum_start:
        return PLAIN_VNET_BYTES
    hdr_len = csum_start + ((frame[csum_start + 12] >> 4) << 2)
    gso_type = VNET_GSO_NONE
    if gso_size:
        gso_type = VNET_GSO_TCPV6 if frame[12] == _ETHERTYPE_IPV6_HIGH else VNET_GSO_TCPV4
    return _VNET.pack(VNET_F_NEEDS_CSUM, gso_type, hdr_len, gso_size, csum_start, csum_offset)


@mypyc_attr(allow_interpreted_subclasses=True)
class EndpointDataPath:
    """Moves frames between the wire, the engine and the host (the runtime's control side extends it).

    `gro` is the receive coalescer (None: off) and `ack_defer` the backlog ACK rule; both may be
    swapped between batches. `clock` is the loop's (EventLoop.attach sets it)."""

    def __init__(self, core: EndpointCore, wire: FrameDriver, host: FrameDriver, budget: int,
                 gro: RxGro | None, ack_defer: bool) -> None:
        self.core, self.wire, self.host = core, wire, host
        self.budget = budget
        self.clock: Callable[[], float] = time.monotonic
        self.gro: RxGro | None = gro
        self.ack_defer = ack_defer

    # On the per-frame path its own methods are called as EndpointDataPath.method(self, ...): the compiled
    # build makes that a direct call, where self.method(...) on the runtime (an interpreted subclass, which
    # overrides none of them) is a Python method call.

    def pump_wire(self, now: float) -> int:
        """Frames from the wire: to the engine, or unchanged to the host if it declines them.

        The driver hands over what is waiting in batches (a ring driver a whole block each);
        replies queue up and leave in one go at the end (`commit_tx`), a plain driver has sent
        each already.

        With `ack_defer`, a read that brings `budget` segments is a backlog: from the batch that
        reaches it on, in-order data draws one ACK per connection at the read's end
        (EndpointCore.begin_batch). Linux defers the ACKs of a socket's backlog and nothing else
        (tcp_backlog_ack_defer), and a backlog forms only while the socket's owner is busy; likewise
        a read reaches the budget only when at least that many frames (or a few GSO frames of that
        many segments) were waiting, which happens when the engine was busy while they came, and then
        answering every second segment is the cost that keeps it behind. A shorter read found the
        engine keeping up (a sender bursts at most its window, a paced peer brings a few frames per
        read) and ACKs every second full-sized segment as it comes (SHLD-19): no stretch ACK from an
        engine that is not behind.
        """
        core, wire, budget, gro = self.core, self.wire, self.budget, self.gro
        defer, deferring, count, waiting, syn_path = self.ack_defer, False, 0, 0, core.syn_path
        to_host = self.host.counters
        try:
            for batch in wire.batches(budget):
                count += len(batch)
                if defer and not deferring:
                    waiting += segments_in(batch)
                    if waiting >= budget:
                        core.begin_batch()
                        deferring = True
                handed = to_host.tx_frames
                if syn_path is not None:  # a flood's SYNs first, all of the batch's in one call
                    batch = EndpointDataPath._take_syns(self, syn_path, batch, now)
                if gro is None:
                    now = EndpointDataPath._frame_by_frame(self, batch, now)
                else:
                    now = EndpointDataPath._coalesced(self, batch, now, gro)
                if to_host.tx_frames != handed:
                    # The host answered inside those writes (its receive runs in the TAP write): its replies
                    # leave now, before the next batch brings more than its queue holds (a ring block carries
                    # hundreds of SYNs, and under `fallback` each draws a SYN-ACK from the host).
                    self.pump_host(now)
        finally:
            if deferring:
                core.end_batch(self.clock())
                if core.tx:
                    EndpointDataPath.flush(self, False)
        wire.commit_tx()
        return count

    def _take_syns(self, syn_path: SynFastPath, batch: list[Any], now: float) -> list[Any]:
        """The batch's bare SYNs that meet a full table, decided in one compiled loop (SynFastPath.take_batch):
        their SYN-ACKs queued for the wire, the host's written to it; returns the rest of the batch, in order."""
        host: list[Any] = []
        rest = syn_path.take_batch(batch, now, host)
        to_host = self.host.write_raw
        for frame in host:
            try:
                to_host(frame)
            except OSError:
                self.core.counters.inc("host_tx_errors")
        if syn_path.replies:
            self.wire.send_messages(syn_path.take_replies())
        return rest

    def _frame_by_frame(self, batch: list[Any], now: float) -> float:
        """One batch to the engine frame by frame; returns the time the next batch is handled at."""
        core = self.core  # from_wire called on it, not bound to a local: the compiled build calls it directly
        to_host = self.host.write_raw
        for frame in batch:
            try:
                consumed = core.from_wire(frame[VNET_HDR_LEN:], now, bool(frame[0] & _CSUM_TRUSTED),
                                          _GSO_SIZE.unpack_from(frame, 4)[0] if frame[1] else 0)
            except Exception:  # one frame that trips the engine must not stop the node
                self._engine_error(frame[VNET_HDR_LEN:])
                consumed = True
            if not consumed:
                try:
                    to_host(frame)
                except OSError:
                    core.counters.inc("host_tx_errors")
            if core.tx:
                EndpointDataPath.flush(self, False)
                # A frame read after this reply may answer it (a peer's next SYN after our RST'd
                # SYN-ACK, say): it must not be handled as if it came before, so time moves on.
                now = self.clock()
        return now

    def _coalesced(self, batch: list[Any], now: float, gro: RxGro) -> float:
        """One batch with receive GRO: its segments coalesced per flow (offload.rx_gro), every
        aggregate handed to the engine once; returns the time the next batch is handled at."""
        core, counters = self.core, self.core.counters  # core's and gro's methods called directly (compiled)
        to_host = self.host.write_raw
        out: list[Delivered] = []
        for wire_frame in batch:
            try:
                gro.receive(wire_frame, out)
            except Exception:  # never expected (the coalescer only reads headers), never fatal
                self._engine_error(wire_frame[VNET_HDR_LEN:])
        gro.flush(out)
        for item in out:
            frame: bytes | memoryview
            if isinstance(item, Aggregate):
                frame, trusted, gso_size = item.frame, True, item.gso_size
                counters.inc("rx_frames", len(item.originals) - 1)  # wire frames, as without GRO
            else:
                frame, trusted = item[VNET_HDR_LEN:], bool(item[0] & _CSUM_TRUSTED)
                gso_size = _GSO_SIZE.unpack_from(item, 4)[0] if item[1] else 0  # a peer's GSO frame
            try:
                consumed = core.from_wire(frame, now, trusted, gso_size)
            except Exception:  # one frame that trips the engine must not stop the node
                self._engine_error(memoryview(frame))
                consumed = True
            if not consumed:  # the host gets the wire's frames, never an aggregate
                try:
                    for original in item.originals if isinstance(item, Aggregate) else (item,):
                        to_host(original)
                except OSError:
                    counters.inc("host_tx_errors")
            if core.tx:
                EndpointDataPath.flush(self, False)
                now = self.clock()
        return now

    def pump_host(self, now: float) -> int:
        """Frames the host kernel sends go to the wire as they are (header included), as many as its
        queue holds (HOST_QUEUE_FRAMES) per wake-up: the host's transmit path is not starved by a
        flooded receive path, as a NIC's transmit DMA is not (what the wire ring cannot hold is counted
        missed, what the host's queue cannot hold is lost uncounted)."""
        to_wire, wire = self.wire.write_raw, self.wire
        count = 0
        for frame in self.host.frames(HOST_QUEUE_FRAMES):
            try:
                to_wire(frame)
            except OSError:
                self.core.counters.inc("tx_errors")
            count += 1
        wire.commit_tx()
        return count

    def _engine_error(self, frame: Any) -> None:
        """Count a frame the engine raised on; the first few go to stderr (the node's log) in full."""
        counters = self.core.counters
        counters.inc("rx_engine_errors")
        if counters["rx_engine_errors"] <= MAX_LOGGED_ERRORS:
            print(f"endpoint: engine error on frame {bytes(frame[:256]).hex()}", file=sys.stderr)
            traceback.print_exc(file=sys.stderr)
            sys.stderr.flush()

    def on_due(self, now: float) -> None:
        self.core.on_timer(now)
        self.flush()

    def flush(self, commit: bool = True) -> None:
        """Send what the engine has for the wire; `commit=False` leaves a batching driver's queue
        for the caller to commit once."""
        send = self.wire.send
        for tx in self.core.poll_wire():
            try:
                send(tx_header(tx), tx.frame)
            except OSError:  # a frame the device refuses (EMSGSIZE, EINVAL) is lost, not fatal
                self.core.counters.inc("tx_errors")
        if commit:
            self.wire.commit_tx()
