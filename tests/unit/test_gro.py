"""GRO against the Linux kernel selftest (tools/testing/selftests/drivers/net/gro.c).

Each test sends the selftest's packet sequence (same addresses, ports, TTL 8, DF set, ID 0,
100-byte payloads, MSS 4036 for the large cases) and asserts the payload sizes the selftest
receiver expects, plus the merged payload bytes.
"""
from __future__ import annotations

import socket
import struct

import pytest

from toe_engine.checksum import internet_checksum, pseudo_header_sum
from toe_engine.codec import parse_frame
from toe_engine.counters import Counters
from toe_engine.offload import CoalescedFrame, Gro, segment_frame
from toe_engine.segment import ACK, CWR, PSH, RST, SYN, URG

SRC4, DST4 = socket.inet_pton(socket.AF_INET, "192.168.1.200"), socket.inet_pton(socket.AF_INET, "192.168.1.100")
SRC6, DST6 = socket.inet_pton(socket.AF_INET6, "fdaa::2"), socket.inet_pton(socket.AF_INET6, "fdaa::1")
SMAC, DMAC = bytes.fromhex("aa0000000002"), bytes.fromhex("aa0000000001")
SPORT, DPORT, START_SEQ, START_ACK = 1500, 8000, 100, 100
PAYLOAD_LEN = 100
MSS = 4096 - 20 - 40
MAX_PAYLOAD = 65535 - 20 - 40
NUM_LARGE_PKT = MAX_PAYLOAD // MSS
TS_ORDERS = (b"\x01\x01%s", b"\x01%s\x01", b"%s\x01\x01")


def stream(offset: int, length: int) -> bytes:
    """The payload bytes at stream offset `offset`, distinct per offset so merges are checkable."""
    return bytes((offset + i) % 251 for i in range(length))


def ts_option(ts: int, order: int = 0) -> bytes:
    return TS_ORDERS[order] % struct.pack("!BBII", 8, 10, ts, 0)


def craft(
    seq_off: int,
    payload_len: int,
    *,
    v6: bool = False,
    flags: int = ACK,
    ack_off: int = 0,
    ttl: int = 8,
    tos: int = 0,
    ip_id: int = 0,
    df: bool = True,
    mf: bool = False,
    ip_options: bytes = b"",
    ext: bytes = b"",
    ext_type: int = 0,
    tcp_options: bytes = b"",
    bad_csum: bool = False,
    csum_len: int | None = None,
) -> bytes:
    """A frame laid out byte by byte as the selftest's create_packet() does."""
    payload = stream(seq_off, payload_len)
    tcp_hlen = 20 + len(tcp_options)
    tcp = bytearray(struct.pack(
        "!HHIIBBHHH", SPORT, DPORT, START_SEQ + seq_off, START_ACK + ack_off,
        (tcp_hlen // 4) << 4, flags, 65535, 0, 0,
    )) + tcp_options + payload
    src, dst = (SRC6, DST6) if v6 else (SRC4, DST4)
    summed = tcp if csum_len is None else tcp + stream(seq_off + payload_len, csum_len - payload_len)
    csum = internet_checksum(summed, pseudo_header_sum(src, dst, 6, len(summed)))
    struct.pack_into("!H", tcp, 16, (csum - 1) & 0xFFFF if bad_csum else csum)
    if v6:
        next_header = ext_type if ext else 6
        ip = struct.pack("!IHBB16s16s", (6 << 28) | (tos << 20), len(ext) + len(tcp), next_header, ttl, src, dst)
        return struct.pack("!6s6sH", DMAC, SMAC, 0x86DD) + ip + ext + tcp
    ihl = 20 + len(ip_options)
    frag = (0x4000 if df else 0) | (0x2000 if mf else 0)
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x40 | ihl // 4, tos, ihl + len(tcp), ip_id, frag, ttl, 6, 0, src, dst))
    ip += ip_options
    struct.pack_into("!H", ip, 10, internet_checksum(ip))
    return struct.pack("!6s6sH", DMAC, SMAC, 0x0800) + ip + tcp


def payload_of(out: CoalescedFrame) -> bytes:
    parsed = parse_frame(out.frame, verify_csum=False)
    if parsed.tcp is None:
        start = parsed.l4_offset + 20
        return bytes(out.frame[start:parsed.frame_end])
    return bytes(parsed.tcp.payload)


def run(frames: list[bytes], gro: Gro | None = None) -> list[CoalescedFrame]:
    gro = gro if gro is not None else Gro()
    out: list[CoalescedFrame] = []
    for frame in frames:
        out += gro.receive(frame)
    out += gro.flush_all()
    for result in out:
        if result.segments > 1:
            assert parse_frame(result.frame).drop_reason is None  # aggregates carry valid checksums
    return out


def sizes(out: list[CoalescedFrame]) -> list[int]:
    return [len(payload_of(o)) for o in out]


both = pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])


