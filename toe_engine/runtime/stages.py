"""Forwarder stages: receive coalescing (GRO, LRO), TSO and impairments, with vnet headers.

Frames read from AF_PACKET carry a virtio-net header. When the sender has TSO on, data
arrives as GSO super-frames (`gso_size` set, TCP checksum partial: NEEDS_CSUM); small frames
may still have a partial checksum. Every stage keeps header and frame consistent:

* GRO hands a super-frame on untouched (it is what GRO would have built from its segments) and
  completes partial checksums of single frames before merging them; a merged aggregate leaves
  with `gso_type`/`gso_size` and a partial checksum, so the kernel cuts it back exactly.
* LRO turns a super-frame into what LRO hardware makes of the same segments on a wire: one
  frame with a complete checksum and NO GSO metadata. Segment boundaries are lost on purpose;
  such a frame is simply oversize wherever the egress MTU is smaller than it.
* TSO segments super-frames into MSS-sized frames with complete checksums.
* Impairments (loss, duplication, reordering, delay, corruption, rate) act on whatever reaches
  them; the header travels with its frame through the queue.

A `Pipeline` chains stages into the one callable the `Forwarder` takes, and exposes the
earliest deadline of its stages so held frames (GRO flush, delay) leave on time.
"""
from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from toe_engine.codec.frame import ParsedFrame, parse_frame
from toe_engine.counters import Counters
from toe_engine.impair import Impairer, ImpairmentSpec
from toe_engine.io.vnet import (
    PLAIN_VNET_BYTES,
    PLAIN_VNET_HEADER,
    VNET_BYTE_ORDER,
    VNET_F_DATA_VALID,
    VNET_F_NEEDS_CSUM,
    VNET_GSO_ECN,
    VNET_GSO_TCPV4,
    VNET_GSO_TCPV6,
    VNET_HDR_LEN,
    VnetHeader,
)
from toe_engine.offload.csum import complete_partial_checksum, tx_checksum
from toe_engine.offload.gro import GRO_MAX_SIZE, CoalescedFrame, Gro
from toe_engine.offload.lro import LRO_MAX_SIZE, Lro
from toe_engine.offload.tso import segment_frame

Frame = bytes | bytearray
Item = tuple[VnetHeader, Frame]

TCP_DOFF_OFFSET = 12
_VNET_GSO_TYPE = 1  # the byte of the virtio-net header that holds gso_type
_VNET = struct.Struct(VNET_BYTE_ORDER + "BBHHHH")
_ETH_HLEN = 14
_IPV4_HLEN = 20
_IPV6_HLEN = 40
_IPPROTO_TCP = 6


class PipelineStage(Protocol):
    """One step of a direction's pipeline; `drain` gives up everything held (reconfiguration)."""

    def process(self, header: VnetHeader, frame: Frame, now: float) -> list[Item]: ...

    def next_deadline(self) -> float | None: ...

    def poll(self, now: float) -> list[Item]: ...

    def drain(self) -> list[Item]: ...


def with_complete_checksum(header: VnetHeader, frame: Frame) -> Frame:
    """The frame with its partial checksum completed (a copy), or the frame itself if whole."""
    if not header.needs_csum:
        return frame
    buf = bytearray(frame)
    complete_partial_checksum(buf, header.csum_start, header.csum_offset)
    return buf


def _parse_received(header: VnetHeader, frame: Frame) -> ParsedFrame:
    """Parse for coalescing; checksums the sender's stack made (NEEDS_CSUM, completed here)
    or a device already verified (DATA_VALID) are not summed again."""
    return parse_frame(frame, verify_csum=not (header.flags & (VNET_F_NEEDS_CSUM | VNET_F_DATA_VALID)))


def tcp_payload_offset(header: VnetHeader, frame: Frame) -> int:
    """Where a GSO frame's payload starts: the header's csum_start is the TCP header.

    `hdr_len` of a received frame is only the length of the kernel's linear area, not the
    header length, so it cannot be trusted for this.
    """
    start = header.csum_start
    return start + ((frame[start + TCP_DOFF_OFFSET] >> 4) << 2)


