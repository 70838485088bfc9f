"""The bare user-space forwarder without root: its loop on datagram socket pairs, its refusals, its lab's parameters."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from lab.errors import SpecError
from lab.render import load_topology
from toe_engine.io import FrameDriver
from toelab.benches.bare_forwarder import MODULE, Carried, forward
from toelab.benches.middlebox import _check_carried

FRAME_ROOM = 4096


@pytest.fixture
def pairs() -> Iterator[tuple[socket.socket, socket.socket, socket.socket, socket.socket]]:
    """(a's peer, a, b, b's peer): datagram pairs keep frame boundaries as AF_PACKET does."""
    a_peer, a = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    b, b_peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    for sock in (a, b):
        sock.setblocking(False)
    yield a_peer, a, b, b_peer
    for sock in (a_peer, a, b, b_peer):
        sock.close()


@pytest.mark.parametrize(("spin", "busy_poll"), [(False, 0.0), (True, 0.0), (False, 0.001)],
                         ids=["sleeping", "spinning", "busy_polling"])
def test_every_frame_goes_out_of_the_other_port_unchanged_and_is_tallied(
        pairs: tuple[socket.socket, ...], spin: bool, busy_poll: float) -> None:
    a_peer, a, b, b_peer = pairs
    stop_read, stop_write = os.pipe()
    result: list[tuple[Carried, Carried]] = []
    thread = threading.Thread(target=lambda: result.append(forward(
        FrameDriver(a.fileno(), "a", None, FRAME_ROOM), FrameDriver(b.fileno(), "b", None, FRAME_ROOM),
        stop_read, budget=3, spin=spin, busy_poll=busy_poll)))
    thread.start()
    try:
        frames = [bytes([i]) * (100 + 37 * i) for i in range(10)]  # more than one budget's worth
        for frame in frames:
            a_peer.send(frame)
        b_peer.settimeout(10)
        assert [b_peer.recv(FRAME_ROOM) for _ in frames] == frames
        b_peer.send(b"back")
        a_peer.settimeout(10)
        assert a_peer.recv(FRAME_ROOM) == b"back"
    finally:
        os.write(stop_write, b"\0")
        thread.join(timeout=10)
        os.close(stop_read)
        os.close(stop_write)
    assert not thread.is_alive()
    a_to_b, b_to_a = result[0]
    assert a_to_b == Carried(10, sum(map(len, frames)), 0)
    assert b_to_a == Carried(1, 4, 0)


@pytest.mark.parametrize(("ports", "said"), [
    (["nope0", "lo"], "bare_forwarder: interface 'nope0' does not exist in the current network namespace"),
    (["lo", "lo"], "bare_forwarder: both ports are 'lo'; a forwarder needs two interfaces"),
])
def test_bad_ports_are_one_sentence_and_exit_2(ports: list[str], said: str) -> None:
    done = subprocess.run([sys.executable, "-m", MODULE, *ports], capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout, done.stderr.strip()) == (2, "", said)


def test_middlebox_chain_has_a_bare_node_for_it_and_refuses_what_would_do_nothing() -> None:
    bare = load_topology("middlebox_chain", {"mb_kind": "host", "mode": "bridge"})
    assert bare.nodes["mb"].kind == "host" and bare.nodes["mb"].engine == {}
    assert bare.addresses("mb") == {"eth0": [], "eth1": []}
    with pytest.raises(SpecError, match="mb_kind=host forwards nothing by itself: use mode=bridge"):
        load_topology("middlebox_chain", {"mb_kind": "host"})
    for param, value in (("loss", "1"), ("coalesce", "gro"), ("tso", "true")):
        with pytest.raises(SpecError, match="mb_kind=host runs no engine, so coalesce, tso and impairments"):
            load_topology("middlebox_chain", {"mb_kind": "host", "mode": "bridge", param: value})


def test_the_ceiling_counts_only_if_the_bare_forwarder_carried_what_iperf3_moved() -> None:
    _check_carried({"a_to_b": {"frames": 40_000, "bytes": 2_000_500_000, "dropped": 0}}, 2e9)
    with pytest.raises(RuntimeError, match="the bare forwarder carried 1999999999 bytes h1 -> h2, fewer than the "
                                           "2000000000 iperf3 moved"):
        _check_carried({"a_to_b": {"frames": 40_000, "bytes": 1_999_999_999, "dropped": 0}}, 2e9)
    with pytest.raises(RuntimeError, match="carried 0 bytes"):
        _check_carried({}, 2e9)
