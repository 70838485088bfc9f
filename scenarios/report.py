"""The report of a suite run: an HTML page (Jinja2) and the same data as JSON.

The compliance matrix puts each requirement against each target; a requirement's cell is
the worst verdict among its checks (fail over pass over skip), and a row where two targets
ran and disagree is marked as a difference; below it, the RFC 9293 MUSTs that no scenario
covers, so the gap stays visible. Evidence paths are written relative to the
report directory, so the directory can be moved or served as it is.
"""
from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from jinja2 import Environment, select_autoescape

from . import requirements
from .claims_report import claims_data, claims_page
from .framework import ScenarioResult, Verdict

_RANK = {Verdict.FAIL.value: 2, Verdict.PASS.value: 1, Verdict.SKIP.value: 0}

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>toelab scenario report</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
.pass{background:#d9f2d9}.fail{background:#f8d0d0;font-weight:bold}.skip{background:#eee;color:#666}
tr.diff td:first-child{border-left:6px solid #e08000}.error{color:#b00}
img{max-width:100%;border:1px solid #ccc}code{font-size:90%}
</style></head><body>
<h1>toelab scenario report</h1>
<p>{{ summary.checks }} checks:
{% for target, counts in summary.by_target.items() %}<b>{{ target }}</b> {{ counts.pass }} passed,
{{ counts.fail }} failed, {{ counts.skip }} skipped{% if not loop.last %}; {% endif %}{% endfor %}.
{{ summary.differences|length }} difference(s) between targets.</p>
<p><a href="claims.html">TOE claims</a>: each claim about offload engines with its verdict on each target.</p>
<h2>Compliance matrix</h2>
<table><tr><th>requirement</th><th>description</th>{% for t in targets %}<th>{{ t }}</th>{% endfor %}</tr>
{% for row in matrix %}<tr class="{{ 'diff' if row.differs else '' }}"><td>{{ row.requirement }}</td>
<td>{{ row.description }}</td>{% for t in targets %}{% set cell = row.cells.get(t) %}
<td class="{{ cell.verdict if cell else '' }}">{% if cell %}{{ cell.verdict }} ({{ cell.count }}){% else %}&ndash;{% endif %}</td>
{% endfor %}</tr>{% endfor %}</table>
<h3 id="uncovered">RFC 9293 MUSTs no check covers yet ({{ uncovered|length }} of {{ must_count }})</h3>
<table><tr><th>requirement</th><th>description</th></tr>
{% for u in uncovered %}<tr><td>{{ u.requirement }}</td><td>{{ u.description }}</td></tr>{% endfor %}</table>
{% for r in results %}
<h2 id="{{ r.scenario }}-{{ r.target }}">{{ r.scenario }} on {{ r.target }}</h2>
<p>{{ r.purpose }}<br>seed {{ r.seed }}, parameters <code>{{ r.params }}</code>, {{ r.duration_s }} s</p>
{% if r.error %}<p class="error">error: {{ r.error }}</p>{% endif %}
{% if r.skipped %}<p class="skip">skipped: {{ r.skipped }}</p>{% endif %}
<table><tr><th>check</th><th>requirement</th><th>verdict</th><th>what was seen</th><th>evidence</th></tr>
{% for c in r.checks %}<tr><td>{{ c.id }}</td><td>{{ c.requirement }}</td><td class="{{ c.verdict }}">{{ c.verdict }}</td>
<td>{{ c.sentence }}</td><td>
{% for p in c.evidence.pcaps %}<a href="{{ p }}">{{ p.split('/')[-1] }}</a><br>{% endfor %}
{% if c.evidence.counters %}<table>{% for k, v in c.evidence.counters.items() %}<tr><td>{{ k }}</td><td>{{ v }}</td></tr>{% endfor %}</table>{% endif %}
{% if c.evidence.numbers %}<table>{% for k, v in c.evidence.numbers.items() %}<tr><td>{{ k }}</td><td>{{ v }}</td></tr>{% endfor %}</table>{% endif %}
</td></tr>
{% for p in c.evidence.plots %}<tr><td colspan="5"><a href="{{ p }}"><img alt="{{ p }}" src="{{ images.get(p, p) }}"></a></td></tr>{% endfor %}
{% endfor %}</table>
{% endfor %}
</body></html>
"""


def _relative(path: str, root: Path) -> str:
    try:
        return os.path.relpath(path, root)
    except ValueError:
        return path


def results_data(results: Iterable[ScenarioResult], root: Path | None = None) -> dict[str, Any]:
    """The report's data: results (with evidence paths relative to `root`), matrix, summary."""
    results = list(results)
    rows = [r.model_dump(mode="json") for r in results]
    if root is not None:
        for row in rows:
            for check in row["checks"]:
                ev = check["evidence"]
                ev["pcaps"] = [_relative(p, root) for p in ev["pcaps"]]
                ev["plots"] = [_relative(p, root) for p in ev["plots"]]
    # A check is credited to what it judged: the run's target, or a middlebox it read the counters of.
    run_targets = {row["target"] for row in rows}  # differences are between these, not with a middlebox
    targets = sorted(run_targets | {c["target"] for row in rows for c in row["checks"]})
    cells: dict[str, dict[str, dict[str, Any]]] = {}
    by_target = {t: {"pass": 0, "fail": 0, "skip": 0} for t in targets}
    for row in rows:
        for check in row["checks"]:
            by_target[check["target"]][check["verdict"]] += 1
            cell = cells.setdefault(check["requirement"], {}).setdefault(check["target"], {"verdict": "skip", "count": 0})
            cell["count"] += 1
            if _RANK[check["verdict"]] > _RANK[cell["verdict"]]:
                cell["verdict"] = check["verdict"]
    matrix = []
    for req in sorted(cells, key=requirements.sort_key):
        ran = {cell["verdict"] for subject, cell in cells[req].items()
               if cell["verdict"] != "skip" and subject in run_targets}
        matrix.append({"requirement": req, "description": requirements.describe(req),
                       "cells": cells[req], "differs": len(ran) > 1})
    musts = sorted((r for r in requirements.rfc9293() if r.startswith("MUST-")), key=requirements.sort_key)
    covered = set(cells) | declared_coverage()
    uncovered = [{"requirement": r, "description": requirements.describe(r)} for r in musts if r not in covered]
    return {"targets": targets, "matrix": matrix, "results": rows, "claims": claims_data(rows, targets),
            "uncovered": uncovered, "must_count": len(musts),
            "summary": {"checks": sum(sum(c.values()) for c in by_target.values()), "by_target": by_target,
                        "differences": [m["requirement"] for m in matrix if m["differs"]],
                        "failed": any(r.failed for r in results)}}


def declared_coverage() -> set[str]:
    """Every requirement some scenario declares it covers (whether or not this run included it)."""
    import scenarios

    return {req for s in scenarios.all() for req in s.covers}


def write_json(results: list[ScenarioResult], path: Path, root: Path | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results_data(results, root or path.parent), indent=2))
    return path


def write_report(results: list[ScenarioResult], directory: Path) -> Path:
    """Write DIR/index.html and DIR/results.json; plots are embedded in the page as data URIs."""
    directory.mkdir(parents=True, exist_ok=True)
    data = results_data(results, directory)
    images = {}
    for row in data["results"]:
        for check in row["checks"]:
            for plot in check["evidence"]["plots"]:
                file = directory / plot
                if file.is_file():
                    images[plot] = "data:image/png;base64," + base64.b64encode(file.read_bytes()).decode()
    env = Environment(autoescape=select_autoescape(default=True))
    html = env.from_string(TEMPLATE).render(**data, images=images)
    (directory / "index.html").write_text(html)
    (directory / "claims.html").write_text(claims_page(data, env))
    write_json(results, directory / "results.json", directory)
    return directory / "index.html"
