"""A receive batch's flood SYNs decided in one loop (SynFastPath.take_batch) answer, count and hand on exactly
what the same frames one by one through `from_wire` do, and the runtime sends those answers whole.

Each case feeds the same frames to two endpoint cores alike in everything (secret, clock, table): one frame by
frame through from_wire and the runtime's tx_header, the other a batch at a time, and compares the messages for
the wire byte for byte, the frames for the host and the general path, and the counters.
"""
from __future__ import annotations

import ipaddress
import random

import pytest

from toe_engine.codec import build_tcp_frame
from toe_engine.endpoint import EndpointConfig, EndpointCore
from toe_engine.io.memory import MemoryDriver
from toe_engine.io.vnet import PLAIN_VNET_BYTES, VNET_F_DATA_VALID, VNET_F_NEEDS_CSUM, VNET_HDR_LEN
from toe_engine.resources import ExhaustionPolicy, ResourceConfig
from toe_engine.runtime.datapath import tx_header
from toe_engine.runtime.endpoint import EndpointRuntime, EndpointSettings
from toe_engine.segment import ACK, SYN, Segment, TcpOptions
from toe_engine.synpath import vnet_header
from toe_engine.testing import IP_A, IP_B, MAC_A, MAC_B

FLOOD = 40
NOW = 1000.0


def make_core(policy: str = "syncookie", *, offload: bool = True, embryonic_limit: int = 0) -> EndpointCore:
    """An echo server whose table has room for `embryonic_limit` half-open connections (none: a flood's table)."""
    resources = ResourceConfig(embryonic_limit=embryonic_limit, policy=ExhaustionPolicy.parse(policy))
    return EndpointCore(EndpointConfig(MAC_B, (IP_B,), services={7: "echo"}, secret=b"toelab-syn-batch",
                                       tx_offload=offload, resources=resources))


def syn(options: TcpOptions | None = None, *, src: bytes = IP_A, sport: int = 40000, flags: int = SYN) -> bytes:
    """A frame to the echo port, a SYN with an MSS option unless told otherwise."""
    seg = Segment(sport, 7, 0x5EED0000 + sport, 0, flags, 64240, b"", options or TcpOptions(mss=1460))
    return bytes(build_tcp_frame(MAC_A, MAC_B, src, IP_B, seg))


