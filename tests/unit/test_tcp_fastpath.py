"""Header prediction (tcp/input.py `_predicted`) and the receive-only output path.

The short path must be invisible: the same transfer run with `header_prediction` on and off
gives the same segments on the wire (every field, every payload byte, every option, at the same
instant), the same TCB state after every step and the same counters. And each thing that
disqualifies a segment sends it down the full path, which `tcp_hp_hits` shows.
"""
from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from toe_engine.counters import Counters
from toe_engine.impair import ImpairmentSpec
from toe_engine.segment import ACK, FIN, PSH, RST, SYN, URG, Segment, TcpOptions
from toe_engine.tcp import State, TcpConfig
from toe_engine.tcp.seqnum import MASK
from toe_engine.tcp.rtx_queue import RetransmitQueue
from toe_engine.tcp.tcb import Tcb
from toe_engine.tcp.testing import BulkTransfer, Harness, Impairment, pumping
from toe_engine.testing import FrameHarness

KIB = 1024
SKIP = {"host", "_out", "_events", "counters", "cfg", "key", "listener"}  # shared objects, not state


def field_names(obj: object) -> list[str]:
    """The fields of an engine object, from its __slots__ (source) or mypyc's attribute list (compiled)."""
    names: dict[str, None] = {}
    for cls in type(obj).__mro__:
        for name in getattr(cls, "__slots__", ()) or getattr(cls, "__mypyc_attrs__", ()):
            if not name.startswith("__"):
                names[name] = None
    return list(names)


