"""Rings and queues on real namespaces: the TPACKET_V3 ring and sendmmsg batches on a veth, ring
overflow counted as rx_missed_errors (stats and audit), RSS steering flows to the queue the
indirection table names (and re-steering them when table or key change), re-queueing, and queue
processes that go with their engine.

Which queue a flow lands on is computed beforehand from the engine's key and table
(toe_engine.io.rss.flow_queue); the clients choose their source ports so each queue gets flows.
"""
from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from lab.endpoint_nodes import tap_exists
from lab.lab import Lab
from lab.pytest_plugin import MakeLab
from lab.tools import wait_for_line
from toe_engine.io import AfPacketDriver, VnetHeader
from toe_engine.io.ring import PacketRingDriver, RingSettings
from toe_engine.io.rss import attach_program, default_key, equal_table, flow_queue, join_group, program
from toe_engine.io.vnet import VNET_GSO_TCPV4

from test_endpoint import wait_until  # the same event wait the endpoint tests use

CLIENT_IP, ENGINE_IP = "10.0.7.1", "10.0.7.2"
ECHO, DISCARD = 7, 9
ETHERTYPE_TEST = 0x88B5  # IEEE local experimental
pytestmark = pytest.mark.root


def ports_for(config: dict[str, Any], queues: list[int], per_queue: int, port: int = ECHO,
              first: int = 41000) -> list[int]:
    """Client source ports whose flows to the engine's `port` land `per_queue` times on each queue."""
    table, key = config["rss"]["table"], bytes.fromhex(config["rss"]["key"].replace(":", ""))
    chosen: dict[int, list[int]] = {q: [] for q in queues}
    sport = first
    while any(len(v) < per_queue for v in chosen.values()):
        assert sport < 65536, f"no source ports reach queues {queues} through table {table}"
        q = flow_queue(CLIENT_IP, ENGINE_IP, sport, port, table, key)
        if q in chosen and len(chosen[q]) < per_queue:
            chosen[q].append(sport)
        sport += 1
    return [p for q in queues for p in chosen[q]]