def gso_segments(header: VnetHeader, frame: Frame) -> int:
    """How many wire segments a GSO super-frame stands for."""
    payload = len(frame) - tcp_payload_offset(header, frame)
    return max(1, -(-payload // header.gso_size))


def gso_item(frame: Frame, gso_size: int) -> Item:
    """A coalesced TCP frame made ready for the kernel to re-segment.

    The TCP checksum field gets the pseudo-header sum (as the stack leaves it for a
    CHECKSUM_PARTIAL super-frame) and the header says NEEDS_CSUM with the segment size.
    """
    buf = frame if isinstance(frame, bytearray) else bytearray(frame)
    parsed = parse_frame(buf, verify_csum=False)
    csum = tx_checksum(buf, parsed, leave_to_device=True)
    assert csum is not None
    gso_type = VNET_GSO_TCPV4 if parsed.ip_version == 4 else VNET_GSO_TCPV6
    header = VnetHeader(VNET_F_NEEDS_CSUM, gso_type, parsed.payload_offset, gso_size, csum[0], csum[1])
    return header, buf


class Pipeline:
    """The stages of one direction as a single forwarder stage (a `TimedStage`)."""

    def __init__(self, stages: Sequence[PipelineStage] = ()) -> None:
        self.stages: list[PipelineStage] = list(stages)

    def __bool__(self) -> bool:
        return bool(self.stages)

    def __call__(self, header: VnetHeader, frame: Frame, now: float) -> list[Item]:
        return self.run_from(0, [(header, frame)], now)

    def run_from(self, index: int, items: list[Item], now: float) -> list[Item]:
        """Pass `items` through the stages from `index` on."""
        for stage in self.stages[index:]:
            if not items:
                break
            if len(items) == 1:
                header, frame = items[0]
                items = stage.process(header, frame, now)
            else:
                process = stage.process
                out: list[Item] = []
                for header, frame in items:
                    out.extend(process(header, frame, now))
                items = out
        return items

    def next_deadline(self) -> float | None:
        earliest: float | None = None
        for stage in self.stages:
            deadline = stage.next_deadline()
            if deadline is not None and (earliest is None or deadline < earliest):
                earliest = deadline
        return earliest

    def poll(self, now: float) -> list[Item]:
        """Frames that stages release because their time came, through the later stages."""
        out: list[Item] = []
        for index, stage in enumerate(self.stages):
            deadline = stage.next_deadline()
            if deadline is not None and deadline <= now:
                due = stage.poll(now)
                if due:
                    out.extend(self.run_from(index + 1, due, now))
        return out

    def replace(self, stages: Sequence[PipelineStage], now: float) -> list[Item]:
        """Swap in new stages; what a dropped stage held goes through the stages after it.

        Stages kept (by identity) keep what they hold. Returns frames to send now.
        """
        kept = set(map(id, stages))
        released: list[Item] = []
        old = self.stages
        for index, stage in enumerate(old):
            if id(stage) not in kept:
                held = stage.drain()
                if held:
                    released.extend(Pipeline(old[index + 1:]).run_from(0, held, now))
        self.stages = list(stages)
        return released


class _Untimed:
    """Base of stages that never hold a frame."""

    def next_deadline(self) -> float | None:
        return None

    def poll(self, now: float) -> list[Item]:
        return []

    def drain(self) -> list[Item]:
        return []


class _CoalescingStage:
    """What GRO and LRO stages share: super-frames bypass coalescing (they flush what is held
    first, to keep order), and held flows leave at the end of the event-loop iteration that
    received them (like the end of a NAPI poll) or, with `flush_timeout`, once held that long."""

    def __init__(self, coalescer: Gro | Lro, flush_timeout: float) -> None:
        self.coalescer = coalescer
        self.flush_timeout = flush_timeout
        self._held_since: float | None = None

    def _items(self, frames: Iterable[CoalescedFrame]) -> list[Item]:
        raise NotImplementedError

    def _super_frame(self, header: VnetHeader, frame: Frame) -> Item:
        raise NotImplementedError

    def process(self, header: VnetHeader, frame: Frame, now: float) -> list[Item]:
        coalescer = self.coalescer
        if header.is_gso:
            out = self._items(coalescer.flush_all())
            self._held_since = None
            out.append(self._super_frame(header, frame))
            return out
        frame = with_complete_checksum(header, frame)
        out = self._items(coalescer.receive(frame, _parse_received(header, frame), now))
        if self._held_since is None and coalescer.held_flows:
            self._held_since = now
        return out

    def next_deadline(self) -> float | None:
        since = self._held_since
        return None if since is None else since + self.flush_timeout

    def poll(self, now: float) -> list[Item]:
        out = self._items(self.coalescer.flush(now))
        self._held_since = now if self.coalescer.held_flows else None
        return out

    def drain(self) -> list[Item]:
        self._held_since = None
        return self._items(self.coalescer.flush_all())


class GroStage(_CoalescingStage):
    """Kernel-faithful GRO on received frames; aggregates leave with GSO metadata."""

    def __init__(self, counters: Counters, *, max_size: int = GRO_MAX_SIZE, flush_timeout: float = 0.0) -> None:
        super().__init__(Gro(max_size, counters=counters, flush_timeout=flush_timeout), flush_timeout)

    def _items(self, frames: Iterable[CoalescedFrame]) -> list[Item]:
        out: list[Item] = []
        for coalesced in frames:
            if coalesced.segments > 1 and coalesced.gso_size:
                out.append(gso_item(coalesced.frame, coalesced.gso_size))
            else:
                out.append((PLAIN_VNET_HEADER, coalesced.frame))
        return out

    def _super_frame(self, header: VnetHeader, frame: Frame) -> Item:
        return (header, frame)

    def passes_untouched(self, buf: bytearray) -> bool:
        """Whether the frame in `buf` (virtio-net header first) would leave `process` exactly
        as it came, alone: a GSO super-frame while no flow is held."""
        return bool(buf[_VNET_GSO_TYPE] & ~VNET_GSO_ECN) and not self.coalescer.held_flows

    def passes_plain(self, buf: bytearray, n: int) -> bool:
        """Whether the frame in `buf[:n]` would leave `process` alone with only its checksum
        completed and a plain header (`hand_on_plain`): a TCP segment without payload (GRO
        holds none) while no flow is held."""
        if buf[_VNET_GSO_TYPE] & ~VNET_GSO_ECN or self.coalescer.held_flows:
            return False
        flags, _, _, _, csum_start, csum_offset = _VNET.unpack_from(buf, 0)
        if flags & VNET_F_NEEDS_CSUM and VNET_HDR_LEN + csum_start + csum_offset + 2 > n:
            return False
        l3 = VNET_HDR_LEN + _ETH_HLEN
        ethertype = (buf[l3 - 2] << 8) | buf[l3 - 1]
        if ethertype == 0x0800 and n >= l3 + _IPV4_HLEN and buf[l3 + 9] == _IPPROTO_TCP:
            ip_header = (buf[l3] & 0x0F) << 2
            l4_len = ((buf[l3 + 2] << 8) | buf[l3 + 3]) - ip_header
        elif ethertype == 0x86DD and n >= l3 + _IPV6_HLEN and buf[l3 + 6] == _IPPROTO_TCP:
            ip_header = _IPV6_HLEN
            l4_len = (buf[l3 + 4] << 8) | buf[l3 + 5]
        else:
            return False
        doff = l3 + ip_header + TCP_DOFF_OFFSET
        return doff < n and l4_len <= (buf[doff] >> 4) << 2

    def hand_on_plain(self, buf: bytearray, n: int) -> None:
        """Do to the frame in `buf[:n]` what `process` does to one that `passes_plain`."""
        flags, _, _, _, csum_start, csum_offset = _VNET.unpack_from(buf, 0)
        if flags & VNET_F_NEEDS_CSUM:
            complete_partial_checksum(memoryview(buf)[VNET_HDR_LEN:n], csum_start, csum_offset)
        buf[:VNET_HDR_LEN] = PLAIN_VNET_BYTES


class LroStage(_CoalescingStage):
    """NIC-style LRO: aggregates leave as plain frames with no segment size (lossy on purpose).

    A GSO super-frame stands for segments that were on the wire back to back; LRO would have
    merged exactly those, so it leaves as one aggregate with a complete checksum and no GSO
    metadata, counted in `lro_merged` like the merges it stands for.
    """

    def __init__(self, counters: Counters, *, max_size: int = LRO_MAX_SIZE, flush_timeout: float = 0.0) -> None:
        super().__init__(Lro(max_size, counters=counters, flush_timeout=flush_timeout), flush_timeout)
        self.counters = counters

    def _items(self, frames: Iterable[CoalescedFrame]) -> list[Item]:
        return [(PLAIN_VNET_HEADER, coalesced.frame) for coalesced in frames]

    def _super_frame(self, header: VnetHeader, frame: Frame) -> Item:
        self.counters.inc("lro_merged", gso_segments(header, frame) - 1)
        return (PLAIN_VNET_HEADER, with_complete_checksum(header, frame))


class TsoStage(_Untimed):
    """Segment GSO super-frames into `gso_size` frames with complete checksums on egress."""

    def __init__(self, counters: Counters) -> None:
        self.counters = counters

    def process(self, header: VnetHeader, frame: Frame, now: float) -> list[Item]:
        if not header.is_gso:
            return [(header, frame)]
        return [(PLAIN_VNET_HEADER, segment) for segment in segment_frame(frame, header.gso_size, counters=self.counters)]


IMPAIRMENT_STAT_NAMES = ("submitted", "dropped", "duplicated", "corrupted", "reordered", "delayed", "rate_dropped", "passed")


class ImpairStage:
    """Seeded netem-style impairments; the vnet header rides along with its frame.

    The `Impairer` queues frames alone, so headers wait in a side table keyed by the frame
    object (kept alive there, so its id stays unique) with the number of copies queued.
    With corruption configured, frames are first made self-contained (super-frames cut into
    segments, partial checksums completed), because a kernel completing a checksum over a
    flipped bit would hide the corruption from the receiver, as netem does by segmenting.

    `set_spec` starts a new Impairer; the old one keeps releasing what it holds.
    """

    def __init__(self, spec: ImpairmentSpec, seed: int, *, counters: Counters, record: bool = False) -> None:
        self.counters = counters
        self.record = record
        self.seed = seed
        self.impairer = Impairer(spec, seed, record=record)
        self._self_contained = spec.corrupt > 0
        self._retired: list[Impairer] = []
        self._retired_stats: dict[str, int] = dict.fromkeys(IMPAIRMENT_STAT_NAMES, 0)
        self._headers: dict[int, list[Any]] = {}

    @property
    def spec(self) -> ImpairmentSpec:
        return self.impairer.spec

    def set_spec(self, spec: ImpairmentSpec, seed: int) -> None:
        old = self.impairer
        for name, value in old.stats.items():
            self._retired_stats[name] = self._retired_stats.get(name, 0) + value
        if len(old):
            self._retired.append(old)
        self.impairer = Impairer(spec, seed, record=self.record)
        self.seed = seed
        self._self_contained = spec.corrupt > 0

    def stats(self) -> dict[str, int]:
        """Totals over every spec this stage has run with."""
        totals = dict(self._retired_stats)
        for name, value in self.impairer.stats.items():
            totals[name] = totals.get(name, 0) + value
        return totals

    def process(self, header: VnetHeader, frame: Frame, now: float) -> list[Item]:
        impairer = self.impairer
        if self._self_contained:
            for plain in _self_contained(header, frame, self.counters):
                impairer.submit(plain, now)  # type: ignore[arg-type]
        else:
            before = len(impairer)
            impairer.submit(frame, now)  # type: ignore[arg-type]
            queued = len(impairer) - before
            if queued and header != PLAIN_VNET_HEADER:
                entry = self._headers.get(id(frame))
                if entry is None:
                    self._headers[id(frame)] = [frame, header, queued]
                else:
                    entry[2] += queued
        deadline = impairer.next_deadline()
        if deadline is not None and deadline <= now:
            return self._with_headers(impairer.poll(now))
        return []

    def next_deadline(self) -> float | None:
        earliest = self.impairer.next_deadline()
        for retired in self._retired:
            deadline = retired.next_deadline()
            if deadline is not None and (earliest is None or deadline < earliest):
                earliest = deadline
        return earliest

    def poll(self, now: float) -> list[Item]:
        frames: list[Frame] = []  # the impairer hands back the bytearrays it was given
        if self._retired:
            for retired in self._retired:
                frames.extend(retired.poll(now))
            self._retired = [retired for retired in self._retired if len(retired)]
        frames.extend(self.impairer.poll(now))
        return self._with_headers(frames)

    def drain(self) -> list[Item]:
        return self.poll(float("inf"))

    def _with_headers(self, frames: Sequence[Frame]) -> list[Item]:
        headers = self._headers
        if not headers:
            return [(PLAIN_VNET_HEADER, frame) for frame in frames]
        out: list[Item] = []
        for frame in frames:
            key = id(frame)
            entry = headers.get(key)
            if entry is not None and entry[0] is frame:
                out.append((entry[1], frame))
                entry[2] -= 1
                if entry[2] == 0:
                    del headers[key]
            else:
                out.append((PLAIN_VNET_HEADER, frame))
        return out


def _self_contained(header: VnetHeader, frame: Frame, counters: Counters) -> list[Frame]:
    if header.is_gso:
        return list(segment_frame(frame, header.gso_size, counters=counters))
    return [with_complete_checksum(header, frame)]
