"""The fixed resource model: exact capacity, exhaustion policies, buffers, timers, passed flows."""
from __future__ import annotations

import pytest

from toe_engine.counters import Counters
from toe_engine.resources import (
    Admission,
    BufferPool,
    ConnectionTable,
    DenyAction,
    EmbryonicLimit,
    ExhaustionPolicy,
    PassedFlows,
    PolicyKind,
    PoolExhausted,
    ResourceConfig,
    ResourceManager,
    TableFull,
)
from toe_engine.segment import ACK, FIN, RST, SYN, FourTuple, Segment

LOCAL = bytes([10, 0, 0, 1])


def flow(n: int, local_port: int = 80) -> FourTuple:
    return FourTuple(LOCAL, local_port, bytes([10, 0, 1, n // 250]), 10000 + n)


def syn(four_tuple: FourTuple) -> Segment:
    return Segment(four_tuple.remote_port, four_tuple.local_port, 1000, 0, SYN, 65535)


def manager(counters: Counters | None = None, **config: object) -> ResourceManager:
    return ResourceManager(ResourceConfig(**config), counters, cookie_secret=b"k")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("policy", "overflow"),
    [
        ("fallback", Admission.PASS),
        ("deny:drop", Admission.DROP),
        ("deny:rst", Admission.RESET),
        ("syncookie", Admission.COOKIE),
    ],
)
def test_capacity_8_admits_8_of_20_and_applies_the_policy(policy: str, overflow: Admission) -> None:
    counters = Counters()
    rm = manager(counters, capacity=8, policy=ExhaustionPolicy.parse(policy))
    decisions = [rm.admit(flow(i), syn(flow(i)), float(i)) for i in range(20)]
    assert decisions == [Admission.ACCEPT] * 8 + [overflow] * 12
    assert rm.table.occupancy == 8
    snap = counters.snapshot()
    assert snap["conn_offloaded"] == 8
    assert snap["table_high_water"] == 8
    assert snap["conn_fallback"] == (12 if overflow is Admission.PASS else 0)
    assert snap["conn_denied"] == (12 if overflow in (Admission.DROP, Admission.RESET) else 0)
    assert len(rm.passed) == (12 if overflow is Admission.PASS else 0)


def test_retransmitted_syn_of_an_admitted_flow_takes_no_second_slot() -> None:
    counters = Counters()
    rm = manager(counters, capacity=2)
    assert rm.admit(flow(1), syn(flow(1)), 0.0) is Admission.ACCEPT
    assert rm.admit(flow(1), syn(flow(1)), 1.0) is Admission.ACCEPT
    assert rm.table.occupancy == 1 and counters["conn_offloaded"] == 1


def test_high_water_mark_survives_releases() -> None:
    counters = Counters()
    rm = manager(counters, capacity=8)
    for i in range(6):
        rm.admit(flow(i), syn(flow(i)), 0.0)
    for i in range(4):
        assert rm.release(flow(i))
    assert not rm.release(flow(0))
    rm.admit(flow(10), syn(flow(10)), 1.0)
    assert rm.table.occupancy == 3
    assert rm.table.high_water == 6 == counters["table_high_water"]
    assert rm.gauges()["table_high_water"] == 6


def test_sram_is_quoted_like_hardware() -> None:
    assert ConnectionTable(64_000).sram_bytes() == 16_384_000
    table = ConnectionTable(10, entry_bytes=1024)
    table.insert(flow(1), "conn", 0.0)
    assert (table.sram_bytes(), table.sram_used_bytes()) == (10_240, 1024)


def test_table_enforces_capacity_exactly() -> None:
    table = ConnectionTable(2)
    table.insert(flow(1), "a", 0.0)
    table.insert(flow(2), "b", 0.0)
    with pytest.raises(TableFull):
        table.insert(flow(3), "c", 0.0)
    with pytest.raises(KeyError):
        table.insert(flow(1), "again", 0.0)
    assert table.lookup(flow(2)) == "b" and table.lookup(flow(3)) is None
    assert table.remove(flow(2)) == "b" and len(table) == 1


def test_buffer_pool_accounts_exactly() -> None:
    pool = BufferPool(10_500, buffer_size=1000)
    assert pool.total_buffers == 10 and pool.total_bytes == 10_000
    assert pool.reserve("a", 1500) == 2
    assert pool.reserve("a", 500) == 0  # fits in the second buffer
    assert pool.reserve("a", 1) == 1
    assert pool.reserve("b", 7000) == 7
    assert (pool.used_buffers, pool.free_buffers) == (10, 0)
    with pytest.raises(PoolExhausted):
        pool.reserve("c", 1)
    assert pool.reserve("c", 0) == 0
    assert pool.release("a", 1) == 1  # 2000 bytes left: two buffers
    assert pool.release("a", 1000) == 1
    assert pool.held_bytes("a") == 1000 and pool.held_buffers("a") == 1
    with pytest.raises(ValueError):
        pool.release("a", 1001)
    assert pool.release("b") == 7
    assert pool.release("a") == 1
    assert (pool.used_buffers, pool.high_water) == (0, 10)
    assert pool.release("nobody") == 0


def test_buffer_pool_limits_admission_before_the_table_does() -> None:
    counters = Counters()
    rm = manager(counters, capacity=100, pool_bytes=4 * 2048, conn_buffer_bytes=3000, policy=ExhaustionPolicy.parse("deny"))
    decisions = [rm.admit(flow(i), syn(flow(i)), 0.0) for i in range(4)]
    assert decisions == [Admission.ACCEPT, Admission.ACCEPT, Admission.DROP, Admission.DROP]
    assert rm.pool.used_buffers == 4 and rm.table.occupancy == 2
    rm.release(flow(0))
    assert rm.pool.used_buffers == 2
    assert rm.admit(flow(9), syn(flow(9)), 1.0) is Admission.ACCEPT


def test_embryonic_entries_time_out_and_free_their_resources() -> None:
    rm = manager(capacity=8, embryonic_timeout=10.0, conn_buffer_bytes=100)
    for i in range(3):
        rm.admit(flow(i), syn(flow(i)), float(i))
    rm.established(flow(1))
    assert rm.table.embryonic_count == 2
    assert rm.next_deadline() == 10.0
    assert rm.expire(9.99) == []
    assert rm.expire(10.0) == [flow(0)]
    assert rm.next_deadline() == 12.0
    assert rm.expire(100.0) == [flow(2)]
    assert rm.table.occupancy == 1 and rm.table.embryonic_count == 0
    assert rm.pool.used_buffers == 1
    assert rm.next_deadline() is None


def test_embryonic_limit_triggers_the_policy() -> None:
    rm = manager(capacity=8, embryonic_limit=2, policy=ExhaustionPolicy.parse("syncookie"))
    assert [rm.admit(flow(i), syn(flow(i)), 0.0) for i in range(3)] == [
        Admission.ACCEPT,
        Admission.ACCEPT,
        Admission.COOKIE,
    ]
    rm.established(flow(0))
    assert rm.admit(flow(3), syn(flow(3)), 0.0) is Admission.ACCEPT
    table = ConnectionTable(8, embryonic_limit=0)
    with pytest.raises(EmbryonicLimit):
        table.insert(flow(1), None, 0.0)
    table.insert(flow(1), None, 0.0, embryonic=False)


def test_passed_flow_keeps_passing_until_rst() -> None:
    counters = Counters()
    rm = manager(counters, capacity=1)
    assert rm.admit(flow(1), syn(flow(1)), 0.0) is Admission.ACCEPT
    assert rm.admit(flow(2), syn(flow(2)), 0.0) is Admission.PASS
    rm.release(flow(1))  # a slot is free now, but flow 2 lives in the host stack
    assert rm.admit(flow(2), syn(flow(2)), 1.0) is Admission.PASS
    assert rm.passes(flow(2), ACK, 2.0)
    assert not rm.passes(flow(1), ACK, 2.0)
    assert rm.passes(flow(2), RST | ACK, 3.0)
    assert not rm.passes(flow(2), ACK, 3.1)
    assert rm.admit(flow(2), syn(flow(2)), 4.0) is Admission.ACCEPT
    assert counters["conn_fallback"] == 1


def test_passed_flow_lingers_after_fin_then_is_forgotten() -> None:
    flows = PassedFlows(limit=10, idle_timeout=300.0, fin_linger=30.0)
    flows.add(flow(1), 0.0)
    assert flows.see(flow(1), FIN | ACK, 10.0)
    assert flows.see(flow(1), ACK, 39.0)  # the last ACK of the close still passes
    assert not flows.see(flow(1), ACK, 40.0)
    assert flow(1) not in flows


def test_passed_flow_expires_when_idle() -> None:
    flows = PassedFlows(limit=10, idle_timeout=60.0)
    flows.add(flow(1), 0.0)
    flows.add(flow(2), 0.0)
    assert flows.see(flow(2), ACK, 50.0)  # refreshes flow 2 only
    assert flows.expire(60.0) == 1
    assert flow(1) not in flows and flow(2) in flows
    assert not flows.see(flow(2), ACK, 110.0)


def test_passed_flows_are_bounded() -> None:
    flows = PassedFlows(limit=2)
    for i in range(3):
        flows.add(flow(i), float(i))
    assert len(flows) == 2 and flows.evicted == 1
    assert flow(0) not in flows and flow(2) in flows


def test_port_filter_passes_other_ports_without_taking_state() -> None:
    counters = Counters()
    rm = manager(counters, capacity=8, offload_ports=frozenset({80}))
    assert rm.admit(flow(1, 22), syn(flow(1, 22)), 0.0) is Admission.PASS
    assert rm.admit(flow(2, 80), syn(flow(2, 80)), 0.0) is Admission.ACCEPT
    assert rm.table.occupancy == 1 and counters["conn_fallback"] == 0
    rm.set_offload_ports(None)
    assert rm.admit(flow(3, 22), syn(flow(3, 22)), 0.0) is Admission.ACCEPT
    rm.set_offload_ports([])
    assert rm.admit(flow(4, 80), syn(flow(4, 80)), 0.0) is Admission.PASS
    with pytest.raises(ValueError, match="70000"):
        rm.set_offload_ports([70000])


def test_shrinking_capacity_evicts_nothing_and_admits_nothing_until_below() -> None:
    rm = manager(capacity=8, policy=ExhaustionPolicy.parse("deny:rst"))
    for i in range(8):
        rm.admit(flow(i), syn(flow(i)), 0.0)
    rm.set_capacity(4)
    assert rm.table.occupancy == 8 and all(flow(i) in rm.table for i in range(8))
    for i in range(4):
        rm.release(flow(i))
    assert rm.admit(flow(20), syn(flow(20)), 1.0) is Admission.RESET
    rm.release(flow(4))
    assert rm.admit(flow(21), syn(flow(21)), 2.0) is Admission.ACCEPT
    rm.set_capacity(6)
    assert rm.admit(flow(22), syn(flow(22)), 3.0) is Admission.ACCEPT
    assert rm.gauges()["table_capacity"] == 6


def test_policy_changes_at_runtime() -> None:
    rm = manager(capacity=0)
    assert rm.admit(flow(1), syn(flow(1)), 0.0) is Admission.PASS
    rm.set_policy("deny")
    assert rm.admit(flow(2), syn(flow(2)), 0.0) is Admission.DROP
    rm.set_policy(ExhaustionPolicy(PolicyKind.DENY, DenyAction.RST))
    assert rm.admit(flow(3), syn(flow(3)), 0.0) is Admission.RESET
    assert rm.admit(flow(1), syn(flow(1)), 0.0) is Admission.PASS  # still remembered


def test_cookie_ack_gets_a_slot_once_one_frees() -> None:
    counters = Counters()
    rm = manager(counters, capacity=1, policy=ExhaustionPolicy.parse("syncookie"))
    rm.admit(flow(1), syn(flow(1)), 0.0)
    assert rm.admit(flow(2), syn(flow(2)), 0.0) is Admission.COOKIE
    isn, _ = rm.syncookies.make_cookie(flow(2), 1000, 1460, None, False, False, 0.0)
    ack = Segment(flow(2).remote_port, 80, 1001, (isn + 1) & 0xFFFFFFFF, ACK, 100)
    assert rm.syncookies.check_cookie(flow(2), ack, 1.0) is not None
    assert rm.admit_cookie(flow(2), 1.0) is Admission.DROP
    rm.release(flow(1))
    assert rm.admit_cookie(flow(2), 2.0) is Admission.ACCEPT
    assert not rm.table.is_embryonic(flow(2))
    assert counters["syncookies_sent"] == 1 and counters["syncookies_ok"] == 1


@pytest.mark.parametrize("text", ["drop", "fallback:rst", "deny:maybe", ""])
def test_bad_policy_text_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="policy"):
        ExhaustionPolicy.parse(text)
