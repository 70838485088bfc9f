"""The SYN fast path decides exactly as the general path would, byte for byte, and keeps no state.

Each case feeds one frame to two endpoint cores alike in everything (secret, clock, table)
except that one has its SYN fast path switched off, and compares what they answer, send and
count. Where the fast path is meant to act, a profile hook also shows the general path's
parser was never entered; where it is meant to step aside, that it was.
"""
from __future__ import annotations

import struct
import sys
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import pytest

import toe_engine.endpoint as endpoint_module
from toe_engine.codec import build_tcp_frame, parse_frame
from toe_engine.endpoint import EndpointConfig, EndpointCore
from toe_engine.resources import ExhaustionPolicy, ResourceConfig
from toe_engine.segment import ACK, FIN, PSH, RST, SYN, URG, Segment, TcpOptions
from toe_engine.tcp.config import TcpConfig
from toe_engine.testing import IP_A, IP_B, MAC_A, MAC_B

NOW = 1000.0
PEER_ISN = 0xFFFFFFF0  # the SYN-ACK's ACK wraps
SPOOFED = bytes([198, 18, 0, 9])
PURE_PYTHON = endpoint_module.__file__.endswith(".py")

Result = tuple[bool, list[tuple[bytes, int, int, int]], dict[str, int]]


def make_core(policy: str = "syncookie", *, offload: bool = True, embryonic_limit: int = 0, fast: bool = True,
              tcp: TcpConfig | None = None) -> EndpointCore:
    config = EndpointConfig(MAC_B, (IP_B,), services={7: "echo"}, secret=b"toelab-fast-path", tx_offload=offload,
                            tcp=tcp or TcpConfig(),
                            resources=ResourceConfig(embryonic_limit=embryonic_limit,
                                                     policy=ExhaustionPolicy.parse(policy)))
    core = EndpointCore(config)
    if not fast:
        core.syn_path = None
    return core


def syn(options: TcpOptions | None = None, *, src: bytes = IP_A, sport: int = 40000, dport: int = 7,
        flags: int = SYN, seq: int = PEER_ISN, payload: bytes = b"") -> bytes:
    seg = Segment(sport, dport, seq, 0, flags, 64240, payload, options or TcpOptions(mss=1460))
    return bytes(build_tcp_frame(MAC_A, MAC_B, src, IP_B, seg))


def feed(core: EndpointCore, frame: bytes, now: float = NOW, csum_ok: bool = False) -> Result:
    taken = core.from_wire(frame, now, csum_ok)
    sent = [(bytes(tx.frame), tx.gso_size, tx.csum_start, tx.csum_offset) for tx in core.poll_wire()]
    return taken, sent, core.counters.snapshot()


@contextmanager
def calls_seen() -> Iterator[set[str]]:
    """Names of the Python functions called inside the block (a profile hook: the pure-Python build only)."""
    names: set[str] = set()

    def hook(frame: FrameType, event: str, arg: object) -> None:
        if event == "call":
            names.add(frame.f_code.co_name)

    sys.setprofile(hook)
    try:
        yield names
    finally:
        sys.setprofile(None)


def both(frame: bytes, *, csum_ok: bool = False, **settings: object) -> tuple[Result, Result, set[str]]:
    """The same frame through a core with the fast path and one without; and what the first one called."""
    fast, general = make_core(**settings), make_core(fast=False, **settings)  # type: ignore[arg-type]
    with calls_seen() as names:
        by_fast = feed(fast, frame, csum_ok=csum_ok)
    return by_fast, feed(general, frame, csum_ok=csum_ok), names


OPTION_SHAPES = {
    "none": TcpOptions(),
    "mss": TcpOptions(mss=1460),
    "mss-zero": TcpOptions(mss=0),
    "linux": TcpOptions(mss=1460, sack_permitted=True, timestamp=(123456, 0), wscale=7),
    "mss-sack": TcpOptions(mss=1400, sack_permitted=True),
    "mss-ts": TcpOptions(mss=536, timestamp=(0xFFFFFFFF, 5)),
    "ts-only": TcpOptions(timestamp=(42, 0)),
    "wscale-14": TcpOptions(mss=9000, wscale=14),
    "wscale-15": TcpOptions(mss=1460, wscale=15, sack_permitted=True),
}


@pytest.mark.parametrize("offload", [True, False], ids=["csum-offload", "full-csum"])
@pytest.mark.parametrize("shape", OPTION_SHAPES, ids=list(OPTION_SHAPES))
def test_the_cookie_syn_ack_is_the_general_paths_byte_for_byte(shape: str, offload: bool) -> None:
    by_fast, by_general, names = both(syn(OPTION_SHAPES[shape]), offload=offload)
    assert by_fast == by_general
    taken, sent, counters = by_fast
    assert taken is True and len(sent) == 1 and counters["syncookies_sent"] == 1
    reply = parse_frame(sent[0][0], verify_csum=not offload)
    assert reply.drop_reason is None and reply.tcp is not None and reply.tcp.flags == SYN | ACK
    if PURE_PYTHON:
        assert "parse_frame" not in names and "on_syn" in names