def flood(count: int = FLOOD, options: TcpOptions | None = None) -> list[bytes]:
    """Distinct spoofed SYNs to the echo port, each behind a virtio-net header that vouches for nothing."""
    return [PLAIN_VNET_BYTES + syn(options, src=bytes([198, 18, i // 250, 1 + i % 250]), sport=40000 + i)
            for i in range(count)]


def without_ip_id(message: bytes) -> bytes:
    """A message for the wire with its IPv4 ID and header checksum (which follows from the ID) blanked."""
    ip = VNET_HDR_LEN + 14
    return message[:ip + 4] + bytes(2) + message[ip + 6:ip + 10] + bytes(2) + message[ip + 12:]


def one_by_one(core: EndpointCore, frames: list[bytes]) -> tuple[list[bytes], list[bytes], dict[str, int]]:
    """Messages for the wire (virtio-net header first), frames not consumed, counters: the per-frame way (the
    device vouches for the checksums when its header says NEEDS_CSUM or DATA_VALID, as the runtime reads it)."""
    sent, declined = [], []
    for frame in frames:
        trusted = bool(frame[0] & (VNET_F_NEEDS_CSUM | VNET_F_DATA_VALID))
        if not core.from_wire(memoryview(frame)[VNET_HDR_LEN:], NOW, trusted):
            declined.append(frame)
        sent += [tx_header(tx) + bytes(tx.frame) for tx in core.poll_wire()]
    return sent, declined, core.counters.snapshot()


def batched(core: EndpointCore, frames: list[bytes]) -> tuple[list[bytes], list[bytes], list[bytes], dict[str, int]]:
    """take_batch's replies, frames for the host, the rest (then fed one by one), counters."""
    assert core.syn_path is not None
    host: list[memoryview] = []
    rest = core.syn_path.take_batch([memoryview(f) for f in frames], NOW, host)
    replies = core.syn_path.take_replies()
    assert core.syn_path.take_replies() == []  # handed out once
    assert core.tx == []  # nothing of the batch's went through the core's own queue
    rest_bytes = [bytes(f) for f in rest]
    sent, declined, counters = one_by_one(core, rest_bytes)
    return replies + sent, [bytes(f) for f in host] + declined, rest_bytes, counters


@pytest.mark.parametrize("offload", [True, False])
@pytest.mark.parametrize("options", ["flood", "linux"])
def test_a_batch_of_flood_syns_is_answered_as_one_by_one_byte_for_byte(offload: bool, options: str) -> None:
    opts = None if options == "flood" else TcpOptions(mss=1460, sack_permitted=True, timestamp=(77, 0), wscale=7)
    frames = flood(options=opts)
    by_frame = one_by_one(make_core(offload=offload), frames)
    replies, to_host, rest, counters = batched(make_core(offload=offload), frames)
    assert len(by_frame[0]) == FLOOD and rest == [] and to_host == []
    assert replies == by_frame[0]
    assert counters == by_frame[2]
    assert counters["syncookies_sent"] == counters["tx_frames"] == counters["rx_frames"] == FLOOD


def test_the_rest_of_the_batch_keeps_its_order_and_reaches_the_general_path() -> None:
    frames = flood(6)
    not_syn = [PLAIN_VNET_BYTES + syn(flags=ACK, sport=50000 + i) for i in range(3)]
    short = PLAIN_VNET_BYTES + syn(sport=50010)[:40]  # cut inside the TCP header: never a fast-path SYN
    mixed = [frames[0], not_syn[0], frames[1], short, not_syn[1], frames[2], frames[3], not_syn[2], *frames[4:]]
    by_frame = one_by_one(make_core(), mixed)
    replies, to_host, rest, counters = batched(make_core(), mixed)
    assert rest == [not_syn[0], short, not_syn[1], not_syn[2]]
    # the batch's cookies went first, so their IPv4 IDs came first; whatever the stray ACKs draw, both draw it
    assert sorted(map(without_ip_id, replies)) == sorted(map(without_ip_id, by_frame[0]))
    assert counters["syncookies_sent"] == 6 and counters["syncookies_failed"] == 3
    assert to_host == by_frame[1] and counters == by_frame[2]


def test_syns_the_table_has_room_for_are_left_to_the_general_path() -> None:
    frames = flood(3)
    core = make_core(embryonic_limit=10)
    assert core.syn_path is not None
    host: list[memoryview] = []
    assert [bytes(f) for f in core.syn_path.take_batch([memoryview(f) for f in frames], NOW, host)] == frames
    assert host == [] and core.syn_path.take_replies() == []


def test_fallback_hands_the_batchs_syns_to_the_host_and_counts_them() -> None:
    frames = flood(5)
    by_frame = one_by_one(make_core("fallback"), frames)
    replies, to_host, rest, counters = batched(make_core("fallback"), frames)
    assert replies == [] and rest == [] and to_host == frames == by_frame[1]
    assert counters == by_frame[2] and counters["rx_to_host"] == 5 and counters["conn_fallback"] == 5


def test_deny_counts_the_batchs_syns_and_sends_nothing() -> None:
    replies, to_host, rest, counters = batched(make_core("deny"), flood(5))
    assert (replies, to_host, rest) == ([], [], [])
    assert counters == one_by_one(make_core("deny"), flood(5))[2] and counters["conn_denied"] == 5


@pytest.mark.parametrize("partial", [True, False])
def test_the_syn_acks_virtio_net_header_is_the_runtimes(partial: bool) -> None:
    core = make_core(offload=partial)
    core.from_wire(syn(), NOW, False)
    (tx,) = core.poll_wire()
    assert vnet_header(partial, len(tx.frame) - 34) == tx_header(tx)


def test_the_runtime_sends_a_floods_answers_whole_and_hands_the_rest_on() -> None:
    frames = flood(70) + [PLAIN_VNET_BYTES + syn(flags=ACK, sport=50000)]
    wire, host = MemoryDriver("wire", keep_sent=True), MemoryDriver("tap", keep_sent=True)
    settings = EndpointSettings.parse({"wire": "wire", "addresses": [str(ipaddress.IPv4Address(IP_B))]})
    runtime = EndpointRuntime(make_core(), wire, host, settings)
    wire.put(frames)
    while wire.pending:
        runtime.pump_wire(NOW)
    expected, _, counters = one_by_one(make_core(), frames)
    assert wire.sent == expected and len(wire.sent) == 70  # 64 and 6 cookies in two batches
    assert host.sent == [] and runtime.core.counters["syncookies_sent"] == counters["syncookies_sent"] == 70


def test_frames_cut_or_garbled_anywhere_never_raise_and_go_to_the_general_path_whole() -> None:
    rng = random.Random(7)
    good = flood(1)[0]
    frames = [good[:n] for n in range(VNET_HDR_LEN, len(good))]  # cut at every length past the virtio-net header
    for _ in range(300):
        garbled = bytearray(good)
        for _ in range(rng.randrange(1, 6)):
            garbled[rng.randrange(len(garbled))] = rng.randrange(256)
        garbled[VNET_HDR_LEN + 47] = 0x02  # still a bare SYN by its flags byte, so the loop looks further
        frames.append(bytes(garbled))
    by_frame = one_by_one(make_core(), frames)
    replies, to_host, rest, counters = batched(make_core(), frames)
    assert sorted(map(without_ip_id, replies)) == sorted(map(without_ip_id, by_frame[0]))
    assert to_host == by_frame[1] and counters == by_frame[2]
    assert all(frame in frames for frame in rest) and len(rest) >= len(good) - VNET_HDR_LEN  # the cut ones, at least


class AnsweringHost(MemoryDriver):
    """A host behind a TAP: it answers each frame inside the write that hands it over (the kernel's receive
    runs there), into a transmit queue of `queue_len` frames; what finds the queue full is lost uncounted."""

    def __init__(self, queue_len: int = 1000) -> None:
        super().__init__("toe0")
        self.queue_len = queue_len
        self.lost = 0

    def send(self, header: object, frame: object) -> bool:
        self.counters.tx_frames += 1  # handed over, as any driver counts it
        if len(self.pending) >= self.queue_len:
            self.lost += 1
        else:
            self.pending.append(memoryview(PLAIN_VNET_BYTES + b"synack"))
        return True


def test_under_fallback_the_hosts_answers_leave_before_the_next_batch_overflows_its_queue() -> None:
    # a ring block brings hundreds of SYNs, each of which the host answers: two such reads between host pumps
    # overflowed the TAP's 1,000-frame queue, and a legitimate client's SYN-ACK was lost with the flood's
    core, wire, host = make_core("fallback"), MemoryDriver("eth0", keep_sent=True), AnsweringHost()
    runtime = EndpointRuntime(core, wire, host, EndpointSettings(addresses=["10.0.0.2"], gro=False), budget=600)
    runtime.clock = lambda: NOW
    for _ in range(3):  # three wake-ups' reads, with no host wake-up between them
        wire.put(flood(600))
        runtime.pump_wire(NOW)
    assert core.counters["rx_to_host"] == 1800
    assert host.lost == 0 and not host.pending
    assert sum(message.endswith(b"synack") for message in wire.sent) == 1800
