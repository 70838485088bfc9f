"""Segment, TcpOptions and the TCP events: hand-written value classes that behave as the dataclasses
they replace (fields in order, equality by value within one class, hash only for events, repr),
and whose construction the compiled build compiles."""
from __future__ import annotations

import inspect

import pytest

from toe_engine import native
from toe_engine.segment import ACK, SYN, Flags, Segment, TcpOptions
from toe_engine.tcp.events import Accepted, Closed, Connected, DataReceived, Error, PeerClosed, Reset, Writable

KEY = (b"\x0a\x00\x00\x01", 80, b"\x0a\x00\x00\x02", 40000)


def test_segment_fields_keep_their_order_and_defaults() -> None:
    seg = Segment(1, 2, 3, 4, ACK, 6)
    assert (seg.src_port, seg.dst_port, seg.seq, seg.ack, seg.flags, seg.window) == (1, 2, 3, 4, ACK, 6)
    assert (seg.payload, seg.urg_ptr, seg.gso_size) == (b"", 0, 0)
    assert seg.options == TcpOptions() and seg.options is not Segment(1, 2, 3, 4, ACK, 6).options  # fresh each
    full = Segment(1, 2, 3, 4, SYN, 6, b"ab", TcpOptions(mss=1460), 7, 1448)
    assert (full.payload, full.options.mss, full.urg_ptr, full.gso_size, full.seg_len) == (b"ab", 1460, 7, 1448, 3)


def test_segments_and_options_compare_by_value_and_are_not_hashable() -> None:
    a = Segment(1, 2, 3, 4, ACK, 6, b"x", TcpOptions(timestamp=(5, 6)))
    assert a == Segment(1, 2, 3, 4, ACK, 6, memoryview(b"x"), TcpOptions(timestamp=(5, 6)))
    assert a != Segment(1, 2, 3, 4, ACK, 6, b"y", TcpOptions(timestamp=(5, 6)))
    assert a != Segment(1, 2, 3, 4, ACK, 6, b"x", TcpOptions(timestamp=(5, 7)))
    assert TcpOptions(mss=1) != TcpOptions(mss=2) and TcpOptions(wscale=0) != TcpOptions()
    assert a != (1, 2, 3, 4, ACK, 6)
    for value in (a, a.options):
        with pytest.raises(TypeError):
            hash(value)


def test_reprs_name_every_field_as_a_dataclass_would() -> None:
    assert repr(TcpOptions(mss=1460)) == ("TcpOptions(mss=1460, wscale=None, sack_permitted=False, sack_blocks=(), "
                                          "timestamp=None, unknown=0)")
    assert repr(Segment(1, 2, 3, 4, 16, 6)).startswith(
        "Segment(src_port=1, dst_port=2, seq=3, ack=4, flags=16, window=6, payload=b'', options=TcpOptions(")
    assert repr(DataReceived(KEY, 5)) == f"DataReceived(conn={KEY!r}, nbytes=5)"
    assert repr(Error(KEY, "timed out", fatal=True)) == f"Error(conn={KEY!r}, reason='timed out', fatal=True)"


def test_events_compare_and_hash_by_class_and_fields() -> None:
    kinds = (Connected, Writable, PeerClosed, Reset, Closed)
    for kind in kinds:
        assert kind(KEY) == kind(KEY) and hash(kind(KEY)) == hash(kind(KEY)) and kind(KEY).conn == KEY
    assert len({kind(KEY) for kind in kinds}) == len(kinds)  # same fields, different events
    assert DataReceived(KEY, 1) != DataReceived(KEY, 2)
    assert Error(KEY, "x").fatal is False and Error(KEY, "x") != Error(KEY, "x", fatal=True)
    listener = (b"\x0a\x00\x00\x01", 80)
    assert Accepted(listener, KEY) == Accepted(listener, KEY) and (Accepted(listener, KEY).listener,) == (listener,)
    assert Closed(KEY) in [Reset(KEY), Closed(KEY)] and Closed(KEY) not in [Reset(KEY)]


@pytest.mark.skipif(native.build() != "compiled", reason="the pure build runs every __init__ as Python")
def test_the_compiled_build_compiles_their_construction() -> None:
    # A dataclass's generated __init__ is a Python function even in the compiled build: per frame, that
    # is what these classes exist to avoid.
    for cls in (Segment, TcpOptions, DataReceived, Writable, Error):
        assert not inspect.isfunction(cls.__init__), f"{cls.__name__}.__init__ runs as Python"


def test_flag_constants_are_the_flags_bits() -> None:
    from toe_engine import segment

    assert [(name, getattr(segment, name)) for name in Flags.__members__] == [(f.name, f.value) for f in Flags]
    assert all(type(getattr(segment, name)) is int for name in Flags.__members__)  # plain ints, not Flags members
