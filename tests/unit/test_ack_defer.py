"""ACK deferral over a receive batch (TcpStack.defer_acks, EndpointCore.begin_batch, the runtime's
`ack_defer`): in-order data of one batch draws one ACK per connection at the batch's end, as
Linux's tcp_backlog_ack_defer sends one for a socket's backlog, while the ACKs that must go at
once (out-of-order data, a FIN) still do, and nothing changes for a caller that never defers."""
from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from toe_engine.codec import build_tcp_frame, parse_frame
from toe_engine.endpoint import EndpointConfig, EndpointCore
from toe_engine.io.memory import MemoryDriver
from toe_engine.io.vnet import VNET_F_DATA_VALID, VNET_GSO_TCPV4, VnetHeader
from toe_engine.runtime.datapath import segments_in
from toe_engine.runtime.endpoint import EndpointRuntime, EndpointSettings, endpoint_handler
from toe_engine.segment import ACK, FIN, SYN, Segment, TcpOptions
from toe_engine.tcp.config import TcpConfig
from toe_engine.tcp.testing import IP_A, IP_B, Harness

FULL = 1448  # a full-sized segment with timestamps
MAC_A, MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
DISCARD, CLIENT, ISN, MSS = 9, 40000, 1000, 1460
VNET_VALID = VnetHeader(flags=VNET_F_DATA_VALID).pack()  # the device checked the checksums
BUDGET = EndpointSettings.model_fields["budget"].default  # frames a read takes at most


def established() -> tuple[Harness, Segment]:
    """b serves, a's connection is open; returns the harness and a's next data segment (no payload yet)."""
    h = Harness(config_a=TcpConfig(wscale=8, rcv_buf=1 << 22), config_b=TcpConfig(wscale=8, rcv_buf=1 << 22))
    conn_a, _ = h.establish()
    return h, h.forge("a", conn_a, ACK)


def data(template: Segment, k: int, flags: int = ACK) -> Segment:
    """Segment `k` of a's stream of full-sized segments after `template`."""
    return Segment(template.src_port, template.dst_port, (template.seq + k * FULL) & 0xFFFFFFFF, template.ack,
                   flags, template.window, bytes([k % 251]) * FULL, template.options)


def acks(segments: list[Segment]) -> list[int]:
    return [s.ack for s in segments if s.flags == ACK and not s.payload]


def test_a_batch_of_in_order_segments_draws_one_ack_at_its_end() -> None:
    h, first = established()
    h.b.defer_acks()
    replies = [r for k in range(10) for r in h.inject("b", data(first, k))]
    assert replies == []  # ten full segments, five ACKs owed, none sent yet
    h.b.send_deferred_acks(h.now)
    assert acks([out[2] for out in h.b.poll_output()]) == [(first.seq + 10 * FULL) & 0xFFFFFFFF]


def test_without_deferral_every_second_full_segment_is_acked_at_once() -> None:
    h, first = established()
    replies = [r for k in range(10) for r in h.inject("b", data(first, k))]
    assert acks(replies) == [(first.seq + k * FULL) & 0xFFFFFFFF for k in (2, 4, 6, 8, 10)]  # SHLD-19


def test_out_of_order_data_and_a_fin_are_acked_at_once_inside_a_batch() -> None:
    h, first = established()
    h.b.defer_acks()
    assert acks(h.inject("b", data(first, 1))) == [first.seq]  # a hole: duplicate ACK now (RFC 5681 4.2)
    assert acks(h.inject("b", data(first, 0))) == [(first.seq + 2 * FULL) & 0xFFFFFFFF]  # the hole filled
    fin = h.inject("b", data(first, 2, ACK | FIN))
    assert [s.ack for s in fin] == [(first.seq + 3 * FULL + 1) & 0xFFFFFFFF]  # the FIN: at once
    h.b.send_deferred_acks(h.now)
    assert h.b.poll_output() == []  # nothing was still owed


def test_a_segment_sent_inside_the_batch_carries_the_deferred_ack() -> None:
    h, first = established()
    conn_b = next(iter(h.b.connections()))
    h.b.defer_acks()
    assert h.inject("b", data(first, 0)) == [] and h.inject("b", data(first, 1)) == []
    h.b.send(conn_b, b"answer", h.now)
    sent = [out[2] for out in h.b.poll_output()]
    assert [s.payload for s in sent] == [b"answer"] and sent[0].ack == (first.seq + 2 * FULL) & 0xFFFFFFFF
    h.b.send_deferred_acks(h.now)
    assert h.b.poll_output() == []


def test_the_delayed_ack_timer_still_backs_a_deferred_ack_up() -> None:
    h, first = established()
    h.b.defer_acks()
    h.inject("b", data(first, 0))
    h.inject("b", data(first, 1))
    deadline = h.b.next_timer()
    assert deadline is not None and deadline <= h.now + TcpConfig().delayed_ack


