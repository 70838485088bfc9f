"""Every scenario on every target, in real namespaces: a failing check fails its test with its sentence.

Deviations of a target that are known and explained live in known_findings.yaml: they stay
failures in reports, and here only a new failure, or a known one that went away, fails.

Run with `sudo pytest tests/lab/test_scenarios_kernel.py -n 2 --junitxml=scenarios.xml`.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import scenarios
from lab.pytest_plugin import host_state, leftovers_since
from scenarios.framework import TARGET_NAMES, Verdict
from scenarios.runner import run_scenario

pytestmark = pytest.mark.root

KNOWN = yaml.safe_load((Path(__file__).with_name("known_findings.yaml")).read_text()) or {}

CASES = [pytest.param(s.name, t, id=f"{s.name}-{t}") for s in scenarios.all() if s.name != "unit_demo"
         for t in TARGET_NAMES]


@pytest.mark.parametrize("name, target", CASES)
def test_scenario(name: str, target: str, tmp_path: Path) -> None:
    before = host_state()
    result = run_scenario(scenarios.get(name), target, seed=1, outdir=tmp_path / name / target)
    assert leftovers_since(before) == [], "the scenario left lab state behind"
    if result.skipped:
        pytest.skip(result.skipped)
    assert result.error is None, f"{name} on {target} raised {result.error} (see {tmp_path}/{name}/{target}/error.txt)"
    assert result.checks, f"{name} on {target} made no checks"
    verdicts = {c.id: c for c in result.checks}
    known = {key.split("/", 2)[2]: value for key, value in KNOWN.items() if key.startswith(f"{name}/{target}/")}
    failed = [c for c in result.checks if c.verdict is Verdict.FAIL and c.id not in known]
    fixed = [check_id for check_id, value in known.items()
             if check_id in verdicts and verdicts[check_id].verdict is Verdict.PASS and not value.get("intermittent")]
    if failed:
        pytest.fail("; ".join(f"{c.id} ({c.requirement}): {c.sentence}" for c in failed), pytrace=False)
    if fixed:
        pytest.fail(f"known finding(s) no longer seen, remove them from known_findings.yaml: {', '.join(fixed)}",
                    pytrace=False)
