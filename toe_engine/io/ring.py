"""A packet socket with a TPACKET_V3 receive ring and batched transmit: many frames per wake-up.

The kernel copies each received frame into a memory-mapped ring of blocks shared with us and
hands a block over when it is full or when its timer (`retire_blk_tov`) runs out, so one
epoll wake-up and no system call give the engine a whole block of frames. In ethtool's words:

    ring size   (ethtool -G rx N)          `RingSettings.frames`: MTU-sized frames the ring holds
    rx-frames   (ethtool -C rx-frames N)   `RingSettings.block_frames`: frames per block
    rx-usecs    (ethtool -C rx-usecs N)    `RingSettings.block_usecs`: the block timeout
    rx_missed_errors (ethtool -S)          frames the kernel dropped because no block was free

PACKET_VNET_HDR works with the ring on this kernel (5.7 and later put the virtio-net header
just before each frame, at tp_mac - 10), so GSO super-frames and partial checksums reach the
engine as with plain reads, and checksum offload and TSO stay correct. A block must hold the
largest frame whole (a 64 KiB super-frame), so it is never smaller than that: below
`min_block_frames()` MTU frames, `block_frames` only sets how soon a block fills with larger
frames, and the timeout is what retires a half-full one. The kernel's timer counts whole
milliseconds: `block_usecs` is rounded up to one, and that is the latency a lone frame waits
when traffic is too thin to fill a block, which is what coalescing trades for CPU.

Transmit goes through `SendBatch` (sendmmsg): frames the engine writes during one batch go
to the kernel in one call at `commit_tx`.
"""
from __future__ import annotations

import mmap
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from toe_engine.io.afpacket import SOL_PACKET, AfPacketDriver
from toe_engine.io.errors import IoSetupError
from toe_engine.io.sendmmsg import SendBatch
from toe_engine.io.vnet import VNET_HDR_LEN, VnetHeader

_Buffer = bytes | bytearray | memoryview

PACKET_RX_RING = 5
PACKET_VERSION = 10
PACKET_STATISTICS = 6
TPACKET_V3 = 2
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_COPY = 2

PAGE = mmap.PAGESIZE
FRAME_SLOT = 2048  # the nominal frame of ethtool's "ring size": an MTU-1500 frame and its headers
BLOCK_HEADER = 48  # struct tpacket_block_desc, rounded to 8
FRAME_HEADER = 92  # struct tpacket3_hdr + sockaddr_ll, aligned, + the vnet header: where tp_mac lands
LARGEST_FRAME = 65536 + 14 + 4  # a 64 KiB GSO super-frame with its Ethernet and VLAN header
MAX_BLOCK_USECS = 1_000_000

_REQ3 = struct.Struct("7I")
_STATS3 = struct.Struct("III")
_U32 = struct.Struct("I")
_BLOCK = struct.Struct("II")  # num_pkts, offset_to_first_pkt at +12
_FRAME = struct.Struct("I8xII4xH")  # tp_next_offset, tp_snaplen, tp_len, tp_mac