def _plain(value: Any, depth: int = 0) -> Any:
    """A comparable picture of a TCB field: numbers as they are, buffers as bytes, the engine's
    own objects (cc, RTT estimator, queues, their ranges) as their fields, recursively."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, (tuple, list)):
        return tuple(_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _plain(v, depth + 1)) for k, v in value.items()))
    assert depth < 6, f"unexpectedly deep state: {type(value).__name__}"
    names = field_names(value)
    if not names and hasattr(value, "__dict__"):
        names = list(vars(value))
    return (type(value).__name__,) + tuple((n, _plain(getattr(value, n), depth + 1)) for n in names
                                           if hasattr(value, n))


def tcb_state(tcb: Tcb | None) -> Any:
    if tcb is None:
        return None
    names = field_names(tcb)
    assert "rcv_nxt" in names and "rtxq" in names
    return tuple((n, _plain(getattr(tcb, n))) for n in names if n not in SKIP)


def counted(counters: Counters) -> dict[str, int]:
    """Every counter but the one that tells the two paths apart."""
    return {k: v for k, v in counters.snapshot().items() if k != "tcp_hp_hits"}


def wire(h: Harness) -> list[tuple[Any, ...]]:
    """Every segment that crossed the channel, field by field."""
    return [(round(s.time, 9), s.src, s.dropped, s.seg.src_port, s.seg.dst_port, s.seg.seq, s.seg.ack, s.seg.flags,
             s.seg.window, bytes(s.seg.payload), s.seg.options, s.seg.urg_ptr) for s in h.trace]


class Reader:
    """Reads at most `chunk` bytes per step: the receive window shrinks and opens again."""

    def __init__(self, conn: Any, chunk: int) -> None:
        self.conn, self.chunk, self.received = conn, chunk, bytearray()

    def __call__(self, h: Harness) -> None:
        if h.b.connection(self.conn) is not None:
            self.received += h.b.recv(self.conn, self.chunk)


def transfer(prediction: bool, cfg_a: TcpConfig, cfg_b: TcpConfig, imp_ab: Impairment, imp_ba: Impairment,
             size: int, both_ways: bool = False, read_chunk: int = 0, close: bool = True,
             seed: int = 7) -> dict[str, Any]:
    """One seeded transfer a -> b (and b -> a), with header prediction on or off on both stacks."""
    h = Harness(replace(cfg_a, header_prediction=prediction), replace(cfg_b, header_prediction=prediction),
                a_to_b=imp_ab, b_to_a=imp_ba, seed=seed)
    ca, cb = h.establish()
    data = bytes((i * 7 + i // 251) & 0xFF for i in range(size))
    states: list[Any] = []
    if read_chunk:
        reader = Reader(cb, read_chunk)
        sent = [0]

        def hook(hh: Harness) -> None:
            if sent[0] < size and hh.a.connection(ca) is not None:
                sent[0] += hh.a.send(ca, data[sent[0]:sent[0] + 65536], hh.now)
            reader(hh)
            states.append((tcb_state(hh.a.connection(ca)), tcb_state(hh.b.connection(cb))))

        h.on_step = hook
        assert h.run(until=lambda: len(reader.received) == size, max_time=600)
        received = [bytes(reader.received)]
    else:
        transfers = [BulkTransfer(h.a, ca, h.b, cb, data, close_when_done=close)]
        if both_ways:
            transfers.append(BulkTransfer(h.b, cb, h.a, ca, data[::-1], close_when_done=close))
        pump = pumping(*transfers)

        def hook(hh: Harness) -> None:
            pump(hh)
            states.append((tcb_state(hh.a.connection(ca)), tcb_state(hh.b.connection(cb))))

        h.on_step = hook
        assert h.run(until=lambda: all(t.done for t in transfers), max_time=600)
        received = [bytes(t.received) for t in transfers]
    assert received[0] == data and (not both_ways or received[1] == data[::-1])
    h.run(duration=5)
    hits = h.counters_a["tcp_hp_hits"] + h.counters_b["tcp_hp_hits"]
    counters = [counted(c) for c in (h.counters_a, h.counters_b)]
    return {"wire": wire(h), "states": states, "counters": counters, "hits": hits,
            "events": (repr(h.events_a), repr(h.events_b)), "segments": len(h.trace)}


CLEAN = Impairment(delay=0.01)
CASES: dict[str, tuple[TcpConfig, TcpConfig, Impairment, Impairment, dict[str, Any]]] = {
    "timestamps and SACK": (TcpConfig(), TcpConfig(), CLEAN, CLEAN, {}),
    "no options": (TcpConfig(timestamps=False, sack=False, wscale=None, rcv_buf=65535),
                   TcpConfig(timestamps=False, sack=False, wscale=None, rcv_buf=65535), CLEAN, CLEAN, {}),
    "loss, RACK-TLP": (TcpConfig(), TcpConfig(), Impairment(delay=0.01, loss=0.03),
                       Impairment(delay=0.01, loss=0.01), {}),
    "loss, duplicate ACKs, no SACK": (TcpConfig(loss_detection="dupack", sack=False), TcpConfig(sack=False),
                                      Impairment(delay=0.01, loss=0.03), CLEAN, {}),
    "reordering and duplicates": (TcpConfig(), TcpConfig(), Impairment(delay=0.01, reorder=0.05, duplicate=0.02),
                                  CLEAN, {}),
    "window changes (slow reader, no scaling)": (TcpConfig(wscale=None, rcv_buf=65535),
                                                 TcpConfig(wscale=None, rcv_buf=16 * KIB),
                                                 CLEAN, CLEAN, {"read_chunk": 3000}),
    "echo both ways, cubic": (TcpConfig(congestion="cubic"), TcpConfig(congestion="cubic"), CLEAN, CLEAN,
                              {"both_ways": True}),
    "echo both ways, BBR, loss": (TcpConfig(congestion="bbr"), TcpConfig(congestion="bbr"),
                                  Impairment(delay=0.01, loss=0.02), CLEAN, {"both_ways": True}),
    "delayed ACK off, TSO": (TcpConfig(tso_segments=8), TcpConfig(delayed_ack=0), CLEAN, CLEAN, {}),
    "tail losses, no FIN": (TcpConfig(), TcpConfig(), Impairment(delay=0.01, loss=0.05), CLEAN, {"close": False}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_short_path_gives_the_same_wire_and_states_as_the_full_one(case: str) -> None:
    cfg_a, cfg_b, ab, ba, extra = CASES[case]
    full = transfer(False, cfg_a, cfg_b, ab, ba, 300 * KIB, **extra)
    short = transfer(True, cfg_a, cfg_b, ab, ba, 300 * KIB, **extra)
    assert full["hits"] == 0
    assert short["hits"] > short["segments"] // 8, f"header prediction took only {short['hits']} segments"
    assert len(short["wire"]) == len(full["wire"])
    for i, (s, f) in enumerate(zip(short["wire"], full["wire"])):
        assert s == f, f"segment {i} differs"
    assert len(short["states"]) == len(full["states"])
    for i, (s, f) in enumerate(zip(short["states"], full["states"])):
        assert s == f, f"TCB state after step {i} differs"
    assert short["counters"] == full["counters"]
    assert short["events"] == full["events"]


def _random_case(seed: int) -> tuple[TcpConfig, TcpConfig, Impairment, Impairment, dict[str, Any]]:
    """A seeded mix of options, loss detection, congestion control, delayed ACK and impairments."""
    rng = random.Random(seed)
    scaled = rng.random() < 0.7
    common: dict[str, Any] = {"timestamps": rng.random() < 0.7, "sack": rng.random() < 0.7,
              "wscale": 7 if scaled else None, "rcv_buf": rng.choice((32, 64, 256)) * KIB if scaled else 65535,
              "congestion": rng.choice(("newreno", "cubic", "bbr")),
              "loss_detection": rng.choice(("rack-tlp", "dupack")), "delayed_ack": rng.choice((0.0, 0.04))}

    def impairment() -> Impairment:
        return Impairment(delay=rng.choice((0.001, 0.01)), loss=rng.choice((0.0, 0.01, 0.04)),
                          reorder=rng.choice((0.0, 0.03)), duplicate=rng.choice((0.0, 0.01)))

    cfg = TcpConfig(**common)
    return cfg, replace(cfg, nodelay=rng.random() < 0.3), impairment(), impairment(), {
        "both_ways": rng.random() < 0.4, "close": rng.random() < 0.7, "seed": seed}


@pytest.mark.parametrize("seed", range(8))
def test_seeded_mixes_give_the_same_wire_and_states_either_way(seed: int) -> None:
    cfg_a, cfg_b, ab, ba, extra = _random_case(seed)
    full = transfer(False, cfg_a, cfg_b, ab, ba, 96 * KIB, **extra)
    short = transfer(True, cfg_a, cfg_b, ab, ba, 96 * KIB, **extra)
    assert full["hits"] == 0
    # both sides shut down as soon as all is queued: FIN-WAIT-1 throughout, which (as in Linux)
    # header prediction leaves alone; any other mix has an ESTABLISHED side that takes it
    assert short["hits"] > 0 or (extra["both_ways"] and extra["close"])
    assert short["wire"] == full["wire"]
    assert short["states"] == full["states"]
    assert short["counters"] == full["counters"] and short["events"] == full["events"]


# ---------------------------------------------------------------------- disqualifiers


def established(cfg: TcpConfig | None = None, in_flight: int = 0) -> tuple[Harness, Any, Any, Tcb]:
    """a and b ESTABLISHED and idle; with `in_flight`, b has that much data sent and unacknowledged."""
    h = Harness(cfg or TcpConfig(), cfg or TcpConfig())
    ca, cb = h.establish()
    h.a.send(ca, b"x" * 3000)
    h.b.send(cb, b"y" * 3000)
    h.run(duration=1)
    assert h.b.recv(cb) == b"x" * 3000 and h.a.recv(ca) == b"y" * 3000
    tcb = h.b.connection(cb)
    assert tcb is not None and tcb.state is State.ESTABLISHED
    h.drop_if = lambda src, seg: src == "b"  # what b sends from now on never arrives: the tests answer for a
    if in_flight:
        h.b.set_nodelay(cb, True)  # all of it leaves at once
        h.b.send(cb, b"z" * in_flight)
        h.flush()
        assert tcb.snd_nxt - tcb.snd_una == in_flight
    return h, ca, cb, tcb


def segment_to_b(h: Harness, ca: Any, tcb: Tcb, flags: int = ACK, payload: bytes = b"", seq_delta: int = 0,
                 ack: int | None = None, window: int | None = None, **opts: Any) -> Segment:
    """What a would send b next: in order, acking `ack` (default SND.NXT of b), b's window unchanged."""
    a = h.a.connection(ca)
    assert a is not None
    ts = opts.pop("timestamp") if "timestamp" in opts else (h.a.ts_clock(h.now), a.ts_recent) if tcb.ts_ok else None
    options = TcpOptions(timestamp=ts, **opts)
    if window is None:
        window = tcb.snd_wnd >> tcb.snd_wscale
    return Segment(a.local_port, a.remote_port, (tcb.rcv_nxt + seq_delta) & MASK,
                   (tcb.snd_nxt if ack is None else ack) & MASK, flags, window, payload, options)


