"""Receive coalescing for the endpoint (software GRO): one batch of wire frames in, fewer TCP segments out.

Linux does not run TCP input once per wire frame: napi_gro_receive (net/core/gro.c) with
inet_gro_receive / ipv6_gro_receive and tcp_gro_receive (net/ipv4/tcp_offload.c) merges the
in-order segments of one flow that arrive within one NAPI poll into one super-segment, and TCP
sees that once. `RxGro` does the same for the engine endpoint over one receive batch (a
TPACKET_V3 block, or the frames one wake-up reads), with the merge and flush rules of
offload.gro (the middlebox's GRO, Linux 6.18), applied to the raw header words so the per-frame
cost is one `struct` unpack and no parse:

* a segment joins the flow held from earlier in the batch only if its TCP flag word (data
  offset, flags, window) is the same but for FIN/PSH, its ACK and its option bytes are the same
  (so TSval/TSecr are those of every merged segment: a new TSval starts a new aggregate), TTL,
  TOS, DF (IPv6: traffic class, hop limit) and the IPv4 ID pattern (incrementing or fixed) hold,
  its sequence number follows on, its payload is not empty and not larger than the first one
  (`gso_size`, the wire MSS), and the aggregate stays under 64 KiB;
* a segment that does not join flushes the held flow first; a merged segment shorter than
  gso_size, or with PSH/URG/RST/SYN/FIN, flushes the flow it joined; an unmerged segment with
  such flags, or without payload (a pure ACK), goes up alone instead of being held;
* the end of the batch flushes everything (`flush`), like the end of a NAPI poll.

What is not a candidate goes up alone, unchanged: not IPv4/IPv6 TCP on untagged Ethernet,
IPv4 options or fragments, IPv6 extension headers, a GSO super-frame (it is one already), a
length that disagrees with the frame, or a checksum that fails. Unlike Linux, a candidate flow
held in the batch is flushed before such a frame of the same 4-tuple goes up, so the endpoint
never reorders its own flow. Checksums are checked only where the device did not (the
virtio-net header's NEEDS_CSUM or DATA_VALID), as the endpoint's own parser does, so an
aggregate is handed on as verified and the TCP core checks nothing again.

Out come the frames in the order Linux would deliver them: a frame that went up alone is the
driver's own view (virtio-net header first), an aggregate is an `Aggregate`: the merged frame
(no virtio-net header), the wire MSS, and the original views, so a flow the engine does not
take reaches the host exactly as it came off the wire. Views stay valid only for the batch:
the caller hands everything on before the next one.
"""
from __future__ import annotations

import struct
from typing import Final

from mypy_extensions import mypyc_attr

from toe_engine.checksum import internet_checksum, ones_sum
from toe_engine.counters import Counters
from toe_engine.offload.gro import GRO_MAX_SIZE, MAX_HELD_FLOWS
from toe_engine.segment import FIN, PSH, RST, SYN, URG

#: virtio-net header (toe_engine.io.vnet) + Ethernet + IPv4 + TCP, the fields GRO compares, in one unpack:
#: vnet flags, gso_type; MACs; EtherType; version/IHL, TOS, total length, ID, fragment word, TTL, protocol;
#: addresses; ports, sequence, ACK, flag word (data offset, flags, window).
_V4: Final = struct.Struct("!BB8x12sHBBHHHBB2xIIIIII")
#: ... + IPv6: version/traffic class/flow label, payload length, next header, hop limit, addresses; TCP.
_V6: Final = struct.Struct("!BB8x12sHIHBB16s16sIIII")
_U16: Final = struct.Struct("!H")

VNET: Final = 10  # the virtio-net header every driver frame starts with
_L3: Final = VNET + 14
_V4_L4: Final = _L3 + 20
_V6_L4: Final = _L3 + 40
_ETH_IPV4: Final = 0x0800
_ETH_IPV6: Final = 0x86DD
_TCP: Final = 6
_CSUM_TRUSTED: Final = 0x01 | 0x02  # VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID
_IP_DF: Final = 0x4000
_IP_FRAG: Final = 0x3FFF  # MF and the fragment offset
_FLUSH_FLAGS: Final = URG | PSH | RST | SYN | FIN
_KEPT_FLAGS: Final = (FIN | PSH) << 16  # in the flag word: the flags a merged segment may add
_V6_TRAFFIC_CLASS: Final = 0x0FF00000
_V6_FLOW_LABEL: Final = 0x000FFFFF
_TCP_FLAGS_BYTE: Final = 13


class Aggregate:
    """Segments of one flow merged into one frame: what TCP is handed instead of `segments` frames."""

    __slots__ = ("frame", "gso_size", "originals")

    def __init__(self, frame: bytes, gso_size: int, originals: list[memoryview]) -> None:
        self.frame = frame  # Ethernet onwards, lengths and IPv4 header checksum set, TCP checksum not
        self.gso_size = gso_size  # the wire MSS: every segment's payload but the last one's
        self.originals = originals  # the wire frames, virtio-net header first, valid for the batch

    @property
    def segments(self) -> int:
        return len(self.originals)


