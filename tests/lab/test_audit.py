"""`toelab audit` reads features and counters from the kernel and flags offloads that did not happen."""
from __future__ import annotations

import subprocess
import sys

import pytest

from lab.audit import audit_interfaces
from lab.tools import iperf

pytestmark = pytest.mark.root


def by_iface(lab, node: str, iface: str):
    return next(a for a in audit_interfaces(lab.record) if a.node == node and a.iface == iface)


def test_audit_sees_super_frames_when_tso_is_used(make_lab) -> None:
    lab = make_lab("two_hosts")
    iperf(lab, "h1", "h2", seconds=1)
    h1 = by_iface(lab, "h1", "eth0")
    assert h1.features["tso"] and h1.features["gso"]
    assert h1.stats["tx_bytes"] / h1.stats["tx_packets"] > 1514  # GSO packets are counted whole
    assert h1.findings == []


def test_audit_flags_tso_advertised_but_unused(make_lab) -> None:
    """TSO is on, but one small write per segment (no delay) never gives the device a super-frame."""
    lab = make_lab("two_hosts")
    iperf(lab, "h1", "h2", seconds=1, extra=["-N", "-l", "1400", "-b", "200M"])
    h1 = by_iface(lab, "h1", "eth0")
    assert h1.features["tso"]
    assert any("no super-frames" in f for f in h1.findings), h1.findings
    done = subprocess.run([sys.executable, "-m", "toelab", "audit", lab.id], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr  # audit exits 1 when it flags something
    assert "no super-frames left" in " ".join(done.stdout.split())


def test_audit_of_unknown_lab_is_one_sentence() -> None:
    done = subprocess.run([sys.executable, "-m", "toelab", "audit", "tlzzzz"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "there is no lab 'tlzzzz'" in done.stderr