def took_short_path(h: Harness, seg: Segment) -> bool:
    before = h.counters_b["tcp_hp_hits"]
    h.inject("b", seg)
    return h.counters_b["tcp_hp_hits"] == before + 1


def test_an_in_order_data_segment_and_a_pure_ack_take_the_short_path() -> None:
    """The control for every disqualifier below: without one, the same segments are predicted."""
    h, ca, cb, tcb = established(in_flight=2000)
    assert took_short_path(h, segment_to_b(h, ca, tcb, ack=tcb.snd_una + 1000))  # a pure ACK of new data
    assert took_short_path(h, segment_to_b(h, ca, tcb, ACK | PSH, b"data"))  # data, acking the rest
    assert took_short_path(h, segment_to_b(h, ca, tcb, ACK, b"more"))  # data, acking nothing new
    assert h.b.recv(cb) == b"datamore" and tcb.snd_una == tcb.snd_nxt
    wnd = tcb.snd_wnd
    assert took_short_path(h, segment_to_b(h, ca, tcb, ACK, b"moved", window=(wnd >> tcb.snd_wscale) - 3))
    assert tcb.snd_wnd == wnd - (3 << tcb.snd_wscale)  # a window that moved (and stays open) is taken too


SEGMENT_DISQUALIFIERS: dict[str, Callable[[Harness, Any, Tcb], Segment]] = {
    "FIN": lambda h, ca, t: segment_to_b(h, ca, t, ACK | FIN, b"last"),
    "RST": lambda h, ca, t: segment_to_b(h, ca, t, ACK | RST),
    "SYN": lambda h, ca, t: segment_to_b(h, ca, t, ACK | SYN),
    "URG": lambda h, ca, t: segment_to_b(h, ca, t, ACK | URG, b"urgent"),
    "no ACK": lambda h, ca, t: segment_to_b(h, ca, t, PSH, b"data"),
    "sequence ahead (out of order)": lambda h, ca, t: segment_to_b(h, ca, t, payload=b"later", seq_delta=100),
    "sequence behind (duplicate)": lambda h, ca, t: segment_to_b(h, ca, t, payload=b"x" * 10, seq_delta=-10),
    "SACK block": lambda h, ca, t: segment_to_b(h, ca, t, ack=t.snd_una + 100, payload=b"data",
                                                sack_blocks=(((t.snd_una + 1448) & MASK, (t.snd_una + 1900) & MASK),)),
    "timestamp older than TS.Recent": lambda h, ca, t: segment_to_b(
        h, ca, t, payload=b"old", timestamp=((t.ts_recent - 5) & MASK, 0)),
    "timestamp missing": lambda h, ca, t: segment_to_b(h, ca, t, payload=b"bare", timestamp=None),
    "window closed": lambda h, ca, t: segment_to_b(h, ca, t, payload=b"data", window=0),
    "ACK beyond SND.NXT": lambda h, ca, t: segment_to_b(h, ca, t, payload=b"data", ack=t.snd_nxt + 1),
    "ACK below SND.UNA": lambda h, ca, t: segment_to_b(h, ca, t, payload=b"data", ack=t.snd_una - 1),
    "pure ACK of nothing new (duplicate ACK)": lambda h, ca, t: segment_to_b(h, ca, t, ack=t.snd_una),
    "more data than the window": lambda h, ca, t: segment_to_b(h, ca, t, payload=bytes(t.rcv_adv - t.rcv_nxt + 1)),
}