Delivered = memoryview | Aggregate


class _Held:
    """A flow's segments waiting in the batch, and what the next one must match."""

    __slots__ = ("key", "first", "header_end", "chunks", "originals", "gso_size", "next_seq", "ip_len",
                 "flag_word", "ack", "options", "ip_id", "fixed_id", "extra_flags", "network", "ipv6")

    def __init__(self, key: tuple[object, ...], frame: memoryview, header_end: int, payload_end: int, seq: int,
                 ip_len: int, flag_word: int, ack: int, options: bytes, ip_id: int, network: int,
                 ipv6: bool) -> None:
        self.key = key
        self.first = frame
        self.header_end = header_end
        self.chunks = [frame[header_end:payload_end]]
        self.originals = [frame]
        self.gso_size = payload_end - header_end
        self.next_seq = (seq + self.gso_size) & 0xFFFFFFFF
        self.ip_len = ip_len
        self.flag_word = flag_word
        self.ack = ack
        self.options = options
        self.ip_id = ip_id
        self.fixed_id = False
        self.extra_flags = 0
        self.network = network  # TTL, TOS, DF (IPv6: traffic class, hop limit) packed: all must match
        self.ipv6 = ipv6


@mypyc_attr(allow_interpreted_subclasses=True)  # tests subclass it to make it raise
class RxGro:
    """Coalesces the TCP segments of one receive batch per flow, with Linux's rules (module docstring).

    `receive(frame, out)` offers one driver frame (virtio-net header first) and appends to `out`
    what leaves GRO because of it; `flush(out)` ends the batch. `gro_merged` counts segments
    merged into an earlier one and `gro_flushed` held flows released, as the middlebox's GRO
    counts them; both reach `counters` once per batch.
    """

    def __init__(self, counters: Counters | None = None, *, max_size: int = GRO_MAX_SIZE,
                 max_flows: int = MAX_HELD_FLOWS) -> None:
        self.counters = counters if counters is not None else Counters()
        self.max_size = max_size
        self.max_flows = max_flows
        self._held: dict[tuple[object, ...], _Held] = {}
        self._merged = 0
        self._flushed = 0

    @property
    def held_flows(self) -> int:
        return len(self._held)

    def receive(self, frame: memoryview, out: list[Delivered]) -> None:
        """Offer one frame of the batch; what it releases (and itself, if it is not held) goes to `out`."""
        n = len(frame)
        if n < _V4_L4 + 20:
            out.append(frame)
            return
        (vflags, gso_type, link, ethertype, ver_ihl, tos, total_len, ip_id, frag, ttl, proto,
         src, dst, ports, seq, ack, word) = _V4.unpack_from(frame)
        if ethertype == _ETH_IPV4:
            if proto != _TCP:
                out.append(frame)
                return
            if ver_ihl != 0x45:  # IPv4 options (or not version 4): not for GRO
                self._alone(frame, _options_key(frame, link, src, dst, ver_ihl), out)
                return
            key: tuple[object, ...] = (link, src, dst, ports)
            end = _L3 + total_len
            if (word >> 16) & SYN and not gso_type:  # a SYN is never merged: its checksum is the core's to check
                self._alone(frame, key, out)
                return
            if gso_type or frag & _IP_FRAG or end > n or not (vflags & _CSUM_TRUSTED or _v4_csum_ok(frame, end)):
                self._alone(frame, key if gso_type or frag & _IP_FRAG else None, out)
                return
            network = (ttl << 24) | (tos << 16) | (frag & _IP_DF)
            l4, ipv6 = _V4_L4, False
        elif ethertype == _ETH_IPV6:
            if n < _V6_L4 + 20:
                out.append(frame)
                return
            (vflags, gso_type, link, ethertype, first_word, payload_len, next_header, hop_limit, src6, dst6,
             ports, seq, ack, word) = _V6.unpack_from(frame)
            if next_header != _TCP:  # extension headers (or not TCP): not for GRO
                out.append(frame)
                return
            key = (link, src6, dst6, ports, first_word & _V6_FLOW_LABEL)
            end = _V6_L4 + payload_len
            if gso_type or end > n or not (vflags & _CSUM_TRUSTED or _v6_csum_ok(frame, end)):
                self._alone(frame, key if gso_type else None, out)
                return
            total_len = payload_len + 40
            ip_id = 0
            network = ((first_word & _V6_TRAFFIC_CLASS) << 4) | hop_limit
            l4, ipv6 = _V6_L4, True
        else:
            out.append(frame)
            return
        header_end = l4 + ((word >> 26) & 0x3C)
        if header_end < l4 + 20 or header_end > end:
            self._alone(frame, None, out)  # a data offset the segment cannot hold: malformed, the core counts it
            return
        plen = end - header_end
        flags = (word >> 16) & 0xFF
        ip_flush = end != n  # padding after the IP datagram: go up as it is
        held = self._held.get(key)
        if held is not None:
            if not ip_flush and self._joins(held, frame, l4, header_end, plen, seq, ack, word, ip_id, network):
                held.chunks.append(frame[header_end:end])
                held.originals.append(frame)
                held.next_seq = (held.next_seq + plen) & 0xFFFFFFFF
                held.ip_len += plen
                held.extra_flags |= flags & (FIN | PSH)
                self._merged += 1
                if plen < held.gso_size or flags & _FLUSH_FLAGS:
                    out.append(self._release(key))
                return
            out.append(self._release(key))
        if plen == 0 or flags & _FLUSH_FLAGS or ip_flush:
            out.append(frame)
            return
        if len(self._held) >= self.max_flows:
            out.append(self._release(next(iter(self._held))))
        self._held[key] = _Held(key, frame, header_end, end, seq, total_len, word, ack,
                                bytes(frame[l4 + 20:header_end]), ip_id, network, ipv6)

    def flush(self, out: list[Delivered]) -> None:
        """End of the batch: every held flow goes up, oldest first; the batch's counts reach `counters`."""
        held = self._held
        while held:
            out.append(self._release(next(iter(held))))
        counters = self.counters
        if self._merged:
            counters.inc("gro_merged", self._merged)
            self._merged = 0
        if self._flushed:
            counters.inc("gro_flushed", self._flushed)
            self._flushed = 0

    def _joins(self, held: _Held, frame: memoryview, l4: int, header_end: int, plen: int, seq: int, ack: int,
               word: int, ip_id: int, network: int) -> bool:
        """tcp_gro_receive's flush tests, then the network layer's (gro_receive_network_flush)."""
        if (word ^ held.flag_word) & ~_KEPT_FLAGS or ack != held.ack or network != held.network:
            return False
        if plen == 0 or plen > held.gso_size or seq != held.next_seq or held.ip_len + plen >= self.max_size:
            return False
        if frame[l4 + 20:header_end] != held.options:
            return False
        if held.ipv6:
            return True
        count = len(held.originals)
        id_offset = (ip_id - held.ip_id) & 0xFFFF
        if count == 1 and id_offset == 0:
            held.fixed_id = True  # the second frame decides: a fixed ID from now on
        return id_offset == (0 if held.fixed_id else count)

    def _alone(self, frame: memoryview, key: tuple[object, ...] | None, out: list[Delivered]) -> None:
        """A frame that is not for GRO goes up as it is, after its own flow's held segments if any."""
        if key is not None and key in self._held:
            out.append(self._release(key))
        out.append(frame)

    def _release(self, key: tuple[object, ...]) -> Delivered:
        held = self._held.pop(key)
        self._flushed += 1
        if len(held.originals) == 1:
            return held.first
        return Aggregate(_complete(held), held.gso_size, held.originals)


