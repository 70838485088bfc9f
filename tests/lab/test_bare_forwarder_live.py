"""The bare user-space forwarder on real namespaces: it alone carries TCP between h1 and h2, byte-exact,
and stops without leaving a process; a missing port is refused before "ready"."""
from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import threading
from collections.abc import Callable

import pytest

from lab.lab import Lab
from lab.tools import wait_for_line
from toelab.benches.bare_forwarder import BareForwarder

pytestmark = pytest.mark.root

ECHO_PORT = 7
TRANSFER_BYTES = 16 * 1024 * 1024


def echo_through(lab: Lab, data: bytes) -> bytes:
    """Send `data` from h1 to an echo service on h2 over kernel TCP; what came back."""
    service = lab.node("h2").popen([sys.executable, "-m", "lab.services", f"echo={ECHO_PORT}"], stdout=subprocess.PIPE)
    try:
        wait_for_line(service, "ready", what="echo service on h2")
        with lab.node("h1").inside():
            sock = socket.create_connection((lab.address("h2"), ECHO_PORT), timeout=30)
        with sock:
            sender = threading.Thread(target=sock.sendall, args=(data,))
            sender.start()
            back = bytearray()
            while len(back) < len(data):
                chunk = sock.recv(1 << 20)
                if not chunk:
                    break
                back += chunk
            sender.join(timeout=30)
        return bytes(back)
    finally:
        service.terminate()
        service.wait(timeout=10)


@pytest.mark.parametrize(("spin", "busy_poll_us"), [(False, 0), (True, 0), (False, 100)],
                         ids=["sleeping", "spinning", "busy_polling"])
def test_bare_forwarder_alone_carries_tcp_byte_exact_and_leaves_no_process(make_lab: Callable[..., Lab],
                                                                           spin: bool, busy_poll_us: int) -> None:
    lab = make_lab("middlebox_chain", mb_kind="host", mode="bridge")
    forwarder = BareForwarder(lab, spin=spin, busy_poll_us=busy_poll_us)
    data = random.Random(7).randbytes(TRANSFER_BYTES)
    try:
        back = echo_through(lab, data)
    finally:
        carried = forwarder.stop()
    assert len(back) == len(data) and back == data
    assert forwarder.proc.returncode == 0, forwarder.stderr
    # every byte crossed it both ways (frames carry their Ethernet, IP and TCP headers and virtio-net header too)
    assert carried["a_to_b"]["bytes"] > TRANSFER_BYTES and carried["b_to_a"]["bytes"] > TRANSFER_BYTES, carried
    assert carried["a_to_b"]["frames"] > 0 and carried["a_to_b"]["dropped"] == 0, carried
    with pytest.raises(ProcessLookupError):
        os.kill(forwarder.pid, 0)


def test_without_the_bare_forwarder_nothing_crosses_and_a_missing_port_is_refused(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab("middlebox_chain", mb_kind="host", mode="bridge")
    assert lab.node("h1").run(["ping", "-c", "1", "-W", "1", lab.address("h2")]).returncode != 0
    with pytest.raises(RuntimeError, match="bare forwarder on node mb did not become ready: .*"
                                           "bare_forwarder: interface 'eth9' does not exist"):
        BareForwarder(lab, ports=("eth0", "eth9"))


def test_a_port_that_goes_down_while_forwarding_ends_it_with_one_sentence(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab("middlebox_chain", mb_kind="host", mode="bridge")
    forwarder = BareForwarder(lab)
    lab.node("mb").run(["ip", "link", "set", "dev", "eth1", "down"], check=True)
    lab.node("h1").run(["ping", "-c", "1", "-W", "1", lab.address("h2")])  # its ARP request is read on eth0
    forwarder.proc.wait(timeout=10)
    assert forwarder.stop() == {}
    assert (forwarder.proc.returncode, forwarder.stderr) == (
        1, "bare_forwarder: forwarding between 'eth0' and 'eth1' failed: Network is down")