@pytest.mark.parametrize("case", list(SEGMENT_DISQUALIFIERS))
def test_a_disqualified_segment_takes_the_full_path_with_the_same_result(case: str) -> None:
    results = []
    for prediction in (True, False):
        h, ca, cb, tcb = established(TcpConfig(header_prediction=prediction), in_flight=2000)
        seg = SEGMENT_DISQUALIFIERS[case](h, ca, tcb)
        assert not took_short_path(h, seg)
        results.append((wire(h), tcb_state(h.b.connection(cb)), counted(h.counters_b)))
    assert results[0] == results[1]


def _ooo_queued(h: Harness, ca: Any, cb: Any, tcb: Tcb) -> None:
    h.inject("b", segment_to_b(h, ca, tcb, payload=b"ahead", seq_delta=500))
    assert tcb.ooo


def _fin_ahead(h: Harness, ca: Any, cb: Any, tcb: Tcb) -> None:
    h.inject("b", segment_to_b(h, ca, tcb, ACK | FIN, seq_delta=500))
    assert tcb.rcv_fin_seq is not None


def _sacked(h: Harness, ca: Any, cb: Any, tcb: Tcb) -> None:
    una = tcb.snd_una
    h.inject("b", segment_to_b(h, ca, tcb, ack=una, sack_blocks=(((una + 1448) & MASK, (una + 2000) & MASK),)))
    assert tcb.rtxq.sacked


