"""Internet checksum against a straightforward RFC 1071 reference."""
from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from toe_engine.checksum import (
    IPPROTO_TCP,
    fold,
    incremental_update,
    internet_checksum,
    ones_sum,
    pseudo_header_sum,
    transport_checksum,
    transport_checksum_ok,
    udp_checksum,
)


def reference_sum(data: bytes, initial: int = 0) -> int:
    """RFC 1071 §4.1, word by word with end-around carry."""
    if len(data) % 2:
        data += b"\x00"
    total = initial
    for (word,) in struct.iter_unpack("!H", data):
        total += word
        total = (total & 0xFFFF) + (total >> 16)
    return total


@given(st.binary(max_size=3000))
def test_matches_reference(data: bytes) -> None:
    assert ones_sum(data) == reference_sum(data)
    assert internet_checksum(data) == ~reference_sum(data) & 0xFFFF


@given(st.binary(min_size=640, max_size=70000), st.integers(0, 0xFFFF))
def test_long_buffers_of_every_kind_match_the_reference(data: bytes, initial: int) -> None:
    """Long buffers take numpy's word sum: bytes, bytearray and a memoryview at an odd offset alike."""
    view = memoryview(b"\x01" + data)[1:]
    assert ones_sum(data, initial) == ones_sum(bytearray(data), initial) == ones_sum(view, initial)
    assert ones_sum(data, initial) == reference_sum(data, initial)


def test_long_buffers_keep_zero_and_negative_zero_apart() -> None:
    assert ones_sum(bytes(4001)) == 0 and ones_sum(b"\xff" * 4000) == 0xFFFF
    assert ones_sum(b"\x00\x01" * 32767 + b"\xfe") == (0xFE00 + 32767) % 0xFFFF  # an odd last byte is a high byte


def test_rfc1071_example() -> None:
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert ones_sum(data) == 0xDDF2
    assert internet_checksum(data) == 0x220D


def test_zero_and_negative_zero() -> None:
    assert ones_sum(b"") == 0 and ones_sum(b"\x00\x00") == 0
    assert ones_sum(b"\xff\xff") == 0xFFFF
    assert ones_sum(b"\x80\x00\x80\x00") == 0x0001
    assert internet_checksum(b"\xff\xff") == 0
    assert fold(0) == 0 and fold(0xFFFF) == 0xFFFF and fold(0x1FFFE) == 0xFFFF


def test_odd_length_pads_on_the_right() -> None:
    assert ones_sum(b"\x12") == 0x1200
    assert ones_sum(b"\x12\x34\x56") == 0x1234 + 0x5600


def test_64k_payload_and_verification() -> None:
    data = os.urandom(65536)
    src, dst = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
    segment = bytearray(b"\x00" * 16 + b"\x00\x00" + b"\x00" * 2) + data
    csum = transport_checksum(src, dst, IPPROTO_TCP, segment)
    struct.pack_into("!H", segment, 16, csum)
    assert transport_checksum_ok(src, dst, IPPROTO_TCP, segment)
    segment[100] ^= 1
    assert not transport_checksum_ok(src, dst, IPPROTO_TCP, segment)
    assert ones_sum(data) == reference_sum(data)


@given(st.binary(min_size=4, max_size=4), st.binary(min_size=4, max_size=4), st.integers(0, 255), st.integers(0, 0xFFFF))
def test_pseudo_header_v4(src: bytes, dst: bytes, proto: int, length: int) -> None:
    header = src + dst + struct.pack("!BBH", 0, proto, length)
    assert pseudo_header_sum(src, dst, proto, length) == reference_sum(header)


@given(st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16), st.integers(0, 0xFFFFFFFF))
def test_pseudo_header_v6(src: bytes, dst: bytes, length: int) -> None:
    header = src + dst + struct.pack("!I3xB", length, 58)
    assert pseudo_header_sum(src, dst, 58, length) == reference_sum(header)


def test_udp_zero_becomes_ffff() -> None:
    src = dst = bytes(4)
    segment = bytes.fromhex("ffff ffde 0008 0000".replace(" ", ""))
    assert transport_checksum(src, dst, 17, segment) == 0
    assert udp_checksum(src, dst, segment) == 0xFFFF


@given(st.binary(min_size=20, max_size=20).map(bytearray), st.integers(1, 9), st.integers(0, 0xFFFF))
def test_incremental_update_matches_recompute(header: bytearray, word_index: int, new_word: int) -> None:
    """An IPv4-like header (version/IHL byte 0x45, so never all zero) with one word rewritten."""
    header[0] = 0x45
    word_index = 4 if word_index == 5 else word_index  # never rewrite the checksum word itself
    struct.pack_into("!H", header, 10, 0)
    struct.pack_into("!H", header, 10, internet_checksum(header))
    old_word = struct.unpack_from("!H", header, word_index * 2)[0]
    updated = incremental_update(struct.unpack_from("!H", header, 10)[0], old_word, new_word)
    struct.pack_into("!H", header, word_index * 2, new_word)
    struct.pack_into("!H", header, 10, updated)
    assert ones_sum(header) == 0xFFFF


def test_without_numpy_long_buffers_are_summed_as_one_integer(monkeypatch: pytest.MonkeyPatch) -> None:
    import toe_engine.checksum as checksum

    monkeypatch.setattr(checksum, "_numpy", None)  # as when numpy is not installed
    data = os.urandom(9001)
    assert ones_sum(data) == reference_sum(data)
