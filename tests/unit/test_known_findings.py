"""Known findings without root: each rule of the file and of judging a run against it can fail."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import scenarios
from scenarios import findings
from scenarios.findings import FindingsError
from scenarios.framework import Check, Evidence, Verdict

FILE = Path(__file__).parents[1] / "lab" / "known_findings.yaml"

GOOD = """
"loss/toe/download-completes[loss=10%]":
  why: The engine waits for RTOs.
  seconds: [5, 15]
"""


def check(id: str = "download-completes[loss=10%]", verdict: str = "fail", integrity: bool = False,
          **numbers: float) -> Check:
    return Check(id=id, requirement="RFC5681 3.1", target="toe", verdict=Verdict(verdict), sentence="seen.",
                 evidence=Evidence(numbers=numbers), integrity=integrity)


def expected() -> dict[str, findings.Finding]:
    return findings.for_run(findings.load(GOOD), "loss", "toe")


# --- the project's own file ------------------------------------------------------------------
def test_the_projects_findings_file_obeys_every_rule() -> None:
    known = findings.load(FILE.read_text(), str(FILE), [s.name for s in scenarios.all()])
    assert all(f.pins for f in known.values())


# --- reading the file: every rule can fail -----------------------------------------------------
def test_a_good_entry_loads_with_its_pins() -> None:
    finding = findings.load(GOOD)["loss/toe/download-completes[loss=10%]"]
    assert (finding.scenario, finding.target, finding.check) == ("loss", "toe", "download-completes[loss=10%]")
    assert finding.pins == {"seconds": (5.0, 15.0)}


@pytest.mark.parametrize("text, message", [
    ('"loss/toe/x":\n  why: w\n  intermittent: true\n', "intermittent"),
    ('"loss/toe/x":\n  why: w\n', "pin at least one number"),
    ('"loss/toe/x":\n  seconds: [1, 2]\n', "`why`"),
    ('"loss/toe/x":\n  why: w\n  seconds: [3, 2]\n', "low <= high"),
    ('"loss/toe/x":\n  why: w\n  seconds: [1]\n', "low <= high"),
    ('"loss/toe/x":\n  why: w\n  seconds: [true, 2]\n', "low <= high"),
    ('"loss/toe/x":\n  why: w\n  seconds: 3\n', "low <= high"),
    ('"loss/bsd/x":\n  why: w\n  seconds: [1, 2]\n', "target 'bsd'"),
    ('"loss/x":\n  why: w\n  seconds: [1, 2]\n', "scenario/target/check-id"),
    ('"loss/toe/Bad Id":\n  why: w\n  seconds: [1, 2]\n', "not a check id"),
    ('"nope/toe/x":\n  why: w\n  seconds: [1, 2]\n', "no scenario 'nope'"),
    ('"loss/toe/echo-byte-exact[loss=10%]":\n  why: w\n  seconds: [1, 2]\n', "data-integrity"),
    ('"lro_router/toe/transfer-byte-exact[engine-gro]":\n  why: w\n  bytes: [1, 2]\n', "data-integrity"),
    ('"x/toe/payload-sha256-matches":\n  why: w\n  n: [1, 2]\n', "data-integrity"),
    ('"loss/toe/x":\n  why: w\n  a: [1, 2]\n"loss/toe/x":\n  why: v\n  a: [1, 2]\n', "appears twice (lines 1 and 4)"),
    ("- a\n- b\n", "top level must be a mapping"),
    ('"loss/toe/x": [1, 2]\n', "an entry is a mapping"),
])
def test_each_file_rule_rejects_a_bad_entry_in_one_sentence(text: str, message: str) -> None:
    with pytest.raises(FindingsError, match=re.escape(message)) as info:
        findings.load(text, "f.yaml", scenarios=["loss", "lro_router", "x"])
    assert str(info.value).startswith("f.yaml")
    assert "\n" not in str(info.value)


# --- judging a run ---------------------------------------------------------------------------------
def test_a_finding_inside_its_pins_agrees() -> None:
    assert findings.judge(expected(), [check(seconds=9.5), check("other", "pass")]) == []


def test_a_finding_outside_its_pins_fails() -> None:
    problems = findings.judge(expected(), [check(seconds=16.0)])
    assert len(problems) == 1 and "seconds = 16 is outside the pinned [5, 15]" in problems[0]


def test_a_finding_that_now_passes_fails_as_fixed() -> None:
    assert "now passes" in findings.judge(expected(), [check(verdict="pass", seconds=0.1)])[0]


def test_a_finding_not_produced_fails_as_stale() -> None:
    assert "not produced" in findings.judge(expected(), [check("download-completes[loss=5%]", "pass")])[0]


def test_a_skipped_finding_fails_as_unmeasured() -> None:
    assert "skipped" in findings.judge(expected(), [check(verdict="skip")])[0]


def test_a_pin_the_evidence_lacks_fails() -> None:
    assert "does not hold" in findings.judge(expected(), [check(bytes=3)])[0]


def test_a_new_failure_fails() -> None:
    problems = findings.judge(expected(), [check(seconds=9.0), check("download-completes[loss=5%]")])
    assert len(problems) == 1 and problems[0].startswith("download-completes[loss=5%] (RFC5681 3.1) failed")


def test_an_integrity_check_is_never_a_finding_even_under_another_name() -> None:
    problems = findings.judge(expected(), [check(seconds=9.0, integrity=True)])
    assert "data integrity" in problems[0]


def test_counters_can_be_pinned_too() -> None:
    known = findings.for_run(findings.load('"s/kernel/c":\n  why: w\n  drops: [1, 3]\n'), "s", "kernel")
    seen = Check(id="c", requirement="MUST-3", target="kernel", verdict=Verdict.FAIL, sentence="x.",
                 evidence=Evidence(counters={"drops": 2}))
    assert findings.judge(known, [seen]) == []
