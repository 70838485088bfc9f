"""`busy_poll` (µs, net.core.busy_poll's rule) on a live engine endpoint: set at run time, it makes
the engine's loop take frames by polling (counted as `busy_polled`) and changes nothing else: the
echo stays byte-exact, and with it back at 0 the loop sleeps again. A bad value is refused with the
field named and the setting unchanged."""
from __future__ import annotations

import json
import sys

import pytest

from lab.engine_nodes import EngineError, EngineHandle
from lab.lab import Lab
from lab.pytest_plugin import MakeLab

pytestmark = pytest.mark.root

ENGINE_IP, ECHO = "10.0.7.2", 7
SIZE = 4_000_000
ECHO_CLIENT = r"""
import hashlib, json, os, socket, sys, threading
data = os.urandom(int(sys.argv[3]))
sock = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
got = hashlib.sha256()
def read():
    while chunk := sock.recv(1 << 20):
        got.update(chunk)
reader = threading.Thread(target=read)
reader.start()
sock.sendall(data)
sock.shutdown(socket.SHUT_WR)
reader.join()
print(json.dumps({"sent": hashlib.sha256(data).hexdigest(), "got": got.hexdigest()}))
"""


def echo_polled(lab: Lab, engine: EngineHandle) -> tuple[bool, int]:
    """One echo of SIZE random bytes from h1: (byte-exact, wake-ups the busy poll served meanwhile)."""
    before = engine.stats()["counters"].get("busy_polled", 0)
    done = lab.node("h1").run([sys.executable, "-c", ECHO_CLIENT, ENGINE_IP, str(ECHO), str(SIZE)],
                              timeout=120, check=True)
    result = json.loads(done.stdout)
    return result["sent"] == result["got"], engine.stats()["counters"]["busy_polled"] - before


def test_busy_poll_serves_wake_ups_by_polling_and_leaves_the_data_alone(make_lab: MakeLab) -> None:
    lab = make_lab("toe_pair")
    engine = lab.engine("t1")
    assert engine.config()["busy_poll"] == 0  # off by default: an idle engine sleeps

    exact, polled = echo_polled(lab, engine)
    assert exact and polled == 0

    assert engine.set(busy_poll=200)["busy_poll"] == 200
    exact, polled = echo_polled(lab, engine)
    assert exact and polled > 0, f"busy_poll 200 µs: {polled} wake-ups served by polling"

    with pytest.raises(EngineError, match="busy_poll must be whole microseconds"):
        engine.set(busy_poll=-5)
    assert engine.config()["busy_poll"] == 200

    assert engine.set(busy_poll=0)["busy_poll"] == 0
    exact, polled = echo_polled(lab, engine)
    assert exact and polled == 0
