"""Attaching to a lab another process built: engines found again, processes tracked and released, never removed."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lab.errors import LabError
from lab.lab import Lab
from lab.state import is_alive, read_record

pytestmark = pytest.mark.root
REPO = Path(__file__).resolve().parents[2]


def toelab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "toelab", *args], capture_output=True, text=True, timeout=120,
                          cwd=REPO)


@pytest.fixture
def toe_lab_id():  # type: ignore[no-untyped-def]
    done = toelab("up", "toe_pair", "-p", "capacity=8")
    assert done.returncode == 0, done.stderr
    found = re.search(r"lab (tl[0-9a-f]{4}) is up", done.stdout)
    assert found, done.stdout
    yield found.group(1)
    down = toelab("down", found.group(1))
    assert down.returncode == 0, down.stderr


def test_attached_lab_finds_engines_tracks_and_releases_its_processes(toe_lab_id: str) -> None:
    lab = Lab.attach(toe_lab_id)
    assert lab.attached and set(lab.engines()) == {"t1"}
    assert lab.engine("t1").stats()["gauges"]["table_capacity"] == 8
    sleeper = lab.node("h1").popen(["sleep", "60"])
    recorded = read_record(toe_lab_id)
    assert recorded is not None and sleeper.pid in recorded.pids  # `toelab down` would stop it too
    with pytest.raises(LabError, match="was attached to, not built here"):
        lab.down()
    lab.release()
    assert sleeper.poll() is not None
    after = read_record(toe_lab_id)
    assert after is not None and sleeper.pid not in after.pids and after.status == "up"
    assert all(is_alive(p.pid, p.start_time) for p in after.processes)  # the engine and services still run


def test_shell_toe_stats_inspect_and_audit_json_on_a_running_lab(toe_lab_id: str) -> None:
    shell = toelab("shell", toe_lab_id, "-c", "toe stats t1", "-c", "h1 ping -c1 -W2 t1")
    assert shell.returncode == 0, shell.stderr
    out = " ".join(shell.stdout.split())
    assert "gauge.table_capacity │ 8" in out and "1 received" in out
    inspected = json.loads(toelab("inspect", toe_lab_id).stdout)
    assert inspected["nodes"]["t1"]["kind"] == "toe"
    t1 = {i["name"]: i for i in inspected["nodes"]["t1"]["interfaces"]}
    assert "toe0" in t1 and any(a.startswith("10.0.7.2/") for a in t1["toe0"]["addresses"])
    assert any("endpoint_main" in p["argv"] and p["alive"] for p in inspected["processes"])
    drawn = toelab("graph", toe_lab_id, "--format", "dot")
    assert drawn.returncode == 0 and "t1 [shape=doubleoctagon" in drawn.stdout and "capacity=8" in drawn.stdout
    audit = toelab("audit", toe_lab_id, "--json")
    data = json.loads(audit.stdout)
    assert audit.returncode == (1 if data["flagged"] else 0)
    assert "t1" in data["engines"] and {i["node"] for i in data["interfaces"]} == {"h1", "t1"}


def test_attaching_to_what_is_not_a_running_lab_is_one_sentence() -> None:
    with pytest.raises(LabError, match="there is no lab 'tlzzzz'"):
        Lab.attach("tlzzzz")
    done = toelab("shell", "tl0bad")
    assert done.returncode == 2 and "there is no lab 'tl0bad'" in done.stderr, done.stderr
    done = toelab("graph", "tl0bad")
    assert done.returncode == 2 and "there is no lab 'tl0bad'" in done.stderr, done.stderr
