"""The lab shell, driven through its command API and through a real terminal (pexpect)."""
from __future__ import annotations

import io
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pexpect
import pytest

from lab.pytest_plugin import host_state, leftovers_since
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


def spawn_shell(target: str, tmp_path: Path) -> pexpect.spawn:
    return pexpect.spawn(sys.executable, ["-m", "toelab", "shell", target], cwd=str(REPO), encoding="utf-8",
                         env={"TOELAB_HISTORY": str(tmp_path / "history"), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                         timeout=30)


@contextmanager
def shell_terminal(target: str, tmp_path: Path) -> Iterator[pexpect.spawn]:
    """`toelab shell TARGET` on a real pty; the block ends by typing `exit`, which must exit 0."""
    child = spawn_shell(target, tmp_path)
    try:
        yield child
        child.sendline("exit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


def test_shell_in_a_terminal_with_completion_and_teardown(tmp_path: Path) -> None:
    with shell_terminal("two_hosts", tmp_path) as child:
        child.expect_exact("toelab(two_hosts)> ")
        child.sendline("nodes")
        child.expect_exact("h1(host) h2(host)")
        child.expect_exact("toelab(two_hosts)> ")
        child.send("pinga\t")
        child.expect_exact("pingall")
        child.sendline("")
        child.expect("0% dropped")
        child.expect_exact("toelab(two_hosts)> ")
    assert "nodes" in (tmp_path / "history").read_text()


def test_toe_commands_show_an_endpoint_table(make_lab) -> None:
    lab = make_lab("toe_pair", capacity=8)
    shell = LabShell(lab, stdout=io.StringIO())
    stats = " ".join(run(shell, "toe stats t1").split())
    assert "gauge.table_capacity │ 8" in stats
    assert "gauge.table_occupancy │ 0" in stats
    assert "t1 (toe): 0 connections" in " ".join(run(shell, "toe conns t1").split())


# --- working with a running lab ----------------------------------------------------------------
def toelab(*args: str, timeout: float = 60) -> "subprocess.CompletedProcess[str]":
    import subprocess
    return subprocess.run([sys.executable, "-m", "toelab", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO)


def lab_id_of(up_output: str) -> str:
    import re
    found = re.search(r"lab (tl[0-9a-f]{4}) is up", up_output)
    assert found, up_output
    return found.group(1)


def test_up_exec_shell_down_on_a_running_lab(tmp_path: Path) -> None:
    """`toelab up`, then exec and an attached shell (through a pty) use it; exit leaves it up; down removes it."""
    from lab.netns import list_names
    from lab.state import read_record

    done = toelab("up", "router_path")
    assert done.returncode == 0, done.stderr
    lab_id = lab_id_of(done.stdout)
    try:
        ping = toelab("exec", lab_id, "h1", "--", "ping", "-c1", "-W1", "10.0.2.2")
        assert ping.returncode == 0 and "1 received" in ping.stdout, ping.stdout + ping.stderr
        assert toelab("exec", lab_id, "h1", "--", "sh", "-c", "exit 7").returncode == 7
        echoed = subprocess_run_with_input(["exec", lab_id, "h2", "--", "cat"], "through stdin\n")
        assert echoed == "through stdin\n"
        missing = toelab("exec", lab_id, "h1", "--", "no-such-program")
        assert missing.returncode == 127 and "node h1 has no command 'no-such-program'" in missing.stderr

        with shell_terminal(lab_id, tmp_path) as child:
            child.expect_exact("the lab stays up")
            child.expect_exact("toelab(router_path)> ")
            child.sendline("h1 ping -c1 h2")
            child.expect_exact("PING 10.0.2.2")  # h2 became its address
            child.expect_exact("1 received")
            child.expect_exact("toelab(router_path)> ")
            child.sendline("h1 echo sleeping; exec sleep 30")
            child.expect_exact("sleeping\r\n")
            started = time.monotonic()
            child.sendintr()  # Ctrl-C: goes to the node command through its pty, not to the shell
            child.expect_exact("*** stopped by signal 2")
            child.expect_exact("toelab(router_path)> ")
            assert time.monotonic() - started < 2
            child.sendline("h2 cat")  # keys reach an interactive node command
            child.sendline("typed line")
            child.expect_exact("typed line\r\ntyped line")  # the pty's echo, then cat's copy
            child.sendeof()
            child.expect_exact("toelab(router_path)> ")
        record = read_record(lab_id)
        assert record is not None and record.status == "up" and record.processes == []
        assert {f"{lab_id}-h1", f"{lab_id}-r1", f"{lab_id}-h2"} <= list_names()
    finally:
        down = toelab("down", lab_id)
    assert down.returncode == 0, down.stderr
    assert not any(name.startswith(lab_id) for name in list_names())
    assert read_record(lab_id) is None


def subprocess_run_with_input(args: list[str], text: str) -> str:
    import subprocess
    done = subprocess.run([sys.executable, "-m", "toelab", *args], input=text, capture_output=True, text=True,
                          timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_shell_commands_sh_py_source_time_link_pingpair(make_lab, tmp_path: Path) -> None:
    lab = make_lab("router_path")
    shell = LabShell(lab, stdout=io.StringIO())
    assert "root-namespace" in run(shell, "sh echo root-namespace")
    assert "'10.0.2.2'" in run(shell, "py lab.address('h2')")
    assert "h1" in run(shell, "py h1.name")
    assert "*** ZeroDivisionError" in run(shell, "py 1/0")
    assert "*** 'h1 true' took" in run(shell, "time h1 true")
    assert "h1 -> h2" in run(shell, "pingpair") and "0% dropped" in run(shell, "pingpair")
    assert "h1:eth0 and r1:eth0 down" in run(shell, "link h1 r1 down")
    assert "*** exit status" in run(shell, "h1 ping -c1 -W1 h2")
    assert "h1:eth0 and r1:eth0 up" in run(shell, "link h1 r1 up")
    assert "no link between 'h1' and 'h2'" in run(shell, "link h1 h2 down")
    script = tmp_path / "cmds"
    script.write_text("# a comment\nnodes\n\npy 6 * 7\n")
    out = run(shell, f"source {script}")
    assert "h1(host)" in out and "42" in out
    assert "cannot read" in run(shell, "source /nonexistent/file")
    loop = tmp_path / "loop"
    loop.write_text(f"source {loop}\n")
    assert "nested more than 10 deep" in run(shell, f"source {loop}")
    run(shell, "py answer = 6 * 7")
    assert "42" in run(shell, "py answer")
    assert shell.onecmd("exit") is True


def test_node_commands_survive_missing_tools_and_failures(make_lab, monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing program, a failing command or a missing tcpdump is one line; the shell and lab carry on."""
    lab = make_lab("two_hosts")
    shell = LabShell(lab, stdout=io.StringIO())
    assert "not found" in run(shell, "h1 no-such-program") and "exit status 127" in shell.stdout.getvalue()
    monkeypatch.setenv("PATH", "/nonexistent")
    out = run(shell, "capture start h1 eth0")
    assert out.startswith("*** capture in the shell records with tcpdump") and "tcpdump is not installed" in out
    assert "iperf3 is not installed" in run(shell, "iperf h1 h2")
    monkeypatch.undo()
    assert "1 received" in run(shell, "h1 ping -c1 -W2 h2")


def test_substitution_is_for_whole_words_in_address_positions(make_lab) -> None:
    lab = make_lab("router_path")
    shell = LabShell(lab, stdout=io.StringIO())
    assert shell.substitute("ping -c1  h2") == "ping -c1  10.0.2.2"
    assert shell.substitute("ip link show dev h1-eth0") == "ip link show dev h1-eth0"
    assert shell.substitute("tcpdump -i h2 -w /tmp/h2.pcap") == "tcpdump -i h2 -w /tmp/h2.pcap"
    assert shell.substitute("ip route get h2 dev eth0") == "ip route get 10.0.2.2 dev eth0"
    assert shell.substitute("echo h1 r1 h2x") == "echo 10.0.1.2 10.0.1.1 h2x"


def test_terminal_shell_ends_on_sigterm_mid_command_and_on_ctrl_c_at_the_prompt(tmp_path: Path) -> None:
    """SIGTERM while a node command holds the terminal in raw mode: 143, lab removed; Ctrl-C at the prompt: 130."""
    import signal

    from lab.netns import list_names

    for how, code in (("sigterm", 143), ("ctrl-c", 130)):
        child = spawn_shell("two_hosts", tmp_path)
        try:
            child.expect(r"toelab shell on lab (tl[0-9a-f]{4})")
            lab_id = child.match.group(1)
            child.expect_exact("toelab(two_hosts)> ")
            if how == "sigterm":
                child.sendline("h1 echo holding; exec sleep 30")
                child.expect_exact("holding\r\n")
                child.kill(signal.SIGTERM)
            else:
                child.sendintr()
            child.expect(pexpect.EOF)
        finally:
            child.close(force=True)
        assert child.exitstatus == code, (how, child.exitstatus, child.signalstatus)
        assert not [n for n in list_names() if n.startswith(f"{lab_id}-")], how


# --- scenario NAME: a scenario run on the shell's own lab, its checks printed, the lab left up ---------
SCENARIO_TOTALS = re.compile(
    r"^\*\*\* handshake on kernel: (\d+) passed, (\d+) failed, (\d+) skipped in [\d.]+ s; files in (\S+)$")
CHECK_LINE = re.compile(r"^\s*(pass|fail|skip)  (\S+)  \[([^\]]+)\]  \S")


def test_scenario_runs_on_the_shells_lab_and_prints_its_checks(make_lab) -> None:
    lab = make_lab("two_hosts", tso="false")  # the lab handshake builds: its MSS checks need TSO off
    shell = LabShell(lab, stdout=io.StringIO())
    own = lab.node("h1").popen(["sleep", "60"])  # the lab's own process: the run must leave it alone
    before, processes = host_state(), {p.pid for p in lab.record.processes}
    lines = run(shell, "scenario handshake --seed 3").splitlines()
    assert lines[0] == "*** handshake on kernel (host h2 serves, h1 is the client)"
    totals = SCENARIO_TOTALS.match(lines[-1])
    assert totals, lines[-1]
    checks = [CHECK_LINE.match(line) for line in lines[1:-1]]
    assert checks and all(checks), lines[1:-1]
    verdicts = [m.group(1) for m in checks if m]
    assert [verdicts.count(v) for v in ("pass", "fail", "skip")] == [int(totals.group(i)) for i in (1, 2, 3)]
    assert verdicts.count("pass") >= 1 and all(m.group(3) for m in checks if m)
    assert Path(totals.group(4)).is_dir() and lab.id in totals.group(4)
    assert leftovers_since(before) == [], "no lab of its own"
    started = [p.pid for p in lab.record.processes if p.pid not in processes]
    assert started and not [pid for pid in started if Path(f"/proc/{pid}").exists()], "the target's services stopped"
    assert own.poll() is None, "the lab's own process still runs"
    assert "1 received" in run(shell, "h1 ping -c1 -W2 h2"), "the shell's lab is still up and usable"
    assert shell.completedefault("hand", "scenario hand", 9, 13) == ["handshake"]
    assert shell.completedefault("h", "scenario handshake -p h", 22, 23) == ["h1", "h2"], "names only as the first word"


@pytest.mark.parametrize(("line", "said"), [
    ("scenario nosuch", "*** no scenario 'nosuch' (there are: "),
    ("scenario loss", "*** scenario loss runs on topology middlebox_chain with mb_kind=middlebox, tso=True, and this "
                      "lab is two_hosts: open `toelab shell middlebox_chain -p mb_kind=middlebox -p tso=True` for it\n"),
    ("scenario handshake", "*** scenario handshake runs on topology two_hosts with mtu=1500, tso=false, and this lab "
                           "is two_hosts built otherwise: open `toelab shell two_hosts -p mtu=1500 -p tso=false` for "
                           "it, or add --as-is to judge this lab\n"),
    ("scenario handshake --target both", "*** argument --target: invalid choice: 'both'"),
    ("scenario", "*** the following arguments are required: name; usage: scenario NAME"),
    ("scenario handshake -p nosuch=1", "nosuch"),
])
def test_a_bad_scenario_command_is_one_line_and_the_shell_goes_on(make_lab, line: str, said: str) -> None:
    lab = make_lab("two_hosts")
    shell = LabShell(lab, stdout=io.StringIO())
    out = run(shell, line)
    assert out.startswith("***") and said in out and out.count("\n") == 1, out
    assert "available nodes are:" in run(shell, "nodes")


def test_as_is_runs_on_a_lab_built_otherwise_and_says_so(make_lab) -> None:
    lab = make_lab("two_hosts")  # TSO on: not the lab handshake builds
    shell = LabShell(lab, stdout=io.StringIO())
    lines = run(shell, "scenario handshake --as-is").splitlines()
    assert lines[1] == ("*** as is: scenario handshake runs on topology two_hosts with mtu=1500, tso=false, and "
                        "this lab is two_hosts built otherwise; the verdicts judge this lab")
    assert SCENARIO_TOTALS.match(lines[-1]) and all(CHECK_LINE.match(line) for line in lines[2:-1])