@both
def test_data_same(v6: bool) -> None:
    out = run([craft(0, 100, v6=v6), craft(100, 100, v6=v6)])
    assert sizes(out) == [200]
    assert payload_of(out[0]) == stream(0, 200)
    assert (out[0].gso_size, out[0].segments) == (100, 2)


@both
def test_data_lrg_sml(v6: bool) -> None:
    out = run([craft(0, 100, v6=v6), craft(100, 50, v6=v6)])
    assert sizes(out) == [150]
    assert payload_of(out[0]) == stream(0, 150)


@both
def test_data_sml_lrg(v6: bool) -> None:
    out = run([craft(0, 50, v6=v6), craft(50, 100, v6=v6)])
    assert sizes(out) == [50, 100]
    assert payload_of(out[1]) == stream(50, 100)


@both
def test_ack(v6: bool) -> None:
    pure = craft(0, 0, v6=v6)
    out = run([pure, pure, craft(0, 0, v6=v6, ack_off=1)])
    assert sizes(out) == [0, 0, 0]
    assert [o.frame for o in out] == [pure, pure, craft(0, 0, v6=v6, ack_off=1)]


def flags_sequence(v6: bool, flag: int) -> list[bytes]:
    """send_flags(): packets 0..4, the flag on packet 2 (and on packet 1 for CWR)."""
    with_data = flag in (PSH, CWR)
    flag_len = PAYLOAD_LEN if with_data else 0
    frames = []
    for i in range(5):
        if i == 2 or (i == 1 and flag == CWR):
            frames.append(craft(i * flag_len, flag_len, v6=v6, flags=ACK | flag))
        else:
            frames.append(craft(i * PAYLOAD_LEN, PAYLOAD_LEN, v6=v6))
    return frames


@both
def test_flags_psh(v6: bool) -> None:
    out = run(flags_sequence(v6, PSH))
    assert sizes(out) == [300, 200]
    assert payload_of(out[0]) == stream(0, 300)
    assert parse_frame(out[0].frame).tcp.flags & PSH  # type: ignore[union-attr]


@both
@pytest.mark.parametrize("flag", [SYN, RST, URG], ids=["flags_syn", "flags_rst", "flags_urg"])
def test_flags_syn_rst_urg(v6: bool, flag: int) -> None:
    out = run(flags_sequence(v6, flag))
    assert sizes(out) == [200, 0, 200]
    assert payload_of(out[2]) == stream(300, 200)


@both
def test_flags_cwr(v6: bool) -> None:
    out = run(flags_sequence(v6, CWR))
    assert sizes(out) == [100, 200, 200]


def test_flags_cwr_before_linux_6_18() -> None:
    out = run(flags_sequence(False, CWR), Gro(cwr_always_flushes=True))
    assert sizes(out) == [100, 100, 300]


@both
def test_tcp_csum(v6: bool) -> None:
    bad = craft(100, 100, v6=v6, bad_csum=True)
    out = run([craft(0, 100, v6=v6), bad])
    assert sizes(out) == [100, 100]
    assert out[0].frame == bad  # goes up at once; the held flow is left alone, as in the kernel


@both
def test_tcp_seq(v6: bool) -> None:
    out = run([craft(0, 100, v6=v6), craft(101, 100, v6=v6)])
    assert sizes(out) == [100, 100]


@both
def test_tcp_ts(v6: bool) -> None:
    frames = [
        craft(0, 100, v6=v6, tcp_options=ts_option(0, 0)),
        craft(100, 100, v6=v6, tcp_options=ts_option(0, 0)),
        craft(200, 100, v6=v6, tcp_options=ts_option(100, 0)),
        craft(300, 100, v6=v6, tcp_options=ts_option(100, 1)),
        craft(400, 100, v6=v6, tcp_options=ts_option(100, 2)),
    ]
    out = run(frames)
    assert sizes(out) == [200, 100, 100, 100]
    assert payload_of(out[0]) == stream(0, 200)


