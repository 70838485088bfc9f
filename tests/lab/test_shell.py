"""The lab shell, driven through its command API and through a real terminal (pexpect)."""
from __future__ import annotations

import io
import sys
from pathlib import Path

import pexpect
import pytest

from toelab.shell import LabShell

pytestmark = pytest.mark.root
REPO = Path(__file__).resolve().parents[2]


def run(shell: LabShell, line: str) -> str:
    out = shell.stdout
    assert isinstance(out, io.StringIO)
    out.seek(0)
    out.truncate()
    shell.onecmd(line)
    return out.getvalue()


def test_shell_commands_on_router_path(make_lab) -> None:
    lab = make_lab("router_path")
    shell = LabShell(lab, stdout=io.StringIO())
    assert "h1(host) r1(router) h2(host)" in run(shell, "nodes")
    assert "h1:eth0<->r1:eth0 mtu 1500" in run(shell, "links")
    assert "h1 eth0:r1:eth0" in run(shell, "net")
    assert "r1: eth0,eth1" in run(shell, "intfs")
    assert f"netns={lab.id}-h1" in run(shell, "dump")
    assert "0% dropped (6/6 received)" in run(shell, "pingall")
    out = run(shell, "h1 ping -c1 -W2 h2")
    assert "1 received" in out and "10.0.2.2" in out
    assert "gro=off" in run(shell, "features r1 eth0 gro=off")
    assert "*** capturing on h2:eth0" in run(shell, "capture start h2 eth0 icmp")
    run(shell, "h1 ping -c2 -i0.05 h2")
    wrote = run(shell, "capture stop h2 eth0")
    pcap = Path(wrote.split("wrote ")[1].strip())
    assert pcap.stat().st_size > 24 + 4 * 98  # pcap header plus four ICMP frames
    assert "Gbit/s" in run(shell, "iperf h1 h2 1")
    assert "unknown command or node: nosuch" in run(shell, "nosuch x")
    assert "usage: iperf" in run(shell, "iperf h1")
    assert shell.onecmd("exit") is True


def test_shell_in_a_terminal_with_completion_and_teardown(tmp_path: Path) -> None:
    child = pexpect.spawn(sys.executable, ["-m", "toelab", "shell", "two_hosts"], cwd=str(REPO),
                          env={"TOELAB_HISTORY": str(tmp_path / "history"), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                          encoding="utf-8", timeout=30)
    try:
        child.expect_exact("toelab(two_hosts)> ")
        child.sendline("nodes")
        child.expect_exact("h1(host) h2(host)")
        child.expect_exact("toelab(two_hosts)> ")
        child.send("pinga\t")
        child.expect_exact("pingall")
        child.sendline("")
        child.expect("0% dropped")
        child.expect_exact("toelab(two_hosts)> ")
        child.sendline("exit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    assert "nodes" in (tmp_path / "history").read_text()


def test_toe_commands_show_an_endpoint_table(make_lab) -> None:
    lab = make_lab("toe_pair", capacity=8)
    shell = LabShell(lab, stdout=io.StringIO())
    stats = " ".join(run(shell, "toe stats t1").split())
    assert "gauge.table_capacity │ 8" in stats
    assert "gauge.table_occupancy │ 0" in stats
    assert "t1 (toe): 0 connections" in " ".join(run(shell, "toe conns t1").split())