def _complete(held: _Held) -> bytes:
    """The aggregate: the first segment's headers with the new length (and FIN/PSH of any), every payload."""
    header = bytearray(held.first[VNET:held.header_end])
    l3 = _L3 - VNET
    if held.ipv6:
        _U16.pack_into(header, l3 + 4, held.ip_len - 40)
    else:
        _U16.pack_into(header, l3 + 2, held.ip_len)
        _U16.pack_into(header, l3 + 10, 0)
        _U16.pack_into(header, l3 + 10, internet_checksum(memoryview(header)[l3:l3 + 20]))
    header[(_V6_L4 if held.ipv6 else _V4_L4) - VNET + _TCP_FLAGS_BYTE] |= held.extra_flags
    return b"".join((header, *held.chunks))


def _options_key(frame: memoryview, link: bytes, src: int, dst: int, ver_ihl: int) -> tuple[object, ...] | None:
    """The flow of an IPv4 TCP frame with options, if its ports are there to read."""
    ports_at = _L3 + (ver_ihl & 0x0F) * 4
    if ver_ihl >> 4 != 4 or ports_at + 4 > len(frame):
        return None
    return (link, src, dst, int.from_bytes(frame[ports_at:ports_at + 4], "big"))


def _v4_csum_ok(frame: memoryview, end: int) -> bool:
    """IPv4 header and TCP checksums, for a frame the device did not check."""
    return ones_sum(frame[_L3:_V4_L4]) == 0xFFFF and _tcp_csum_ok(frame, _L3 + 12, _V4_L4, end)


def _v6_csum_ok(frame: memoryview, end: int) -> bool:
    return _tcp_csum_ok(frame, _L3 + 8, _V6_L4, end)


def _tcp_csum_ok(frame: memoryview, addresses: int, l4: int, end: int) -> bool:
    """The TCP checksum over the segment and its pseudo-header (addresses from `addresses` to `l4`)."""
    pseudo = int.from_bytes(frame[addresses:l4], "big") + _TCP + end - l4
    return ones_sum(frame[l4:end], pseudo % 0xFFFF) == 0xFFFF
