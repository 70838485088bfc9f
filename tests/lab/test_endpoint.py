"""The engine as a `toe` endpoint on real namespaces: h1 (kernel client) - t1 (engine + t1's kernel).

Transfers are checked byte for byte (SHA-256 of what went and what came back), the fallback,
deny and syncookie policies by the engine's counters and by the kernel's own sockets in t1,
the malformed-frame barrage by the engine's drop counters, and teardown by what is left in
the node and on the machine. Throughput figures are printed and recorded as JUnit properties.
"""
from __future__ import annotations

import collections
import contextlib
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.endpoint_nodes import tap_exists
from lab.engine_nodes import EngineHandle, runtime_dir
from lab.errors import SpecError
from lab.lab import Lab
from lab.pytest_plugin import MakeLab, host_state, leftovers_since
from lab.render import load_topology
from lab.spec import parse_spec
from lab.state import is_alive
from lab.tools import iperf, wait_for_line
from toe_engine.checksum import internet_checksum, transport_checksum
from toe_engine.codec import parse_frame
from toe_engine.io import in_netns

MB = 1_000_000
BULK_BYTES = 100 * MB
CLIENT_IP, ENGINE_IP = "10.0.7.1", "10.0.7.2"
ECHO, DISCARD = 7, 9
BARRAGE_FRAMES = 100_000
BARRAGE_BATCH = 2_000
CHECKSUM_DAMAGE = (4, 11)  # indexes in malformed_frames() of the bad-checksum kinds
# One queue in the engine's process, and two queue processes behind RSS: the same verdicts.
QUEUES, QUEUE_IDS = (0, 2), ("1queue", "2queues")

BULK_CLIENT = r"""
import hashlib, json, os, socket, sys, threading, time
addr, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = os.urandom(size)
sock = socket.create_connection((addr, port), timeout=120)
got, received = hashlib.sha256(), [0]
def read():
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    while n := sock.recv_into(buf):
        got.update(view[:n])
        received[0] += n
reader = threading.Thread(target=read)
start = time.monotonic()
reader.start()
sock.sendall(data)
sock.shutdown(socket.SHUT_WR)
reader.join()
seconds = time.monotonic() - start
print(json.dumps({"sent_sha256": hashlib.sha256(data).hexdigest(), "got_sha256": got.hexdigest(),
                  "received": received[0], "seconds": seconds}))
"""

# Opens `count` connections at once, echoes a random message on each, prints one result per
# connection ("ok", "refused", "timeout", ...) once all have answered; with "hold" it keeps
# them open until a line arrives on stdin, so the table is full while the test looks.
CONCURRENT_CLIENT = r"""
import errno, json, os, socket, sys, threading
addr, port, count, hold, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "hold", int(sys.argv[5])
results = [None] * count
answered = threading.Barrier(count + 1)
release = threading.Event()
def one(i):
    payload = os.urandom(size)
    sock = None
    try:
        sock = socket.create_connection((addr, port), timeout=30)
        sock.sendall(payload)
        got = bytearray()
        while len(got) < size and (chunk := sock.recv(65536)):
            got += chunk
        results[i] = "ok" if got == payload else f"mismatch after {len(got)} bytes"
    except OSError as exc:
        results[i] = {errno.ECONNREFUSED: "refused", errno.ECONNRESET: "reset"}.get(exc.errno, f"error {exc}")
    if hold:
        answered.wait()
        release.wait()
    if sock is not None:
        sock.close()
    if not hold:
        answered.wait()
threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
for thread in threads:
    thread.start()
answered.wait()
print(json.dumps(results), flush=True)
if hold:
    sys.stdin.readline()
release.set()
for thread in threads:
    thread.join()
"""


# --- helpers -------------------------------------------------------------------------------------

@pytest.fixture
def scripts(tmp_path: Path) -> dict[str, Path]:
    out = {}
    for name, text in (("bulk", BULK_CLIENT), ("concurrent", CONCURRENT_CLIENT)):
        path = tmp_path / f"{name}.py"
        path.write_text(text)
        out[name] = path
    return out