@pytest.mark.parametrize("listener", [TcpConfig(timestamps=False), TcpConfig(sack=False, wscale=None, rcv_buf=65535, snd_buf=65535),
                                      TcpConfig(mss=1200, rcv_buf=32768)], ids=["no-ts", "no-sack-no-ws", "small"])
def test_the_listeners_own_settings_shape_the_syn_ack_as_they_do_the_general_paths(listener: TcpConfig) -> None:
    by_fast, by_general, _ = both(syn(OPTION_SHAPES["linux"]), tcp=listener)
    assert by_fast == by_general and len(by_fast[1]) == 1


def test_a_checksum_the_device_vouched_for_is_not_checked_again() -> None:
    frame = bytearray(syn())
    frame[50] ^= 0xFF  # the TCP checksum: wrong, but csum_ok says the device checked it
    by_fast, by_general, names = both(bytes(frame), csum_ok=True)
    assert by_fast == by_general and by_fast[0] is True and len(by_fast[1]) == 1
    if PURE_PYTHON:
        assert "parse_frame" not in names


def _ip_options(frame: bytes) -> bytes:
    """The same SYN with a 4-byte IPv4 option (NOP x3, EOL), header checksum redone."""
    ip = bytearray(frame[14:34]) + b"\x01\x01\x01\x00"
    ip[0] = 0x46
    struct.pack_into("!H", ip, 2, len(frame) - 14 + 4)
    struct.pack_into("!H", ip, 10, 0)
    total = sum(struct.unpack("!12H", ip))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    struct.pack_into("!H", ip, 10, ~total & 0xFFFF)
    return frame[:14] + bytes(ip) + frame[34:]


def _flip(frame: bytes, offset: int) -> bytes:
    out = bytearray(frame)
    out[offset] ^= 0x01
    return bytes(out)


def _bad_option_length(frame: bytes) -> bytes:
    out = bytearray(frame)
    out[55] = 1  # the MSS option's length: below 2, which the codec refuses
    return bytes(out)


def _vlan(frame: bytes) -> bytes:
    return frame[:12] + b"\x81\x00\x00\x05" + frame[12:]


def _fragment(frame: bytes) -> bytes:
    out = bytearray(frame)
    out[20] |= 0x20  # MF
    return bytes(out)


def _ipv6_syn() -> bytes:
    seg = Segment(40000, 7, PEER_ISN, 0, SYN, 64240, b"", TcpOptions(mss=1440))
    return bytes(build_tcp_frame(MAC_A, MAC_B, bytes(15) + b"\x01", bytes(15) + b"\x02", seg))


ASIDE = {
    "bad-tcp-checksum": lambda: _flip(syn(), 50),
    "bad-ip-checksum": lambda: _flip(syn(), 24),
    "bad-option": lambda: _bad_option_length(syn()),
    "syn-fin": lambda: syn(flags=SYN | FIN),
    "syn-ack": lambda: syn(flags=SYN | ACK),
    "syn-rst": lambda: syn(flags=SYN | RST),
    "multicast-source": lambda: syn(src=bytes([224, 0, 0, 5])),
    "loopback-source": lambda: syn(src=bytes([127, 0, 0, 1])),
    "port-not-served": lambda: syn(dport=22),
    "ip-options": lambda: _ip_options(syn()),
    "fragment": lambda: _fragment(syn()),
    "vlan": lambda: _vlan(syn()),
    "ipv6": _ipv6_syn,
    "truncated": lambda: syn()[:56],
    "not-for-us": lambda: syn()[:30] + bytes([192, 0, 2, 77]) + syn()[34:],
}


@pytest.mark.parametrize("case", ASIDE, ids=list(ASIDE))
def test_what_the_fast_path_does_not_know_takes_the_general_path_unchanged(case: str) -> None:
    by_fast, by_general, names = both(ASIDE[case]())
    assert by_fast == by_general
    if PURE_PYTHON and case not in ("syn-ack", "syn-rst", "syn-fin", "truncated"):
        # it stepped aside (the first three never reach it: their flags say no) to the general path: the
        # endpoint's plain-frame SYN (_new_syn) for a plain SYN to a served port, parse_frame for the rest
        assert names & {"parse_frame", "_new_syn"}


@pytest.mark.parametrize("flags", [SYN | PSH, SYN | URG, SYN | 0x40 | 0x80], ids=["psh", "urg", "ece-cwr"])
def test_other_flags_beside_syn_change_nothing(flags: int) -> None:
    by_fast, by_general, _ = both(syn(flags=flags))
    assert by_fast == by_general and len(by_fast[1]) == 1


