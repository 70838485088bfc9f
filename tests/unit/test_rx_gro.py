"""The endpoint's receive GRO (toe_engine.offload.rx_gro): each flush rule, byte-exact aggregates,
agreement with the middlebox's GRO (offload.gro) on random sequences, and malformed frames."""
from __future__ import annotations

import random
import struct

import pytest

from toe_engine.checksum import internet_checksum
from toe_engine.codec import build_tcp_frame, parse_frame
from toe_engine.counters import Counters
from toe_engine.io.vnet import VNET_F_DATA_VALID, VNET_GSO_TCPV4
from toe_engine.offload import Gro
from toe_engine.offload.rx_gro import Aggregate, Delivered, RxGro
from toe_engine.segment import ACK, CWR, ECE, FIN, PSH, RST, SYN, URG, Segment, TcpOptions

MAC_A, MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
IP_A, IP_B = bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2])
IP6_A, IP6_B = bytes.fromhex("20010db8" + "0" * 23 + "1"), bytes.fromhex("20010db8" + "0" * 23 + "2")
MSS = 1448
SEQ, ACK_NO = 1000, 5000


def stream(offset: int, length: int) -> bytes:
    """Payload bytes distinct per stream offset, so a merge that drops or repeats a byte shows."""
    return bytes((offset + i) * 7 % 251 for i in range(length))


def vnet(flags: int = VNET_F_DATA_VALID, gso_type: int = 0) -> bytes:
    return struct.pack("<BBHHHH", flags, gso_type, 0, 0, 0, 0)


def seg(offset: int, length: int = MSS, *, flags: int = ACK, ack: int = ACK_NO, window: int = 4096,
        tsval: int | None = 7, sport: int = 40000) -> Segment:
    return Segment(sport, 9, (SEQ + offset) & 0xFFFFFFFF, ack, flags, window, stream(offset, length),
                   TcpOptions(timestamp=(tsval, 3) if tsval is not None else None))


def frame(segment: Segment, *, v6: bool = False, header: bytes | None = None, ip_id: int | None = None,
          ttl: int = 64, tos: int = 0, df: bool = True, pad: int = 0) -> memoryview:
    """A driver frame: virtio-net header, then the wire frame with correct checksums."""
    src, dst = (IP6_A, IP6_B) if v6 else (IP_A, IP_B)
    ident = (segment.seq // MSS) & 0xFFFF if ip_id is None else ip_id
    wire = build_tcp_frame(MAC_A, MAC_B, src, dst, segment, ttl=ttl, tos=tos, ip_id=ident, df=df)
    return memoryview((vnet() if header is None else header) + bytes(wire) + bytes(pad))


def run(frames: list[memoryview], gro: RxGro | None = None) -> list[Delivered]:
    gro = gro if gro is not None else RxGro()
    out: list[Delivered] = []
    for f in frames:
        gro.receive(f, out)
    gro.flush(out)
    assert sum(o.segments if isinstance(o, Aggregate) else 1 for o in out) == len(frames)  # nothing lost or made up
    return out


def payload(item: Delivered) -> bytes:
    wire = item.frame if isinstance(item, Aggregate) else bytes(item[10:])
    parsed = parse_frame(wire, verify_csum=False)
    assert parsed.tcp is not None
    return bytes(parsed.tcp.payload)


def shape(out: list[Delivered]) -> list[int]:
    """Segments per delivered frame: 1 for a frame that went up alone."""
    return [o.segments if isinstance(o, Aggregate) else 1 for o in out]


both = pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])


# --- merging, byte for byte ------------------------------------------------------------------------

