"""The README tells the truth: every `toelab ...` line in it parses, and names things that exist.

Each command line of the README's sh blocks is parsed by the real parser (the arguments of
that subcommand loaded), and what it names is resolved the way the command would: templates
and their `-p` parameters are rendered and validated, scenarios and their parameters
validated, benchmarks looked up. The lines that need no long run are also run, as root, by
tests/lab/test_readme_tour.py. The two commands and CI are checked to be the same command.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from toelab.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
LAB_PLACEHOLDER = "LAB"


def readme_commands() -> list[str]:
    """Every line of a ```sh block that starts with `toelab `, without its trailing comment."""
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", README.read_text(), re.S):
        for line in block.splitlines():
            line = line.strip()
            if line.startswith("toelab "):
                lines.append(re.split(r"\s+#\s", line, maxsplit=1)[0].strip())
    return lines


COMMANDS = readme_commands()


def test_the_readme_has_the_tour() -> None:
    names = {shlex.split(line)[1] for line in COMMANDS}
    assert {"topologies", "up", "exec", "shell", "down", "run", "bench", "audit", "graph", "inspect"} <= names


@pytest.mark.parametrize("line", COMMANDS)
def test_every_readme_command_parses_and_names_what_exists(line: str) -> None:
    argv = shlex.split(line)[1:]
    try:
        args = build_parser(only=argv[0]).parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"README line {line!r} does not parse (exit {exc.code})")
    resolve(args)


def resolve(args) -> None:  # type: ignore[no-untyped-def]
    """What the command would look up first, looked up: an error here is the README lying."""
    from lab.render import load_topology, parse_assignments

    topology = {"up": getattr(args, "topology", None), "shell": getattr(args, "target", None),
                "graph": getattr(args, "target", None)}.get(args.command_entry.name)
    if topology is not None and topology != LAB_PLACEHOLDER:
        load_topology(topology, parse_assignments(getattr(args, "param", [])))
    if args.command_entry.name == "run":
        from scenarios.cli import plan
        plan(args)
    if args.command_entry.name == "bench":
        from toelab.bench import NAMES
        assert set(args.what) <= set(NAMES), args.what


def test_the_two_commands_and_ci_run_the_same_thing() -> None:
    text = README.read_text()
    assert "./run demo" in text and "./run test" in text
    assert "sudo ./run" not in text  # a minimal Debian 12 has no sudo
    run = (REPO / "run").read_text()
    assert "demo|test)" in run and "-m pytest -n 2 --junitxml=reports/junit.xml" in run
    # the whole suite: everything else in parallel, then the whole-machine scenarios one at a time
    assert '-m pytest -n 2 -m "not whole_machine" --junitxml=reports/junit.xml' in run
    assert "-m pytest -p no:xdist -m whole_machine --junitxml=reports/junit-whole-machine.xml" in run
    assert "./run test" in (REPO / ".ci" / "run").read_text()
    workflow = (REPO / ".github" / "workflows" / "ci.yml").read_text()
    assert re.search(r"run: \./run test\b", workflow), "the CI workflow must run the README's test command"
    assert "reports/junit*.xml" in workflow and "reports/scenarios" in workflow


def test_root_messages_say_run_it_as_root() -> None:
    """No message tells a user to use sudo, which a minimal Debian 12 does not have."""
    offenders = [str(p.relative_to(REPO)) for package in ("lab", "scenarios", "toelab", "toe_engine", "scripts")
                 for p in (REPO / package).rglob("*") if p.suffix in (".py", ".sh") and "with sudo" in p.read_text()]
    assert offenders == []
    from lab.errors import LabError, require_root
    import os
    if os.geteuid() != 0:
        with pytest.raises(LabError, match="run it as root"):
            require_root("toelab up")