def counters(handle: EngineHandle) -> dict[str, int]:
    return handle.stats()["counters"]


def bulk(lab: Lab, script: Path, port: int, size: int = BULK_BYTES, addr: str = ENGINE_IP) -> dict[str, Any]:
    """Run the bulk client on h1 against addr:port (t1 by default); its JSON result plus Gbit/s."""
    done = lab.node("h1").run([sys.executable, str(script), addr, str(port), str(size)], timeout=600)
    assert done.ok, done.stderr[-800:]
    result: dict[str, Any] = json.loads(done.stdout)
    result["gbit_s"] = size * 8 / result["seconds"] / 1e9
    return result


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    """Poll `condition` (a counter read) until it holds; the wait is for an event, not a guess."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def report(record_property: Callable[[str, object], None], name: str, gbit_s: float) -> None:
    print(f"{name}: {gbit_s:.3f} Gbit/s")
    record_property(name, round(gbit_s, 3))


def established_kernel_sockets(lab: Lab, port: int) -> int:
    out = lab.node("t1").run(["ss", "-Htn", "state", "established", f"( sport = :{port} )"], check=True).stdout
    return len(out.splitlines())


def engine_pids(lab: Lab) -> list[int]:
    return [p.pid for p in lab.record.processes if "endpoint_main" in p.argv]


@contextlib.contextmanager
def engine_log_on_failure(lab: Lab, node: str = "t1") -> Iterator[None]:
    """Re-raise a failure with the engine's log attached: teardown deletes the log with the lab."""
    try:
        yield
    except Exception as exc:
        log = runtime_dir(lab) / f"{node}.log"
        said = log.read_text(errors="replace")[-4000:] if log.exists() else "no log"
        raise AssertionError(f"{exc}\n--- engine log of {node} ---\n{said}") from exc


def exit_status(pid: int, timeout_s: float) -> int:
    """A child's exit status once it exits, leaving it for the lab to reap."""
    fd = os.pidfd_open(pid)
    try:
        ready, _, _ = select.select([fd], [], [], timeout_s)
    finally:
        os.close(fd)
    assert ready, f"process {pid} did not exit within {timeout_s} s"
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT).si_status


# --- spec validation (no root) -----------------------------------------------------------------

@pytest.mark.parametrize("engine, field", [
    ({"policy": "sometimes"}, "engine.policy"),
    ({"services": {"7": "telnet"}}, "engine.services"),
    ({"wire": "eth9"}, "engine.wire"),
    ({"addresses": ["10.0.7.9"]}, "engine.addresses"),
    ({"tcp": {"window": 5}}, "engine.tcp"),
])
def test_bad_engine_settings_are_refused_before_building(engine: dict[str, Any], field: str) -> None:
    text = (
        "name: bad_toe\nnodes:\n  h1:\n    interfaces: {eth0: {addresses: [10.0.7.1/24]}}\n"
        f"  t1:\n    kind: toe\n    interfaces: {{eth0: {{addresses: [10.0.7.2/24]}}}}\n    engine: {json.dumps(engine)}\n"
        'links:\n  - endpoints: ["h1:eth0", "t1:eth0"]\n')
    with pytest.raises(SpecError) as raised:
        parse_spec(text, "bad_toe.yaml")
    assert field in str(raised.value) and "line 8" in str(raised.value)


# --- bulk transfers ----------------------------------------------------------------------------

