"""The SYN fast path: a flood's SYNs answered or counted with no connection state, as a NIC's parser would.

A SYN flood is bare SYNs (no ACK, RST or FIN) in untagged Ethernet/IPv4 frames to a
listening port. Once the table has no room, the exhaustion policy decides each one, and the
general path (parse into a ParsedFrame and a Segment, TcpStack, a cookie SYN-ACK Segment, the
frame builder) spends most of its time on objects the answer does not need. Here one
unpack reads the headers, the policy decides (ResourceManager.decide_syn), and:

- syncookie: the SYN-ACK is packed in one call from a template per listener and option shape
  (window scale, SACK, timestamps as the SYN asked and the listener offers); its IPv4
  checksum and its TCP checksum (or, with transmit checksum offload, the pseudo-header sum
  the device completes) are the template's constant sum plus the words that change;
- deny (drop): counted as conn_denied and consumed;
- fallback: remembered as a passed flow and handed to the host.

Everything else returns None and takes the general path: a SYN the table has room for, a
flow already known or passed, IPv6, VLAN tags, IP options, options the codec refuses, a bad
checksum or source, deny with RST. So the fast path never decides differently, and the
SYN-ACK it sends is byte for byte the general path's (tests/unit/test_syn_fastpath.py).

`take_batch` runs the same decision over a whole receive batch (a ring block) in one compiled
loop, so a flood costs the runtime one call per batch, not a receive, a dispatch and a
transmit per SYN: the SYN-ACKs come out whole, virtio-net header first (`take_replies`), for
one copy each into the driver's send batch.
"""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Final

from toe_engine.io.vnet import PLAIN_VNET_BYTES, VNET_BYTE_ORDER, VNET_F_DATA_VALID, VNET_F_NEEDS_CSUM, VNET_HDR_LEN
from toe_engine.resources.policy import Admission
from toe_engine.resources.syncookie import PORTS, option_timestamp

if TYPE_CHECKING:
    from toe_engine.endpoint import EndpointCore, TxFrame
    from toe_engine.tcp.config import TcpConfig

#: Ethernet, IPv4 without options, the TCP fixed header: what a flood SYN is checked by.
_SYN: Final = struct.Struct("!6x6sHBxH2xHxB2x4s4sHHI4xBB6x")
SYN_HEADERS: Final = _SYN.size  # 54: a frame shorter than this is no fast-path SYN
#: The SYN-ACK's virtio-net header (its bytes), Ethernet, IPv4 and TCP fixed headers (the IPv4 version/IHL and
#: TOS, TTL and protocol as words): the whole message for the wire but the options.
_MESSAGE: Final = struct.Struct(f"!{VNET_HDR_LEN}s6s6sHHHHHHH4s4sHHIIBBHHH")
_VNET_PARTIAL: Final = struct.Struct(VNET_BYTE_ORDER + "BBHHHH")
FLAGS_OFFSET: Final = 47  # the TCP flags byte of such a frame
_VNET_FLAGS_OFFSET: Final = VNET_HDR_LEN + FLAGS_OFFSET  # ... of a driver's frame (virtio-net header first)
_CSUM_TRUSTED: Final = VNET_F_NEEDS_CSUM | VNET_F_DATA_VALID
#: TCP flags a connection request has among SYN, ACK, RST, FIN: SYN alone.
SYN_ONLY_MASK: Final = 0x17
SYN_ONLY: Final = 0x02
_ETH_IPV4: Final = 34  # where the TCP header starts
_TCP_CSUM_OFFSET: Final = 16
_MASK: Final = 0xFFFFFFFF
_SYN_ACK: Final = 0x12
_DF: Final = 0x4000
_TTL_PROTO: Final = (64 << 8) | 6  # the general path's defaults for a frame of no connection (TTL 64, TOS 0)


