"""packetdrill scripts over a real wire: what must pass, what is written to fail (at its line).

Every script of toelab's runs on both targets as the `pkt` scenario in test_scenarios_kernel.py,
its known deviations pinned in known_findings.yaml.

One lab per target per test module (building is cheap, but the engine's start is not free);
each script gets its own ports from the session.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from scenarios.pkt.agent import agent_for
from scenarios.pkt.library import SCRIPTS
from scenarios.pkt.parse import parse_file
from scenarios.pkt.session import ScriptResult, Session
from scenarios.targets import make

pytestmark = pytest.mark.root
WRONG = Path(__file__).parent / "pkt_wrong"

@pytest.fixture(scope="module", params=["kernel", "toe"])
def session(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    from lab.lab import Lab
    from lab.render import load_topology
    target = make(request.param)
    with Lab.up(load_topology("two_hosts", {"tso": "false"})) as lab:
        try:
            target.start(lab, "h2")
            with Session(lab, request.param, "h2", "h1", agent_for(target, lab, "h2"),
                         tmp_path_factory.mktemp(f"pkt-{request.param}")) as session:
                yield session
        finally:
            target.stop()


def run(session: Session, path: Path) -> ScriptResult:
    return session.run(parse_file(path))


MUST_PASS = ["basic/passive-open-data-close", "basic/active-open-data-close", "api/keepalive-on-request", "api/nagle-on", "api/nagle-off",
             "states/established/rst-left-edge", "states/established/rst-in-window",
             "states/established/rst-outside-left", "states/established/rst-outside-right",
             "states/established/data-left-edge", "states/established/fin-left-edge"]


@pytest.mark.parametrize("name", MUST_PASS)
def test_scripts_that_must_pass(session: Session, name: str) -> None:
    result = run(session, SCRIPTS / f"{name}.pkt")
    assert result.verdict == "pass", result.summary()


@pytest.mark.parametrize("name, line, words", [
    ("wrong-window", 6, "win "), ("missing-ack", 10, "nothing came"),
    ("wrong-errno", 7, "expected ETIMEDOUT"), ("early-segment", 6, "timing error"),
])
def test_scripts_written_to_be_wrong_fail_at_their_line(session: Session, name: str, line: int, words: str) -> None:
    result = run(session, WRONG / f"{name}.pkt")
    assert (result.verdict, result.line) == ("fail", line), result.summary()
    assert words in result.message, result.summary()
    assert result.pcap is not None and Path(result.pcap).stat().st_size > 24  # the run's frames are in it


def test_a_20_line_script_runs_well_under_a_second(session: Session) -> None:
    path = SCRIPTS / "api/half-close.pkt"
    assert len(path.read_text().splitlines()) >= 18
    result = run(session, path)
    assert result.verdict == "pass", result.summary()
    assert result.duration_s < 0.5, f"{result.duration_s:.2f} s"


def test_a_script_with_unsupported_lines_is_reported_not_run(session: Session, tmp_path: Path) -> None:
    path = tmp_path / "public.pkt"
    path.write_text("0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n+0 %{ print(1) }%\n+0 ioctl(3, FIONREAD, [0]) = 0\n")
    result = run(session, path)
    assert result.verdict == "unsupported" and [n for n, _ in result.unsupported] == [2, 3], result.summary()