def echo_flows(lab: Lab, sports: list[int], size: int, hold: bool = False) -> subprocess.Popen[str]:
    return lab.node("h1").popen([sys.executable, "-m", "scenarios.flow_clients", "echo", ENGINE_IP, str(ECHO),
                                 str(size), ",".join(map(str, sports)), *(["hold"] if hold else [])],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def flow_results(proc: subprocess.Popen[str]) -> list[dict[str, Any]]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, proc.stderr.read() if proc.stderr else "no output"
    results: list[dict[str, Any]] = json.loads(line)
    return results


def finish(proc: subprocess.Popen[str]) -> None:
    if proc.stdin is not None:
        proc.stdin.write("\n")
        proc.stdin.close()
    assert proc.wait(timeout=60) == 0


def queue_of_each_flow(lab: Lab, sports: list[int]) -> dict[int, int]:
    """client source port -> queue, from the engine's connection table (these flows only: earlier
    ones may still be closing)."""
    rows = lab.engine("t1").request({"cmd": "conns"})["connections"]
    landed = {int(row["remote"].rsplit(":", 1)[1]): row["queue"] for row in rows if row["offloaded"]}
    return {sport: queue for sport, queue in landed.items() if sport in sports}


# --- the ring and the batch on a plain veth ----------------------------------------------------

def test_ring_hands_over_super_frames_with_their_vnet_headers(make_lab: MakeLab) -> None:
    lab = make_lab("two_hosts")
    h2 = lab.node("h2")
    server = h2.popen([sys.executable, "-m", "lab.services", f"discard={DISCARD}"], stdout=subprocess.PIPE)
    wait_for_line(server, "ready", what="discard server on h2")
    size = 4 << 20
    with PacketRingDriver("eth0", h2.netns, ring=RingSettings(frames=8192, block_frames=64, block_usecs=1000)) as ring:
        sent = lab.node("h1").run([sys.executable, "-c", (
            "import socket,sys; s=socket.create_connection((sys.argv[1], 9)); s.sendall(bytes(int(sys.argv[2])));"
            "s.shutdown(socket.SHUT_WR); s.recv(1)"), lab.address("h2"), str(size)], timeout=60)
        assert sent.ok, sent.stderr
        super_frames = payload = frames = 0
        deadline = time.monotonic() + 5
        while payload < size and time.monotonic() < deadline:  # the last block retires on its timer
            for view in ring.frames(100_000):
                frames += 1
                header, frame = VnetHeader.unpack(view), view[10:]
                if frame[12:14] == b"\x08\x00" and frame[23] == 6:
                    data = len(frame) - 14 - (frame[14] & 0xF) * 4 - (frame[46] >> 4) * 4
                    payload += data
                    if len(frame) > 1514:
                        super_frames += 1
                        assert header.gso_kind == VNET_GSO_TCPV4 and header.needs_csum
                        assert (header.csum_start, header.csum_offset) == (34, 16)
            time.sleep(0.001)
        packets, drops = ring.kernel_statistics()
    print(f"\nring: {frames} frames, {super_frames} super-frames, {payload} payload bytes, drops {drops}")
    assert payload >= size and super_frames >= 1
    assert drops == 0 and packets == frames == ring.counters.rx_frames and ring.counters.rx_truncated == 0


def test_send_batch_sends_every_frame_in_order_and_counts_what_the_device_refuses(make_lab: MakeLab) -> None:
    lab = make_lab("two_hosts")
    dst = bytes.fromhex(json.loads(lab.node("h2").run(["ip", "-j", "link", "show", "eth0"], check=True).stdout)[0]
                        ["address"].replace(":", ""))
    with PacketRingDriver("eth0", lab.node("h1").netns, ring=RingSettings(frames=256)) as sender, \
            AfPacketDriver("eth0", lab.node("h2").netns) as reader:
        frames = [dst + bytes(6) + ETHERTYPE_TEST.to_bytes(2, "big") + i.to_bytes(4, "big") + bytes(i % 1400)
                  for i in range(300)]
        too_big = dst + bytes(6) + ETHERTYPE_TEST.to_bytes(2, "big") + bytes(4000)  # over the MTU, no GSO
        for i, frame in enumerate(frames):
            sender.send(VnetHeader(), frame)
            if i == 150:
                sender.send(VnetHeader(), too_big)
        assert sender.counters.tx_frames < 300  # queued, not sent: 64 slots commit on their own
        sender.commit_tx()
        got: list[bytes] = []
        deadline = time.monotonic() + 5
        while len(got) < 300 and time.monotonic() < deadline:
            received = reader.recv()
            if received is None:
                time.sleep(0.001)
            elif bytes(received[1][12:14]) == ETHERTYPE_TEST.to_bytes(2, "big"):
                got.append(bytes(received[1]))
    assert got == frames
    assert (sender.counters.tx_frames, sender.counters.tx_dropped) == (300, 1)
    assert sender.counters.tx_bytes == sum(len(f) for f in frames)


# --- the fanout program in the kernel ------------------------------------------------------------

UDP_SENDER = r"""
import socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
for sport in range(int(sys.argv[2]), int(sys.argv[2]) + int(sys.argv[3])):
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind(("", sport))
        s.sendto(b"x" * int(sys.argv[4]), (sys.argv[1], 9))
"""


# ICMP errors from h1 quoting a UDP datagram h2:9 -> h1:SPORT, i.e. the flow h1:SPORT -> h2:9 reversed
ICMP_ERRORS = r"""
import socket, struct, sys
sys.path.insert(0, sys.argv[4])
from toe_engine.checksum import internet_checksum
h1, h2, first = sys.argv[1], sys.argv[2], int(sys.argv[3])
six = ":" in h1
with socket.socket(socket.AF_INET6 if six else socket.AF_INET, socket.SOCK_RAW,
                   socket.IPPROTO_ICMPV6 if six else socket.IPPROTO_ICMP) as s:
    for sport in range(first, first + 16):
        udp = struct.pack("!HHHH", 9, sport, 8, 0)
        if six:
            quoted = struct.pack("!IHBB16s16s", 6 << 28, 8, 17, 64, socket.inet_pton(socket.AF_INET6, h2),
                                 socket.inet_pton(socket.AF_INET6, h1)) + udp
            s.sendto(struct.pack("!BBHI", 2, 0, 0, 1280) + quoted, (h2, 0))  # packet too big
        else:
            quoted = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 0, 0, 64, 17, 0, socket.inet_aton(h2),
                                 socket.inet_aton(h1)) + udp
            body = struct.pack("!BBHHH", 3, 4, 0, 0, 1400) + quoted  # fragmentation needed
            s.sendto(body[:2] + struct.pack("!H", internet_checksum(body)) + body[4:], (h2, 0))
"""


def test_fanout_program_steers_ipv4_ipv6_fragments_and_icmp_errors_as_predicted(make_lab: MakeLab) -> None:
    lab = make_lab("two_hosts")
    h2 = lab.node("h2")
    members = [PacketRingDriver("eth0", h2.netns, ring=RingSettings(frames=1024)) for _ in range(2)]
    table, key = equal_table(2, 16), default_key()
    try:
        for member in members:
            with socket.fromfd(member.fd, socket.AF_PACKET, socket.SOCK_RAW) as sock:
                join_group(sock, 0x7E57)
        with socket.fromfd(members[0].fd, socket.AF_PACKET, socket.SOCK_RAW) as sock:
            attach_program(sock, program(table, key))
        expected: dict[tuple[int, int], int] = {}
        for version, first in ((4, 42000), (6, 43000)):
            src, dst = lab.address("h1", version), lab.address("h2", version)
            lab.node("h1").run([sys.executable, "-c", UDP_SENDER, dst, str(first), "16", "16"], check=True, timeout=30)
            expected |= {(version, p): flow_queue(src, dst, p, 9, table, key) for p in range(first, first + 16)}
        # a datagram in three fragments: no ports in the later ones, so all hash on the addresses alone
        lab.node("h1").run([sys.executable, "-c", UDP_SENDER, lab.address("h2"), "44000", "1", "4000"], check=True)
        # ICMP errors quoting flows h1:P -> h2:9 (reversed) must land where those flows do
        repo = str(Path(__file__).resolve().parents[2])
        for version, first in ((4, 45000), (6, 46000)):
            src, dst = lab.address("h1", version), lab.address("h2", version)
            lab.node("h1").run([sys.executable, "-c", ICMP_ERRORS, src, dst, str(first), repo], check=True, timeout=30)
            expected |= {(version + 10, p): flow_queue(src, dst, p, 9, table, key) for p in range(first, first + 16)}
        fragments_queue = flow_queue(lab.address("h1"), lab.address("h2"), 0, 0, table, key)
        landed: dict[tuple[int, int], int] = {}
        fragments: list[int] = []

        def collect() -> bool:
            for queue, member in enumerate(members):
                for view in member.frames(10_000):
                    frame = bytes(view[10:])
                    if frame[12:14] == b"\x08\x00" and frame[23] == 17:
                        if int.from_bytes(frame[20:22], "big") & 0x3FFF:
                            fragments.append(queue)
                        elif int.from_bytes(frame[34:36], "big") < 44000:
                            landed[(4, int.from_bytes(frame[34:36], "big"))] = queue
                    elif frame[12:14] == b"\x08\x00" and frame[23] == 1 and frame[34] == 3:  # quoted UDP at 62
                        landed[(14, int.from_bytes(frame[64:66], "big"))] = queue
                    elif frame[12:14] == b"\x86\xdd" and frame[20] == 17:
                        landed[(6, int.from_bytes(frame[54:56], "big"))] = queue
                    elif frame[12:14] == b"\x86\xdd" and frame[20] == 58 and frame[54] == 2:  # quoted UDP at 102
                        landed[(16, int.from_bytes(frame[104:106], "big"))] = queue
            return len(landed) == len(expected) and len(fragments) == 3
        wait_until(collect, "every datagram at one of the two members")
    finally:
        for member in members:
            member.close()
    assert landed == expected
    assert set(landed.values()) == {0, 1}
    assert {q for (kind, _), q in landed.items() if kind >= 10} == {0, 1}  # errors follow their flows, not their addresses
    assert fragments == [fragments_queue] * 3


# --- ring overflow: rx_missed_errors ----------------------------------------------------------

def test_ring_overflow_is_counted_as_rx_missed_errors_in_stats_and_audit(make_lab: MakeLab) -> None:
    lab = make_lab("toe_pair", offloads=False, rx_ring=64)  # two blocks: ~90 frames
    engine = lab.engine("t1")
    assert engine.config()["rx_ring"] == 64
    mac = json.loads(lab.node("t1").run(["ip", "-j", "link", "show", "eth0"], check=True).stdout)[0]["address"]
    done = lab.node("h1").run([sys.executable, "-m", "scenarios.flow_clients", "burst", "eth0", mac, "50000"],
                              timeout=120, check=True)
    sent = json.loads(done.stdout)["sent"]
    wait_until(lambda: engine.stats()["counters"]["rx_queue_0_frames"] + engine.stats()["counters"]
               ["rx_missed_errors"] >= sent, "every burst frame to be read or counted missed")
    counters = engine.stats()["counters"]
    print(f"\nburst of {sent}: read {counters['rx_queue_0_frames']}, missed {counters['rx_missed_errors']}")
    assert counters["rx_missed_errors"] > 0 and counters["rx_queue_0_missed"] == counters["rx_missed_errors"]
    audit = subprocess.run([sys.executable, "-m", "toelab", "audit", lab.record.lab_id, "--json"],
                           capture_output=True, text=True, timeout=60)
    report = json.loads(audit.stdout)
    assert report["engines"]["t1"]["counters"]["rx_missed_errors"] == counters["rx_missed_errors"]
    assert any("rx_missed_errors" in f for f in report["engines"]["t1"]["findings"])
    assert audit.returncode == 1  # a flagged finding


# --- RSS ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("offloads, rx_ring", [(False, 0), (True, 4096)], ids=["reads_offloads_off", "ring_offloads_on"])
def test_two_queues_echo_byte_exact_on_the_queues_the_table_names(make_lab: MakeLab, offloads: bool,
                                                                  rx_ring: int) -> None:
    lab = make_lab("toe_pair", offloads=offloads, queues=2, rx_ring=rx_ring)
    engine = lab.engine("t1")
    config = engine.config()
    assert config["queues"] == 2 and len(config["rss"]["table"]) == 128
    sports = ports_for(config, [0, 1], 2)
    proc = echo_flows(lab, sports, 8 << 20, hold=True)
    try:
        results = flow_results(proc)
        assert [r["ok"] for r in results] == [True] * 4, results
        landed = queue_of_each_flow(lab, sports)
        assert landed == {sports[0]: 0, sports[1]: 0, sports[2]: 1, sports[3]: 1}
        stats = engine.stats()
        counters = stats["counters"]
        least = 100 if offloads else 5000  # 16 MB each way per queue: 64 KiB super-frames or MSS frames
        assert counters["rx_queue_0_frames"] > least and counters["rx_queue_1_frames"] > least
        assert counters["rx_queue_0_frames"] + counters["rx_queue_1_frames"] == stats["drivers"]["eth0"]["rx_frames"]
        assert counters["conn_offloaded"] == 4 and stats["gauges"]["table_occupancy"] == 4
        assert [q["connections"] for q in stats["queues"]] == [2, 2]
        assert counters["rx_missed_errors"] == 0 and counters.get("rx_engine_errors", 0) == 0
        if offloads:
            assert counters["tso_super_frames"] > 0
    finally:
        finish(proc)


def test_table_and_key_changes_steer_new_flows_and_requeueing_keeps_serving(make_lab: MakeLab) -> None:
    lab = make_lab("toe_pair", offloads=False, queues=2)
    engine = lab.engine("t1")
    config = engine.set(rss_table=[1])  # ethtool -X weight 0 1, in one entry
    assert config["rss"]["table"] == [1]
    proc = echo_flows(lab, [42000, 42001, 42002], 64 << 10, hold=True)
    try:
        assert all(r["ok"] for r in flow_results(proc))
        assert queue_of_each_flow(lab, [42000, 42001, 42002]) == {42000: 1, 42001: 1, 42002: 1}
    finally:
        finish(proc)

    config = engine.set(rss_key="01:23:45:67:89:ab:cd:ef", rss_weights=[1, 1])
    assert config["rss"]["key"] == "01:23:45:67:89:ab:cd:ef"
    sports = ports_for(config, [0, 1], 2, first=43000)
    proc = echo_flows(lab, sports, 64 << 10, hold=True)
    try:
        assert all(r["ok"] for r in flow_results(proc))
        assert queue_of_each_flow(lab, sports) == dict(zip(sports, [0, 0, 1, 1]))
    finally:
        finish(proc)

    before = engine.stats()["queues"]
    config = engine.set(queues=1, capacity=6)  # ethtool -L combined 1: new queue processes
    assert config["queues"] == 1 and config["capacity"] == 6 and config["rss"]["table"] == [0] * 128
    after = engine.stats()
    assert len(after["queues"]) == 1 and after["queues"][0]["pid"] not in {q["pid"] for q in before}
    assert after["gauges"]["table_capacity"] == 6 and after["gauges"]["table_occupancy"] == 0
    proc = echo_flows(lab, [44000, 44001], 256 << 10)
    assert all(r["ok"] for r in flow_results(proc))
    assert proc.wait(timeout=60) == 0
    with pytest.raises(Exception, match="rss_table entry 3"):
        engine.set(rss_table=[0, 3])


def test_queue_processes_end_with_their_engine(make_lab: MakeLab) -> None:
    lab = make_lab("toe_pair", queues=2)
    workers = [q["pid"] for q in lab.engine("t1").stats()["queues"]]
    supervisor = next(p.pid for p in lab.record.processes if "endpoint_main" in p.argv)
    assert len(workers) == 2 and supervisor not in workers
    fds = [os.pidfd_open(pid) for pid in workers]
    try:
        os.kill(supervisor, signal.SIGKILL)  # no clean stop: the queues must still go
        for fd in fds:
            ready, _, _ = select.select([fd], [], [], 10)
            assert ready, "a queue process outlived its engine"
    finally:
        for fd in fds:
            os.close(fd)
    wait_until(lambda: not tap_exists(lab.node("t1")), "the TAP to go with the engine")


# --- the shell -------------------------------------------------------------------------------------

def test_shell_shows_the_rss_table_like_ethtool_and_sets_it(make_lab: MakeLab) -> None:
    import io

    from toelab.shell import LabShell

    lab = make_lab("toe_pair", queues=2)
    shell = LabShell(lab, stdout=io.StringIO())

    def said(line: str) -> str:
        start = shell.stdout.tell()
        shell.onecmd(line)
        shell.stdout.seek(start)
        return shell.stdout.read()

    shown = said("toe rss t1")
    assert "RX flow hash indirection table for eth0 of t1 with 2 RX ring(s):" in shown
    assert "    0:     0     1     0     1     0     1     0     1" in shown
    assert "  120:     0     1" in shown and "6d:5a:6d:5a:6d:5a:6d:5a" in shown
    said("toe set t1 rss_weights=[0,1]")
    assert "    0:     1     1     1     1     1     1     1     1" in said("toe rss t1")
    said("toe set t1 queues=1")
    assert "with 1 RX ring(s)" in said("toe rss t1")
    assert "rx_queue_1_frames" not in said("toe rss t1")


FRAG_NEEDED = r"""
import socket, struct, sys
sys.path.insert(0, sys.argv[5])
from toe_engine.checksum import internet_checksum
engine, client, sport, seq = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
quoted = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 1500, 0, 0x4000, 64, 6, 0, socket.inet_aton(engine),
                     socket.inet_aton(client)) + struct.pack("!HHI", 7, sport, seq)
body = struct.pack("!BBHHH", 3, 4, 0, 0, 1200) + quoted  # fragmentation needed, next-hop MTU 1200
with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
    s.sendto(body[:2] + struct.pack("!H", internet_checksum(body)) + body[4:], (engine, 0))
"""


def test_frag_needed_reaches_the_connection_on_its_queue(make_lab: MakeLab) -> None:
    """PMTUD with RSS: an ICMP error quoting a flow's segment lands on that flow's queue and lowers its MSS."""
    lab = make_lab("toe_pair", offloads=False, queues=2)
    engine = lab.engine("t1")
    sports = ports_for(engine.config(), [0, 1], 2, first=47000)
    with AfPacketDriver("eth0", lab.node("h1").netns) as tap_h1:
        proc = echo_flows(lab, sports, 256 << 10, hold=True)
        try:
            assert all(r["ok"] for r in flow_results(proc))
            snd_nxt: dict[int, int] = {}  # the engine's next sequence number per flow, from what h1 received
            while (received := tap_h1.recv()) is not None:
                frame = bytes(received[1])
                if frame[12:14] == b"\x08\x00" and frame[23] == 6 and frame[34:36] == ECHO.to_bytes(2, "big"):
                    ihl, doff = (frame[14] & 0xF) * 4, (frame[14 + 20 + 12] >> 4) * 4
                    length = int.from_bytes(frame[16:18], "big") - ihl - doff + (frame[14 + 20 + 13] & 1)
                    sport, seq = int.from_bytes(frame[36:38], "big"), int.from_bytes(frame[38:42], "big")
                    snd_nxt[sport] = max(snd_nxt.get(sport, 0), seq + length) & 0xFFFFFFFF
            before = {row["remote"]: row["snd_mss"] for row in engine.request({"cmd": "conns"})["connections"]}
            repo = str(Path(__file__).resolve().parents[2])
            targets = [sports[1], sports[2]]  # one flow on each queue
            for sport in targets:
                lab.node("h1").run([sys.executable, "-c", FRAG_NEEDED, ENGINE_IP, CLIENT_IP, str(sport),
                                    str(snd_nxt[sport]), repo], check=True, timeout=30)

            def mss() -> dict[int, int]:
                rows = engine.request({"cmd": "conns"})["connections"]
                return {int(r["remote"].rsplit(":", 1)[1]): r["snd_mss"] for r in rows if r["offloaded"]}
            wait_until(lambda: all(mss()[s] < 1200 for s in targets), "both flows to take the lower path MTU")
            after = mss()
        finally:
            finish(proc)
    assert len(set(before.values())) == 1 and min(before.values()) > 1400  # MTU 1500 before the errors
    assert {s: after[s] < 1200 for s in sports} == {s: s in targets for s in sports}  # only the quoted flows
