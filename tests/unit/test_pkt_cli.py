"""`toelab pkt run` on bad input: one sentence naming the file and line, exit 2, before anything is built."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def toelab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "toelab", *args], capture_output=True, text=True, timeout=60)


def test_an_unreadable_script_is_one_sentence_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pkt"
    bad.write_text("0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n+0 write(3, ..., 10 = 10\n")
    result = toelab("pkt", "run", str(bad))
    assert result.returncode == 2
    assert f"{bad}:2: unbalanced" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_missing_script_is_exit_2() -> None:
    result = toelab("pkt", "run", "/nonexistent/x.pkt")
    assert result.returncode == 2 and "cannot read the script" in result.stderr


def test_an_unknown_target_is_refused_by_the_parser() -> None:
    result = toelab("pkt", "run", "x.pkt", "--target", "lwip")
    assert result.returncode == 2 and "invalid choice" in result.stderr
