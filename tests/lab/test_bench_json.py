"""`toelab bench flood --json FILE` in a real lab: rows in the benchmark convention, and nothing left behind."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lab.pytest_plugin import host_state, leftovers_since
from toelab.benches.rows import check_row

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.root
def test_bench_flood_writes_rows_against_scapy(tmp_path: Path) -> None:
    out = tmp_path / "flood.json"
    before = host_state()
    done = subprocess.run([sys.executable, "-m", "toelab", "bench", "flood", "--seconds", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())
    assert [r["workers"] for r in rows] == [1, 2]
    for r in rows:
        check_row(r, "flood")
        assert r["unit"] == "SYN/s" and r["reference"] > 0
        assert r["ratio"] > 5, "pre-built frames on a raw socket send many times what Scapy does"
    assert rows[0]["reference"] == rows[1]["reference"], "one Scapy measurement is the reference of both"
    assert f"{rows[0]['engine']:,}" in done.stdout, "the terminal table shows the same figure"
    assert leftovers_since(before) == []
