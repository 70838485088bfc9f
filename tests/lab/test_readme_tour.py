"""The README's tour, run as written: every `toelab` line that needs no long run, in order, on one lab.

`LAB` in the README is replaced by the id `toelab up` printed. Lines that open an
interactive shell get `-c nodes` (they run their real arguments, then leave); runs,
benchmarks and the demo are only parsed (tests/unit/test_readme.py), being long.
"""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from lab.netns import list_names
from lab.state import read_record

pytestmark = pytest.mark.root
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "unit"))
from test_readme import LAB_PLACEHOLDER, readme_commands  # noqa: E402

LONG = {"run", "bench", "demo", "pkt", "fuzz"}  # parsed by tests/unit/test_readme.py, run by their own tests


def toelab(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "toelab", *argv], capture_output=True, text=True, timeout=120,
                          cwd=cwd)


def test_the_readme_tour_runs_as_written(tmp_path: Path) -> None:
    lab_id = None
    ran = []
    try:
        for line in readme_commands():
            argv = shlex.split(line)[1:]
            if argv[0] in LONG:
                continue
            if argv[0] == "shell":
                argv += ["-c", "nodes"]
            if LAB_PLACEHOLDER in argv:
                assert lab_id is not None, f"{line!r} comes before `toelab up` in the README"
                argv = [lab_id if a == LAB_PLACEHOLDER else a for a in argv]
            done = toelab(argv, tmp_path)
            expected = {0, 1} if argv[0] == "audit" else {0}  # audit exits 1 when it flags something
            assert done.returncode in expected, f"{line!r} exited {done.returncode}: {done.stderr[-600:]}"
            ran.append(argv[0])
            if argv[0] == "up":
                found = re.search(r"lab (tl[0-9a-f]{4}) is up", done.stdout)
                assert found, done.stdout
                lab_id = found.group(1)
            if argv[0] == "exec":
                assert "1 received" in done.stdout
            if argv[0] == "inspect":
                assert json.loads(done.stdout)["lab"] == lab_id
            if argv[0] == "shell" and LAB_PLACEHOLDER in line:
                assert "available nodes are" in done.stdout and read_record(lab_id) is not None  # still up
            if argv[0] == "down":
                assert read_record(lab_id) is None
                assert not [n for n in list_names() if n.startswith(f"{lab_id}-")]
                lab_id = None
    finally:
        if lab_id is not None:
            toelab(["down", lab_id], tmp_path)
    assert {"topologies", "graph", "up", "ls", "exec", "shell", "inspect", "audit", "down", "clean",
            "scenarios"} <= set(ran)


@pytest.mark.skipif(subprocess.run(["sh", "-c", "command -v sudo"], capture_output=True).returncode == 0,
                    reason="with sudo present ./run would ask it for a password")
def test_run_as_another_user_without_sudo_says_run_it_as_root() -> None:
    done = subprocess.run(["su", "nobody", "-s", "/bin/sh", "-c", f"cd {REPO} && ./run demo"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert "needs root" in done.stderr and "run it as root" in done.stderr