def _fast_recovery(h: Harness, ca: Any, cb: Any, tcb: Tcb) -> None:
    una = tcb.snd_una
    for end in (1448 * 3, 1448 * 4, 1448 * 5):
        h.inject("b", segment_to_b(h, ca, tcb, ack=una, sack_blocks=(((una + 1448) & MASK, (una + end) & MASK),)))
    assert tcb.recovery


def _hole_repaired(h: Harness, ca: Any, cb: Any, tcb: Tcb) -> None:
    """Fast recovery whose hole is repaired, the recovery point not yet reached: nothing is
    SACKed, lost or resent any more, and only the recovery state says PRR is still at work."""
    _fast_recovery(h, ca, cb, tcb)
    h.inject("b", segment_to_b(h, ca, tcb, ack=tcb.snd_una + 1448 * 5))
    q = tcb.rtxq
    assert tcb.recovery and not (q.sacked or q.lost or q.retrans) and tcb.snd_una < tcb.recover


def _probe_new_data(h: Harness, ca: Any, cb: Any, tcb: Tcb) -> None:
    """A tail loss probe that sent new data: only TLP's episode (tlp_end) is open."""
    h.b.send(cb, b"q" * 20 * 1448)  # more than the congestion window lets out
    h.flush()
    assert tcb.rtx_kind == 1 and tcb.snd_nxt < tcb.snd_buf_seq + len(tcb.snd_buf)  # recovery.PTO
    h.now = tcb.t_rtx
    h.sync_clocks()
    q = tcb.rtxq
    assert tcb.tlp_end is not None and not tcb.tlp_retrans and not (tcb.recovery or q.sacked or q.lost or q.retrans)


def _rto_fired(h: Harness, ca: Any, cb: Any, tcb: Tcb) -> None:
    assert tcb.rtx_kind == 0  # recovery.RTO
    h.now = tcb.t_rtx
    h.sync_clocks()
    assert tcb.recovery and (tcb.frto or tcb.rtxq.lost)


def _probe_fired(h: Harness, ca: Any, cb: Any, tcb: Tcb) -> None:
    assert tcb.rtx_kind == 1  # recovery.PTO: the tail loss probe's timer
    h.now = tcb.t_rtx
    h.sync_clocks()
    assert tcb.tlp_end is not None


def _peer_window_closed(h: Harness, ca: Any, cb: Any, tcb: Tcb) -> None:
    h.inject("b", segment_to_b(h, ca, tcb, window=0))
    h.b.send(cb, b"w" * 100)
    h.now = tcb.t_persist
    h.sync_clocks()
    assert tcb.probing


def _shut_down(h: Harness, ca: Any, cb: Any, tcb: Tcb) -> None:
    h.b.shutdown(cb)
    h.flush()
    assert tcb.state is State.FIN_WAIT_1


def _peer_closed(h: Harness, ca: Any, cb: Any, tcb: Tcb) -> None:
    h.inject("b", segment_to_b(h, ca, tcb, ACK | FIN))
    assert tcb.state is State.CLOSE_WAIT


DUPACK = TcpConfig(loss_detection="dupack")
CONNECTION_DISQUALIFIERS: dict[str, tuple[Callable[[Harness, Any, Any, Tcb], None], int, TcpConfig]] = {
    "out-of-order data queued": (_ooo_queued, 0, TcpConfig()),
    "a FIN beyond RCV.NXT": (_fin_ahead, 0, TcpConfig()),
    "SACKed octets (RACK: recovery at once)": (_sacked, 3000, TcpConfig()),
    "SACKed octets only (one duplicate ACK)": (_sacked, 3000, DUPACK),
    "fast recovery": (_fast_recovery, 8000, DUPACK),
    "fast recovery, the hole repaired": (_hole_repaired, 8 * 1448, DUPACK),
    "a tail loss probe of new data": (_probe_new_data, 3000, TcpConfig()),
    "after a retransmission timeout (F-RTO)": (_rto_fired, 3000, DUPACK),
    "after a retransmission timeout (no SACK)": (_rto_fired, 3000, replace(DUPACK, sack=False)),
    "a tail loss probe out": (_probe_fired, 3000, TcpConfig()),
    "probing a zero window": (_peer_window_closed, 0, TcpConfig()),
    "FIN queued (FIN-WAIT-1)": (_shut_down, 0, TcpConfig()),
    "CLOSE-WAIT": (_peer_closed, 0, TcpConfig()),
}