class BlockDriver(MemoryDriver):
    """Hands what waits over in blocks of `blocks` frames, one batch each, as a ring driver hands
    over one TPACKET_V3 block per batch, until the budget is reached."""

    def __init__(self, blocks: list[int]) -> None:
        super().__init__("wire", keep_sent=True)
        self.blocks = blocks

    def batches(self, budget: int) -> Iterator[list[memoryview]]:
        taken, pending = 0, self.pending
        for size in self.blocks:
            if taken >= budget or not pending:
                return
            batch = [pending.popleft() for _ in range(min(size, len(pending)))]
            taken += len(batch)
            yield batch


def runtime_after_handshake(ack_defer: bool, gro: bool = False,
                            wire: MemoryDriver | None = None) -> tuple[EndpointRuntime, MemoryDriver, int]:
    """An endpoint runtime on in-memory drivers with one connection to discard open, its first
    segment read (the window update that read owes sent): the runtime, the wire, the ACK number."""
    core = EndpointCore(EndpointConfig(MAC_B, (IP_B,), services={DISCARD: "discard"}, secret=b"defer",
                                       tcp=TcpConfig(rcv_buf=1 << 22, wscale=8, delayed_ack=0.04)))
    core.neighbors.learn(IP_A, MAC_A)
    wire = wire or MemoryDriver("wire", keep_sent=True)
    runtime = EndpointRuntime(core, wire, MemoryDriver("host"),
                              EndpointSettings(addresses=["192.0.2.2"], gro=gro, ack_defer=ack_defer))
    runtime.clock = lambda: 1.0
    assert runtime.budget == BUDGET
    wire.put([wire_frame(Segment(CLIENT, DISCARD, ISN, 0, SYN, 65535, b"", TcpOptions(mss=MSS, wscale=8)))])
    runtime.pump_wire(1.0)
    synack = parse_frame(wire.sent[-1][10:], verify_csum=False).tcp
    assert synack is not None and synack.flags == SYN | ACK
    wire.put([wire_frame(Segment(CLIENT, DISCARD, ISN + 1, synack.seq + 1, ACK, 1024))])
    runtime.pump_wire(1.0)
    wire.sent.clear()
    wire.put([wire_frame(data_segment(0, synack.seq + 1))])
    runtime.pump_wire(1.0)
    assert acked(wire) == [MSS]  # the first read opened the window: an update at once, deferral or not
    wire.sent.clear()
    return runtime, wire, synack.seq + 1


def wire_frame(seg: Segment, ip_id: int = 0) -> bytes:
    return VNET_VALID + bytes(build_tcp_frame(MAC_A, MAC_B, IP_A, IP_B, seg, ip_id=ip_id))


def data_segment(k: int, ack: int, flags: int = ACK) -> Segment:
    """Full-sized segment `k` of the client's stream to discard."""
    return Segment(CLIENT, DISCARD, ISN + 1 + k * MSS, ack, flags, 1024, bytes([k % 251]) * MSS)


def read(runtime: EndpointRuntime, wire: MemoryDriver, first: int, count: int, ack: int) -> None:
    """Segments first..first+count-1 waiting on the wire, taken in one read."""
    wire.put([wire_frame(data_segment(k, ack), k) for k in range(first, first + count)])
    assert runtime.pump_wire(1.0) == count


def acked(wire: MemoryDriver) -> list[int]:
    """What each frame the engine sent acknowledges, in stream octets."""
    sent = [parse_frame(f[10:], verify_csum=False).tcp for f in wire.sent]
    return [t.ack - ISN - 1 for t in sent if t is not None]


@pytest.mark.parametrize("ack_defer", [True, False], ids=["ack_defer", "no-ack_defer"])
def test_a_read_short_of_the_budget_acks_every_second_full_segment(ack_defer: bool) -> None:
    """Three segments in one read of an engine that keeps up: the ACK leaves at the second (SHLD-19),
    the third waits for its partner or the delayed-ACK timer, never one stretch ACK for all three."""
    runtime, wire, ack = runtime_after_handshake(ack_defer)
    read(runtime, wire, 1, 3, ack)
    assert acked(wire) == [3 * MSS]  # segments 1 and 2 of the read, at once
    runtime.on_due(1.05)
    assert acked(wire) == [3 * MSS, 4 * MSS]  # the third: delayed ACK


@pytest.mark.parametrize("gro", [False, True], ids=["gro-off", "gro-on"])
def test_a_read_that_reaches_the_budget_is_a_backlog_and_draws_one_ack(gro: bool) -> None:
    runtime, wire, ack = runtime_after_handshake(ack_defer=True, gro=gro)
    read(runtime, wire, 1, BUDGET, ack)
    assert acked(wire) == [(1 + BUDGET) * MSS]  # one ACK for the read, at its end
    assert sum(app.received for app in runtime.core.apps.values()) == (1 + BUDGET) * MSS


def test_a_read_of_several_blocks_defers_from_the_block_that_reaches_the_budget() -> None:
    """Blocks of 4 and 62 frames: the first block alone is short of the budget and ACKs every second
    segment as it comes; the read reaches the budget with the second, whose ACK waits for the end."""
    runtime, wire, ack = runtime_after_handshake(ack_defer=True, wire=BlockDriver([4, BUDGET - 2]))
    read(runtime, wire, 1, BUDGET + 2, ack)
    assert acked(wire) == [3 * MSS, 5 * MSS, (3 + BUDGET) * MSS]


