"""Every scenario on every target, in real namespaces: a failing check fails its test with its sentence.

Run with `sudo pytest tests/lab/test_scenarios_kernel.py -n 2 --junitxml=scenarios.xml`.
"""
from __future__ import annotations

from pathlib import Path

import pytest

import scenarios
from lab.pytest_plugin import host_state, leftovers_since
from scenarios.framework import TARGET_NAMES, Verdict
from scenarios.runner import run_scenario

pytestmark = pytest.mark.root

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
    failed = [c for c in result.checks if c.verdict is Verdict.FAIL]
    assert result.checks, f"{name} on {target} made no checks"
    if failed:
        pytest.fail("; ".join(f"{c.id} ({c.requirement}): {c.sentence}" for c in failed), pytrace=False)