@both
def test_tcp_opt(v6: bool) -> None:
    frames = [
        craft(0, 100, v6=v6, tcp_options=ts_option(0)),
        craft(100, 100, v6=v6, tcp_options=ts_option(0)),
        craft(200, 100, v6=v6, tcp_options=b"\x01\x03\x03\x00"),
    ]
    assert sizes(run(frames)) == [200, 100]


@both
def test_ip_ecn(v6: bool) -> None:
    out = run([craft(0, 100, v6=v6), craft(100, 100, v6=v6, tos=0x02)])
    assert sizes(out) == [100, 100]


@both
def test_ip_tos(v6: bool) -> None:
    out = run([craft(0, 100, v6=v6), craft(100, 100, v6=v6, tos=0xF0 if v6 else 0x01)])
    assert sizes(out) == [100, 100]


def test_ip_ttl() -> None:
    assert sizes(run([craft(0, 100), craft(100, 100, ttl=7)])) == [100, 100]


def test_ip_hop_limit_differs() -> None:
    """Since Linux 6.10 ipv6_gro_flush() compares hop limits too (the selftest predates it)."""
    assert sizes(run([craft(0, 100, v6=True), craft(100, 100, v6=True, ttl=7)])) == [100, 100]


def test_ip_opt() -> None:
    ip_timestamp = bytes((68, 8, 5, 0)) + bytes(4)  # IPOPT_TS, len 8, ptr 5, TSONLY
    frames = [craft(0, 100), craft(100, 100, ip_options=ip_timestamp), craft(200, 100)]
    out = run(frames)
    assert sizes(out) == [100, 100, 100]
    assert out[0].frame == frames[1]  # the optioned packet bypasses GRO


def test_ip_frag4() -> None:
    fragment = craft(100, 100, mf=True, csum_len=200)
    out = run([craft(0, 100), fragment])
    assert sizes(out) == [100, 100]
    assert out[0].frame == fragment


ID_CASES = {
    "ip_id_df1_inc": ([(True, 8), (True, 9)], [200]),
    "ip_id_df1_fixed": ([(True, 8), (True, 8)], [200]),
    "ip_id_df0_inc": ([(False, 8), (False, 9)], [200]),
    "ip_id_df0_fixed": ([(False, 8), (False, 8)], [200]),
    "ip_id_df1_inc_fixed": ([(True, 8), (True, 9), (True, 9)], [200, 100]),
    "ip_id_df1_fixed_inc": ([(True, 8), (True, 8), (True, 9)], [200, 100]),
    "ip_id_df0_inc_fixed": ([(False, 8), (False, 9), (False, 9)], [200, 100]),
    "ip_id_df0_fixed_inc": ([(False, 8), (False, 8), (False, 9)], [200, 100]),
}


@pytest.mark.parametrize("case", list(ID_CASES))
def test_ip_id(case: str) -> None:
    ids, expected = ID_CASES[case]
    frames = [craft(i * 100, 100, df=df, ip_id=ip_id) for i, (df, ip_id) in enumerate(ids)]
    out = run(frames)
    assert sizes(out) == expected
    assert payload_of(out[0]) == stream(0, 200)
    assert out[0].fixed_id == (ids[0][1] == ids[1][1])


def test_ip_id_df0_fixed_before_linux_6_18() -> None:
    """Older kernels accepted a fixed ID only with DF set."""
    frames = [craft(0, 100, df=False, ip_id=8), craft(100, 100, df=False, ip_id=8)]
    assert sizes(run(frames, Gro(fixed_id_needs_df=True))) == [100, 100]


def test_ip_df_differs() -> None:
    assert sizes(run([craft(0, 100, df=True), craft(100, 100, df=False, ip_id=1)])) == [100, 100]


def test_ip_frag6() -> None:
    gro = Gro()
    out = []
    for i in range(2):
        out += gro.receive(craft(i * 100, 100, v6=True), now=0.0)
    out += gro.flush(now=1.0)  # the selftest sleeps a second here
    fragment_header = bytes((6, 0, 0, 0, 0, 0, 0, 0))
    fragment = craft(200, 100, v6=True, ext=fragment_header, ext_type=44)
    out += gro.receive(fragment, now=1.0)
    out += gro.receive(craft(300, 100, v6=True), now=1.0)
    out += gro.flush_all()
    assert sizes(out) == [200, 100, 100]
    assert out[1].frame == fragment


