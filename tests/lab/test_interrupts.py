"""Ctrl-C and SIGTERM: every toelab command stops within 2 s, removes what it made and exits 130 or 143.

Each test starts a real `toelab` process, waits for an event that proves it is in the
middle of something (a flood process in its lab's record, a shell prompt, a lab record
still `building`), signals it, and checks the exit status, the time it took, and that no
namespace, process or record of it is left.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from lab.netns import list_names
from lab.state import STATE_DIR, LabRecord, is_alive, list_records

pytestmark = pytest.mark.root
REPO = Path(__file__).resolve().parents[2]
LIMIT_S = 2.0


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "toelab", *args], cwd=REPO, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def records_of(proc: subprocess.Popen[str]) -> list[LabRecord]:
    return [r for r in list_records() if r.creator_pid == proc.pid]


def await_record(proc: subprocess.Popen[str], ready: Callable[[LabRecord], bool], timeout_s: float) -> LabRecord:
    """Poll the state directory (the only outside view of a lab) until the process's lab is in the wanted state."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for record in records_of(proc):
            if ready(record):
                return record
        if proc.poll() is not None:
            raise AssertionError(f"toelab exited ({proc.returncode}) first: {proc.communicate()[1][-800:]}")
        time.sleep(0.005)
    proc.kill()
    raise AssertionError(f"the lab never got there: {proc.communicate()[1][-800:]}")


def signal_and_wait(proc: subprocess.Popen[str], signum: int, second: bool = False) -> tuple[int, float, str]:
    sent = time.monotonic()
    proc.send_signal(signum)
    if second:
        time.sleep(0.05)  # a second Ctrl-C while teardown runs (timing is the point here, not an event)
        if proc.poll() is None:
            proc.send_signal(signum)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"toelab did not stop: {err[-800:]}") from None
    return proc.returncode, time.monotonic() - sent, err


def assert_nothing_left(record: LabRecord) -> None:
    assert not (STATE_DIR / f"{record.lab_id}.json").exists(), "the lab's record is left"
    assert not (STATE_DIR / record.lab_id).exists(), "the lab's runtime directory is left"
    assert not [n for n in list_names() if n.startswith(record.lab_id + "-")], "namespaces are left"
    alive = [p.argv for p in record.processes if is_alive(p.pid, p.start_time)]
    assert alive == [], f"processes are left: {alive}"


def flooding(record: LabRecord) -> bool:
    return record.status == "up" and any("-m scenarios.flood" in p.argv for p in record.processes)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_run_syn_flood_on_toe_stops_mid_flood(signum: int, code: int) -> None:
    proc = start("run", "syn_flood", "--target", "toe")
    record = await_record(proc, flooding, timeout_s=60)
    record = next((r for r in records_of(proc) if r.lab_id == record.lab_id), record)  # the fullest process list
    status, took, err = signal_and_wait(proc, signum)
    assert status == code, err[-800:]
    assert took < LIMIT_S, f"took {took:.2f} s"
    assert ("interrupted (SIGINT) while running syn_flood on toe" if code == 130
            else "terminated (SIGTERM) while running syn_flood on toe") in err, err[-800:]
    assert "Traceback" not in err
    assert_nothing_left(record)


def test_a_second_ctrl_c_does_not_cut_teardown_short() -> None:
    proc = start("run", "syn_flood", "--target", "toe")
    record = await_record(proc, flooding, timeout_s=60)
    record = next((r for r in records_of(proc) if r.lab_id == record.lab_id), record)
    status, took, err = signal_and_wait(proc, signal.SIGINT, second=True)
    assert status == 130, err[-800:]
    assert took < LIMIT_S, f"took {took:.2f} s"
    assert_nothing_left(record)


def test_shell_stops_on_sigint_and_removes_its_lab() -> None:
    proc = start("shell", "two_hosts")
    assert proc.stdout is not None
    line = ""
    while "toelab(two_hosts)>" not in line:  # the intro, then the prompt (input() writes it without newline)
        chunk = proc.stdout.read(1)
        assert chunk, f"no prompt: {proc.communicate()[1][-800:]}"
        line = (line + chunk)[-200:]
    record = records_of(proc)[0]
    status, took, err = signal_and_wait(proc, signal.SIGINT)
    assert status == 130, err[-800:]
    assert took < LIMIT_S
    assert "while in the shell on lab" in err
    assert_nothing_left(record)


def test_up_interrupted_mid_build_leaves_nothing() -> None:
    """A 60-node chain takes long enough to build that the record is still `building` when SIGINT lands."""
    proc = start("up", "chain", "-p", "n=60")
    record = await_record(proc, lambda r: r.status == "building" and any(
        os.path.exists(f"/run/netns/{name}") for name in r.namespaces), timeout_s=30)
    status, took, err = signal_and_wait(proc, signal.SIGINT)
    if status == 0:  # the build won the race and the lab is up: remove it before failing
        subprocess.run([sys.executable, "-m", "toelab", "down", record.lab_id], capture_output=True, timeout=60)
    assert status == 130, err[-800:]
    assert took < LIMIT_S
    assert "while building topology chain" in err
    assert_nothing_left(record)


def test_interrupted_run_all_still_reports_what_finished(tmp_path: Path) -> None:
    report = tmp_path / "report"
    proc = start("run", "all", "--target", "kernel", "--report", str(report))
    assert proc.stdout is not None
    first = proc.stdout.readline()  # "[1/N] NAME on kernel: ..." once the first scenario has finished
    assert first.startswith("[1/"), first + proc.communicate()[1][-800:]
    finished = first.split("] ", 1)[1].split(" on ", 1)[0]
    second = await_record(proc, lambda r: r.status == "up", timeout_s=60)  # the next scenario's lab is up
    status, took, err = signal_and_wait(proc, signal.SIGINT)
    assert status == 130, err[-800:]
    assert took < LIMIT_S, f"took {took:.2f} s"
    import json
    results = json.loads((report / "results.json").read_text())["results"]
    assert finished in {r["scenario"] for r in results}
    assert (report / "index.html").is_file()
    assert_nothing_left(second)
    assert records_of(proc) == []
