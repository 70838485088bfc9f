"""`busy_poll` (µs, net.core.busy_poll's rule) on a live engine endpoint: set at run time, it makes
the engine's loop take frames by polling (counted as `busy_polled`) and changes nothing else: the
echo stays byte-exact, and with it back at 0 the loop sleeps again. A bad value is refused with the
field named and the setting unchanged."""
from __future__ import annotations

import pytest

from lab.engine_nodes import EngineError, EngineHandle
from lab.lab import Lab
from lab.pytest_plugin import MakeLab
from lab.tools import echo_exact

pytestmark = pytest.mark.root

ENGINE_IP, ECHO = "10.0.7.2", 7
SIZE = 4_000_000


def echo_polled(lab: Lab, engine: EngineHandle) -> tuple[bool, int]:
    """One echo of SIZE random bytes from h1: (byte-exact, wake-ups the busy poll served meanwhile)."""
    before = engine.stats()["counters"].get("busy_polled", 0)
    result = echo_exact(lab, "h1", ENGINE_IP, ECHO, SIZE)
    return result["exact"] is True and result["received"] == SIZE, engine.stats()["counters"]["busy_polled"] - before


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
