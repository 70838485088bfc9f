"""Side-by-side runs without root: results in the targets' order, and an interruption reaching a run's thread."""
from __future__ import annotations

import threading
import time
from pathlib import Path

from scenarios.framework import NoParams, Scenario, Verdict
from scenarios.side_by_side import raise_in_thread, run_side_by_side

#: Not registered (the registry is the suite's list of scenarios): for the kernel alone.
KERNEL_ONLY = Scenario("unit_kernel_only", "A scenario for the kernel alone.", lambda ctx: [], NoParams, "two_hosts",
                       lambda params: {}, ("kernel",), ("MUST-23",), "h2", "h1", long=True)


def test_results_come_back_in_the_targets_order(tmp_path: Path) -> None:
    # on toe the scenario does not apply, so each run is a skip made without building a lab
    results = run_side_by_side(KERNEL_ONLY, ["toe", "toe"], params=None, seed=1,
                               outdir=lambda target: tmp_path / target)
    assert [r.target for r in results] == ["toe", "toe"]  # type: ignore[union-attr]
    for result in results:
        assert result.skipped and [c.verdict for c in result.checks] == [Verdict.SKIP]  # type: ignore[union-attr]


def test_an_interruption_is_raised_in_the_running_thread() -> None:
    seen: list[str] = []
    started = threading.Event()

    def wait() -> None:
        started.set()
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                time.sleep(0.01)
            seen.append("ran out")
        except KeyboardInterrupt:
            seen.append("interrupted")

    thread = threading.Thread(target=wait)
    thread.start()
    started.wait(5)
    raise_in_thread(thread.ident or 0, KeyboardInterrupt)
    thread.join(5)
    assert seen == ["interrupted"]
