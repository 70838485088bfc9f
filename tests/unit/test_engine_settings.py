"""Engine node settings without root: spec-time validation, middlebox_chain parameters, `set` shaping, capture readings."""
from __future__ import annotations

import pytest

from lab.engine_nodes import nest_dotted, shape_middlebox_set
from lab.errors import SpecError
from lab.render import load_topology
from lab.spec import parse_spec
from scenarios.transfer import retransmissions_after_duplicate_acks, send_times
from scenarios.wire import ChecksumState, TcpFrame

MIDDLEBOX = """\
name: t
nodes:
  h1: {interfaces: {eth0: {addresses: [10.0.9.1/24]}}}
  mb:
    kind: middlebox
    engine:
      a_to_b:
        impairments: {loss: 120}
  h2: {interfaces: {eth0: {addresses: [10.0.9.2/24]}}}
links:
  - endpoints: ["h1:eth0", "mb:eth0"]
  - endpoints: ["mb:eth1", "h2:eth0"]
"""


def test_bad_engine_setting_names_line_and_field() -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(MIDDLEBOX, "t.yaml")
    assert caught.value.where == "line 8, nodes.mb.engine.a_to_b.impairments.loss"
    assert "percentage between 0 and 100" in caught.value.what
    with pytest.raises(SpecError, match=r"line 8, nodes.mb.engine.a_to_b.bogus: .*unknown field"):
        parse_spec(MIDDLEBOX.replace("impairments: {loss: 120}", "bogus: 1"), "t.yaml")
    assert parse_spec(MIDDLEBOX.replace("120", "12"), "t.yaml").nodes["mb"].engine["a_to_b"]["impairments"]["loss"] == 12


def test_middlebox_chain_parameters() -> None:
    routed = load_topology("middlebox_chain", {"loss": "2", "coalesce": "gro", "tso": "true", "seed": "7"})
    engine = routed.nodes["mb"].engine
    assert routed.nodes["mb"].kind == "middlebox" and engine["mode"] == "router"
    assert engine["a_to_b"] == {"coalesce": "gro", "tso": True, "seed": 7, "impairments": {"loss": 2.0}}
    assert engine["b_to_a"]["seed"] == 8
    bridged = load_topology("middlebox_chain", {"mode": "bridge"})
    assert bridged.addresses("mb") == {"eth0": [], "eth1": []}
    assert bridged.first_address("h1") == "10.0.3.1" and bridged.first_address("h2") == "10.0.3.2"
    kernel = load_topology("middlebox_chain", {"mb_kind": "router", "coalesce": "gro", "egress_mtu": "1400"})
    assert kernel.nodes["mb"].kind == "router" and kernel.nodes["mb"].engine == {}
    assert kernel.interface("mb", "eth0").features == {"gro": True} and kernel.links[1].mtu == 1400
    ge = load_topology("middlebox_chain", {"gemodel_p": "1", "gemodel_r": "25"}).nodes["mb"].engine
    assert ge["a_to_b"]["impairments"] == {"gemodel": {"p": 1.0, "r": 25.0, "one_minus_h": 100.0, "one_minus_k": 0.0}}
    with pytest.raises(SpecError, match="mb_kind=router cannot bridge"):
        load_topology("middlebox_chain", {"mb_kind": "router", "mode": "bridge"})
    with pytest.raises(SpecError, match=r"nodes.mb.engine.a_to_b.coalesce"):
        load_topology("middlebox_chain", {"coalesce": "fast"})
    assert load_topology("middlebox_chain", {"busy_poll": "100"}).nodes["mb"].engine["busy_poll"] == 100
    assert "busy_poll" not in engine  # 0, the default: the middlebox sleeps in epoll
    with pytest.raises(SpecError, match="busy_poll is a setting of the engine middlebox"):
        load_topology("middlebox_chain", {"mb_kind": "router", "busy_poll": "100"})
    with pytest.raises(SpecError, match=r"nodes.mb.engine.busy_poll"):
        load_topology("middlebox_chain", {"busy_poll": "-1"})


def test_set_shaping() -> None:
    assert nest_dotted({"gemodel.p": 1, "loss": 2}) == {"gemodel": {"p": 1}, "loss": 2}
    assert shape_middlebox_set({"loss": 5, "direction": "a_to_b", "gemodel.p": 2, "tso": True}) == {
        "direction": "a_to_b", "tso": True, "impairments": {"loss": 5, "gemodel": {"p": 2}}}
    assert shape_middlebox_set({"impairments": {"loss": 1}}) == {"impairments": {"loss": 1}}


SERVER, CLIENT = ("10.0.2.2", 19), ("10.0.1.2", 40000)


def data(ts: float, seq: int, size: int = 1000) -> TcpFrame:
    return TcpFrame(ts, SERVER[0], CLIENT[0], SERVER[1], CLIENT[1], seq, 1, "A", 100, size, (),
                    ChecksumState.CORRECT, 66 + size)


def ack(ts: float, value: int) -> TcpFrame:
    return TcpFrame(ts, CLIENT[0], SERVER[0], CLIENT[1], SERVER[1], 1, value, "A", 100, 0, (),
                    ChecksumState.CORRECT, 66)


def test_retransmission_after_three_duplicate_acks() -> None:
    base = 4_294_967_000  # sequence numbers wrap within the transfer
    frames = [data(0.0, base + i * 1000) for i in range(6)]
    frames += [ack(0.010, (base + 1000) % (1 << 32))] + [ack(0.011 + i / 1000, (base + 1000) % (1 << 32))
                                                         for i in range(3)]
    frames += [data(0.0145, (base + 1000) % (1 << 32)), ack(0.02, (base + 6000) % (1 << 32))]
    frames += [data(0.03, (base + 6000) % (1 << 32)),
               data(0.6, (base + 6000) % (1 << 32))]
    events = retransmissions_after_duplicate_acks(frames, SERVER)
    assert len(events) == 2
    fast, timeout = events
    assert fast.duplicate_acks == 3 and fast.since_third_duplicate_s == pytest.approx(0.0015)
    assert fast.since_original_s == pytest.approx(0.0145)
    assert timeout.duplicate_acks == 0 and timeout.since_third_duplicate_s is None
    assert timeout.since_original_s == pytest.approx(0.57)
    assert send_times(frames, SERVER, 1000)[:1] == [0.0]