def test_a_syn_with_data_is_answered_as_the_general_path_answers_it() -> None:
    by_fast, by_general, _ = both(syn(payload=b"early data"))
    assert by_fast == by_general and by_fast[2]["syncookies_sent"] == 1


def test_a_syn_the_table_has_room_for_gets_a_tcb_and_the_next_one_a_cookie() -> None:
    fast, general = make_core(embryonic_limit=1), make_core(embryonic_limit=1, fast=False)
    for sport in (40000, 40001):
        assert feed(fast, syn(sport=sport)) == feed(general, syn(sport=sport))
    assert len(fast.stack) == 1 and fast.counters["conn_offloaded"] == 1 and fast.counters["syncookies_sent"] == 1


def test_a_retransmitted_syn_of_a_known_connection_reaches_its_tcb() -> None:
    fast, general = make_core(embryonic_limit=1), make_core(embryonic_limit=1, fast=False)
    feed(fast, syn()), feed(general, syn())
    again = feed(fast, syn(), NOW + 2), feed(general, syn(), NOW + 2)
    assert again[0] == again[1] and fast.counters["syncookies_sent"] == 0


def test_deny_counts_the_drop_and_sends_nothing() -> None:
    by_fast, by_general, names = both(syn(), policy="deny:drop")
    assert by_fast == by_general
    assert by_fast[0] is True and by_fast[1] == [] and by_fast[2]["conn_denied"] == 1
    if PURE_PYTHON:
        assert "parse_frame" not in names


def test_deny_with_reset_is_left_to_the_general_path() -> None:
    by_fast, by_general, names = both(syn(), policy="deny:rst")
    assert by_fast == by_general and len(by_fast[1]) == 1 and by_fast[2]["conn_denied"] == 1
    if PURE_PYTHON:
        assert "_new_syn" in names  # the general path's, for a plain SYN


def test_fallback_hands_the_syn_to_the_host_and_remembers_the_flow() -> None:
    fast, general = make_core("fallback"), make_core("fallback", fast=False)
    with calls_seen() as names:
        first = feed(fast, syn())
    assert first == feed(general, syn())
    assert first[0] is False and first[1] == [] and first[2]["conn_fallback"] == 1
    assert list(fast.resources.passed) == list(general.resources.passed) and len(fast.resources.passed) == 1
    assert feed(fast, syn(), NOW + 1) == feed(general, syn(), NOW + 1)  # a passed flow's SYN: still the host's
    assert fast.counters["conn_fallback"] == 1
    if PURE_PYTHON:
        assert "parse_frame" not in names


def test_a_known_neighbour_gets_the_syn_ack_at_its_own_mac() -> None:
    other_mac = bytes.fromhex("02000000cafe")
    fast, general = make_core(), make_core(fast=False)
    for core in (fast, general):
        core.neighbors.learn(IP_A, other_mac, NOW)
    by_fast = feed(fast, syn())
    assert by_fast == feed(general, syn()) and by_fast[1][0][0][:6] == other_mac


def test_ip_ids_run_on_across_both_paths() -> None:
    fast, general = make_core(embryonic_limit=1), make_core(embryonic_limit=1, fast=False)
    for sport in (40000, 40001, 40002, 40003):  # a TCB first, then cookies
        assert feed(fast, syn(sport=sport)) == feed(general, syn(sport=sport))
    assert fast.ip_id == general.ip_id == 4


def _third_ack(synack: bytes, *, tsecr: int | None = None) -> bytes:
    reply = parse_frame(synack, verify_csum=False).tcp
    assert reply is not None
    options = TcpOptions(timestamp=(777, reply.options.timestamp[0])) if reply.options.timestamp else TcpOptions()
    seg = Segment(40000, 7, (PEER_ISN + 1) & 0xFFFFFFFF, (reply.seq + 1) & 0xFFFFFFFF, ACK, 502, b"", options)
    return bytes(build_tcp_frame(MAC_A, MAC_B, IP_A, IP_B, seg))


