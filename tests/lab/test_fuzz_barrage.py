"""A million fuzzed frames against a toe node under each exhaustion policy, then a 1 MB echo.

The frames come from the engine's own fuzzer (toe_engine.fuzz), made against an in-memory
twin of t1 with t1's addresses, and are sent raw from h1. The barrage fills t1's small table
with fuzz connections; then a real kernel client on h1 echoes 1 MB byte-exact. Under
`fallback`, with the table still full, that flow must be handed to t1's kernel and served
there (its TCP PassiveOpens counter moves, the engine offloads nothing new); under the other
policies the table is first left to drain and the engine serves the flow itself.
"""
from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable

import pytest

from lab.lab import Lab
from lab.pytest_plugin import MakeLab
from lab.tools import echo_exact
from toe_engine.codec import build_tcp_frame
from toe_engine.fuzz.runner import POLICIES, Identity, corpus
from toe_engine.io import in_netns
from toe_engine.segment import SYN, Segment, TcpOptions

CLIENT_IPS = ("10.0.7.1", "fd00:7::1")
ENGINE_IPS = ("10.0.7.2", "fd00:7::2")
CAPACITY = 8
CORPUS = 40_000  # distinct frames, cycled to BARRAGE
BARRAGE = 1_000_000
BATCH = 4_000  # frames sent before a ping through the engine waits for it to have read them
ECHO = 7
ECHO_BYTES = 1_000_000


@pytest.fixture(scope="module")
def frames() -> list[bytes]:
    """One corpus for every policy; each lab patches in its own MACs."""
    placeholder = Identity(client_mac=b"\x02" + bytes(5), server_mac=b"\x02" + bytes(4) + b"\x01",
                           client_ips=tuple(socket.inet_pton(socket.AF_INET6 if ":" in a else socket.AF_INET, a)
                                            for a in CLIENT_IPS),
                           server_ips=tuple(socket.inet_pton(socket.AF_INET6 if ":" in a else socket.AF_INET, a)
                                            for a in ENGINE_IPS))
    return corpus(CORPUS, placeholder, seed=20261201)


def _mac(lab: Lab, node: str) -> bytes:
    link = json.loads(lab.node(node).run(["ip", "-j", "link", "show", "dev", "eth0"], check=True).stdout)[0]
    return bytes.fromhex(link["address"].replace(":", ""))


def _passive_opens(lab: Lab) -> int:
    """t1's kernel TCP PassiveOpens: connections its own stack accepted."""
    lines = [line.split() for line in lab.node("t1").run(["cat", "/proc/net/snmp"], check=True).stdout.splitlines()
             if line.startswith("Tcp:")]
    return int(lines[1][lines[0].index("PassiveOpens")])


