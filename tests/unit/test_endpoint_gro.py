"""The endpoint runtime with receive GRO on and off, over socket pairs standing in for the wire and
the TAP (no root): the same bytes reach the application, fewer segments reach TCP, wire frames
are counted as without GRO, and flows the engine does not take reach the host frame by frame."""
from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest

from toe_engine.apps.base import App, AppConnection
from toe_engine.codec import build_tcp_frame, parse_frame
from toe_engine.endpoint import EndpointConfig, EndpointCore
from toe_engine.io.driver import DEFAULT_RX_BUFFER, FrameDriver
from toe_engine.io.vnet import VNET_F_DATA_VALID
from toe_engine.runtime.endpoint import EndpointRuntime, EndpointSettings, endpoint_handler
from toe_engine.segment import ACK, FIN, SYN, Segment, TcpOptions
from toe_engine.tcp.config import TcpConfig

MAC_A, MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
IP_A, IP_B = bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2])
PORT, CLIENT_PORT, ISN = 9, 40000, 1000
MSS = 1460
SEGMENTS = 40
VNET_VALID = struct.pack("<BBHHHH", VNET_F_DATA_VALID, 0, 0, 0, 0, 0)


class Recorder(App):
    """Keeps every byte it is given."""

    data = bytearray()

    def __init__(self, conn: AppConnection) -> None:
        super().__init__(conn)
        Recorder.data = bytearray()

    def on_data(self, data: bytes | memoryview) -> None:
        super().on_data(data)
        Recorder.data += data


class Pipe:
    """One end for the runtime's driver, the other for the test."""

    def __init__(self, name: str) -> None:
        self.peer, ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for sock in (self.peer, ours):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            sock.setblocking(False)
        self._ours = ours
        self.driver = FrameDriver(ours.fileno(), name, None, DEFAULT_RX_BUFFER)

    def put(self, frame: bytes) -> None:
        self.peer.send(frame)

    def taken(self) -> list[bytes]:
        out = []
        while True:
            try:
                out.append(self.peer.recv(1 << 17))
            except BlockingIOError:
                return out

    def close(self) -> None:
        self.peer.close()
        self._ours.close()


def tcp(seg: Segment, ip_id: int = 0) -> bytes:
    return VNET_VALID + bytes(build_tcp_frame(MAC_A, MAC_B, IP_A, IP_B, seg, ip_id=ip_id))


@pytest.fixture
def pipes() -> Iterator[tuple[Pipe, Pipe]]:
    wire, host = Pipe("eth0"), Pipe("toe0")
    yield wire, host
    wire.close()
    host.close()


def runtime_with(wire: Pipe, host: Pipe, gro: bool, ack_defer: bool = True) -> EndpointRuntime:
    core = EndpointCore(EndpointConfig(MAC_B, (IP_B,), services={PORT: Recorder}, secret=b"gro-test",
                                       tcp=TcpConfig(rcv_buf=1 << 22, wscale=8, delayed_ack=0.04)))
    core.neighbors.learn(IP_A, MAC_A)
    runtime = EndpointRuntime(core, wire.driver, host.driver,
                              EndpointSettings(addresses=["192.0.2.2"], gro=gro, ack_defer=ack_defer))
    runtime.clock = lambda: 1.0  # what EventLoop.attach would set: the test's clock, not the machine's
    return runtime


def connect(runtime: EndpointRuntime, wire: Pipe) -> int:
    """Handshake from the test's side; returns the engine's next sequence number."""
    wire.put(tcp(Segment(CLIENT_PORT, PORT, ISN, 0, SYN, 65535, b"", TcpOptions(mss=MSS, wscale=8))))
    runtime.pump_wire(1.0)
    synack = parse_frame(wire.taken()[-1][10:], verify_csum=False).tcp
    assert synack is not None and synack.flags == SYN | ACK
    wire.put(tcp(Segment(CLIENT_PORT, PORT, ISN + 1, synack.seq + 1, ACK, 1024)))
    runtime.pump_wire(1.0)
    return synack.seq + 1