@pytest.mark.parametrize("case", list(CONNECTION_DISQUALIFIERS))
def test_a_connection_in_an_unusual_state_takes_the_full_path_with_the_same_result(case: str) -> None:
    prepare, in_flight, cfg = CONNECTION_DISQUALIFIERS[case]
    results = []
    for prediction in (True, False):
        h, ca, cb, tcb = established(replace(cfg, header_prediction=prediction), in_flight=in_flight)
        prepare(h, ca, cb, tcb)
        seg = segment_to_b(h, ca, tcb, ACK | PSH, b"in order", ack=tcb.snd_una)
        assert not took_short_path(h, seg)
        results.append((wire(h), tcb_state(h.b.connection(cb)), counted(h.counters_b)))
    assert results[0] == results[1]


def test_a_window_reopening_from_zero_takes_the_full_path_with_the_same_result() -> None:
    results = []
    for prediction in (True, False):
        h, ca, cb, tcb = established(TcpConfig(header_prediction=prediction))
        h.inject("b", segment_to_b(h, ca, tcb, window=0))
        assert tcb.snd_wnd == 0 and not tcb.probing
        h.b.send(cb, b"w" * 100)  # waits for the window
        assert not took_short_path(h, segment_to_b(h, ca, tcb, ACK, b"reopen", window=1000))
        assert tcb.snd_wnd == 1000 << tcb.snd_wscale
        results.append((wire(h), tcb_state(h.b.connection(cb)), counted(h.counters_b)))
    assert results[0] == results[1]


def test_header_prediction_off_sends_everything_down_the_full_path() -> None:
    h, ca, cb, tcb = established(TcpConfig(header_prediction=False), in_flight=2000)
    assert not took_short_path(h, segment_to_b(h, ca, tcb, ACK | PSH, b"data"))
    assert h.b.recv(cb) == b"data"


# ---------------------------------------------------------------------- receive-only output


def test_a_receive_only_connection_acks_every_second_segment_and_sends_nothing_else() -> None:
    """With nothing queued to send, output() is ACK generation only: one ACK per two full
    segments (SHLD-19), each at SND.NXT, carrying no data, and the delayed ACK for an odd one."""
    h, ca, cb, tcb = established()
    a = h.a.connection(ca)
    assert a is not None
    hits = h.counters_b["tcp_hp_hits"]
    replies = []
    for k in range(5):
        seg = segment_to_b(h, ca, tcb, ACK, bytes([k]) * 1448)
        replies.append(h.inject("b", seg))
    assert [len(r) for r in replies] == [0, 1, 0, 1, 0]
    for r in (replies[1][0], replies[3][0]):
        assert r.flags == ACK and not r.payload and r.seq == tcb.snd_nxt & MASK
    assert replies[3][0].ack == (tcb.rcv_nxt - 1448) & MASK
    assert tcb.t_delack < float("inf")
    h.now = tcb.t_delack
    h.sync_clocks()
    (late,) = [s.seg for s in h.trace[-1:]]
    assert late.flags == ACK and late.ack == tcb.rcv_nxt & MASK
    assert h.counters_b["tcp_hp_hits"] == hits + 5


def test_with_nothing_new_to_send_lost_data_is_still_resent_at_once() -> None:
    """The receive-only shortcut must not swallow a retransmission: a hole in each of two
    flights 5 ms apart, nothing more queued and no FIN; the second hole is found lost in fast
    recovery (no forced retransmission pending) and is still resent at once, not after an RTO."""
    h = Harness()
    ca, cb = h.establish()
    h.a.set_nodelay(ca, True)
    a = h.a.connection(ca)
    assert a is not None
    mss = a.snd_mss
    holes = {a.snd_nxt + 2 * mss, a.snd_nxt + 8 * mss}
    dropped: set[int] = set()

    def drop_first_copy(src: str, seg: Segment) -> bool:
        seq = a.snd_una + ((seg.seq - a.snd_una) & MASK)
        if src == "a" and seq in holes and seq not in dropped:
            dropped.add(seq)
            return True
        return False

    h.drop_if = drop_first_copy
    data = bytes(i & 0xFF for i in range(12 * mss))
    got = bytearray()
    h.on_step = lambda hh: got.extend(hh.b.recv(cb))
    assert h.a.send(ca, data[:6 * mss]) == 6 * mss
    h.run(duration=0.005)
    assert h.a.send(ca, data[6 * mss:]) == 6 * mss
    assert h.run(until=lambda: len(got) == len(data), max_time=30)
    assert bytes(got) == data and dropped == holes
    assert h.counters_a["rto_expired"] == 0 and h.counters_a["retransmits"] == 2


