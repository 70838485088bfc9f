"""Receive GRO of the engine endpoint on real namespaces: h1's kernel sends per-MSS frames (offloads
off) to the engine's echo service on t1, once with the engine's gro on and once off, read one frame
at a time and through the TPACKET_V3 ring (and over IPv6). Both deliver the same bytes (SHA-256 of what went and
what came back), gro on merged frames and gro off none, and the engine counts the wire's frames
either way."""
from __future__ import annotations

import pytest

from lab.pytest_plugin import MakeLab
from scenarios.transfer import echo_bytes

pytestmark = pytest.mark.root

ENGINE_IP, ENGINE_IP6, ECHO = "10.0.7.2", "fd00:7::2", 7
SIZE = 8 * 1024 * 1024
LIMIT_S = 60.0


@pytest.mark.parametrize("rx_ring, address", [(0, ENGINE_IP), (4096, ENGINE_IP), (4096, ENGINE_IP6)],
                         ids=["reads", "ring", "ring-ipv6"])
def test_echo_is_byte_exact_with_gro_on_and_off(make_lab: MakeLab, rx_ring: int, address: str) -> None:
    lab = make_lab("toe_pair", offloads=False, rx_ring=rx_ring)
    engine = lab.engine("t1")
    assert engine.config()["gro"] is False  # offloads=false: everything per MSS, GRO included
    merged: dict[str, int] = {}
    for gro in ("on", "off"):
        assert engine.set(gro=gro)["gro"] is (gro == "on")
        before = engine.stats()
        echo = echo_bytes(lab, "h1", address, ECHO, SIZE, seed=7, limit_s=LIMIT_S)  # the same bytes both times
        after = engine.stats()
        assert echo.exact, f"gro {gro}: {echo.bytes} of {SIZE} bytes came back, or not the ones sent"
        grew = {name: after["counters"].get(name, 0) - before["counters"].get(name, 0) for name in after["counters"]}
        wire_frames = after["drivers"]["eth0"]["rx_frames"] - before["drivers"]["eth0"]["rx_frames"]
        assert grew["rx_frames"] == wire_frames  # GRO does not change what the engine says it received
        assert wire_frames >= SIZE // 1460  # per-MSS frames (1440 B over IPv6), as offloads=false promises
        merged[gro] = grew["gro_merged"]
    assert merged["off"] == 0
    assert merged["on"] > 0, "gro on, but no frame was merged"
