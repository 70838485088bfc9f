"""The toelab command's handling of bad input: one sentence, exit status 2, nothing created.

These errors are found before any namespace would be built, so they need no root.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from toelab.cli import main
from lab.pytest_plugin import host_state, leftovers_since

TOELAB = [sys.executable, "-m", "toelab"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(TOELAB + list(args), capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2])




@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["up", "no_such_topology"], "unknown topology"),
        (["up", "router_path", "-p", "nosuch=1"], "declares no such parameter"),
        (["up", "router_path", "-p", "mtu"], "expected key=value"),
        (["up", "router_path", "-p", "mtu=big"], "cannot use 'big'"),
        (["up", "router_path", "-p", "mtu=40"], "greater than or equal to 68"),
        (["up", "bridge", "-p", "n=300"], "not a valid IPv4 interface"),
    ],
)
def test_bad_input_is_one_sentence_and_exit_2(args: list[str], expected: str) -> None:
    before = host_state()
    done = run_cli(*args)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 or "toelab:" in lines[0], done.stderr
    assert expected in " ".join(done.stderr.split()), done.stderr
    assert "Traceback" not in done.stderr
    assert leftovers_since(before) == []


def test_mtu_error_names_the_template_line(tmp_path: Path) -> None:
    done = run_cli("up", "router_path", "-p", "mtu=40")
    message = " ".join(done.stderr.split())
    assert "router_path.yaml.j2" in message
    assert "links[0].mtu" in message
    assert "line " in message


def test_unknown_subcommand_exits_2() -> None:
    done = run_cli("frobnicate")
    assert done.returncode == 2
    assert "invalid choice" in done.stderr


def test_topologies_lists_every_template(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["topologies"]) == 0
    out = capsys.readouterr().out
    for name in ("two_hosts", "router_path", "bridge", "mtu_mismatch", "middlebox_chain"):
        assert name in out