def _page_align(n: int) -> int:
    return -(-n // PAGE) * PAGE


def min_block_bytes() -> int:
    """The smallest block that holds a 64 KiB super-frame whole."""
    return _page_align(BLOCK_HEADER + FRAME_HEADER + LARGEST_FRAME)


def min_block_frames() -> int:
    """MTU frames that fit the smallest block: below this `block_frames` changes nothing."""
    return min_block_bytes() // FRAME_SLOT


@dataclass(frozen=True)
class RingSettings:
    """The receive ring in ethtool's vocabulary; `check` says in one sentence what is wrong."""

    frames: int = 4096
    block_frames: int = 64
    block_usecs: int = 1000

    def check(self) -> None:
        if self.block_frames < 1:
            raise ValueError(f"rx_frames must be at least 1, got {self.block_frames}")
        if not 0 < self.block_usecs <= MAX_BLOCK_USECS:
            raise ValueError(f"rx_usecs must be 1 to {MAX_BLOCK_USECS} (the block timeout), got {self.block_usecs}")
        if self.frames < self.block_frames:
            raise ValueError(f"rx_ring ({self.frames} frames) must hold at least one block of rx_frames "
                             f"({self.block_frames})")

    @property
    def block_bytes(self) -> int:
        return max(_page_align(self.block_frames * FRAME_SLOT), min_block_bytes())

    @property
    def blocks(self) -> int:
        return max(2, -(-self.frames * FRAME_SLOT // self.block_bytes))

    @property
    def timeout_ms(self) -> int:
        """retire_blk_tov: the kernel's timer ticks in milliseconds, so microseconds round up."""
        return max(1, -(-self.block_usecs // 1000))

    @property
    def ring_bytes(self) -> int:
        return self.blocks * self.block_bytes

    def frames_held(self, frame_len: int) -> int:
        """Frames of `frame_len` bytes (Ethernet onwards) the ring holds at most: each takes its headers (up to
        tp_mac) and itself, 8-byte aligned (TPACKET_V3), so a ring of MTU slots holds many more small frames.
        A block also retires on its timer half full, so below `frames_held / blocks` frames per timeout the
        ring holds fewer. A frame that finds the ring full is missed; one that gets in waits behind the rest."""
        slot = (FRAME_HEADER + frame_len + 7) & ~7
        return (self.block_bytes - BLOCK_HEADER) // slot * self.blocks

    def geometry(self) -> dict[str, int]:
        """The TPACKET_V3 layout behind the ethtool-style settings, as `config` shows it."""
        return {"blocks": self.blocks, "block_bytes": self.block_bytes, "block_timeout_ms": self.timeout_ms,
                "ring_bytes": self.ring_bytes}


class PacketRingDriver(AfPacketDriver):
    """An AF_PACKET socket with a vnet header, a TPACKET_V3 receive ring and sendmmsg batches.

    `frames(budget)` yields views straight into the ring (header first), `batches(budget)` one
    list of them per block; a view stays valid until the generator moves past its block, which
    is handed back to the kernel then. The engine copies what it keeps, as with any driver.
    `kernel_statistics` also reports `freezes` (times the ring was full and the kernel froze it)
    through `ring_freezes`.
    """

    _view: memoryview
    _block: int
    _batch: SendBatch
    ring_freezes: int

    def __init__(self, ifname: str, netns: str | int | None = None, *, ring: RingSettings | None = None,
                 ignore_outgoing: bool = True, tx_slots: int = 64) -> None:
        self.ring = ring or RingSettings()
        self.ring.check()
        self._mmap: mmap.mmap | None = None
        super().__init__(ifname, netns, ignore_outgoing=ignore_outgoing, rx_buffer_size=VNET_HDR_LEN,
                         before_bind=lambda sock: self._set_up_ring(sock, ifname))
        assert self._mmap is not None
        self._view = memoryview(self._mmap)
        self._block = 0
        self._batch = SendBatch(self.fd, tx_slots)
        self.ring_freezes = 0

    def _set_up_ring(self, sock: socket.socket, ifname: str) -> None:
        ring = self.ring
        try:
            sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            per_block = ring.block_bytes // FRAME_SLOT
            sock.setsockopt(SOL_PACKET, PACKET_RX_RING, _REQ3.pack(
                ring.block_bytes, ring.blocks, FRAME_SLOT, per_block * ring.blocks, ring.timeout_ms, 0, 0))
            self._mmap = mmap.mmap(sock.fileno(), ring.ring_bytes, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as exc:
            raise IoSetupError(exc.errno, f"interface {ifname!r}: the kernel "
                               f"refused a TPACKET_V3 ring of {ring.blocks} x {ring.block_bytes} B: "
                               f"{exc.strerror}") from None

    # --- receive --------------------------------------------------------------------------
    def frames(self, budget: int) -> Iterator[memoryview]:
        """Frames of every block the kernel has handed over, whole blocks until `budget` is reached."""
        for batch in self.batches(budget):
            yield from batch

    def batches(self, budget: int) -> Iterator[list[memoryview]]:
        """One list of frames per block the kernel has handed over, until `budget` frames; a block goes
        back to the kernel when the caller asks for the next, so its views are valid until then."""
        view, block_bytes, blocks = self._view, self.ring.block_bytes, self.ring.blocks
        unpack_u32, unpack_block, unpack_frame = _U32.unpack_from, _BLOCK.unpack_from, _FRAME.unpack_from
        counters = self.counters
        taken = 0
        while taken < budget:
            base = self._block * block_bytes
            if not unpack_u32(view, base + 8)[0] & TP_STATUS_USER:
                return
            count, offset = unpack_block(view, base + 12)
            offset += base
            nbytes = truncated = 0
            batch: list[memoryview] = []
            try:
                for _ in range(count):
                    next_offset, snaplen, length, mac = unpack_frame(view, offset)
                    if snaplen == length:
                        nbytes += snaplen
                        batch.append(view[offset + mac - VNET_HDR_LEN:offset + mac + snaplen])
                    else:
                        truncated += 1
                    offset += next_offset
                yield batch
            finally:
                _U32.pack_into(view, base + 8, TP_STATUS_KERNEL)
                self._block = (self._block + 1) % blocks
                counters.rx_frames += count - truncated
                counters.rx_bytes += nbytes
                counters.rx_truncated += truncated
            taken += count

    def held_deadline(self) -> float | None:
        """0.0 (due at once) while the block the next read starts at is handed over already, else None.

        A TPACKET_V3 socket polls readable only while the block before the one the kernel fills is ours,
        so a reader that stops at its budget with blocks still handed over can wait forever: the kernel,
        frozen on the oldest of them, hands over nothing new and drops every frame (seen under a SYN
        flood with a ring of 4 blocks). libpcap looks at the ring before it polls; the event loop asks
        this (a deadline source) before it sleeps."""
        status = _U32.unpack_from(self._view, self._block * self.ring.block_bytes + 8)[0]
        return 0.0 if status & TP_STATUS_USER else None

    def read_raw(self) -> int:
        raise IoSetupError(f"interface {self.ifname}: a ring driver hands frames out with frames(), not read_raw()")

    def kernel_statistics(self) -> tuple[int, int]:
        """(frames received, frames dropped for want of a free block) since the last call."""
        raw = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _STATS3.size)
        packets, drops, freezes = _STATS3.unpack(raw)
        self.ring_freezes += freezes
        return packets, drops

    # --- transmit -------------------------------------------------------------------------
    def write_raw(self, header_and_frame: _Buffer) -> bool:
        return self.send(b"", header_and_frame)

    def send(self, header: VnetHeader | _Buffer, frame: _Buffer) -> bool:
        """Queue `frame` after `header` for the next `commit_tx` (sooner if the batch is full)."""
        packed = header.pack() if isinstance(header, VnetHeader) else header
        batch = self._batch
        if batch.queue(packed, frame):
            return True
        self.commit_tx()
        if batch.queue(packed, frame):
            return True
        self.counters.tx_dropped += 1  # larger than the whole arena
        return False

    def send_messages(self, messages: list[bytes]) -> None:
        """Queue whole messages (virtio-net header first) for the next `commit_tx`: one arena copy each."""
        queue = self._batch.queue_message
        for message in messages:
            if not queue(message):
                self.commit_tx()
                if not queue(message):
                    self.counters.tx_dropped += 1  # larger than the whole arena

    def commit_tx(self) -> None:
        batch = self._batch
        if not batch.count:
            return
        sent, dropped, sent_bytes = batch.flush()
        counters = self.counters
        counters.tx_frames += sent
        counters.tx_dropped += dropped
        counters.tx_bytes += sent_bytes - VNET_HDR_LEN * sent

    def close(self) -> None:
        if self.fd >= 0:
            self.commit_tx()
        if self._mmap is not None:
            try:
                self._view.release()
                self._mmap.close()
            except BufferError:  # a caller still holds a frame view; the mapping goes with it
                pass
            self._mmap = None
        super().close()
