"""The test suite's HTML report: every scenario test keeps its result, the session writes one report.

`tests/lab/test_scenarios_kernel.py` runs each scenario with its outdir under
SUITE_REPORT_DIR and calls `keep_result`; at the end of the session (the xdist controller,
not each worker) `write_suite_report` gathers the results kept in this session into
reports/scenarios/index.html with its JSON, plots and trimmed pcaps, which CI publishes.
"""
from __future__ import annotations

import json
from pathlib import Path

from .framework import ScenarioResult

SUITE_REPORT_DIR = Path(__file__).resolve().parent.parent / "reports" / "scenarios"
RESULT_FILE = "result.json"


def keep_result(result: ScenarioResult) -> Path:
    """Write the result beside its evidence, for the session's report."""
    outdir = Path(result.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    path = outdir / RESULT_FILE
    path.write_text(result.model_dump_json())
    return path


def write_suite_report(directory: Path = SUITE_REPORT_DIR, since: float = 0.0) -> Path | None:
    """The report of every result kept under `directory` since `since` (a time.time()); None if there is none."""
    from .pcap_trim import relink, trim_pcaps
    from .report import write_report

    kept = sorted(p for p in directory.glob(f"*/*/{RESULT_FILE}") if p.stat().st_mtime >= since)
    if not kept:
        return None
    results = [ScenarioResult.model_validate(json.loads(p.read_text())) for p in kept]
    for path, result in zip(kept, results):  # only this session's: another run may be reading its own pcaps
        relink(result.checks, trim_pcaps(path.parent))
    return write_report(results, directory)
