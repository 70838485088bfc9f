"""The SYN flood generator: valid SYN frames, its rate reached, and its bounds keeping it short."""
from __future__ import annotations

import ipaddress
import json
import random
import subprocess
import time
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.utils import rdpcap

from lab.lab import Lab
from lab.pytest_plugin import MakeLab
from scenarios import flood

SPOOF = ipaddress.IPv4Network("10.99.0.0/16")
SERVER_ADDR = "10.0.5.3"


def assert_valid_syn(frame: Ether) -> None:
    """A SYN from the spoof range to the server whose IPv4 and TCP checksums scapy agrees with."""
    assert IP in frame and TCP in frame, frame.summary()
    ip, tcp = frame[IP], frame[TCP]
    assert ipaddress.IPv4Address(ip.src) in SPOOF and ip.dst == SERVER_ADDR
    assert str(tcp.flags) == "S" and tcp.dport == 7 and dict(tcp.options).get("MSS") == 1460
    rebuilt = Ether(bytes(frame))
    del rebuilt[IP].chksum, rebuilt[TCP].chksum
    rebuilt = Ether(bytes(rebuilt))
    assert (rebuilt[IP].chksum, rebuilt[TCP].chksum) == (ip.chksum, tcp.chksum)


def test_pool_holds_distinct_valid_syns() -> None:
    frames = flood.build_syn_pool(256, src_mac="02:00:00:00:00:01", dst_mac="02:00:00:00:00:02", dst=SERVER_ADDR,
                                  dport=7, spoof=SPOOF, rng=random.Random(5))
    assert len(set(frames)) == 256
    for raw in frames[:32]:
        assert_valid_syn(Ether(raw))


def _mac(lab: Lab, node: str) -> str:
    return json.loads(lab.node(node).run(["ip", "-j", "link", "show", "dev", "eth0"], check=True).stdout)[0]["address"]


def _rx_packets(lab: Lab, node: str) -> int:
    shown = lab.node(node).run(["ip", "-j", "-s", "link", "show", "dev", "eth0"], check=True).stdout
    return int(json.loads(shown)[0]["stats64"]["rx"]["packets"])


def _flood(lab: Lab, *, rate: float, duration_s: float, max_count: int, workers: int = 1,
           wait_s: float) -> tuple[flood.FloodStats, float]:
    """Run a flood from the attacker to the server; returns its report and how long the process lived."""
    argv = flood.argv(iface="eth0", src_mac=_mac(lab, "attacker"), dst_mac=_mac(lab, "server"), dst=SERVER_ADDR,
                      dport=7, spoof=str(SPOOF), rate=rate, duration_s=duration_s, max_count=max_count,
                      workers=workers)
    start = time.monotonic()
    proc = lab.node("attacker").popen(argv, stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=wait_s)  # a flood that does not stop by itself fails here
    assert proc.returncode == 0
    return flood.parse_result(out), time.monotonic() - start


@pytest.mark.root
@pytest.mark.parametrize("rate, workers", [(50_000, 1), (100_000, 2)])
def test_flood_is_paced_and_stops_at_its_duration(make_lab: MakeLab, rate: int, workers: int) -> None:
    """Pacing never exceeds the asked rate and the flood ends by itself; how fast it can go is
    a benchmark (`toelab bench flood`), not a test, since a loaded machine sends less."""
    lab = make_lab("syn_flood")
    before = _rx_packets(lab, "server")
    stats, lived = _flood(lab, rate=rate, duration_s=1.0, max_count=10 * rate, workers=workers, wait_s=10)
    received = _rx_packets(lab, "server") - before
    assert stats.sent > 0 and stats.rate <= 1.05 * rate, stats
    assert 1.0 <= stats.elapsed_s < 1.5 and lived < 6, (stats, lived)
    assert received >= 0.95 * stats.sent, (received, stats)


@pytest.mark.root
def test_flood_stops_at_its_count_and_sends_valid_syns(make_lab: MakeLab, tmp_path: Path) -> None:
    lab = make_lab("syn_flood")
    before = _rx_packets(lab, "server")
    capture = lab.capture("server", "eth0", "tcp and dst port 7", path=tmp_path / "syns.pcap")
    try:
        stats, lived = _flood(lab, rate=2_000, duration_s=30, max_count=500, wait_s=10)
    finally:
        pcap = capture.stop()
    assert stats.sent == 500 and lived < 5, (stats, lived)
    assert 500 <= _rx_packets(lab, "server") - before < 550  # plus ARP and IPv6 neighbour chatter
    frames = rdpcap(str(pcap))  # tcpdump may lose a few frames on a busy machine; the counter above may not
    assert len(frames) >= 100
    for frame in frames[:50]:
        assert_valid_syn(frame)
    assert len({(f[IP].src, f[TCP].sport) for f in frames}) == len(frames)
