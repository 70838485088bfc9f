"""Removing labs from other processes, after crashes, on SIGTERM; never touching live ones."""
from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import netns
from lab.cleanup import clean, down_lab
from lab.errors import LabError
from lab.pytest_plugin import MakeLab
from lab.state import is_alive, process_start_time, read_record

pytestmark = pytest.mark.root
ROOT = Path(__file__).resolve().parents[2]

# A child that builds a lab, starts a long process in it, says its lab id and that PID, and waits.
OWNER = """
import sys
from lab.lab import Lab
from lab.render import load_topology
lab = Lab.up(load_topology(sys.argv[1]))
sleeper = lab.node("h1").popen(["sleep", "600"])
if sys.argv[2] == "detach":
    lab.detach()
    print(lab.id, sleeper.pid, flush=True)
    sys.exit(0)
print(lab.id, sleeper.pid, flush=True)
with lab:
    sys.stdin.readline()
"""


@pytest.fixture
def owners() -> Iterator[list[subprocess.Popen[str]]]:
    """Child processes that own labs; whatever a test leaves of them is removed afterwards."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    clean()


def start_owner(owners: list[subprocess.Popen[str]], topology: str = "two_hosts",
                mode: str = "stay") -> tuple[subprocess.Popen[str], str, int]:
    proc = subprocess.Popen([sys.executable, "-c", OWNER, topology, mode], cwd=ROOT, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    owners.append(proc)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, proc.stderr.read() if proc.stderr else ""
    lab_id, pid = line.split()
    return proc, lab_id, int(pid)


def lab_namespaces(lab_id: str) -> set[str]:
    return {name for name in netns.list_names() if name.startswith(lab_id + "-")}


def gone(pid: int, start_time: int | None) -> bool:
    """Exited (a zombie whose parent died counts: it runs nothing)."""
    if not is_alive(pid, start_time):
        return True
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_clean_removes_a_lab_whose_owner_was_sigkilled(owners: list[subprocess.Popen[str]]) -> None:
    proc, lab_id, sleeper = start_owner(owners, "router_path")
    sleeper_start = process_start_time(sleeper)
    assert len(lab_namespaces(lab_id)) == 3
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(lab_namespaces(lab_id)) == 3  # a killed owner cannot clean up after itself
    assert not gone(sleeper, sleeper_start)
    removed = clean()
    assert lab_id in removed
    assert lab_namespaces(lab_id) == set()
    assert read_record(lab_id) is None
    assert gone(sleeper, sleeper_start)


def test_clean_leaves_live_labs_alone(make_lab: MakeLab, owners: list[subprocess.Popen[str]]) -> None:
    mine = make_lab("two_hosts")
    _, theirs, _ = start_owner(owners)
    removed = clean()
    assert mine.id not in removed and theirs not in removed
    assert len(lab_namespaces(mine.id)) == 2 and len(lab_namespaces(theirs)) == 2
    assert read_record(mine.id) is not None and read_record(theirs) is not None


def test_sigterm_makes_the_owner_tear_its_lab_down(owners: list[subprocess.Popen[str]]) -> None:
    proc, lab_id, sleeper = start_owner(owners)
    sleeper_start = process_start_time(sleeper)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 128 + signal.SIGTERM
    assert lab_namespaces(lab_id) == set()
    assert read_record(lab_id) is None
    assert gone(sleeper, sleeper_start)


def test_closing_stdin_ends_the_with_block_and_the_lab(owners: list[subprocess.Popen[str]]) -> None:
    proc, lab_id, _ = start_owner(owners)
    proc.communicate("\n", timeout=20)
    assert proc.returncode == 0
    assert lab_namespaces(lab_id) == set() and read_record(lab_id) is None


def test_down_lab_works_from_another_process(make_lab: MakeLab) -> None:
    lab = make_lab("two_hosts")
    proc = lab.node("h2").popen(["sleep", "600"])
    done = subprocess.run([sys.executable, "-c", f"from lab.cleanup import down_lab; print(down_lab({lab.id!r}))"],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert f"{lab.id}-h1" in done.stdout and f"{lab.id}-h2" in done.stdout
    assert proc.wait(timeout=5) is not None
    assert lab_namespaces(lab.id) == set() and read_record(lab.id) is None
    lab.down()  # the owner's own teardown finds nothing left and does not fail


def test_detached_lab_survives_its_owner_and_clean_until_down(owners: list[subprocess.Popen[str]]) -> None:
    proc, lab_id, sleeper = start_owner(owners, mode="detach")
    sleeper_start = process_start_time(sleeper)
    assert proc.wait(timeout=20) == 0
    record = read_record(lab_id)
    assert record is not None and record.detached
    assert lab_id not in clean()
    assert len(lab_namespaces(lab_id)) == 2
    assert set(down_lab(lab_id)) == {f"{lab_id}-h1", f"{lab_id}-h2"}
    assert lab_namespaces(lab_id) == set()
    assert gone(sleeper, sleeper_start)


def test_down_lab_of_unknown_id_says_so() -> None:
    with pytest.raises(LabError, match="there is no lab 'tlzzzz'"):
        down_lab("tlzzzz")
