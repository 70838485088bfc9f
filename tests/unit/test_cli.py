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


def test_every_command_in_the_table_resolves() -> None:
    """Each line of COMMANDS names a module with its handler and arguments function (all loaded at once)."""
    from toelab.cli import COMMANDS, build_parser

    parser = build_parser()  # every subcommand's arguments
    for command in COMMANDS:
        assert callable(command.handler()), command
        sub = parser._subparsers._group_actions[0].choices[command.name]  # type: ignore[union-attr]
        assert sub.description == command.help
    assert len({c.name for c in COMMANDS}) == len(COMMANDS)


def test_up_with_mininet_is_refused_before_building() -> None:
    before = host_state()
    done = run_cli("up", "two_hosts", "--backend", "mininet")
    assert done.returncode == 2
    assert "the mininet backend cannot leave a lab running" in " ".join(done.stderr.split())
    assert "toelab shell two_hosts --backend mininet" in " ".join(done.stderr.split())
    assert leftovers_since(before) == []


def test_json_listings_are_json() -> None:
    import json

    topologies = json.loads(run_cli("topologies", "--json").stdout)
    router = next(t for t in topologies if t["name"] == "router_path")
    assert router["parameters"]["mtu"]["default"] == 1500 and router["error"] is None
    listed = json.loads(run_cli("scenarios", "--json").stdout)
    handshake = next(s for s in listed if s["name"] == "handshake")
    assert handshake["topology"] and handshake["covers"] and "kernel" in handshake["targets"]
    labs = json.loads(run_cli("ls", "--json").stdout)
    assert isinstance(labs, list) and all({"lab", "topology", "owner"} <= set(lab) for lab in labs)


def test_exec_needs_a_command_and_an_existing_lab() -> None:
    done = run_cli("exec", "tlzzzz", "h1")
    assert done.returncode == 2 and "needs a command after the node" in done.stderr
    done = run_cli("exec", "tlzzzz", "h1", "--", "true")
    assert done.returncode == 2
    assert "there is no lab 'tlzzzz'" in done.stderr or "run it as root" in done.stderr


def test_shell_of_an_unknown_lab_or_topology_is_one_sentence() -> None:
    done = run_cli("shell", "no_such_thing")
    assert done.returncode == 2 and "unknown topology" in done.stderr and "Traceback" not in done.stderr


def test_every_benchmark_in_the_table_resolves() -> None:
    from toelab.bench import BENCHES

    assert len({b.name for b in BENCHES}) == len(BENCHES)
    for bench in BENCHES:
        assert callable(bench.load()), bench


def test_unknown_benchmark_is_one_sentence() -> None:
    done = run_cli("bench", "nosuch")
    assert done.returncode == 2 and "unknown benchmark 'nosuch'; known ones are: lab, core" in done.stderr
