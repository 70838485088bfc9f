"""TOE claims on checks: the table, validation, and the report's claims page (no root needed)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from scenarios import requirements
from scenarios.claims_report import claims_data
from scenarios.framework import Check, Evidence, ScenarioResult, Verdict
from scenarios.report import write_report


def _check(id: str, verdict: str, claims: tuple[str, ...], target: str = "kernel", **numbers: float) -> Check:
    return Check(id=id, requirement="RFC9293 3.10", claims=claims, target=target, verdict=Verdict(verdict),
                 sentence="seen.", evidence=Evidence(numbers=numbers, pcaps=["/r/x/a.pcap"]))


def test_the_claims_table_is_the_shared_one_with_nineteen_claims() -> None:
    claims = requirements.toe_claims()
    assert list(claims) == [f"TOE-{i}" for i in range(1, 20)]
    assert claims["TOE-6"].brief == "Offloaded connections bypass netfilter"


@pytest.mark.parametrize("bad, says", [("TOE-20", "not a claim"), ("toe-6", "look like 'TOE-6'"),
                                       ("MUST-1", "look like")])
def test_unknown_claims_are_refused_when_the_check_is_made(bad: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        requirements.validate_claim(bad)
    with pytest.raises(ValidationError, match=says):
        _check("x", "pass", ("TOE-6", bad))


def test_a_claims_cell_is_the_worst_verdict_and_unchecked_claims_are_listed() -> None:
    base = {"scenario": "s", "purpose": "p", "seed": 1, "params": {}}
    kernel = ScenarioResult(**base, target="kernel", checks=[_check("a", "pass", ("TOE-6",), share=0.5),
                                                             _check("b", "fail", ("TOE-6", "TOE-7"))])
    toe = ScenarioResult(**base, target="toe", checks=[_check("a", "skip", ("TOE-6",), target="toe"),
                                                       _check("c", "pass", (), target="toe")])
    rows = [r.model_dump(mode="json") for r in (kernel, toe)]
    data = {c["claim"]: c for c in claims_data(rows, ["kernel", "toe"])}
    assert data["TOE-6"]["cells"]["kernel"]["verdict"] == "fail"
    assert data["TOE-6"]["cells"]["kernel"]["count"] == 2
    assert data["TOE-6"]["cells"]["toe"]["verdict"] == "skip"
    kernel6 = data["TOE-6"]["cells"]["kernel"]
    assert [k["id"] for k in kernel6["checks"]] == ["b", "a"]  # failures first
    assert kernel6["checks"][1]["numbers"] == [("share", 0.5)]
    assert kernel6["by_verdict"] == {"fail": 1, "pass": 1, "skip": 0}
    assert data["TOE-7"]["cells"] == {"kernel": data["TOE-7"]["cells"]["kernel"]}
    assert not data["TOE-1"]["checked"] and data["TOE-1"]["cells"] == {}
    assert [c["claim"] for c in claims_data(rows, ["kernel"])][:3] == ["TOE-1", "TOE-2", "TOE-3"]


def test_report_writes_a_claims_page_and_claims_in_the_json(tmp_path: Path) -> None:
    result = ScenarioResult(scenario="s", purpose="p", target="toe", seed=1, params={},
                            checks=[_check("bypass", "pass", ("TOE-6",), target="toe", host_pkts=12)])
    write_report([result], tmp_path)
    page = (tmp_path / "claims.html").read_text()
    assert "TOE-6" in page and "Offloaded connections bypass netfilter" in page
    assert 'href="index.html#s-toe"' in page and "host_pkts=12" in page and "no check" in page
    assert 'href="claims.html"' in (tmp_path / "index.html").read_text()
    saved = json.loads((tmp_path / "results.json").read_text())
    toe6 = next(c for c in saved["claims"] if c["claim"] == "TOE-6")
    assert toe6["cells"]["toe"]["verdict"] == "pass"
    assert saved["results"][0]["checks"][0]["claims"] == ["TOE-6"]


def test_the_claims_page_folds_long_cells_and_leaves_out_targets_without_claims(tmp_path: Path) -> None:
    checks = [_check(f"c{i}", "pass", ("TOE-9",), target="toe", note="x" * 100) for i in range(5)]
    toe = ScenarioResult(scenario="s", purpose="p", target="toe", seed=1, params={}, checks=checks)
    other = ScenarioResult(scenario="t", purpose="p", target="kernel", seed=1, params={},
                           checks=[_check("plain", "pass", ())])
    write_report([toe, other], tmp_path)
    page = (tmp_path / "claims.html").read_text()
    assert "<summary>2 more</summary>" in page and "5 pass" in page
    assert "<th>kernel</th>" not in page and "<th>toe</th>" in page
    assert "note=" + "x" * 59 + "\u2026" in page
