"""The middlebox process on real namespaces: bridge and router modes, impairments, LRO vs GRO.

Each test builds a lab (h1 - mb - h2), starts `toe_engine.runtime.middlebox_main` inside node
`mb`, waits for its "ready" line, and moves a kernel TCP transfer from h1 to h2 whose SHA-256
is compared end to end. Counters come from the control socket. Throughput figures are
printed and recorded as JUnit properties.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import select
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.lab import Lab
from lab.spec import parse_spec
from toe_engine.runtime.control import control_request

pytestmark = pytest.mark.root

TRANSFER_BYTES = 20 * 1024 * 1024
THROUGHPUT_BYTES = 1024 * 1024 * 1024
PORT = 5301
READY_TIMEOUT = 15.0

BRIDGE_TOPOLOGY = """
name: middlebox_bridge
nodes:
  h1:
    kind: host
    interfaces:
      eth0: {addresses: [10.0.3.1/24]}
  mb:
    kind: host
    interfaces:
      eth0: {}
      eth1: {}
  h2:
    kind: host
    interfaces:
      eth0: {addresses: [10.0.3.2/24]}
links:
  - endpoints: ["h1:eth0", "mb:eth0"]
  - endpoints: ["mb:eth1", "h2:eth0"]
"""

RECEIVER = r"""
import hashlib, json, socket, sys, time
addr, port, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
ls = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((addr, port))
ls.listen(1)
print("ready", flush=True)
ls.settimeout(limit)
conn, _ = ls.accept()
start = time.monotonic()
deadline = start + limit
digest, total, buf = hashlib.sha256(), 0, bytearray(1 << 20)
view = memoryview(buf)
while True:
    left = deadline - time.monotonic()
    if left <= 0:
        break
    conn.settimeout(left)
    try:
        n = conn.recv_into(buf)
    except socket.timeout:
        break
    if not n:
        break
    digest.update(view[:n])
    total += n
print(json.dumps({"bytes": total, "sha256": digest.hexdigest(), "seconds": time.monotonic() - start}), flush=True)
"""

SENDER = r"""
import random, socket, sys
addr, port, size, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
block = random.Random(seed).randbytes(1 << 20)
s = socket.create_connection((addr, port))
sent = 0
while sent < size:
    chunk = block[: min(len(block), size - sent)]
    s.sendall(chunk)
    sent += len(chunk)
s.shutdown(socket.SHUT_WR)
s.recv(1)
s.close()
"""


def expected_digest(size: int, seed: int) -> str:
    block = random.Random(seed).randbytes(1 << 20)
    digest = hashlib.sha256()
    sent = 0
    while sent < size:
        chunk = block[: min(len(block), size - sent)]
        digest.update(chunk)
        sent += len(chunk)
    return digest.hexdigest()


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """One stdout line of a child, or "" if none came within `timeout` (no sleeping)."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline().strip() if ready else ""


class MiddleboxProcess:
    """The middlebox running in node `mb`, with its control socket."""

    def __init__(self, lab: Lab, config: dict[str, Any], control: Path) -> None:
        self.control = str(control)
        argv = [sys.executable, "-m", "toe_engine.runtime.middlebox_main",
                "--config", json.dumps(config), "--control", self.control]
        self.proc: subprocess.Popen[str] = lab.node("mb").popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = read_line(self.proc, READY_TIMEOUT)
        if line != "ready":
            self.proc.kill()
            _, err = self.proc.communicate()
            raise AssertionError(f"middlebox did not get ready (got {line!r}): {err[-2000:]}")

    def request(self, request: dict[str, Any]) -> dict[str, Any]:
        answer = control_request(self.control, request)
        assert answer["ok"], answer
        return answer

    def counters(self, direction: str | None = None) -> dict[str, int]:
        stats = self.request({"cmd": "stats"})
        return stats["counters"] if direction is None else stats["directions"][direction]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(timeout=10)