def test_a_backlog_read_of_two_flows_draws_one_ack_each() -> None:
    runtime, wire, ack = runtime_after_handshake(ack_defer=True)
    other = CLIENT + 1
    wire.put([wire_frame(Segment(other, DISCARD, ISN, 0, SYN, 65535, b"", TcpOptions(mss=MSS, wscale=8)))])
    runtime.pump_wire(1.0)
    synack = parse_frame(wire.sent[-1][10:], verify_csum=False).tcp
    assert synack is not None and synack.flags == SYN | ACK
    second = [Segment(other, DISCARD, ISN + 1 + k * MSS, synack.seq + 1, ACK, 1024, bytes([k]) * MSS)
              for k in range(1 + BUDGET // 2)]
    wire.put([wire_frame(second[0])])  # it completes the handshake and draws the window update at once
    runtime.pump_wire(1.0)
    wire.sent.clear()
    first = [data_segment(k, ack) for k in range(1, 1 + BUDGET // 2)]
    wire.put([wire_frame(seg, k) for k, pair in enumerate(zip(first, second[1:])) for seg in pair])
    assert runtime.pump_wire(1.0) == BUDGET
    replies = [parse_frame(f[10:], verify_csum=False).tcp for f in wire.sent]
    ends = sorted((t.dst_port, t.ack - ISN - 1) for t in replies if t is not None)
    assert ends == [(CLIENT, (1 + BUDGET // 2) * MSS), (other, (1 + BUDGET // 2) * MSS)]  # one each, at the end


def gso_wire_frame(first: int, segments: int, ack: int) -> bytes:
    """A peer's GSO super-frame (as a TSO send reaches a veth's far end) carrying stream segments
    first..first+segments-1, each full-sized."""
    header = VnetHeader(flags=VNET_F_DATA_VALID, gso_type=VNET_GSO_TCPV4, hdr_len=54, gso_size=MSS).pack()
    seg = Segment(CLIENT, DISCARD, ISN + 1 + first * MSS, ack, ACK, 1024, bytes([first % 251]) * (segments * MSS))
    return header + bytes(build_tcp_frame(MAC_A, MAC_B, IP_A, IP_B, seg))


def test_a_read_counts_the_segments_of_gso_frames_toward_the_budget() -> None:
    """Two 44-segment GSO frames are 88 segments waiting: a backlog, one ACK; a frame each is ACKed alone."""
    frames = [gso_wire_frame(1 + 44 * k, 44, 0) for k in range(2)]
    assert segments_in([memoryview(f) for f in frames]) == 88
    assert segments_in([memoryview(wire_frame(data_segment(1, 0)))] * 3) == 3
    runtime, wire, ack = runtime_after_handshake(ack_defer=True)
    wire.put([gso_wire_frame(1 + 44 * k, 44, ack) for k in range(2)])
    assert runtime.pump_wire(1.0) == 2
    assert acked(wire) == [89 * MSS]
    wire.sent.clear()
    wire.put([gso_wire_frame(89, 44, ack)])
    runtime.pump_wire(1.0)
    assert acked(wire) == [133 * MSS]  # one GSO frame alone: 44 segments, short of the budget, ACKed at once


def test_without_ack_defer_a_full_read_acks_every_second_full_segment() -> None:
    runtime, wire, ack = runtime_after_handshake(ack_defer=False)
    read(runtime, wire, 1, BUDGET, ack)
    assert acked(wire) == [k * MSS for k in range(3, BUDGET + 2, 2)]


def test_ack_defer_is_a_setting_shown_and_changed_at_run_time() -> None:
    settings = EndpointSettings(addresses=["192.0.2.2"])
    assert settings.ack_defer  # Linux's default (net.ipv4.tcp_backlog_ack_defer = 1)
    core = EndpointCore(EndpointConfig(bytes(6), (IP_B,), secret=b"t"))
    runtime = EndpointRuntime(core, MemoryDriver("wire"), MemoryDriver("host"), settings)
    handle = endpoint_handler(runtime)
    assert handle({"cmd": "config"}, 1.0)["config"]["ack_defer"] is True
    assert handle({"cmd": "set", "ack_defer": "off"}, 1.0)["config"]["ack_defer"] is False
    assert handle({"cmd": "set", "ack_defer": "on"}, 1.0)["config"]["ack_defer"] is True
    with pytest.raises(ValueError, match="ack_defer must be on or off"):
        handle({"cmd": "set", "ack_defer": "sometimes"}, 1.0)
    assert EndpointSettings.parse({"addresses": ["192.0.2.2"], "ack_defer": False}).ack_defer is False


@pytest.mark.parametrize("argv,message", [
    (["core", "--bulk-only"], "--bulk-only is an option of the engine benchmark"),
    (["engine", "--bulk-only", "--http-only"], "--bulk-only and --http-only each leave the other's rows out"),
])
def test_bulk_only_is_refused_where_it_means_nothing(argv: list[str], message: str) -> None:
    done = subprocess.run([sys.executable, "-m", "toelab", "bench", *argv], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and message in done.stderr and done.stderr.count("\n") == 1
