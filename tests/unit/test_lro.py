"""LRO: greedy merging that loses segment boundaries."""
from __future__ import annotations

import socket

from toe_engine.codec import build_tcp_frame, parse_frame
from toe_engine.counters import Counters
from toe_engine.offload import Gro, Lro, segment_frame
from toe_engine.segment import ACK, PSH, SYN, Segment, TcpOptions

MAC_A, MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
SRC, DST = socket.inet_pton(socket.AF_INET, "10.0.0.1"), socket.inet_pton(socket.AF_INET, "10.0.0.2")


def data(offset: int, length: int) -> bytes:
    return bytes((offset + i) % 251 for i in range(length))


def frames_for(
    lengths: list[int], *, psh_on: frozenset[int] = frozenset(), ts: bool = True, window_step: int = 1
) -> list[bytes]:
    frames, offset = [], 0
    for i, length in enumerate(lengths):
        flags = ACK | (PSH if i in psh_on else 0)
        options = TcpOptions(timestamp=(100 + i, 7)) if ts else TcpOptions()
        seg = Segment(5000, 80, 1000 + offset, 1, flags, 500 + i * window_step, data(offset, length), options)
        frames.append(bytes(build_tcp_frame(MAC_A, MAC_B, SRC, DST, seg, ip_id=i)))
        offset += length
    return frames


def test_boundaries_are_lost() -> None:
    counters = Counters()
    lro = Lro(counters=counters)
    originals = frames_for([1448, 100, 1448])
    out = [o for f in originals for o in lro.receive(f)] + lro.flush_all()
    assert len(out) == 1
    merged = out[0]
    assert merged.segments == 3 and merged.gso_size == 0
    parsed = parse_frame(merged.frame)
    assert parsed.drop_reason is None
    assert bytes(parsed.tcp.payload) == data(0, 2996)  # type: ignore[union-attr]
    assert len(merged.frame) > 1514  # bigger than the MTU allows
    assert parsed.tcp.window == 502 and parsed.tcp.options.timestamp == (102, 7)  # type: ignore[union-attr]
    assert counters["lro_merged"] == 2
    resegmented = [bytes(f) for f in segment_frame(merged.frame, 1448)]
    assert resegmented != originals
    assert [len(parse_frame(f).tcp.payload) for f in resegmented] == [1448, 1448, 100]  # type: ignore[union-attr]


def test_gro_refuses_what_lro_merges() -> None:
    originals = frames_for([1448, 100, 1448], ts=False, window_step=0)
    gro = Gro()
    out = [o for f in originals for o in gro.receive(f)] + gro.flush_all()
    assert [o.segments for o in out] == [2, 1]


def test_psh_does_not_stop_lro() -> None:
    lro = Lro()
    originals = frames_for([1000, 1000, 1000, 1000], psh_on=frozenset({1}))
    out = [o for f in originals for o in lro.receive(f)] + lro.flush_all()
    assert [o.segments for o in out] == [4]
    assert parse_frame(out[0].frame).tcp.flags & PSH  # type: ignore[union-attr]


def test_gap_and_syn_end_the_session() -> None:
    lro = Lro()
    first, _skipped, third = frames_for([500, 500, 500], ts=False)
    assert lro.receive(first) == []
    gap = lro.receive(third)
    assert [o.frame for o in gap] == [first]
    syn = bytes(build_tcp_frame(MAC_A, MAC_B, SRC, DST, Segment(5000, 80, 0, 0, SYN, 100)))
    out = lro.receive(syn)
    assert [o.frame for o in out] == [third, syn]
    assert lro.flush_all() == []


def test_size_limit() -> None:
    lro = Lro()
    originals = frames_for([8000] * 10, ts=False)
    out = [o for f in originals for o in lro.receive(f)] + lro.flush_all()
    assert [o.segments for o in out] == [8, 2]
    assert all(parse_frame(o.frame).ip_len <= 65535 for o in out)