@pytest.fixture
def start_middlebox(tmp_path: Path) -> Iterator[Callable[[Lab, dict[str, Any]], MiddleboxProcess]]:
    started: list[MiddleboxProcess] = []

    def start(lab: Lab, config: dict[str, Any]) -> MiddleboxProcess:
        process = MiddleboxProcess(lab, config, tmp_path / f"mb{len(started)}.sock")
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def bridge_lab(make_lab: Callable[..., Lab]) -> Lab:
    return make_lab(parse_spec(BRIDGE_TOPOLOGY, "test_middlebox.py"))


def transfer(lab: Lab, dst: str, size: int = TRANSFER_BYTES, seed: int = 1, limit: float = 60.0) -> dict[str, Any]:
    """Send `size` bytes from h1 to h2 over kernel TCP; what h2 received within `limit` seconds."""
    receiver = lab.node("h2").popen([sys.executable, "-c", RECEIVER, dst, str(PORT), str(limit)],
                                    stdout=subprocess.PIPE, text=True)
    assert read_line(receiver, 10) == "ready"
    sender = lab.node("h1").popen([sys.executable, "-c", SENDER, dst, str(PORT), str(size), str(seed)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    line = read_line(receiver, limit + 15)
    receiver.wait(timeout=10)
    if sender.poll() is None:
        sender.kill()
    sender.wait(timeout=10)
    assert line, "the receiver reported nothing"
    result: dict[str, Any] = json.loads(line)
    result["complete"] = result["bytes"] == size and result["sha256"] == expected_digest(size, seed)
    result["gbps"] = result["bytes"] * 8 / max(result["seconds"], 1e-9) / 1e9
    return result


def record(property_recorder: Callable[[str, object], None], name: str, value: float) -> None:
    print(f"{name}: {value:.2f} Gbit/s")
    property_recorder(name, round(value, 3))


def pcap_frames(path: Path) -> list[bytes]:
    """The frames of a classic pcap file (what tcpdump -w writes)."""
    data = path.read_bytes()
    magic = data[:4]
    order = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    record_header = struct.Struct(order + "IIII")
    frames, offset = [], 24
    while offset + 16 <= len(data):
        _, _, caplen, _ = record_header.unpack_from(data, offset)
        frames.append(data[offset + 16:offset + 16 + caplen])
        offset += 16 + caplen
    return frames


# --- 1. bridge and router carry TCP byte-exact --------------------------------------------

def test_bridge_carries_tcp_byte_exact(bridge_lab: Lab, start_middlebox: Any, record_property: Any) -> None:
    mb = start_middlebox(bridge_lab, {"mode": "bridge"})
    result = transfer(bridge_lab, "10.0.3.2")
    assert result["complete"], result
    stats = mb.request({"cmd": "stats"})
    assert stats["directions"]["a_to_b"]["fwd_frames"] > 0 and stats["directions"]["b_to_a"]["fwd_frames"] > 0
    assert stats["directions"]["a_to_b"]["fwd_bytes"] >= TRANSFER_BYTES
    assert stats["drivers"]["eth1"]["tx_frames"] == stats["directions"]["a_to_b"]["fwd_frames"]
    assert stats["drivers"]["eth0"]["rx_frames"] >= stats["directions"]["a_to_b"]["fwd_frames"]
    record(record_property, "bridge_transfer_gbps", result["gbps"])


@pytest.mark.parametrize("busy_poll", [0, 200], ids=["sleeping", "busy_polling"])
def test_busy_poll_takes_frames_by_polling_and_carries_tcp_byte_exact(bridge_lab: Lab, start_middlebox: Any,
                                                                       busy_poll: int) -> None:
    mb = start_middlebox(bridge_lab, {"mode": "bridge", "busy_poll": busy_poll})
    result = transfer(bridge_lab, "10.0.3.2")
    assert result["complete"], result
    counters = mb.counters()
    assert counters["fwd_bytes"] >= TRANSFER_BYTES
    assert (counters["busy_polled"] > 0) is bool(busy_poll), counters["busy_polled"]


def test_router_carries_tcp_byte_exact(make_lab: Callable[..., Lab], start_middlebox: Any) -> None:
    lab = make_lab("middlebox_chain", mb_kind="router")
    mb = start_middlebox(lab, {"mode": "router"})
    assert lab.node("mb").run("sysctl -n net.ipv4.ip_forward net.ipv6.conf.all.forwarding").stdout.split() == ["0", "0"]
    result = transfer(lab, lab.address("h2"))
    assert result["complete"], result
    counters = mb.counters()
    assert counters["fwd_frames"] > 0 and counters["fwd_bytes"] >= TRANSFER_BYTES
    assert counters["arp_requests_sent"] >= 1 and counters["mtu_drops"] == 0 and counters["no_route"] == 0
    # Every frame is patched where it was read but those that waited for the next hop's MAC.
    slow = counters["fwd_frames"] - counters["fwd_in_place"]
    assert 1 <= slow <= 16, counters
    v6 = transfer(lab, lab.address("h2", 6), size=TRANSFER_BYTES // 4, seed=2)
    assert v6["complete"], v6
    after = mb.counters()
    assert after["fwd_bytes"] - counters["fwd_bytes"] >= TRANSFER_BYTES // 4
    assert 1 <= (after["fwd_frames"] - after["fwd_in_place"]) - slow <= 16, after
    ping = lab.node("h1").run(["ping", "-c", "2", "-W", "1", "-t", "1", lab.address("h2")])
    assert "Time to live exceeded" in ping.stdout and mb.counters()["ttl_expired"] == 2


# --- 2. impairments: byte-exact, counted, reproducible -----------------------------------------

IMPAIRED = {"loss": 2, "reorder": 2, "duplicate": 1, "delay_ms": 1}


def impaired_run(lab: Lab, start_middlebox: Any, seed: int) -> tuple[dict[str, Any], dict[str, int], list[bytes], bytes]:
    h1_mac = lab.node("h1").run(["ip", "-br", "link", "show", "eth0"], check=True).stdout.split()[2]
    direction = {"impairments": IMPAIRED, "seed": seed}
    mb = start_middlebox(lab, {"mode": "bridge", "a_to_b": direction, "b_to_a": {**direction, "seed": seed + 1}})
    capture = lab.capture("h2", "eth0", f"ether src {h1_mac}")  # what mb forwards, not mb's own frames
    result = transfer(lab, "10.0.3.2", seed=seed)
    counters = mb.counters("a_to_b")
    mb.stop()
    frames = pcap_frames(capture.stop())
    return result, counters, frames, capture.summary.encode()


def test_impairments_keep_transfer_exact_and_match_capture(bridge_lab: Lab, start_middlebox: Any) -> None:
    for node in ("h1", "h2"):
        bridge_lab.set_features(node, "eth0", tso=False, gso=False)
    runs = [impaired_run(bridge_lab, start_middlebox, seed=11) for _ in range(2)]
    for result, counters, frames, summary in runs:
        assert result["complete"], result
        assert b"\n0 packets dropped by kernel" in summary, summary
        assert counters["impair_dropped"] > 0 and counters["impair_reordered"] > 0
        assert counters["impair_duplicated"] > 0
        assert len(frames) == counters["fwd_frames"] == counters["impair_passed"]
        seen: set[bytes] = set()
        duplicates = 0
        for frame in frames:
            if frame in seen:
                duplicates += 1
            seen.add(frame)
        lost_copies = counters["impair_duplicated"] - duplicates
        assert 0 <= lost_copies <= max(3, counters["impair_duplicated"] // 10), (duplicates, counters)
    rates = [c["impair_dropped"] / c["impair_submitted"] for _, c, _, _ in runs]
    assert abs(rates[0] - rates[1]) < 0.01 and all(0.01 < r < 0.03 for r in rates), rates


# --- 3. LRO vs GRO on a routed path with a smaller egress MTU ------------------------------

def test_lro_stalls_and_gro_completes_behind_smaller_egress_mtu(
    make_lab: Callable[..., Lab], start_middlebox: Any, record_property: Any
) -> None:
    lab = make_lab("middlebox_chain", mb_kind="router", egress_mtu=1400)
    lro = start_middlebox(lab, {"mode": "router", "a_to_b": {"coalesce": "lro"}})
    lro_result = transfer(lab, lab.address("h2"), limit=8.0)
    lro_counters = lro.counters()
    lro.stop()
    gro = start_middlebox(lab, {"mode": "router", "a_to_b": {"coalesce": "gro"}})
    gro_result = transfer(lab, lab.address("h2"))
    gro_counters = gro.counters()
    record(record_property, "lro_router_gbps", lro_result["gbps"])
    print(f"lro delivered {lro_result['bytes']} of {TRANSFER_BYTES} bytes in {lro_result['seconds']:.1f} s")
    record_property("lro_router_bytes", lro_result["bytes"])
    record(record_property, "gro_router_gbps", gro_result["gbps"])
    assert not lro_result["complete"] and lro_result["bytes"] < TRANSFER_BYTES // 4, lro_result
    assert lro_counters["lro_merged"] > 0
    assert lro_counters["mtu_drops"] > 0 and lro_counters["icmp_frag_needed_sent"] == lro_counters["mtu_drops"]
    assert gro_result["complete"], gro_result
    assert gro_result["gbps"] > 20 * lro_result["gbps"]
    # Behind GRO (h1 knows the path MTU from the LRO run), the super-frames are routed where they were read.
    assert gro_counters["fwd_in_place"] >= gro_counters["fwd_frames"] // 2, gro_counters


# --- 4. the control socket --------------------------------------------------------------------

def ping_loss(lab: Lab, count: int) -> float:
    out = lab.node("h1").run(["ping", "-q", "-c", str(count), "-i", "0.005", "-W", "1", "10.0.3.2"], timeout=60).stdout
    return float(out.split("% packet loss")[0].rsplit(" ", 1)[1])


def test_control_socket_reports_counters_and_set_changes_loss(bridge_lab: Lab, start_middlebox: Any) -> None:
    mb = start_middlebox(bridge_lab, {"mode": "bridge"})
    assert ping_loss(bridge_lab, 50) == 0
    before = mb.request({"cmd": "stats"})
    assert before["counters"]["fwd_frames"] >= 100 and set(before["drivers"]) == {"eth0", "eth1"}
    answer = mb.request({"cmd": "set", "direction": "a_to_b", "impairments": {"loss": 50}, "seed": 3})
    assert answer["config"]["a_to_b"]["impairments"]["loss"] == 50
    assert mb.request({"cmd": "config"})["config"]["b_to_a"]["impairments"]["loss"] == 0
    assert 25 <= ping_loss(bridge_lab, 200) <= 75
    after = mb.counters("a_to_b")
    assert after["impair_submitted"] >= 200 and 60 <= after["impair_dropped"] <= 140
    bad = control_request(mb.control, {"cmd": "set", "impairments": {"loss": 150}})
    assert bad["ok"] is False and "loss" in bad["error"]
    assert control_request(mb.control, {"cmd": "nope"})["ok"] is False


# --- 5. SIGTERM -------------------------------------------------------------------------------

def test_sigterm_stops_cleanly(bridge_lab: Lab, start_middlebox: Any) -> None:
    mb = start_middlebox(bridge_lab, {"mode": "bridge"})
    assert os.path.exists(mb.control)
    pid = mb.proc.pid
    assert mb.stop() == 0
    assert not os.path.exists(mb.control)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


# --- throughput figures -----------------------------------------------------------------------

def test_bridge_throughput_gso_and_gro(bridge_lab: Lab, start_middlebox: Any, record_property: Any) -> None:
    mb = start_middlebox(bridge_lab, {"mode": "bridge"})
    gso = transfer(bridge_lab, "10.0.3.2", size=THROUGHPUT_BYTES)
    mb.stop()
    record(record_property, "bridge_gso_gbps", gso["gbps"])
    assert gso["complete"] and gso["gbps"] >= 3.0, gso
    bridge_lab.set_features("h1", "eth0", tso=False, gso=False)
    mb = start_middlebox(bridge_lab, {"mode": "bridge", "a_to_b": {"coalesce": "gro"}})
    gro = transfer(bridge_lab, "10.0.3.2", size=THROUGHPUT_BYTES // 4)
    counters = mb.counters("a_to_b")
    record(record_property, "bridge_gro_mss_gbps", gro["gbps"])
    assert gro["complete"] and counters["gro_merged"] > 0, (gro, counters)
