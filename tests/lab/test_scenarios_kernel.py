"""Every scenario on every target, in real namespaces: a failing check fails its test with its sentence.

Deviations of a target that are known and explained live in known_findings.yaml, each pinned
to the numbers observed (scenarios.findings): they stay failures in reports, and here a run
fails when it shows a new failure, a finding outside its pinned range, a finding that now
passes or one that was not produced at all.

Run with `sudo pytest tests/lab/test_scenarios_kernel.py -n 2 --junitxml=scenarios.xml`.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import scenarios
from lab.pytest_plugin import host_state, leftovers_since
from scenarios import findings
from scenarios.framework import TARGET_NAMES, Verdict
from scenarios.runner import run_scenario
from scenarios.suite_report import SUITE_REPORT_DIR, keep_result

pytestmark = pytest.mark.root

FINDINGS_FILE = Path(__file__).with_name("known_findings.yaml")
KNOWN = findings.load(FINDINGS_FILE.read_text(), str(FINDINGS_FILE), [s.name for s in scenarios.all()])

#: A scenario whose verdicts depend on the CPU its target gets is marked `whole_machine`; `./run test`
#: runs those after the parallel suite, one at a time, so a neighbour's load cannot change a verdict.
#: A long one (minutes of an RFC timer) is marked `long`: it runs only with pytest --long.
CASES = [pytest.param(s.name, t, id=f"{s.name}-{t}",
                      marks=[pytest.mark.whole_machine] * s.whole_machine + [pytest.mark.long] * s.long)
         for s in scenarios.all() if s.name != "unit_demo" for t in TARGET_NAMES]


@pytest.mark.parametrize("name, target", CASES)
def test_scenario(name: str, target: str) -> None:
    before = host_state()
    shutil.rmtree(SUITE_REPORT_DIR / name / target, ignore_errors=True)  # no evidence left from an earlier run
    result = run_scenario(scenarios.get(name), target, seed=1, outdir=SUITE_REPORT_DIR / name / target)
    keep_result(result)  # for the session's HTML report (reports/scenarios/index.html)
    assert leftovers_since(before) == [], "the scenario left lab state behind"
    assert result.error is None, f"{name} on {target} raised {result.error} (see {result.outdir}/error.txt)"
    expected = findings.for_run(KNOWN, name, target)
    if result.skipped and all(c.verdict is Verdict.SKIP for c in result.checks):
        assert not expected, f"{name} on {target} was skipped ({result.skipped}), so its known findings went unmeasured"
        pytest.skip(result.skipped)
    problems = findings.judge(expected, result.checks)
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)
