"""Pure parts of the engine's queues: RSS hash and table, the fanout program's shape, ring geometry,
the shared connection table and the per-queue counter sums. No root, no network."""
from __future__ import annotations

import collections

import pytest

from toe_engine.io import rss
from toe_engine.io.ring import FRAME_SLOT, RingSettings, min_block_bytes, min_block_frames
from toe_engine.resources.table import EmbryonicLimit, TableFull
from toe_engine.runtime.endpoint import EndpointSettings, EndpointSettingsError
from toe_engine.runtime.queue_counters import queue_counters, sum_counters
from toe_engine.runtime.shared_table import SharedSlots, SharedTable
from toe_engine.io.driver import DriverCounters
from toe_engine.segment import FourTuple

KEY = rss.default_key()


def test_flow_hash_is_the_same_both_ways_and_keyed() -> None:
    forward = rss.flow_hash("10.0.7.1", "10.0.7.2", 40000, 7, KEY)
    assert forward == rss.flow_hash("10.0.7.2", "10.0.7.1", 7, 40000, KEY)
    assert forward != rss.flow_hash("10.0.7.1", "10.0.7.2", 40000, 7, bytes(8))
    v6 = rss.flow_hash("fd00:7::1", "fd00:7::2", 40000, 7, KEY)
    assert v6 == rss.flow_hash("fd00:7::2", "fd00:7::1", 7, 40000, KEY)


def test_equal_table_spreads_many_flows_over_every_queue() -> None:
    table = rss.equal_table(4)
    assert len(table) == rss.DEFAULT_TABLE_SIZE and collections.Counter(table) == {q: 32 for q in range(4)}
    landed = collections.Counter(rss.flow_queue("10.0.7.1", "10.0.7.2", port, 80, table, KEY)
                                 for port in range(32768, 32768 + 4000))
    assert set(landed) == {0, 1, 2, 3}
    assert min(landed.values()) > 800  # 1000 each if perfectly even


def test_weighted_table_follows_the_weights() -> None:
    table = rss.weighted_table([1, 3])
    assert collections.Counter(table) == {0: 32, 1: 96}
    assert rss.weighted_table([0, 1]) == [1] * rss.DEFAULT_TABLE_SIZE
    with pytest.raises(ValueError, match="positive sum"):
        rss.weighted_table([0, 0])