# ---------------------------------------------------------------------- copies


def views_transfer(hold: int) -> tuple[bytes, bytes, list[type], Harness]:
    """a sends 200 KiB to b with payload views on; b's side of the channel copies each payload
    (as the endpoint copies it into its frame) and keeps the last `hold` Segments from a."""
    h = Harness()
    h.a.payload_views = True
    ca, cb = h.establish()
    h.keep_trace = False
    held: list[memoryview] = []
    kinds: list[type] = []

    def copy_out(src: str, seg: Segment) -> float:
        if src == "a" and seg.payload:
            kinds.append(type(seg.payload))
            if hold and isinstance(seg.payload, memoryview):
                held.append(seg.payload)
                del held[:-hold]
            seg.payload = bytes(seg.payload)  # the one copy, into "the frame"
        return 0.0

    h.delay_if = copy_out
    data = bytes((i * 13) & 0xFF for i in range(200 * KIB))
    got = bytearray()
    transfer = BulkTransfer(h.a, ca, h.b, cb, data)
    h.on_step = lambda hh: transfer.pump(hh.now)
    assert h.run(until=lambda: transfer.done, max_time=60)
    got += transfer.received
    return data, bytes(got), kinds, h


def test_with_payload_views_data_leaves_as_views_of_the_send_buffer() -> None:
    data, got, kinds, h = views_transfer(hold=0)
    assert got == data
    assert kinds and set(kinds) == {memoryview}
    assert h.counters_a["snd_buf_pinned"] == 0


def test_a_view_still_held_costs_a_copy_of_the_send_buffer_not_an_error() -> None:
    data, got, kinds, h = views_transfer(hold=3)
    assert got == data
    assert h.counters_a["snd_buf_pinned"] > 0


def test_views_still_waiting_in_the_stacks_output_become_copies_when_the_buffer_moves() -> None:
    """An application writes again before the owner took the last segments: only those
    payloads are copied (snd_buf_views_copied), not the send buffer (snd_buf_pinned)."""
    h = Harness()
    h.a.payload_views = True
    ca, cb = h.establish()
    data = bytes((i * 5) & 0xFF for i in range(40 * KIB))
    assert h.a.send(ca, data[:20 * KIB]) == 20 * KIB
    waiting = [seg for _, _, seg in h.a.output if seg.payload]
    assert waiting and all(type(seg.payload) is memoryview for seg in waiting)
    assert h.a.send(ca, data[20 * KIB:]) == 20 * KIB  # the send buffer must grow: the views are out
    assert all(type(seg.payload) is bytes for seg in waiting)
    assert h.counters_a["snd_buf_views_copied"] == 1 and h.counters_a["snd_buf_pinned"] == 0
    got = bytearray()
    h.on_step = lambda hh: got.extend(hh.b.recv(cb))
    assert h.run(until=lambda: len(got) == len(data), max_time=30)
    assert bytes(got) == data


def test_without_payload_views_a_payload_is_its_own_bytes() -> None:
    h, ca, cb, tcb = established(in_flight=2000)
    segs = [s.seg for s in h.trace if s.src == "b" and s.seg.payload]
    assert segs and all(type(s.payload) is bytes for s in segs)
    assert bytes(segs[-1].payload) == b"z" * (2000 - 1448)


