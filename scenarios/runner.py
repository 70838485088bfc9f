"""Run a scenario on a target: build its lab, start the target, collect checks, tear down.

The lab is torn down however the run ends (checks, exception, Ctrl-C). A target that cannot
run yields a skip check for every requirement the scenario covers, with the target's reason;
a scenario that raises, or that ends without a single check, records an error, which fails the
run like a failing check. A target that becomes unavailable mid-run keeps the checks it made.
"""
from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .framework import Check, RunContext, Scenario, ScenarioResult, Verdict
from .targets import TargetUnavailable, make

if TYPE_CHECKING:
    from lab.lab import Lab

Progress = Callable[[str], None]


class NoChecks(RuntimeError):
    """A scenario that ran and judged nothing proved nothing: an error, as a failing check is."""


def skip_all(scenario: Scenario, target: str, reason: str) -> list[Check]:
    return [Check(id=f"{scenario.name}.{req.lower().replace(' ', '-')}", requirement=req, target=target,
                  verdict=Verdict.SKIP, sentence=reason) for req in scenario.covers]


def unjudged(scenario: Scenario, target: str, reason: str, made: list[Check]) -> list[Check]:
    """Skips for the covered requirements that none of the checks `made` so far judged."""
    judged = {c.requirement for c in made}
    return [c for c in skip_all(scenario, target, reason) if c.requirement not in judged]


def run_scenario(scenario: Scenario, target_name: str, *, params: Any = None, seed: int = 1,
                 outdir: Path, progress: Progress | None = None,
                 on_check: Callable[[Check], None] | None = None, lab: Lab | None = None) -> ScenarioResult:
    """Run one scenario on one target and return its result (never raises for a scenario's failure).

    With `lab` (a lab of the scenario's topology, as the lab shell has) the scenario runs there
    and the lab stays up; otherwise it builds a lab of its own and tears it down.
    """
    from lab.lab import Lab
    from lab.render import load_topology

    params = scenario.parse_params() if params is None else params
    say = progress or (lambda message: None)
    result = ScenarioResult(scenario=scenario.name, purpose=scenario.purpose, target=target_name, seed=seed,
                            params=params.model_dump(mode="json"), outdir=str(outdir))
    target = make(target_name)
    reason = target.unavailable_reason()
    if reason is None and target_name not in scenario.targets:
        reason = f"scenario {scenario.name} does not apply to target {target_name}"
    if reason is not None:
        result.skipped = reason
        result.checks = skip_all(scenario, target_name, reason)
        return result
    started = time.monotonic()
    if lab is None:
        say(f"building {scenario.topology}")
        spec = load_topology(scenario.topology, {k: str(v) for k, v in scenario.topology_params(params).items()})
        running: AbstractContextManager[Lab] = Lab.up(spec)
    else:
        running = nullcontext(lab)  # the caller's lab: it stays up
    with running as lab:
        def produce() -> Iterable[Check]:
            say(f"starting {target_name} on {scenario.server}")
            services = target.start(lab, scenario.server)
            return scenario.run(RunContext(scenario, lab, target, params, seed, outdir, services, say))
        try:
            collect(result, scenario, produce, on_check)
        finally:
            target.stop()
    result.duration_s = round(time.monotonic() - started, 3)
    return result


def collect(result: ScenarioResult, scenario: Scenario, produce: Callable[[], Iterable[Check] | None],
            on_check: Callable[[Check], None] | None = None) -> None:
    """Gather what `produce()` yields into `result`, however it ends.

    A target that becomes unavailable keeps the checks made before (a failure stays one) and
    skips only the covered requirements nothing has judged yet; a run that raises, or that
    ends without a single check, records an error.
    """
    try:
        for check in _checks(produce()):
            result.checks.append(check)
            if on_check is not None:
                on_check(check)
        if not result.checks:
            raise NoChecks(f"scenario {scenario.name} made no checks on target {result.target}")
    except TargetUnavailable as exc:
        result.skipped = str(exc)
        result.checks += unjudged(scenario, result.target, str(exc), result.checks)
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        outdir = Path(result.outdir)
        if result.outdir:
            outdir.mkdir(parents=True, exist_ok=True)
            (outdir / "error.txt").write_text(traceback.format_exc())


def _checks(produced: Iterable[Check] | None) -> Iterable[Check]:
    for check in produced or ():
        if not isinstance(check, Check):
            raise TypeError(f"a scenario yielded {type(check).__name__}, not a Check")
        yield check