@pytest.mark.parametrize("table, queues, message", [
    ([], 2, "1 to 256 entries"),
    ([0, 2], 2, "entry 2 is not a queue of 0..1"),
    ([0, True], 2, "entry True"),
])
def test_bad_tables_are_named(table: list[int], queues: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rss.check_table(table, queues)


def test_keys_are_eight_bytes_of_hex_with_or_without_colons() -> None:
    assert rss.check_key("6d:5a:6d:5a:6d:5a:6d:5a") == KEY
    for bad in ("6d5a", "zz" * 8, "00" * 9):
        with pytest.raises(ValueError, match="8 bytes of hex"):
            rss.check_key(bad)


def test_program_jumps_stay_inside_and_every_path_returns() -> None:
    table = rss.equal_table(3, 16)
    program = rss.program(table, KEY)
    assert len(program) < 4096  # BPF_MAXINSNS
    for at, (code, jt, jf, k) in enumerate(program):
        if code & 0x07 == 0x05:  # a jump
            targets = [at + 1 + k] if code == 0x05 else [at + 1 + jt, at + 1 + jf]
            assert all(t < len(program) for t in targets), (at, code, jt, jf, k)
    assert program[-1][0] == 0x06  # ret
    returned = {k for code, _, _, k in program if code == 0x06}
    assert returned == {0, 1, 2}


def test_ring_geometry_in_ethtool_terms() -> None:
    ring = RingSettings(frames=4096, block_frames=64, block_usecs=2500)
    ring.check()
    assert ring.block_bytes == 64 * FRAME_SLOT and ring.blocks == 64 and ring.timeout_ms == 3
    small = RingSettings(frames=256, block_frames=4, block_usecs=1)
    assert small.block_bytes == min_block_bytes() >= 65536 + 14  # a super-frame always fits a block
    assert small.timeout_ms == 1 and min_block_frames() == min_block_bytes() // FRAME_SLOT
    assert small.blocks >= 2


@pytest.mark.parametrize("ring, message", [
    (RingSettings(frames=16, block_frames=64), "must hold at least one block"),
    (RingSettings(block_frames=0), "rx_frames must be at least 1"),
    (RingSettings(block_usecs=0), "rx_usecs must be 1 to"),
])
def test_bad_ring_settings_are_named(ring: RingSettings, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ring.check()


@pytest.mark.parametrize("engine, message", [
    ({"rss_table": [0, 1]}, "rss_table needs queues"),
    ({"queues": 2, "rss_table": [0, 5]}, "entry 5"),
    ({"queues": 2, "rss_key": "12"}, "rss_key must be 8 bytes"),
    ({"rx_ring": 8, "rx_frames": 64}, "at least one block"),
    ({"queues": 17}, "queues"),
])
def test_endpoint_settings_refuse_bad_queue_settings(engine: dict[str, object], message: str) -> None:
    with pytest.raises(EndpointSettingsError, match=message):
        EndpointSettings.parse(engine)


def _tuple(i: int) -> FourTuple:
    return FourTuple(bytes([10, 0, 7, 2]), 7, bytes([10, 0, 7, 1]), 40000 + i)


def test_two_queues_share_one_capacity_and_embryonic_limit() -> None:
    slots = SharedSlots(capacity=3, embryonic_limit=2)
    a, b = SharedTable(slots), SharedTable(slots)
    a.insert(_tuple(0), "a0", 0.0)
    b.insert(_tuple(1), "b1", 0.0)
    assert (a.occupancy, b.embryonic_count) == (2, 2)
    with pytest.raises(EmbryonicLimit, match="all queues"):
        b.insert(_tuple(2), "b2", 0.0)
    a.promote(_tuple(0))
    b.insert(_tuple(2), "b2", 0.0)
    assert not a.has_room() and b.high_water == 3
    with pytest.raises(TableFull, match=r"3 entries, all queues"):
        a.insert(_tuple(3), "a3", 0.0, embryonic=False)
    assert b.remove(_tuple(1)) == "b1" and a.remove(_tuple(1)) is None  # only its own queue frees a slot
    assert a.occupancy == 2 and a.embryonic_count == 1 and a.has_room()
    a.set_capacity(1)
    assert b.capacity == 1 and not b.has_room(embryonic=False)
    assert len(a) == 1 and len(b) == 1 and a.lookup(_tuple(0)) == "a0" and b.lookup(_tuple(0)) is None


def test_embryonic_entries_expire_and_free_the_shared_slot() -> None:
    slots = SharedSlots(capacity=2, embryonic_limit=None)
    table = SharedTable(slots, embryonic_timeout=5.0)
    table.insert(_tuple(0), "x", 0.0)
    assert table.expire_embryonic(10.0) == [_tuple(0)]
    assert slots.read()[2:4] == (0, 0)


def test_queue_counters_sum_and_keep_each_queue_apart() -> None:
    q0 = queue_counters(0, DriverCounters(rx_frames=10, rx_bytes=1000, tx_frames=4, tx_bytes=400), 2)
    q1 = queue_counters(1, DriverCounters(rx_frames=5, rx_bytes=500), 1)
    total = sum_counters([{**q0, "conn_offloaded": 3, "table_high_water": 5},
                          {**q1, "conn_offloaded": 4, "table_high_water": 7}])
    assert total["rx_queue_0_frames"] == 10 and total["rx_queue_1_frames"] == 5
    assert total["rx_missed_errors"] == 3 and total["conn_offloaded"] == 7
    assert total["table_high_water"] == 7


def test_queue_scenarios_refuse_bad_parameters_in_one_sentence() -> None:
    from scenarios.queues import _sizes, flat

    assert _sizes("64,256") == [64, 256]
    for bad in ("256,64", "64", "32,64"):
        with pytest.raises(ValueError, match="smallest first"):
            _sizes(bad)
    assert flat([{"rx_ring": 64, "missed": 3}], "rx_ring") == {"rx_ring=64.missed": 3}


def test_queue_scenarios_are_registered_with_their_claims() -> None:
    import scenarios

    claimed = {s.name: s.claims for s in scenarios.all() if s.name in ("ring_drops", "rss_queues", "coalescing")}
    assert claimed == {"ring_drops": ("TOE-13",), "rss_queues": ("TOE-14",), "coalescing": ("TOE-15",)}


def test_a_topology_with_a_bad_rss_table_is_refused_at_spec_time() -> None:
    from lab.errors import SpecError
    from lab.spec import parse_spec

    text = ("name: bad_queues\nnodes:\n  h1:\n    interfaces: {eth0: {addresses: [10.0.7.1/24]}}\n"
            "  t1:\n    kind: toe\n    interfaces: {eth0: {addresses: [10.0.7.2/24]}}\n"
            "    engine: {queues: 2, rss_table: [0, 1, 2]}\n"
            'links:\n  - endpoints: ["h1:eth0", "t1:eth0"]\n')
    with pytest.raises(SpecError, match=r"rss_table entry 2 is not a queue of 0\.\.1") as raised:
        parse_spec(text, "bad_queues.yaml")
    assert "line 8" in str(raised.value)


def test_send_batch_sends_in_order_in_one_call_and_skips_what_is_refused() -> None:
    import socket

    from toe_engine.io.sendmmsg import SendBatch

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)  # a datagram past it is refused (EMSGSIZE)
        batch = SendBatch(a.fileno(), slots=4, arena=1 << 17)
        assert batch.queue(b"h1", b"first") and batch.queue(b"", b"second")
        assert not batch.queue(b"", bytes(1 << 17))  # larger than the arena: the caller flushes first
        assert batch.queue(b"", bytes(100_000)) and batch.queue(b"h4", b"fourth")
        assert not batch.queue(b"", b"fifth")  # four slots
        sent, dropped, sent_bytes = batch.flush()
        b.setblocking(False)
        got = []
        while True:
            try:
                got.append(b.recv(1 << 17))
            except BlockingIOError:
                break
    assert (sent, dropped, batch.refused, batch.count) == (3, 1, 1, 0)
    assert got == [b"h1first", b"second", b"h4fourth"]
    assert sent_bytes == sum(map(len, got))


def test_rss_view_lays_the_table_out_like_ethtool() -> None:
    from toelab.shell_rss import rss_text

    config = {"wire": "eth0", "queues": 2, "rss": {"table": rss.equal_table(2, 16), "key": "6d:5a:6d:5a:6d:5a:6d:5a",
                                                   "hfunc": rss.HASH_FUNCTION}}
    text = rss_text("t1", config, {"rx_queue_0_frames": 5, "rx_queue_1_frames": 7}).splitlines()
    assert text[0] == "RX flow hash indirection table for eth0 of t1 with 2 RX ring(s):"
    assert text[1] == "    0:     0     1     0     1     0     1     0     1"
    assert text[2] == "    8:     0     1     0     1     0     1     0     1"
    assert text[-2:] == ["    rx_queue_0_frames: 5", "    rx_queue_1_frames: 7"]
    assert "no RSS" in rss_text("t1", {"queues": 1}, {})