def dstopts(fill: int) -> bytes:
    return bytes((6, 0)) + bytes([fill]) * 6


def test_ip_v6ext_same() -> None:
    frames = [craft(i * 100, 100, v6=True, ext=dstopts(0), ext_type=60) for i in range(2)]
    out = run(frames)
    assert sizes(out) == [200]
    assert payload_of(out[0]) == stream(0, 200)
    assert parse_frame(out[0].frame).ext_headers == (60,)


def test_ip_v6ext_diff() -> None:
    frames = [
        craft(0, 100, v6=True, ext=dstopts(0x00), ext_type=60),
        craft(100, 100, v6=True, ext=dstopts(0x11), ext_type=60),
    ]
    assert sizes(run(frames)) == [100, 100]


def large_frames(v6: bool, remainder: int) -> list[bytes]:
    frames = [craft(i * MSS, MSS, v6=v6) for i in range(NUM_LARGE_PKT)]
    frames.append(craft(NUM_LARGE_PKT * MSS, remainder, v6=v6))
    frames.append(craft((NUM_LARGE_PKT + 1) * MSS, remainder, v6=v6))
    return frames


@both
def test_large_max(v6: bool) -> None:
    offset = 0 if v6 else 20
    remainder = (MAX_PAYLOAD + offset) % MSS
    out = run(large_frames(v6, remainder))
    assert sizes(out) == [MAX_PAYLOAD + offset, remainder]
    assert payload_of(out[0]) == stream(0, MAX_PAYLOAD + offset)
    assert (out[0].gso_size, out[0].segments) == (MSS, NUM_LARGE_PKT + 1)


@both
def test_large_rem(v6: bool) -> None:
    offset = 0 if v6 else 20
    remainder = (MAX_PAYLOAD + offset) % MSS
    out = run(large_frames(v6, remainder + 1))
    assert sizes(out) == [MAX_PAYLOAD + offset - remainder, remainder + 1, remainder + 1]


def test_counters_and_flows() -> None:
    counters = Counters()
    gro = Gro(counters=counters)
    other_port = bytearray(craft(0, 100))
    struct.pack_into("!H", other_port, 34, 1501)
    struct.pack_into("!H", other_port, 50, 0)
    struct.pack_into("!H", other_port, 50, internet_checksum(
        memoryview(other_port)[34:], pseudo_header_sum(SRC4, DST4, 6, len(other_port) - 34)))
    assert gro.receive(craft(0, 100)) == []
    assert gro.receive(bytes(other_port)) == []
    assert gro.held_flows == 2
    assert gro.receive(craft(100, 100)) == []
    last = gro.receive(craft(200, 100, flags=ACK | PSH))
    assert [o.segments for o in last] == [3]
    assert counters["gro_merged"] == 2 and counters["gro_flushed"] == 1
    assert [o.frame for o in gro.flush_all()] == [bytes(other_port)]


def test_flush_respects_timeout() -> None:
    gro = Gro(flush_timeout=0.001)
    gro.receive(craft(0, 100), now=10.0)
    assert gro.flush(now=10.0005) == []
    assert len(gro.flush(now=10.002)) == 1


def originals(v6: bool, lengths: list[int], *, fixed: bool = False) -> list[bytes]:
    frames, offset = [], 0
    for i, length in enumerate(lengths):
        flags = ACK | (PSH if i == len(lengths) - 1 else 0)
        frames.append(craft(offset, length, v6=v6, flags=flags, ip_id=7 if fixed else 7 + i,
                            tcp_options=ts_option(42)))
        offset += length
    return frames


@both
@pytest.mark.parametrize("fixed", [False, True], ids=["inc_id", "fixed_id"])
@pytest.mark.parametrize("lengths", [[1448] * 10, [1448, 1448, 1448, 500]], ids=["even", "short_tail"])
def test_gro_then_tso_gives_back_the_originals(v6: bool, fixed: bool, lengths: list[int]) -> None:
    frames = originals(v6, lengths, fixed=fixed)
    out = run(frames)
    assert len(out) == 1 and out[0].segments == len(frames) and out[0].gso_size == 1448
    again = segment_frame(out[0].frame, out[0].gso_size, fixed_id=out[0].fixed_id)
    assert [bytes(f) for f in again] == frames