@both
def test_in_order_segments_become_one_aggregate_byte_exact(v6: bool) -> None:
    out = run([frame(seg(k * MSS), v6=v6) for k in range(10)])
    assert shape(out) == [10]
    agg = out[0]
    assert isinstance(agg, Aggregate) and agg.gso_size == MSS
    parsed = parse_frame(agg.frame, verify_csum=False)
    assert parsed.tcp is not None and parsed.drop_reason is None
    assert parsed.tcp.seq == SEQ and parsed.tcp.ack == ACK_NO and parsed.tcp.options.timestamp == (7, 3)
    assert bytes(parsed.tcp.payload) == stream(0, 10 * MSS)
    assert parsed.frame_end == len(agg.frame)  # the IP length covers every payload
    if not v6:
        assert internet_checksum(agg.frame[14:34]) == 0  # the IPv4 header checksum is right for the new length


def test_originals_are_the_wire_frames_in_order() -> None:
    frames = [frame(seg(k * MSS)) for k in range(3)]
    agg = run(frames)[0]
    assert isinstance(agg, Aggregate) and [bytes(f) for f in agg.originals] == [bytes(f) for f in frames]


def test_a_short_last_segment_is_merged_and_flushes() -> None:
    out = run([frame(seg(0)), frame(seg(MSS, 100)), frame(seg(MSS + 100))])
    assert shape(out) == [2, 1]
    assert payload(out[0]) == stream(0, MSS + 100)


def test_a_larger_segment_than_the_first_is_not_merged() -> None:
    out = run([frame(seg(0, 1000)), frame(seg(1000, 1448))])
    assert shape(out) == [1, 1]


@pytest.mark.parametrize("flag", [PSH, FIN], ids=["psh", "fin"])
def test_psh_or_fin_is_merged_and_ends_the_aggregate(flag: int) -> None:
    out = run([frame(seg(0)), frame(seg(MSS, flags=ACK | flag)), frame(seg(2 * MSS))])
    assert shape(out) == [2, 1]
    assert isinstance(out[0], Aggregate)
    parsed = parse_frame(out[0].frame, verify_csum=False)
    assert parsed.tcp is not None and parsed.tcp.flags == ACK | flag  # the aggregate carries the flag


@pytest.mark.parametrize("flag", [URG, RST, SYN], ids=["urg", "rst", "syn"])
def test_urg_rst_syn_are_never_merged(flag: int) -> None:
    out = run([frame(seg(0)), frame(seg(MSS, flags=ACK | flag)), frame(seg(2 * MSS))])
    assert shape(out) == [1, 1, 1]


def test_a_first_segment_with_psh_goes_up_alone() -> None:
    out = run([frame(seg(0, flags=ACK | PSH)), frame(seg(MSS))])
    assert shape(out) == [1, 1]


@pytest.mark.parametrize("change", ["ack", "window", "tsval", "no-timestamp", "ece", "cwr"])
def test_a_header_change_flushes(change: str) -> None:
    second = {"ack": seg(MSS, ack=ACK_NO + 1), "window": seg(MSS, window=4097), "tsval": seg(MSS, tsval=8),
              "no-timestamp": seg(MSS, tsval=None), "ece": seg(MSS, flags=ACK | ECE),
              "cwr": seg(MSS, flags=ACK | CWR)}[change]
    out = run([frame(seg(0)), frame(second), frame(seg(2 * MSS, **({"ack": ACK_NO + 1} if change == "ack" else {})))])
    assert shape(out)[0] == 1  # the held segment went up before the changed one
    assert payload(out[0]) == stream(0, MSS)


def test_a_new_tsval_starts_a_new_aggregate_carrying_it() -> None:
    out = run([frame(seg(0)), frame(seg(MSS)), frame(seg(2 * MSS, tsval=8)), frame(seg(3 * MSS, tsval=8))])
    assert shape(out) == [2, 2]
    parsed = parse_frame(out[1].frame, verify_csum=False)  # type: ignore[union-attr]
    assert parsed.tcp is not None and parsed.tcp.options.timestamp == (8, 3)


@pytest.mark.parametrize("change", [{"ttl": 63}, {"tos": 4}, {"df": False}])
def test_an_ip_header_change_flushes(change: dict[str, object]) -> None:
    out = run([frame(seg(0)), frame(seg(MSS), **change)])  # type: ignore[arg-type]
    assert shape(out) == [1, 1]


