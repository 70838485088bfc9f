"""`toelab fuzz`: its report, its JSON and its refusals of bad arguments."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from toelab.cli import main


def test_fuzz_prints_and_writes_a_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fuzz.json"
    assert main(["fuzz", "--frames", "2000", "--policy", "syncookie", "--seed", "3", "--out", str(tmp_path),
                 "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "fuzz syncookie seed 3: 2,000 frames" in printed and "exceptions: none" in printed
    (report,) = json.loads(out.read_text())
    assert (report["frames"], report["policy"], report["exceptions"], report["violations"]) == (2000, "syncookie", {}, 0)
    assert report["peak_rss_kib"] > 0 and report["counters"]["rx_frames"] >= 2000


@pytest.mark.parametrize("argv, says", [
    (["--policy", "deny:maybe"], "--policy: unknown exhaustion policy"),
    (["--frames", "0"], "--frames must be at least 1"),
    (["--guided", "--policy", "all"], "one policy at a time"),
])
def test_fuzz_refuses_bad_arguments_in_one_sentence(argv: list[str], says: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fuzz", *argv]) == 2
    assert says in capsys.readouterr().err


def test_fuzz_transfers_reports_how_the_echoes_came_back(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fuzz", "--transfers", "4", "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    assert "4 mutated echo transfers" in printed and "exceptions: none" in printed and "leftovers: none" in printed