@pytest.mark.parametrize("shape", ["mss", "linux"])
def test_a_fast_path_cookie_opens_a_connection_that_echoes(shape: str) -> None:
    core = make_core()
    _, sent, _ = feed(core, syn(OPTION_SHAPES[shape]))
    assert feed(core, _third_ack(sent[0][0]), NOW + 0.01)[0] is True
    assert core.counters["syncookies_ok"] == 1 and len(core.stack) == 1
    key = core.stack.connections()[0]
    conn = core.stack.connection(key)
    assert conn is not None and conn.state.name == "ESTABLISHED"
    expected_wscale = OPTION_SHAPES[shape].wscale
    assert conn.snd_wscale == (expected_wscale if expected_wscale is not None else 0)
    data = Segment(40000, 7, conn.rcv_nxt, conn.snd_nxt, ACK | PSH, 502, b"toelab-legit",
                   TcpOptions(timestamp=(778, conn.ts_recent)) if conn.ts_ok else TcpOptions())
    _, echoed, _ = feed(core, bytes(build_tcp_frame(MAC_A, MAC_B, IP_A, IP_B, data)), NOW + 0.02)
    payloads = [bytes(parse_frame(frame, verify_csum=False).tcp.payload) for frame, *_ in echoed]  # type: ignore[union-attr]
    assert b"toelab-legit" in payloads


def test_a_flood_leaves_no_state_behind() -> None:
    """Thousands of spoofed SYNs answered with cookies: no TCB, no table entry, no buffer memory, and
    (beyond one SYN-ACK template) nothing retained."""
    core = make_core()
    frames = [syn(src=bytes([198, 18, i >> 8, i & 0xFF]), sport=1024 + i, seq=i * 7919) for i in range(3000)]
    feed(core, frames[0])
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for frame in frames[1:]:
            core.from_wire(frame, NOW, False)
            core.poll_wire()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename") if "toe_engine" in str(stat.traceback))
    assert core.counters["syncookies_sent"] == 3000 and core.counters["tx_frames"] == 3000
    assert len(core.stack) == 0 and core.resources.table.occupancy == 0 and len(core.buffer_memory) == 0
    assert len(core.syn_path.templates) == 1  # type: ignore[union-attr]
    assert grown < 4096, f"{grown} bytes retained by the engine over 2999 flood SYNs"


def test_a_syn_the_table_has_room_for_costs_the_fast_path_one_question() -> None:
    core = make_core(embryonic_limit=8)
    with calls_seen() as names:
        taken, sent, _ = feed(core, syn())
    assert taken is True and len(sent) == 1 and len(core.stack) == 1
    if PURE_PYTHON:
        assert "on_syn" in names and "_new_syn" in names and "parse_frame" not in names
        assert not names & {"_options", "_checksums_ok", "decide_syn", "_answer"}, "only the room was asked"


def test_queues_sharing_one_table_are_asked_about_that_table() -> None:
    """A queue process swaps in the node's shared table after the core is built (runtime.wire_setup)."""
    from toe_engine.runtime.shared_table import SharedSlots, SharedTable

    core = make_core(embryonic_limit=8)
    slots = SharedSlots(capacity=1024, embryonic_limit=0)
    core.resources.table = SharedTable.replacing(core.resources.table, slots)
    taken, sent, counters = feed(core, syn())
    assert taken is True and len(sent) == 1 and counters["syncookies_sent"] == 1 and len(core.stack) == 0
    slots.write(1024, 1, 0, 0, 0)  # another queue's view: one half-open slot free
    feed(core, syn(sport=40001))
    assert len(core.stack) == 1 and slots.read()[3] == 1


def test_bench_syn_path_times_both_paths_and_the_fast_one_costs_less() -> None:
    """`toelab bench syn_path`, briefly: every case measured, each answer sent, the fast path cheaper."""
    from toelab.benches import syn_path

    rows = syn_path.syn_path_rows(syn_path.measure(300), syns=300)
    assert len(rows) == len(syn_path.CASES) + 1 and all(r["syns"] == 300 for r in rows)
    for r in rows:
        assert 0 < r["engine"] < r["reference"], r["measurement"]


def test_receive_gro_hands_a_syn_on_unchecked_and_the_core_still_counts_a_bad_checksum() -> None:
    """A SYN is never merged, so GRO leaves its checksum to the core, which checks it once (a flood's
    SYNs are checked once, not twice); a corrupted one is still counted as rx_csum_errors, not answered."""
    from toe_engine.io.memory import MemoryDriver
    from toe_engine.io.vnet import VNET_HDR_LEN
    from toe_engine.runtime.endpoint import EndpointRuntime, EndpointSettings

    core = make_core()
    wire, host = MemoryDriver("wire"), MemoryDriver("tap")
    settings = EndpointSettings.parse({"wire": "wire", "addresses": ["192.0.2.2"], "gro": True})
    runtime = EndpointRuntime(core, wire, host, settings)
    wire.put([bytes(VNET_HDR_LEN) + syn(sport=40000), bytes(VNET_HDR_LEN) + _flip(syn(sport=40001), 50)])
    with calls_seen() as names:
        runtime.pump_wire(NOW)
    assert wire.counters.tx_frames == 1 and core.counters["syncookies_sent"] == 1
    assert core.counters["rx_csum_errors"] == 1
    if PURE_PYTHON:
        assert "_v4_csum_ok" not in names