def test_recv_all_hands_the_receive_buffer_over_and_owes_the_same_window_update() -> None:
    results = []
    for take_all in (False, True):
        h = Harness(TcpConfig(), TcpConfig(rcv_buf=4 * 1448, wscale=0))
        ca, cb = h.establish()
        h.a.send(ca, bytes(range(256)) * 40)  # 10240 bytes: the receive window fills
        h.run(duration=1)
        tcb = h.b.connection(cb)
        assert tcb is not None
        buf = tcb.rcv_buf
        assert len(buf) == 4 * 1448
        before = len(h.trace)
        data = h.b.recv_all(cb) if take_all else h.b.recv(cb)
        h.flush()
        if take_all:
            assert data is buf and type(data) is bytearray and tcb.rcv_buf is not buf and not tcb.rcv_buf
        update = [(s.seg.flags, s.seg.ack, s.seg.window) for s in h.trace[before:]]
        assert update and update[0][0] == ACK and update[0][2] > 0  # the window opened: an update went at once
        h.run(duration=1)
        rest = h.b.recv_all(cb) if take_all else h.b.recv(cb)
        results.append((bytes(data) + bytes(rest), update))
    assert results[0] == results[1]
    assert results[0][0] == bytes(range(256)) * 40
    h.b.recv_all(cb)
    assert h.b.recv_all(cb) == bytearray()


def test_an_ack_that_wants_no_newest_range_keeps_the_same_books() -> None:
    """RetransmitQueue.ack(una, want_newest=False), as the short path calls it without a rate
    sample: the same delivered count, RACK and F-RTO marks and ranges, only no delivered piece."""
    queues = [RetransmitQueue(), RetransmitQueue()]
    for q in queues:
        q.sent_new(1000, 5000, 1.0)
        q.sent_new(5000, 9000, 1.1)
        q.original_low = 10_000
    newest = queues[0].ack(3000)
    none = queues[1].ack(3000, want_newest=False)
    assert newest is not None and (newest.start, newest.end) == (1000, 3000) and none is None
    queues[0].ack(6000)
    queues[1].ack(6000, want_newest=False)  # a whole range and a piece of the next
    assert _plain(queues[0]) == _plain(queues[1])
    assert queues[0].delivered == 5000 and queues[0].fack == 6000 and queues[0].original_low == 1000


def test_a_full_congestion_window_still_lets_the_fin_go() -> None:
    """output() stops at a full congestion window, except for the FIN, which Linux's
    tcp_cwnd_test lets go too: a shutdown after exactly a window of data sends it at once."""
    h = Harness()
    ca, cb = h.establish()
    a = h.a.connection(ca)
    assert a is not None
    window = a.cc.cwnd
    assert h.a.send(ca, bytes(window)) == window
    h.flush()
    assert a.snd_nxt - a.snd_una == window  # the window is full
    h.a.shutdown(ca)
    (fin,) = [seg for _, _, seg in h.a.output]
    assert fin.flags & FIN and not fin.payload and a.state is State.FIN_WAIT_1


# ---------------------------------------------------------------------- through the engine


class Recording:
    """An EndpointCore as FrameHarness drives it, with every frame it transmits kept."""

    def __init__(self, core: Any, h: Any, frames: list[tuple[float, str, bytes]], name: str) -> None:
        self._core, self._h, self._frames, self._name = core, h, frames, name

    def poll_wire(self) -> Any:
        out = self._core.poll_wire()
        self._frames += [(self._h.now, self._name, bytes(tx.frame)) for tx in out]
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._core, name)


def engine_echo(prediction: bool) -> tuple[list[tuple[float, str, bytes]], int, dict[str, int]]:
    h = FrameHarness(a_to_b=ImpairmentSpec(delay_ms=1, loss=2), b_to_a=ImpairmentSpec(delay_ms=1, loss=1),
                     tcp=TcpConfig(rcv_buf=256 * KIB, snd_buf=256 * KIB, header_prediction=prediction), seed=3)
    frames: list[tuple[float, str, bytes]] = []
    cores = (h.a, h.b)
    h.a, h.b = Recording(h.a, h, frames, "a"), Recording(h.b, h, frames, "b")  # type: ignore[assignment]
    intact, _ = h.echo_transfer(400 * KIB)
    assert intact
    hits = sum(core.counters["tcp_hp_hits"] for core in cores)
    return frames, hits, counted(cores[1].counters)


def test_the_engine_sends_the_same_frames_with_and_without_header_prediction() -> None:
    """The endpoint as the lab runs it (payload views, recv_all, cork): a lossy 400 KiB echo
    puts the same frames on the wire, byte for byte and instant for instant, either way."""
    full, full_hits, full_counters = engine_echo(False)
    short, short_hits, short_counters = engine_echo(True)
    assert full_hits == 0 and short_hits > len(short) // 4
    assert len(short) == len(full)
    for i, (s, f) in enumerate(zip(short, full)):
        assert s == f, f"frame {i} differs"
    assert short_counters == full_counters
