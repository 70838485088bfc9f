"""Known findings: a target's known deviations, pinned to what was observed, and how a run is judged against them.

A finding is keyed `scenario/target/check-id` and says `why` in one sentence; every other key
pins one number of the check's evidence (`numbers` or `counters`) to the range it was seen in,
e.g. `seconds: [5, 15]`. A run agrees with its findings when every failing check is a finding
whose numbers fall inside their pins, and every finding was produced and still fails. There is
no "either verdict": a finding that passes is fixed, one that is not produced is stale or
misspelt, and a number outside its pin is a new behaviour. A check about data integrity
(byte-exact, SHA-256, bytes delivered that were never sent) is never a finding: corrupt data
is a regression however well its cause is known.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from .framework import CHECK_ID, TARGET_NAMES, Check, Verdict

#: Check-id stems that name data integrity; an entry for one of them is rejected when the file is read.
INTEGRITY_STEMS = re.compile(r"byte-exact|sha-?256|integrity|never-sent|delivered-in-order|csum-data-dropped")
#: The one key of an entry that is not a pin.
WHY = "why"


class FindingsError(ValueError):
    """The findings file is wrong: one sentence naming the entry and the rule it breaks."""


@dataclass(frozen=True)
class Finding:
    """One pinned deviation: which check on which target, why, and the ranges its numbers stay in."""

    scenario: str
    target: str
    check: str
    why: str
    pins: Mapping[str, tuple[float, float]]

    @property
    def key(self) -> str:
        return f"{self.scenario}/{self.target}/{self.check}"


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that rejects a key given twice, which SafeLoader would let the later one win."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise FindingsError(f"key {key!r} appears twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1})")
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def load(text: str, source: str = "known_findings.yaml", scenarios: Iterable[str] | None = None) -> dict[str, Finding]:
    """Parse and validate a findings file; `scenarios`, if given, are the names an entry may use."""
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader) or {}  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise FindingsError(f"{source}: not valid YAML ({exc})") from None
    except FindingsError as exc:
        raise FindingsError(f"{source}: {exc}") from None
    if not isinstance(raw, dict):
        raise FindingsError(f"{source}: the top level must be a mapping of scenario/target/check-id to entries")
    known = None if scenarios is None else set(scenarios)
    return {key: _entry(source, key, value, known) for key, value in raw.items()}


def _entry(source: str, key: Any, value: Any, scenarios: set[str] | None) -> Finding:
    where = f"{source}, entry {key!r}"
    parts = key.split("/", 2) if isinstance(key, str) else []
    if len(parts) != 3 or not all(parts):
        raise FindingsError(f"{where}: a key is scenario/target/check-id")
    scenario, target, check = parts
    if scenarios is not None and scenario not in scenarios:
        raise FindingsError(f"{where}: there is no scenario {scenario!r}")
    if target not in TARGET_NAMES:
        raise FindingsError(f"{where}: target {target!r} is not one of {', '.join(TARGET_NAMES)}")
    if not CHECK_ID.match(check):
        raise FindingsError(f"{where}: {check!r} is not a check id")
    if INTEGRITY_STEMS.search(check):
        raise FindingsError(f"{where}: a data-integrity check can never be a known finding")
    if not isinstance(value, dict):
        raise FindingsError(f"{where}: an entry is a mapping with `why` and pinned numbers")
    why = value.get(WHY)
    if not isinstance(why, str) or not why.strip():
        raise FindingsError(f"{where}: `why` must say in a sentence why the target deviates")
    pins = {name: _pin(where, name, spec) for name, spec in value.items() if name != WHY}
    if not pins:
        raise FindingsError(f"{where}: pin at least one number of the check's evidence, e.g. `seconds: [5, 15]`")
    return Finding(scenario, target, check, " ".join(why.split()), pins)


def _pin(where: str, name: Any, spec: Any) -> tuple[float, float]:
    if name == "intermittent":
        raise FindingsError(f"{where}: `intermittent` accepts either verdict; pin the observed numbers instead")
    ok = (isinstance(spec, list) and len(spec) == 2
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in spec))
    if not ok or spec[0] > spec[1]:
        raise FindingsError(f"{where}: pin {name!r} must be [low, high] with numbers low <= high (got {spec!r})")
    return float(spec[0]), float(spec[1])


def for_run(findings: Mapping[str, Finding], scenario: str, target: str) -> dict[str, Finding]:
    """The findings of one scenario on one target, by check id."""
    return {f.check: f for f in findings.values() if f.scenario == scenario and f.target == target}


def judge(findings: Mapping[str, Finding], checks: Iterable[Check]) -> list[str]:
    """What in one run disagrees with its findings (by check id), one sentence each; empty when all agree."""
    produced: dict[str, Check] = {}
    problems: list[str] = []
    for check in checks:
        produced.setdefault(check.id, check)
        finding = findings.get(check.id)
        if finding is None:
            if check.verdict is Verdict.FAIL:
                problems.append(f"{check.id} ({check.requirement}) failed: {check.sentence}")
            continue
        problems += _against(finding, check)
    for check_id in findings:
        if check_id not in produced:
            problems.append(f"known finding {check_id} was not produced by the run (stale or misspelt)")
    return problems


def _against(finding: Finding, check: Check) -> list[str]:
    if check.integrity:
        return [f"{check.id} checks data integrity and cannot be a known finding: {check.sentence}"]
    if check.verdict is Verdict.PASS:
        return [f"known finding {check.id} now passes (fixed?): remove it from the findings: {check.sentence}"]
    if check.verdict is Verdict.SKIP:
        return [f"known finding {check.id} was skipped, so it was not measured: {check.sentence}"]
    evidence = {**check.evidence.counters, **check.evidence.numbers}
    problems = []
    for name, (low, high) in finding.pins.items():
        value = evidence.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"known finding {check.id} pins {name!r}, which its evidence does not hold as a number "
                            f"(it has: {', '.join(sorted(evidence)) or 'nothing'})")
        elif not low <= value <= high:
            problems.append(f"known finding {check.id}: {name} = {value:g} is outside the pinned "
                            f"[{low:g}, {high:g}]: {check.sentence}")
    return problems
