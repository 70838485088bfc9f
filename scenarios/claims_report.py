"""The claims page of a report: each TOE claim in one row, its verdict on each target, numbers, evidence.

A claim's cell on a target is the worst verdict among the checks that name the claim (fail
over pass over skip), like a requirement's cell in the compliance matrix; a claim no check
names says so, so a hole in the coverage shows instead of hiding. Each check in a cell links
to its scenario's section of index.html and to its pcaps and plots, with its numbers beside it.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from jinja2 import Environment

from . import requirements

_RANK = {"fail": 2, "pass": 1, "skip": 0}
#: Numbers shown per check on the claims page (values cut to NUMBER_CHARS); all of them are in index.html and the JSON.
NUMBERS_SHOWN = 5
NUMBER_CHARS = 60
#: Checks shown in a cell before the rest fold out.
CHECKS_SHOWN = 3

CLAIMS_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>toelab: TOE claims</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5em}
table{border-collapse:collapse;width:100%}td,th{border:1px solid #ccc;padding:4px 6px;text-align:left;vertical-align:top}
.pass{background:#d9f2d9}.fail{background:#f8d0d0}.skip{background:#eee;color:#555}.none{color:#999}
.v{font-weight:bold;text-transform:uppercase;font-size:85%}.c{margin:2px 0;font-size:85%}
.n{color:#333;font-family:monospace;font-size:88%}td.brief{width:22em}td.id{white-space:nowrap}
summary{cursor:pointer;font-size:85%;color:#036}
</style></head><body>
<h1>TOE claims</h1>
<p>{{ claims|selectattr('checked')|list|length }} of {{ claims|length }} claims have checks.
A check passes when the target behaves as the claim says for its kind (the host stack for the kernel, the
offload engine for toe) and its precondition held. Each cell: the worst verdict, the count of checks by
verdict, the first checks (failures first) with their numbers and evidence; the rest fold out.
<a href="index.html">All checks</a>.</p>
{% macro check_line(k) %}<div class="c {{ k.verdict }}"><a href="index.html#{{ k.anchor }}" title="{{ k.sentence }}">{{ k.scenario }}/{{ k.id }}</a>
{% for name, value in k.numbers %}<span class="n">{{ name }}={{ value }}</span> {% endfor %}
{% for p in k.evidence %}<a href="{{ p }}">{{ p.split('/')[-1] }}</a> {% endfor %}</div>{% endmacro %}
<table><tr><th>claim</th><th>what is said</th>{% for t in targets %}<th>{{ t }}</th>{% endfor %}</tr>
{% for c in claims %}<tr><td class="id"><b>{{ c.claim }}</b></td><td class="brief">{{ c.brief }}</td>
{% for t in targets %}{% set cell = c.cells.get(t) %}
{% if cell %}<td class="{{ cell.verdict }}"><span class="v">{{ cell.verdict }}</span>
{% for verdict, n in cell.by_verdict.items() if n %}{{ n }} {{ verdict }}{% if not loop.last %}, {% endif %}{% endfor %}
{% for k in cell.checks[:shown] %}{{ check_line(k) }}{% endfor %}
{% if cell.checks|length > shown %}<details><summary>{{ cell.checks|length - shown }} more</summary>
{% for k in cell.checks[shown:] %}{{ check_line(k) }}{% endfor %}</details>{% endif %}</td>
{% else %}<td class="none">no check</td>{% endif %}{% endfor %}</tr>
{% endfor %}</table>
</body></html>
"""


def _shown(numbers: Mapping[str, Any]) -> list[tuple[str, Any]]:
    out = []
    for name, value in list(numbers.items())[:NUMBERS_SHOWN]:
        if isinstance(value, float):
            value = round(value, 3)
        elif isinstance(value, str) and len(value) > NUMBER_CHARS:
            value = value[:NUMBER_CHARS - 1] + "\u2026"
        out.append((name, value))
    return out


def claims_data(rows: Iterable[Mapping[str, Any]], targets: Iterable[str]) -> list[dict[str, Any]]:
    """Every claim of the table with, per target, its worst verdict and the checks naming it.

    `rows` are results as `ScenarioResult.model_dump(mode="json")` gives them (evidence paths
    already relative to the report).
    """
    table = requirements.toe_claims()
    cells: dict[str, dict[str, dict[str, Any]]] = {claim: {} for claim in table}
    for row in rows:
        for check in row["checks"]:
            for claim in check.get("claims", ()):
                cell = cells.setdefault(claim, {}).setdefault(row["target"], {
                    "verdict": "skip", "count": 0, "by_verdict": {"fail": 0, "pass": 0, "skip": 0}, "checks": []})
                cell["count"] += 1
                cell["by_verdict"][check["verdict"]] += 1
                if _RANK[check["verdict"]] > _RANK[cell["verdict"]]:
                    cell["verdict"] = check["verdict"]
                evidence = check["evidence"]
                cell["checks"].append({"scenario": row["scenario"], "id": check["id"], "verdict": check["verdict"],
                                       "sentence": check["sentence"], "anchor": f"{row['scenario']}-{row['target']}",
                                       "numbers": _shown(evidence["numbers"]),
                                       "evidence": [*evidence["pcaps"], *evidence["plots"]]})
    for by_target in cells.values():
        for cell in by_target.values():  # failures first, so a cell's first lines say what went wrong
            cell["checks"].sort(key=lambda k: -_RANK[k["verdict"]])
    wanted = list(targets)
    out = []
    for claim in sorted(cells, key=requirements.claim_sort_key):
        info = table.get(claim)
        out.append({"claim": claim, "brief": info.brief if info else claim, "how": info.how if info else "",
                    "checked": bool(cells[claim]),
                    "cells": {t: cells[claim][t] for t in wanted if t in cells[claim]}})
    return out


def claims_page(data: Mapping[str, Any], env: Environment) -> str:
    """The claims page of a report's data (`report.results_data`): targets that have claim checks, in order."""
    claims = data["claims"]
    targets = [t for t in data["targets"] if any(t in c["cells"] for c in claims)]
    return env.from_string(CLAIMS_TEMPLATE).render(claims=claims, targets=targets, shown=CHECKS_SHOWN)