def stream(n: int) -> bytes:
    return bytes(i * 13 % 251 for i in range(n))


@pytest.mark.parametrize("gro,ack_defer", [(True, True), (False, True), (True, False), (False, False)],
                         ids=["gro-on", "gro-off", "gro-on-ack-per-segment-pair", "gro-off-ack-per-segment-pair"])
def test_a_burst_reaches_the_application_byte_exact(pipes: tuple[Pipe, Pipe], gro: bool, ack_defer: bool) -> None:
    wire, host = pipes
    runtime = runtime_with(wire, host, gro, ack_defer)
    ack = connect(runtime, wire)
    data = stream(SEGMENTS * MSS)
    for k in range(SEGMENTS):
        wire.put(tcp(Segment(CLIENT_PORT, PORT, ISN + 1 + k * MSS, ack, ACK, 1024, data[k * MSS:(k + 1) * MSS]), k))
    assert runtime.pump_wire(1.0) == SEGMENTS  # one wake-up, one batch
    counters = runtime.core.counters
    assert bytes(Recorder.data) == data
    assert counters["rx_frames"] == 2 + SEGMENTS  # wire frames, with or without GRO
    acks = wire.taken()
    if gro:
        assert counters["gro_merged"] == SEGMENTS - 1 and counters["gro_flushed"] == 1
        assert len(acks) == 1  # one aggregate of 40 segments: one ACK, as Linux sends after GRO
    else:
        assert counters["gro_merged"] == 0
        # A read short of the budget (an engine keeping up), ack_defer or not: the window update the
        # first read makes owed, then every second full-sized segment (SHLD-19).
        assert [parse_frame(a[10:], verify_csum=False).tcp.ack - ISN - 1 for a in acks] == [
            k * MSS for k in range(1, SEGMENTS, 2)]
    runtime.on_due(1.1)  # a delayed ACK, if one is due, leaves now
    acks += wire.taken()
    last = parse_frame(acks[-1][10:], verify_csum=False).tcp
    assert last is not None and last.ack == ISN + 1 + len(data)
    assert host.taken() == []


def test_flows_the_engine_does_not_take_reach_the_host_as_they_came(pipes: tuple[Pipe, Pipe]) -> None:
    wire, host = pipes
    runtime = runtime_with(wire, host, gro=True)
    frames = [tcp(Segment(CLIENT_PORT, 5555, ISN + k * MSS, 1, ACK, 1024, stream(MSS)), k) for k in range(5)]
    for frame in frames:
        wire.put(frame)
    runtime.pump_wire(1.0)
    assert runtime.core.counters["gro_merged"] == 4  # merged, then declined: the host gets the originals
    assert host.taken() == frames


def test_gro_is_an_ethtool_style_setting(pipes: tuple[Pipe, Pipe]) -> None:
    wire, host = pipes
    runtime = runtime_with(wire, host, gro=True)
    handle = endpoint_handler(runtime)
    assert handle({"cmd": "config"}, 1.0)["config"]["gro"] is True
    assert handle({"cmd": "set", "gro": "off"}, 1.0)["config"]["gro"] is False and runtime.gro is None
    assert handle({"cmd": "set", "gro": True}, 1.0)["config"]["gro"] is True and runtime.gro is not None
    with pytest.raises(ValueError, match="gro must be on or off, got 'maybe'"):
        handle({"cmd": "set", "gro": "maybe", "capacity": 3}, 1.0)
    assert runtime.core.resources.table.capacity != 3  # nothing applied


