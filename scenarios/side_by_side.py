"""One scenario on several targets at the same time, each in a lab of its own: for long scenarios.

A long scenario (`Scenario.long`) waits out a timer of minutes (R2 for a SYN); run one target
after another, the minutes add up. Here each target's run is `runner.run_scenario` in a thread
of its own: every lab has its own prefix, and a namespace switch holds for the calling thread
only (lab.netns), so the runs do not see each other. Results come back in the targets' order.

Signals reach the main thread only. When Ctrl-C or SIGTERM interrupts the wait, the same
exception is raised in every run's thread, so each unwinds through its own `with` blocks and
removes its lab as a run in the main thread would, within the seconds its waits take.
"""
from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from .framework import Scenario, ScenarioResult
from .runner import run_scenario


def run_side_by_side(scenario: Scenario, targets: Sequence[str], *, params: Any, seed: int,
                     outdir: Callable[[str], Path],
                     progress: Callable[[str, str], None] | None = None) -> list[ScenarioResult | BaseException]:
    """Each target's result, or the exception its run raised (a lab that did not build), in `targets`' order."""
    running: dict[str, int] = {}

    def say(target: str, message: str) -> None:
        if progress is not None:
            progress(target, message)

    def one(target: str) -> ScenarioResult:
        running[target] = threading.get_ident()
        try:
            return run_scenario(scenario, target, params=params, seed=seed, outdir=outdir(target),
                                progress=partial(say, target))
        finally:
            running.pop(target, None)

    with ThreadPoolExecutor(max_workers=len(targets), thread_name_prefix=f"toelab-{scenario.name}") as pool:
        futures = [pool.submit(one, target) for target in targets]
        outcomes: list[ScenarioResult | BaseException] = []
        try:
            for future in futures:
                try:
                    outcomes.append(future.result())
                except Exception as exc:  # noqa: BLE001 - the caller turns it into that target's error
                    outcomes.append(exc)
        except BaseException as interrupted:  # KeyboardInterrupt, Terminated: the runs stop the same way
            for ident in list(running.values()):
                raise_in_thread(ident, type(interrupted))
            raise
        return outcomes


def raise_in_thread(ident: int, exc_type: type[BaseException]) -> None:
    """Raise `exc_type` in thread `ident` at its next bytecode (CPython's PyThreadState_SetAsyncExc)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(exc_type))