def test_ipv4_id_must_increment_or_stay_fixed() -> None:
    assert shape(run([frame(seg(k * MSS), ip_id=10 + k) for k in range(3)])) == [3]
    assert shape(run([frame(seg(k * MSS), ip_id=10) for k in range(3)])) == [3]
    assert shape(run([frame(seg(0), ip_id=10), frame(seg(MSS), ip_id=12)])) == [1, 1]
    assert shape(run([frame(seg(0), ip_id=10), frame(seg(MSS), ip_id=11), frame(seg(2 * MSS), ip_id=11)])) == [2, 1]


def test_out_of_order_and_duplicate_segments_are_never_merged() -> None:
    out = run([frame(seg(0)), frame(seg(2 * MSS)), frame(seg(MSS))])  # a gap, then the hole's segment
    assert shape(out) == [1, 1, 1]
    assert [payload(o) for o in out] == [stream(0, MSS), stream(2 * MSS, MSS), stream(MSS, MSS)]  # arrival order
    out = run([frame(seg(0)), frame(seg(MSS)), frame(seg(MSS))])  # a duplicate
    assert shape(out) == [2, 1]


def test_a_pure_ack_flushes_its_flow_and_goes_up_alone() -> None:
    out = run([frame(seg(0)), frame(seg(MSS, 0)), frame(seg(MSS))])
    assert shape(out) == [1, 1, 1]
    assert [len(payload(o)) for o in out] == [MSS, 0, MSS]


def test_the_aggregate_stays_under_64_kib() -> None:
    out = run([frame(seg(k * MSS)) for k in range(50)])
    assert shape(out) == [45, 5]  # 20 + 32 + 45 x 1448 = 65,212 < 65,536; one more would not be
    assert all(len(o.frame) - 14 < 65536 for o in out if isinstance(o, Aggregate))


def test_flows_are_held_apart_and_released_oldest_first() -> None:
    a = [frame(seg(k * MSS, sport=1000)) for k in range(3)]
    b = [frame(seg(k * MSS, sport=2000)) for k in range(2)]
    out = run([a[0], b[0], a[1], b[1], a[2]])
    assert shape(out) == [3, 2]
    assert payload(out[0]) == stream(0, 3 * MSS)


def test_more_flows_than_held_flows_releases_the_oldest() -> None:
    gro = RxGro(max_flows=2)
    out = run([frame(seg(0, sport=p)) for p in (1, 2, 3)], gro)
    assert shape(out) == [1, 1, 1] and len(out) == 3


def test_counters_arrive_once_per_batch() -> None:
    counters = Counters()
    gro = RxGro(counters)
    out: list[Delivered] = []
    for k in range(4):
        gro.receive(frame(seg(k * MSS)), out)
    assert counters["gro_merged"] == 0 and gro.held_flows == 1
    gro.flush(out)
    assert (counters["gro_merged"], counters["gro_flushed"], gro.held_flows) == (3, 1, 0)


# --- what GRO leaves alone ---------------------------------------------------------------------------

def test_a_gso_super_frame_goes_up_alone_after_its_held_flow() -> None:
    big = frame(seg(MSS, 4 * MSS), header=vnet(gso_type=VNET_GSO_TCPV4))
    out = run([frame(seg(0)), big, frame(seg(5 * MSS))])
    assert shape(out) == [1, 1, 1] and out[1] is big


def test_ipv4_options_go_up_alone_after_the_held_flow() -> None:
    plain = bytearray(frame(seg(MSS)))
    with_options = plain[:24] + bytes([0x46]) + plain[25:44] + b"\x01\x01\x01\x00" + plain[44:]  # NOPs, EOL
    struct.pack_into("!H", with_options, 26, struct.unpack_from("!H", plain, 26)[0] + 4)
    out = run([frame(seg(0)), memoryview(bytes(with_options)), frame(seg(2 * MSS))])
    assert shape(out) == [1, 1, 1]
    assert payload(out[0]) == stream(0, MSS)  # the held segment first: the flow keeps its order