def test_rcv_mss_stays_the_wire_mss_so_every_second_segment_is_acked(pipes: tuple[Pipe, Pipe]) -> None:
    """SHLD-19 after an aggregate: rcv_mss is the segments' size (gso_size), not the aggregate's or
    the advertised MSS, so two full segments that arrive one per batch still draw an ACK at once."""
    wire, host = pipes
    runtime = runtime_with(wire, host, gro=True)
    ack = connect(runtime, wire)
    size, seq = 1400, ISN + 1  # full-sized for this peer, below the 1460 the engine advertised
    for k in range(10):
        wire.put(tcp(Segment(CLIENT_PORT, PORT, seq, ack, ACK, 1024, stream(size)), k))
        seq += size
    runtime.pump_wire(1.0)
    conn = runtime.core.stack.connection(next(iter(runtime.core.stack.connections())))
    assert conn is not None and conn.rcv_mss == size
    runtime.on_due(1.1)
    wire.taken()
    acks_after = []
    for k in range(2):  # one segment per batch: nothing left for GRO to merge
        wire.put(tcp(Segment(CLIENT_PORT, PORT, seq, ack, ACK, 1024, stream(size)), 10 + k))
        seq += size
        runtime.pump_wire(1.0)
        acks_after.append(len(wire.taken()))
    assert acks_after == [0, 1]  # the first waits for its partner, the second is ACKed at once


def test_a_fin_merged_into_an_aggregate_closes_after_every_byte(pipes: tuple[Pipe, Pipe]) -> None:
    wire, host = pipes
    runtime = runtime_with(wire, host, gro=True)
    ack = connect(runtime, wire)
    data = stream(6 * MSS)
    for k in range(6):
        flags = ACK | (FIN if k == 5 else 0)
        wire.put(tcp(Segment(CLIENT_PORT, PORT, ISN + 1 + k * MSS, ack, flags, 1024, data[k * MSS:(k + 1) * MSS]), k))
    runtime.pump_wire(1.0)
    assert runtime.core.counters["gro_merged"] == 5  # the FIN segment joined, then ended the aggregate
    assert bytes(Recorder.data) == data
    replies = [parse_frame(f[10:], verify_csum=False).tcp for f in wire.taken()]
    assert any(r is not None and r.flags & FIN and r.ack == ISN + 1 + len(data) + 1 for r in replies)


def test_a_batch_keeps_every_frame_intact_until_the_next(pipes: tuple[Pipe, Pipe]) -> None:
    """FrameDriver.batches reads each frame into its own part of the batch buffer, up to the budget."""
    wire, _ = pipes
    sizes = [60, 1514, 65536 + 54, 1514, 200] * 4
    frames = [bytes([n % 251]) * n for n in sizes]
    for frame in frames:
        wire.put(frame)
    first = next(wire.driver.batches(7))
    assert [bytes(v) for v in first] == frames[:len(first)] and 1 <= len(first) <= 7
    rest: list[bytes] = []
    for batch in iter(lambda: next(wire.driver.batches(64), None), None):
        rest += [bytes(v) for v in batch]
    assert rest == frames[len(first):]
    assert wire.driver.counters.rx_frames == len(frames) and wire.driver.counters.rx_truncated == 0


def test_a_requeued_node_keeps_the_gro_it_was_set_to() -> None:
    from toe_engine.runtime.queues import _remember

    settings = EndpointSettings(addresses=["192.0.2.2"], queues=2)
    assert settings.gro is True
    assert _remember(settings, {"gro": "off"}).gro is False
    assert _remember(settings, {"capacity": 5}).gro is True


def test_a_coalescer_that_raises_costs_one_frame_not_the_node(pipes: tuple[Pipe, Pipe]) -> None:
    from toe_engine.offload.rx_gro import Delivered, RxGro

    class Tripping(RxGro):
        def receive(self, frame: memoryview, out: list[Delivered]) -> None:
            if len(frame) == 99:
                raise RuntimeError("tripped")
            super().receive(frame, out)

    wire, host = pipes
    runtime = runtime_with(wire, host, gro=True)
    runtime.gro = Tripping(runtime.core.counters)
    ack = connect(runtime, wire)
    wire.put(bytes(99))
    wire.put(tcp(Segment(CLIENT_PORT, PORT, ISN + 1, ack, ACK, 1024, stream(MSS))))
    runtime.pump_wire(1.0)
    assert runtime.core.counters["rx_engine_errors"] == 1
    assert bytes(Recorder.data) == stream(MSS)