class SynAckTemplate:
    """One listener address and port's cookie SYN-ACK for one option shape: its packer and constant sums."""

    __slots__ = ("options", "ts_options", "head", "tail", "total_len", "data_offset", "window", "ip_sum", "tcp_sum",
                 "vnet")

    def __init__(self, local_ip: bytes, local_port: int, cfg: TcpConfig, wscale: bool, sack: bool,
                 timestamps: bool, partial: bool) -> None:
        # The options as codec.tcp.build_options lays them out: MSS, [SACK-permitted +] timestamps, NOP + WS.
        head = struct.pack("!BBH", 2, 4, cfg.mss)
        if timestamps:
            head += (b"\x04\x02" if sack else b"\x01\x01") + b"\x08\x0a"
        elif sack:
            head += b"\x01\x01\x04\x02"
        tail = bytes((1, 3, 3, cfg.wscale)) if wscale and cfg.wscale is not None else b""
        self.head, self.tail, self.options = head, tail, head + tail
        #: With timestamps the options are packed per SYN (TSval, TSecr between head and tail).
        self.ts_options = struct.Struct(f"!{len(head)}sII{len(tail)}s") if timestamps else None
        tcp_len = 20 + len(head) + (8 if timestamps else 0) + len(tail)
        self.total_len = 20 + tcp_len
        self.data_offset = (tcp_len // 4) << 4
        self.window = min(cfg.rcv_buf, 0xFFFF)
        # Sums mod 0xFFFF of the words that never change; 2**16 == 1 (mod 0xFFFF), so a 32-bit field
        # adds in as one integer, and so do option bytes of even length. The peer's address, port,
        # the sequence numbers and timestamps are added per SYN.
        local = int.from_bytes(local_ip, "big")
        self.ip_sum = 0x4500 + self.total_len + _DF + _TTL_PROTO + local
        pseudo = local + 6 + tcp_len
        # With checksum offload the field holds the pseudo-header sum (not complemented) for the device.
        self.tcp_sum = pseudo if partial else (pseudo + local_port + ((self.data_offset << 8) | _SYN_ACK)
                                               + self.window + int.from_bytes(head + tail, "big"))
        self.vnet = vnet_header(partial, tcp_len)


class SynFastPath:
    """Bare SYNs to a listener the table has no room for, decided without a TCB (see the module doc)."""

    def __init__(self, core: EndpointCore, tx_frame: type[TxFrame]) -> None:
        self.core = core
        self.tx_frame = tx_frame  # the endpoint's frame-for-the-wire type (passed in: no import back up)
        self.counters = core.counters
        # What each SYN counts, as plain tallies: Counters folds them in before every read (add_flush).
        self.rx_segments = self.rx_to_host = self.syncookies_sent = 0
        core.counters.add_flush(self._flush_counters)
        self.stack = core.stack
        self.resources = core.resources
        self.neighbors = core.neighbors
        #: (address, port, MSS, window shift or -1, receive buffer, SACK, timestamps, checksum offload) -> template
        self.templates: dict[tuple[bytes, int, int, int, int, bool, bool, bool], SynAckTemplate] = {}
        # The options of the SYN being handled (a reused record, not an object per SYN).
        self.mss = 0
        self.wscale = -1
        self.sack = False
        self.tsval = -1
        #: While `take_batch` runs, SYN-ACKs go here whole (virtio-net header first), not to the core's queue.
        self.batching = False
        self.replies: list[bytes] = []
        self.rx_frames = 0

    def on_syn(self, frame: bytes | bytearray | memoryview, now: float, csum_ok: bool) -> bool | None:
        """Decide a frame that may be a bare SYN: True consumed, False for the host, None: the general path."""
        if len(frame) < SYN_HEADERS or self.resources.table.has_room():
            return None  # a SYN the table has room for gets a TCB: the general path's, at once
        eth_src, ethertype, ver_ihl, total_len, frag, proto, src, dst, sport, dport, seq, offset, flags = \
            _SYN.unpack_from(frame)
        if ethertype != 0x0800 or ver_ihl != 0x45 or proto != 6 or frag & 0x3FFF or flags & SYN_ONLY_MASK != SYN_ONLY:
            return None
        core = self.core
        header_len = (offset >> 4) << 2
        if dst not in core.addresses or header_len < 20 or header_len > total_len - 20 or total_len > len(frame) - 14:
            return None
        if not csum_ok and not _checksums_ok(frame, total_len, src, dst):
            return None
        if core.invalid_source(src):
            return None
        if dport not in core.config.services and dport not in core.socket_ports:
            return None
        stack = self.stack
        listener = stack.listener(dst, dport)
        key = (dst, dport, src, sport)
        if listener is None or stack.has_connection(key) or not self._options(frame, _ETH_IPV4 + header_len):
            return None
        decision = self.resources.decide_syn(key, now)
        if decision is None:
            return None
        if decision is Admission.PASS:
            self.rx_to_host += 1
            return False
        self.rx_segments += 1
        if decision is Admission.COOKIE:
            self._answer(frame, eth_src, src, dst, sport, dport, seq, listener.config, now)
        return True

    def take_batch(self, frames: list[memoryview], now: float, host: list[memoryview]) -> list[memoryview]:
        """Decide the bare SYNs of one receive batch (driver frames, virtio-net header first) as `on_syn` does:
        their SYN-ACKs wait in `take_replies`, frames for the host go to `host`, and the rest is returned in
        order for the general path. A SYN is taken only for a flow with no state, so no flow is reordered."""
        rest: list[memoryview] = []
        self.batching = True
        try:
            for frame in frames:
                if len(frame) >= VNET_HDR_LEN + SYN_HEADERS and frame[_VNET_FLAGS_OFFSET] & SYN_ONLY_MASK == SYN_ONLY:
                    try:
                        decided = self.on_syn(frame[VNET_HDR_LEN:], now, bool(frame[0] & _CSUM_TRUSTED))
                    except Exception:  # never expected; the general path then counts the frame as an engine error
                        decided = None
                    if decided is not None:
                        self.rx_frames += 1
                        if not decided:
                            host.append(frame)
                        continue
                rest.append(frame)
        finally:
            self.batching = False
        return rest

    def take_replies(self) -> list[bytes]:
        """The SYN-ACKs `take_batch` made, each a whole message for the wire (virtio-net header first)."""
        replies = self.replies
        self.replies = []
        return replies

    def _flush_counters(self) -> None:
        """Add the tallies to the counters (each SYN-ACK is one frame and one segment sent)."""
        counters, cookies = self.counters, self.syncookies_sent
        for name, value in (("rx_frames", self.rx_frames), ("rx_segments", self.rx_segments),
                            ("rx_to_host", self.rx_to_host), ("syncookies_sent", cookies), ("tx_frames", cookies),
                            ("tx_segments", cookies)):
            if value:
                counters.inc(name, value)
        self.rx_frames = self.rx_segments = self.rx_to_host = self.syncookies_sent = 0

    def _options(self, frame: bytes | bytearray | memoryview, end: int) -> bool:
        """Read the SYN's options into the record as codec.tcp.parse_options would; False where it refuses them."""
        self.mss, self.wscale, self.sack, self.tsval = 0, -1, False, -1
        i = _ETH_IPV4 + 20
        if end == i + 4 and frame[i] == 2 and frame[i + 1] == 4:  # an MSS option alone: what a flood's SYN carries
            self.mss = (frame[i + 2] << 8) | frame[i + 3]
            return True
        while i < end:
            kind = frame[i]
            if kind == 0:
                break
            if kind == 1:
                i += 1
                continue
            if i + 1 >= end:
                return False
            length = frame[i + 1]
            if length < 2 or i + length > end:
                return False
            if kind == 8 and length == 10:
                self.tsval = int.from_bytes(frame[i + 2:i + 6], "big")
            elif kind == 2 and length == 4:
                self.mss = (frame[i + 2] << 8) | frame[i + 3]
            elif kind == 3 and length == 3:
                self.wscale = frame[i + 2]
            elif kind == 4 and length == 2:
                self.sack = True
            i += length
        return True

    def _answer(self, frame: bytes | bytearray | memoryview, eth_src: bytes, src: bytes, dst: bytes, sport: int,
                dport: int, seq: int, cfg: TcpConfig, now: float) -> None:
        """The cookie SYN-ACK, as TcpStack._cookie_syn_ack and EndpointCore._emit would make it."""
        core = self.core
        wscale = self.wscale >= 0 and cfg.wscale is not None
        sack = cfg.sack and self.sack
        timestamps = cfg.timestamps and self.tsval >= 0
        partial = core.config.tx_offload
        shape = (dst, dport, cfg.mss, cfg.wscale if wscale and cfg.wscale is not None else -1, cfg.rcv_buf,
                 sack, timestamps, partial)
        template = self.templates.get(shape)
        if template is None:
            template = self.templates[shape] = SynAckTemplate(dst, dport, cfg, wscale, sack, timestamps, partial)
        isn = self.resources.syncookies.flow_isn(dst + src + PORTS.pack(dport, sport), seq, self.mss or 536, now)
        ack = (seq + 1) & _MASK
        core.ip_id = ip_id = (core.ip_id + 1) & 0xFFFF
        peer = int.from_bytes(src, "big")
        # Sums here are never 0, so folding one is `% 0xFFFF`, with 0xFFFF for a multiple (checksum.fold).
        ip_csum = ~((template.ip_sum + ip_id + peer) % 0xFFFF or 0xFFFF) & 0xFFFF
        mac = self.neighbors.lookup(src) or eth_src
        self.syncookies_sent += 1  # and one frame, one segment sent: tx_frames and tx_segments
        ts_options = template.ts_options
        if ts_options is None:
            options, words = template.options, 0
        else:
            tsval = option_timestamp(self.stack.ts_clock(now), self.wscale if self.wscale >= 0 else None, self.sack,
                                     False)
            options, words = ts_options.pack(template.head, tsval, self.tsval, template.tail), tsval + self.tsval
        if partial:
            tcp_csum = (template.tcp_sum + peer) % 0xFFFF or 0xFFFF
        else:
            tcp_csum = ~((template.tcp_sum + peer + sport + isn + ack + words) % 0xFFFF or 0xFFFF) & 0xFFFF
        message = _MESSAGE.pack(template.vnet, mac, core.config.mac, 0x0800, 0x4500, template.total_len, ip_id, _DF,
                                _TTL_PROTO, ip_csum, dst, src, dport, sport, isn, ack, template.data_offset, _SYN_ACK,
                                template.window, tcp_csum, 0) + options
        if self.batching:
            self.replies.append(message)
            return
        out = message[VNET_HDR_LEN:]
        core.tx.append(self.tx_frame(out, 0, _ETH_IPV4, _TCP_CSUM_OFFSET) if partial else self.tx_frame(out))


def vnet_header(partial: bool, tcp_len: int) -> bytes:
    """The virtio-net header of a SYN-ACK, as the runtime's tx_header makes it for the core's frame: NEEDS_CSUM
    with the TCP checksum's place when the device completes it, else none of its fields set."""
    if not partial:
        return PLAIN_VNET_BYTES
    return _VNET_PARTIAL.pack(VNET_F_NEEDS_CSUM, 0, _ETH_IPV4 + tcp_len, 0, _ETH_IPV4, _TCP_CSUM_OFFSET)


def _checksums_ok(frame: bytes | bytearray | memoryview, total_len: int, src: bytes, dst: bytes) -> bool:
    """The IPv4 header and TCP checksums of a SYN frame, as the codec verifies them."""
    ip_sum = int.from_bytes(frame[14:34], "big") % 0xFFFF
    if ip_sum:  # a one's-complement sum of all ones is 0 mod 0xFFFF
        return False
    end = 14 + total_len
    tcp = frame[_ETH_IPV4:end]
    value = int.from_bytes(tcp, "big")
    if (end - _ETH_IPV4) & 1:
        value <<= 8
    return (value + int.from_bytes(src, "big") + int.from_bytes(dst, "big") + 6 + end - _ETH_IPV4) % 0xFFFF == 0
