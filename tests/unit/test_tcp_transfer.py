"""Bulk transfers through the two-stack harness: byte-exact under loss, reordering, duplication."""
from __future__ import annotations

import pytest

from toe_engine.tcp import State, TcpConfig
from toe_engine.tcp.tcpsocket import TcpSocket
from toe_engine.tcp.testing import BulkTransfer, Harness, Impairment, pumping

MB = 1 << 20

IMPAIRMENTS = {
    "clean": Impairment(),
    "loss5": Impairment(loss=0.05),
    "reorder": Impairment(reorder=0.1),
    "duplicate": Impairment(duplicate=0.1),
    "all": Impairment(loss=0.05, reorder=0.1, duplicate=0.05),
}


def pattern(size: int, salt: int) -> bytes:
    block = bytes((i * 31 + salt) & 0xFF for i in range(65521))  # a prime length: no aligned repeats
    return (block * (size // len(block) + 1))[:size]


def transfer(cc: str, imp: Impairment, size: int, seed: int, sack: bool = True) -> Harness:
    cfg = TcpConfig(congestion=cc, sack=sack, time_wait=1.0)
    h = Harness(cfg, TcpConfig(congestion=cc, sack=sack, time_wait=1.0), a_to_b=imp, b_to_a=imp, seed=seed)
    h.keep_trace = False
    ca, cb = h.establish()
    up, down = pattern(size, 1), pattern(size, 2)
    x = BulkTransfer(h.a, ca, h.b, cb, up)
    y = BulkTransfer(h.b, cb, h.a, ca, down)
    h.on_step = pumping(x, y)
    assert h.run(until=lambda: x.done and y.done, max_time=3000), "transfer stalled"
    assert bytes(x.received) == up
    assert bytes(y.received) == down
    h.on_step = None
    h.a.close(ca)
    h.b.close(cb)
    h.run(duration=200)
    assert h.a.state(ca) is State.CLOSED and h.b.state(cb) is State.CLOSED
    assert len(h.a) == 0 and len(h.b) == 0
    return h


@pytest.mark.parametrize("cc", ["newreno", "cubic"])
@pytest.mark.parametrize("name", list(IMPAIRMENTS))
def test_one_megabyte_both_directions(cc: str, name: str) -> None:
    h = transfer(cc, IMPAIRMENTS[name], MB, seed=7)
    if IMPAIRMENTS[name].loss:
        assert h.counters_a["retransmits"] > 0 and h.counters_b["retransmits"] > 0


@pytest.mark.parametrize("cc", ["newreno", "cubic"])
def test_one_megabyte_without_sack_under_everything(cc: str) -> None:
    transfer(cc, IMPAIRMENTS["all"], MB, seed=3, sack=False)


@pytest.mark.parametrize("seed", range(4))
def test_seeds_vary_the_run(seed: int) -> None:
    transfer("cubic", Impairment(loss=0.05, reorder=0.05, duplicate=0.05), MB // 4, seed=seed)


def test_small_buffers_and_send_buffer_backpressure() -> None:
    cfg = TcpConfig(snd_buf=4096, rcv_buf=4096, wscale=0, time_wait=1.0)
    h = Harness(cfg, cfg)
    ca, cb = h.establish()
    assert h.a.send(ca, b"x" * 10_000) == 4096
    data = pattern(200_000, 5)
    x = BulkTransfer(h.a, ca, h.b, cb, data[4096:])
    h.on_step = pumping(x)
    h.run(until=lambda: x.done, max_time=600)
    assert bytes(x.received) == b"x" * 4096 + data[4096:]


@pytest.mark.parametrize("cc", ["newreno", "cubic"])
def test_ten_megabytes_under_everything(cc: str) -> None:
    transfer(cc, IMPAIRMENTS["all"], 10 * MB, seed=11)


def test_socket_wrapper_echo() -> None:
    h = Harness()
    ca, cb = h.establish()
    client, server = TcpSocket(h.a, ca), TcpSocket(h.b, cb)
    assert server.recv() is None
    client.sendall(b"e" * 500_000, h.now)
    received = bytearray()
    for _ in range(10_000):
        client.flush(h.now)
        chunk = server.recv(now=h.now)
        if chunk:
            received += chunk
        if len(received) == 500_000:
            break
        h.run(duration=0.01)
    assert bytes(received) == b"e" * 500_000
    client.shutdown(h.now)
    h.run(duration=1)
    assert server.recv() == b""