def _wait(condition: Callable[[], bool], what: str, timeout_s: float) -> None:
    """Poll a counter read until it holds (an event, not a guess at a duration)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)


def _through_the_engine(lab: Lab) -> None:
    """A ping answered through the engine comes after everything queued before it: a barrier."""
    lab.node("h1").run(["ping", "-n", "-q", "-c", "1", "-W", "30", ENGINE_IPS[0]], check=True, timeout=60)


def _barrage(lab: Lab, frames: list[bytes]) -> tuple[int, int, int]:
    """Send frames from h1 until the link has taken BARRAGE of them, a batch at a time.

    Returns (frames the link took, frames the engine read, frames its socket dropped); frames
    the link refuses (shorter than a header, longer than the MTU) are skipped, not counted.
    """
    engine = lab.engine("t1")
    header = _mac(lab, "t1") + _mac(lab, "h1")
    wire = [header + frame[12:] for frame in frames]

    def taken_in() -> tuple[int, int]:
        stats = engine.stats()
        return stats["counters"]["rx_frames"], stats["drivers"]["eth0"]["kernel_drops"]

    read0, dropped0 = taken_in()
    taken = i = 0
    with in_netns(lab.node("h1").netns):
        sender = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    with sender:
        sender.bind(("eth0", 0))
        while taken < BARRAGE:
            batch_end = min(taken + BATCH, BARRAGE)
            while taken < batch_end:
                try:
                    sender.send(wire[i % len(wire)])
                    taken += 1
                except OSError:
                    pass
                i += 1
            _through_the_engine(lab)
    read, dropped = taken_in()
    return taken, read - read0, dropped - dropped0


def _fill_table(lab: Lab) -> None:
    """SYNs from on-link addresses nobody has: their connections wait out their SYN-ACK retries."""
    header = (_mac(lab, "t1"), _mac(lab, "h1"))
    with in_netns(lab.node("h1").netns):
        sender = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    with sender:
        sender.bind(("eth0", 0))
        for i in range(CAPACITY):
            syn = Segment(33000 + i, ECHO, 1000 + i, 0, SYN, 65535, b"", TcpOptions(mss=1460))
            sender.send(bytes(build_tcp_frame(header[1], header[0], bytes([10, 0, 7, 100 + i]),
                                              socket.inet_aton(ENGINE_IPS[0]), syn)))
    _through_the_engine(lab)


def _echo(lab: Lab, addr: str) -> dict[str, object]:
    return echo_exact(lab, "h1", addr, ECHO, ECHO_BYTES)


@pytest.mark.root
@pytest.mark.slow
@pytest.mark.parametrize("policy", POLICIES)
def test_a_million_fuzzed_frames_then_a_1mb_echo_byte_exact(make_lab: MakeLab, frames: list[bytes], policy: str,
                                                           record_property: Callable[[str, object], None]) -> None:
    lab = make_lab("toe_pair", capacity=CAPACITY, policy=policy)
    engine = lab.engine("t1")
    started = time.monotonic()
    taken, read, dropped = _barrage(lab, frames)
    seconds = time.monotonic() - started
    print(f"{policy}: {taken} of {BARRAGE} frames taken by the link, {read} read by the engine, {dropped} dropped "
          f"by its socket, in {seconds:.1f} s")
    record_property("barrage", {"taken": taken, "read": read, "dropped": dropped, "seconds": round(seconds, 1)})
    stats = engine.stats()
    seen, gauges = stats["counters"], stats["gauges"]
    assert taken == BARRAGE and read >= 0.85 * taken, "precondition: most of the barrage reached the engine"
    assert seen.get("rx_engine_errors", 0) == 0 and seen.get("app_errors", 0) == 0
    assert seen["rx_malformed"] > 100_000 and seen["conn_offloaded"] >= CAPACITY  # it was a barrage, the table filled

    if policy == "fallback":
        if gauges["table_occupancy"] < CAPACITY:  # the barrage's own may have been reset by its RSTs
            _fill_table(lab)
        assert engine.stats()["gauges"]["table_occupancy"] == CAPACITY, "precondition: the table is full"
    else:  # the other policies refuse while full: let the fuzz connections' SYN-ACK retries run out first
        _wait(lambda: engine.stats()["gauges"]["table_occupancy"] < CAPACITY, "a free slot in the table", 60)
    before, opens_before = engine.stats()["counters"], _passive_opens(lab)
    result = _echo(lab, ENGINE_IPS[0])
    after, opens_after = engine.stats()["counters"], _passive_opens(lab)

    assert result == {"exact": True, "received": ECHO_BYTES}
    if policy == "fallback":  # handed to t1's kernel, and really served there
        assert after["conn_fallback"] - before["conn_fallback"] == 1
        assert after["conn_offloaded"] == before["conn_offloaded"]
        assert opens_after - opens_before == 1
    else:  # served by the engine
        assert after["conn_offloaded"] - before["conn_offloaded"] == 1
        assert opens_after == opens_before
    assert engine.stats()["counters"].get("rx_engine_errors", 0) == 0