@pytest.mark.root
@pytest.mark.parametrize("offloads", [True, False], ids=["offloads_on", "offloads_off"])
def test_100mb_echo_and_discard_byte_exact(make_lab: MakeLab, scripts: dict[str, Path], offloads: bool,
                                           record_property: Callable[[str, object], None]) -> None:
    lab = make_lab("toe_pair", offloads=offloads)
    engine = lab.engine("t1")
    features = lab.features("h1", "eth0")
    assert (features["tso"], features["gso"], features["tx_csum"]) == (offloads,) * 3
    assert engine.config()["tx_offload"] is offloads
    label = "on" if offloads else "off"

    before = engine.stats()
    echo = bulk(lab, scripts["bulk"], ECHO)
    assert echo["received"] == BULK_BYTES
    assert echo["got_sha256"] == echo["sent_sha256"]
    report(record_property, f"kernel_to_engine_echo_offloads_{label}_gbit_s", echo["gbit_s"])

    discard = bulk(lab, scripts["bulk"], DISCARD)
    assert discard["received"] == 0
    report(record_property, f"kernel_to_engine_discard_offloads_{label}_gbit_s", discard["gbit_s"])

    after = engine.stats()
    grew = {k: after["counters"].get(k, 0) - before["counters"].get(k, 0) for k in after["counters"]}
    assert grew["conn_offloaded"] == 2 and grew.get("conn_fallback", 0) == 0
    assert grew["app_rx_bytes"] == 2 * BULK_BYTES  # echo and discard each read all of it
    assert grew["app_tx_bytes"] == BULK_BYTES
    wire = after["drivers"]["eth0"]
    rx_per_frame = wire["rx_bytes"] / wire["rx_frames"]
    if offloads:
        assert grew["tso_super_frames"] > 0, "engine tx_offload on but no TSO frame left"
        assert rx_per_frame > 1514, f"client TSO on but frames averaged {rx_per_frame:.0f} B"
    else:
        assert grew.get("tso_super_frames", 0) == 0
        assert rx_per_frame <= 1514

    # Kernel to kernel on the same topology, for reference: with no services the engine passes
    # every flow to t1's kernel, whose echo server answers through the TAP.
    engine.set(services={})
    kernel = bulk(lab, scripts["bulk"], ECHO)
    assert kernel["got_sha256"] == kernel["sent_sha256"] and kernel["received"] == BULK_BYTES
    assert counters(engine)["conn_offloaded"] == after["counters"]["conn_offloaded"]
    report(record_property, f"kernel_to_kernel_echo_via_toe_node_offloads_{label}_gbit_s", kernel["gbit_s"])

    # And with no engine on the path at all: two kernels on a plain veth, the same client and server.
    plain = make_lab("two_hosts")
    for node in ("h1", "h2"):
        plain.set_features(node, "eth0", tso=offloads, gso=offloads, tx_csum=offloads)
    server = plain.node("h2").popen([sys.executable, "-m", "lab.services", f"echo={ECHO}"],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wait_for_line(server, "ready", what="host services on h2")
    direct = bulk(plain, scripts["bulk"], ECHO, addr=plain.address("h2"))
    assert direct["got_sha256"] == direct["sent_sha256"] and direct["received"] == BULK_BYTES
    report(record_property, f"kernel_to_kernel_echo_direct_offloads_{label}_gbit_s", direct["gbit_s"])
    record_property(f"engine_to_kernel_echo_ratio_offloads_{label}", round(echo["gbit_s"] / direct["gbit_s"], 3))
    report(record_property, f"kernel_to_kernel_iperf3_direct_offloads_{label}_gbit_s",
           iperf(plain, "h1", "h2", seconds=1).gbit_per_s)


@pytest.mark.root
def test_toe_node_gives_the_kernel_a_tap_and_keeps_it_off_the_wire(make_lab: MakeLab) -> None:
    lab = make_lab("toe_pair")
    t1 = lab.node("t1")
    links = {link["ifname"]: link for link in json.loads(t1.run(["ip", "-j", "addr"], check=True).stdout)}
    wire, tap = links["eth0"], links["toe0"]
    assert [a for a in wire.get("addr_info", [])] == []
    assert (tap["address"], tap["mtu"]) == (wire["address"], wire["mtu"])
    assert {a["local"] for a in tap["addr_info"]} >= {"10.0.7.2", "fd00:7::2"}
    assert t1.run(["sysctl", "-n", "net.ipv6.conf.eth0.disable_ipv6"], check=True).stdout.strip() == "1"

    # ICMP is not the engine's: it passes through the TAP and t1's kernel answers, v4 and v6.
    for addr in (ENGINE_IP, "fd00:7::2"):
        assert lab.node("h1").run(["ping", "-n", "-q", "-c", "3", "-i", "0.05", "-W", "2", addr]).ok
    stats = lab.engine("t1").stats()
    ruleset = json.loads(t1.run(["nft", "-j", "list", "table", "netdev", "toelab"], check=True).stdout)
    (counter,) = [item["counter"] for rule in ruleset["nftables"] if "rule" in rule
                  for item in rule["rule"]["expr"] if "counter" in item]
    # every frame the engine read on the wire was also dropped before the kernel's stack saw it
    assert counter["packets"] >= stats["drivers"]["eth0"]["rx_frames"] > 0
    assert stats["drivers"]["toe0"]["tx_frames"] > 0 and stats["drivers"]["toe0"]["rx_frames"] > 0


# --- resource policies -------------------------------------------------------------------------

def start_concurrent(lab: Lab, script: Path, count: int, hold: bool, size: int = 20_000) -> subprocess.Popen[str]:
    return lab.node("h1").popen([sys.executable, str(script), ENGINE_IP, str(ECHO), str(count),
                                 "hold" if hold else "go", str(size)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def concurrent(lab: Lab, script: Path, count: int = 20, hold: bool = False,
               size: int = 20_000) -> tuple[list[str], subprocess.Popen[str]]:
    """Start `count` simultaneous echo connections from h1; their results and the (held) client."""
    proc = start_concurrent(lab, script, count, hold, size)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, f"concurrent client failed (exit {proc.wait()})"
    return json.loads(line), proc


def release(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("\n")
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0


@pytest.mark.root
@pytest.mark.parametrize("queues", QUEUES, ids=QUEUE_IDS)
def test_fallback_full_table_hands_flows_to_the_kernel(make_lab: MakeLab, scripts: dict[str, Path], queues: int) -> None:
    lab = make_lab("toe_pair", capacity=8, policy="fallback", queues=queues)
    engine = lab.engine("t1")
    results, proc = concurrent(lab, scripts["concurrent"], hold=True)
    try:
        assert collections.Counter(results) == {"ok": 20}
        seen = counters(engine)
        assert (seen["conn_offloaded"], seen["conn_fallback"]) == (8, 12)
        assert established_kernel_sockets(lab, ECHO) == 12
        table = engine.request({"cmd": "conns"})["connections"]
        assert collections.Counter(row["offloaded"] for row in table) == {True: 8, False: 12}
        assert all(row["state"] == "ESTABLISHED" for row in table if row["offloaded"])
        assert engine.stats()["gauges"]["table_occupancy"] == 8
    finally:
        release(proc)


@pytest.mark.root
@pytest.mark.parametrize("queues", QUEUES, ids=QUEUE_IDS)
def test_deny_rst_refuses_what_does_not_fit(make_lab: MakeLab, scripts: dict[str, Path], queues: int) -> None:
    lab = make_lab("toe_pair", queues=queues)
    engine = lab.engine("t1")
    config = engine.set(capacity=8, policy="deny:rst")
    assert (config["capacity"], config["policy"]) == (8, "deny:rst")
    results, proc = concurrent(lab, scripts["concurrent"], hold=True)
    try:
        assert collections.Counter(results) == {"ok": 8, "refused": 12}
        seen = counters(engine)
        assert (seen["conn_offloaded"], seen["conn_denied"], seen["conn_fallback"]) == (8, 12, 0)
        assert established_kernel_sockets(lab, ECHO) == 0
    finally:
        release(proc)


@pytest.mark.root
@pytest.mark.parametrize("queues", QUEUES, ids=QUEUE_IDS)
def test_syncookie_serves_everyone_within_capacity(make_lab: MakeLab, scripts: dict[str, Path], queues: int) -> None:
    """8 connections fill the table and stay; 12 more get cookies and wait; then all complete."""
    lab = make_lab("toe_pair", capacity=8, policy="syncookie", queues=queues)
    engine = lab.engine("t1")
    first, holder = concurrent(lab, scripts["concurrent"], count=8, hold=True)
    assert collections.Counter(first) == {"ok": 8}
    late = start_concurrent(lab, scripts["concurrent"], count=12, hold=False)
    try:
        wait_until(lambda: counters(engine)["syncookies_sent"] >= 12, "cookies for the 12 late connections")
        assert engine.stats()["gauges"]["table_occupancy"] == 8
    finally:
        release(holder)
    assert late.stdout is not None
    assert collections.Counter(json.loads(late.stdout.readline())) == {"ok": 12}
    assert late.wait(timeout=30) == 0
    stats = engine.stats()
    seen = stats["counters"]
    assert stats["gauges"]["table_high_water"] == 8 and seen["table_high_water"] == 8
    assert seen["syncookies_sent"] >= 12 and seen["syncookies_ok"] >= 12
    assert seen["conn_offloaded"] == 20 and seen["conn_fallback"] == 0
    assert established_kernel_sockets(lab, ECHO) == 0


# --- malformed frames --------------------------------------------------------------------------

def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def _ipv4(payload: bytes, src: bytes, dst: bytes, *, ihl: int = 5, total: int | None = None,
          good_csum: bool = True) -> bytes:
    header = bytearray(struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, total if total is not None else 20 + len(payload),
                                   1, 0x4000, 64, 6, 0, src, dst))
    csum = internet_checksum(header)
    struct.pack_into("!H", header, 10, csum if good_csum else csum ^ 0x5555)
    return bytes(header) + payload


def _tcp(src: bytes, dst: bytes, *, doff: int = 5, options: bytes = b"", payload: bytes = b"x" * 16,
         good_csum: bool = True, length: int | None = None) -> bytes:
    segment = bytearray(struct.pack("!HHIIBBHHH", 40000, ECHO, 1000, 0, doff << 4, 0x18, 65535, 0, 0)
                        + options + payload)
    csum = transport_checksum(src, dst, 6, segment)
    struct.pack_into("!H", segment, 16, csum if good_csum else csum ^ 0x5555)
    return bytes(segment[:length])


def malformed_frames(dst_mac: bytes, src_mac: bytes) -> list[bytes]:
    """One frame of each kind of damage, each with a checksum good enough to reach that damage."""
    src, dst = socket.inet_aton(CLIENT_IP), socket.inet_aton(ENGINE_IP)
    eth = dst_mac + src_mac + b"\x08\x00"
    good_tcp = _tcp(src, dst)
    return [eth + frame for frame in (
        _ipv4(good_tcp, src, dst)[:14],                                           # truncated IPv4 header
        _ipv4(good_tcp, src, dst, ihl=3),                                         # IHL below 5
        _ipv4(good_tcp, src, dst, ihl=15),                                        # IHL past the packet
        _ipv4(good_tcp, src, dst, total=2000),                                    # total length past the frame
        _ipv4(good_tcp, src, dst, good_csum=False),                               # bad IPv4 checksum
        _ipv4(_tcp(src, dst, payload=b"", length=12), src, dst),                  # truncated TCP header
        _ipv4(_tcp(src, dst, doff=3), src, dst),                                  # data offset below 5
        _ipv4(_tcp(src, dst, doff=15, payload=b""), src, dst),                    # data offset past the segment
        _ipv4(_tcp(src, dst, doff=6, options=b"\x02\x00\x05\xb4"), src, dst),     # MSS option of length 0
        _ipv4(_tcp(src, dst, doff=6, options=b"\x01\x08\x0a\x00"), src, dst),     # timestamp option overruns
        _ipv4(_tcp(src, dst, doff=6, options=b"\x05\x28\x00\x00"), src, dst),     # SACK option overruns
        _ipv4(_tcp(src, dst, good_csum=False), src, dst),                         # bad TCP checksum
    )]


@pytest.mark.root
@pytest.mark.parametrize("queues", QUEUES, ids=QUEUE_IDS)
def test_malformed_barrage_is_counted_and_the_engine_keeps_serving(
        make_lab: MakeLab, scripts: dict[str, Path], queues: int) -> None:
    lab = make_lab("toe_pair", queues=queues)
    engine = lab.engine("t1")
    links = json.loads(lab.node("t1").run(["ip", "-j", "link", "show", "dev", "eth0"], check=True).stdout)
    client = json.loads(lab.node("h1").run(["ip", "-j", "link", "show", "dev", "eth0"], check=True).stdout)
    kinds = malformed_frames(_mac(links[0]["address"]), _mac(client[0]["address"]))
    for frame in kinds:  # each one really is refused by the engine's own codec
        assert parse_frame(frame).drop_reason is not None, frame.hex()

    with engine_log_on_failure(lab):
        before = counters(engine)
        send_barrage(lab, engine, kinds, before["rx_malformed"] + before["rx_csum_errors"])
        stats = engine.stats()
        after = stats["counters"]
        assert after.get("rx_engine_errors", 0) == 0
        assert after["rx_malformed"] + after["rx_csum_errors"] - before["rx_malformed"] - before["rx_csum_errors"] \
            == BARRAGE_FRAMES
        assert stats["drivers"]["eth0"]["kernel_drops"] == 0
        bad_checksums = sum(1 for i in range(BARRAGE_FRAMES) if i % len(kinds) in CHECKSUM_DAMAGE)
        assert after["rx_csum_errors"] - before["rx_csum_errors"] == bad_checksums
        assert all(is_alive(p.pid, p.start_time) for p in lab.record.processes)
        echo = bulk(lab, scripts["bulk"], ECHO, size=10 * MB)
        assert echo["got_sha256"] == echo["sent_sha256"] and echo["received"] == 10 * MB


def send_barrage(lab: Lab, engine: EngineHandle, kinds: list[bytes], counted_before: int) -> None:
    """Send BARRAGE_FRAMES frames, cycling through `kinds`, on a raw socket in h1's namespace.

    Batches wait for the engine to count what was sent, so its socket buffer never overflows
    and every frame is accounted for.
    """
    with in_netns(lab.node("h1").netns):
        sender = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    with sender:
        sender.bind(("eth0", 0))
        sent = 0
        while sent < BARRAGE_FRAMES:
            batch_end = min(sent + BARRAGE_BATCH, BARRAGE_FRAMES)
            for i in range(sent, batch_end):
                sender.send(kinds[i % len(kinds)])
            sent = batch_end

            def caught_up(target: int = sent) -> bool:
                seen = counters(engine)
                return seen["rx_malformed"] + seen["rx_csum_errors"] - counted_before >= target
            wait_until(caught_up, f"the engine to count {sent} malformed frames")


# --- teardown ---------------------------------------------------------------------------------

@pytest.mark.root
def test_sigterm_stops_the_engine_and_removes_its_tap(make_lab: MakeLab) -> None:
    lab = make_lab("toe_pair")
    node = lab.node("t1")
    control = runtime_dir(lab) / "t1.sock"
    assert tap_exists(node) and control.exists()
    (pid,) = engine_pids(lab)
    os.kill(pid, signal.SIGTERM)
    assert exit_status(pid, timeout_s=10) == 0
    assert not tap_exists(node)
    assert not control.exists()


@pytest.mark.root
def test_engine_and_tap_are_gone_after_teardown_also_after_a_failure() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    before = host_state()
    spec = load_topology("toe_pair")

    class Boom(Exception):
        pass

    pids: list[tuple[int, float]] = []
    netns_names: list[str] = []
    with pytest.raises(Boom):
        with Lab.up(spec) as lab:
            pids.extend((p.pid, p.start_time) for p in lab.record.processes)
            netns_names.append(lab.node("t1").netns)
            assert tap_exists(lab.node("t1"))
            assert engine_pids(lab)
            raise Boom("a test failing with the lab up")
    assert pids and not any(is_alive(pid, start) for pid, start in pids)
    assert not Path("/run/netns", netns_names[0]).exists()  # the TAP lived there, and went with it
    assert leftovers_since(before) == []