def test_a_bad_checksum_is_checked_where_the_device_did_not_and_never_merged() -> None:
    unchecked = vnet(flags=0)
    bad = bytearray(frame(seg(MSS), header=unchecked))
    bad[-1] ^= 0xFF
    out = run([frame(seg(0), header=unchecked), memoryview(bytes(bad)), frame(seg(2 * MSS), header=unchecked)])
    assert shape(out) == [1, 1, 1]
    assert shape(run([frame(seg(k * MSS), header=unchecked) for k in range(3)])) == [3]  # good ones merge


def test_padding_after_the_datagram_goes_up_as_it_is() -> None:
    out = run([frame(seg(0)), frame(seg(MSS), pad=6)])
    assert shape(out) == [1, 1]


@pytest.mark.parametrize("wire", [b"", b"\x00" * 9, vnet() + bytes(50), vnet() + bytes.fromhex("ffffffffffff020000000001")
                                  + b"\x08\x06" + bytes(28)], ids=["empty", "short-header", "zeros", "arp"])
def test_non_tcp_and_short_frames_go_up_alone(wire: bytes) -> None:
    item = memoryview(wire)
    assert run([item]) == [item]


def test_malformed_frames_never_raise_and_are_all_delivered() -> None:
    rng = random.Random(12)
    good = [bytes(frame(seg(k * MSS, rng.choice((0, 10, MSS))))) for k in range(8)]
    for _ in range(3000):
        base = bytearray(rng.choice(good))
        for _ in range(rng.randint(1, 4)):
            base[rng.randrange(len(base))] = rng.randrange(256)
        cut = bytes(base[:rng.randrange(len(base) + 1)]) if rng.random() < 0.3 else bytes(base)
        run([memoryview(rng.choice(good)), memoryview(cut), memoryview(rng.choice(good))])


# --- the same decisions as the middlebox's GRO -------------------------------------------------------

def _random_sequence(rng: random.Random) -> list[bytes]:
    frames: list[bytes] = []
    offset = 0
    ack, tsval, window = ACK_NO, 7, 4096
    for _ in range(rng.randint(1, 40)):
        roll = rng.random()
        length = rng.choice((MSS, MSS, MSS, 600, 0))
        flags = ACK | (rng.choice((PSH, FIN, URG, CWR, ECE)) if rng.random() < 0.1 else 0)
        if roll < 0.05:
            ack += 1
        elif roll < 0.1:
            tsval += 1
        elif roll < 0.13:
            window += 1
        start = offset + (rng.choice((-MSS, MSS)) if rng.random() < 0.08 else 0)  # a duplicate or a gap
        sport = 40000 if rng.random() < 0.85 else 40001
        frames.append(bytes(frame(seg(start, length, flags=flags, ack=ack, window=window, tsval=tsval, sport=sport),
                                  ttl=63 if rng.random() < 0.03 else 64)))
        offset = start + length
    return frames


def test_the_same_merges_as_the_middlebox_gro_on_random_sequences() -> None:
    rng = random.Random(5)
    merged = alone = 0
    for _ in range(400):
        frames = _random_sequence(rng)
        ours = run([memoryview(f) for f in frames])
        theirs = Gro()
        reference = [c for f in frames for c in theirs.receive(f[10:])] + theirs.flush_all()
        assert shape(ours) == [c.segments for c in reference]
        for mine, other in zip(ours, reference):
            assert payload(mine) == bytes(parse_frame(other.frame, verify_csum=False).tcp.payload)  # type: ignore[union-attr]
        merged += sum(n - 1 for n in shape(ours))
        alone += shape(ours).count(1)
    assert merged > 1500 and alone > 1500, (merged, alone)  # both outcomes were exercised, many times
