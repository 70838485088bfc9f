"""The scenario model: what a scenario declares, what it returns, and the registry.

A scenario module registers one function with `@scenario(...)`. The function receives a
`RunContext` (the running lab, the target under test and its services, validated
parameters, a seeded RNG, an output directory) and yields `Check`s. Yielding, rather than
returning a list at the end, keeps the checks made so far when something later raises, and
lets the progress display move check by check.
"""
from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lab.errors import LabError

from . import requirements

if TYPE_CHECKING:
    from lab.capture import Capture
    from lab.lab import Lab

    from .targets import Target

TARGET_NAMES = ("kernel", "toe")
#: What a check may judge: a target, or a forwarding node of the lab whose own counters it reads
#: (the engine middlebox), so the matrix credits a middlebox's verdict to it and not to the endpoint.
CHECK_SUBJECTS = (*TARGET_NAMES, "middlebox")
CHECK_ID = re.compile(r"^[a-z0-9][a-z0-9_.\-]*(\[[^\]\s]+\])?$")


class ScenarioError(LabError):
    """A user got a scenario name or parameter wrong: one sentence, exit status 2."""


class Verdict(str, Enum):
    PASS = "pass"
    FAIL = "fail"
    SKIP = "skip"


class Evidence(BaseModel):
    """What a check's verdict rests on; paths are absolute here and made relative by the report."""

    model_config = ConfigDict(extra="forbid")

    pcaps: list[str] = Field(default_factory=list)
    plots: list[str] = Field(default_factory=list)
    counters: dict[str, int | float] = Field(default_factory=dict)
    numbers: dict[str, int | float | str | bool | None] = Field(default_factory=dict)


class Check(BaseModel):
    """One verdict on one requirement for one target, said in one sentence, with its evidence."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    requirement: str
    #: TOE claims (`TOE-6`, from data/toe-claims.csv) the check bears on, if any.
    claims: tuple[str, ...] = ()
    target: str
    verdict: Verdict
    sentence: str
    evidence: Evidence = Field(default_factory=Evidence)
    #: A check of data integrity (bytes returned exactly, nothing delivered that was not sent): never a known finding.
    integrity: bool = False

    @field_validator("id")
    @classmethod
    def _id_shape(cls, value: str) -> str:
        if not CHECK_ID.match(value):
            raise ValueError(f"check id {value!r} must be lower-case words joined by - _ . "
                             "with an optional [variant], e.g. 'bad-csum-dropped[rx_csum=on]'")
        return value

    @field_validator("requirement")
    @classmethod
    def _known_requirement(cls, value: str) -> str:
        return requirements.validate(value)

    @field_validator("claims")
    @classmethod
    def _known_claims(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(requirements.validate_claim(c) for c in value)

    @field_validator("target")
    @classmethod
    def _known_target(cls, value: str) -> str:
        if value not in CHECK_SUBJECTS:
            raise ValueError(f"target {value!r} is not one of {', '.join(CHECK_SUBJECTS)}")
        return value

    @field_validator("sentence")
    @classmethod
    def _one_sentence(cls, value: str) -> str:
        value = value.strip()
        if not value or "\n" in value:
            raise ValueError("a check's sentence is one non-empty line")
        return value


class ScenarioResult(BaseModel):
    """Everything one scenario run on one target produced."""

    scenario: str
    purpose: str
    target: str
    seed: int
    params: dict[str, Any]
    checks: list[Check] = Field(default_factory=list)
    error: str | None = None
    skipped: str | None = None
    duration_s: float = 0.0
    outdir: str = ""

    @property
    def failed(self) -> bool:
        """A failing check or an error (a scenario that raised proved nothing) fails the run."""
        return self.error is not None or any(c.verdict is Verdict.FAIL for c in self.checks)


class ScenarioParams(BaseModel):
    """Base of every scenario's parameters: typed fields with defaults and descriptions."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoParams(ScenarioParams):
    """For scenarios without parameters."""


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str
    default: Any
    description: str


@dataclass(frozen=True)
class Scenario:
    """A registered scenario: its declaration and its run function."""

    name: str
    purpose: str
    run: Callable[[RunContext], Iterable[Check]]
    params: type[ScenarioParams]
    topology: str
    topology_params: Callable[[Any], Mapping[str, Any]]
    targets: tuple[str, ...]
    covers: tuple[str, ...]
    server: str
    client: str
    #: TOE claims every check of the scenario bears on (each check may name more).
    claims: tuple[str, ...] = ()
    #: Its verdicts depend on how much of the machine's CPU the target gets (a flood at a set
    #: rate): the regression suite runs it with nothing else beside it.
    whole_machine: bool = False
    #: It waits out an RFC timer of minutes in full (R2 for a SYN): `toelab run all` runs it only
    #: with --long, its targets side by side, and the suite only with pytest --long.
    long: bool = False

    def parameters(self) -> list[Parameter]:
        out = []
        for name, info in self.params.model_fields.items():
            annotation = info.annotation
            type_name = getattr(annotation, "__name__", None) or str(annotation)
            out.append(Parameter(name, type_name, info.default, info.description or ""))
        return out

    def parse_params(self, assignments: Mapping[str, str] | Iterable[str] = ()) -> ScenarioParams:
        """Validate `key=value` strings (or a mapping) into this scenario's parameters.

        Any mistake is one sentence naming the scenario, the parameter and what is wrong.
        """
        values = dict(assignments) if isinstance(assignments, Mapping) else _split_assignments(assignments)
        known = self.params.model_fields
        for key in values:
            if key not in known:
                have = ", ".join(known) or "none"
                raise ScenarioError(f"scenario {self.name} has no parameter {key!r} (it has: {have})")
        try:
            return self.params.model_validate(values)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "parameters"
            raise ScenarioError(f"scenario {self.name}, parameter {where!r}: {first['msg']} "
                                f"(got {first.get('input')!r})") from None


def _split_assignments(assignments: Iterable[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ScenarioError(f"parameter {item!r} is not of the form KEY=VALUE")
        values[key.strip()] = value.strip()
    return values


_REGISTRY: dict[str, Scenario] = {}


def scenario(name: str, *, purpose: str, topology: str, covers: Iterable[str],
             params: type[ScenarioParams] = NoParams,
             topology_params: Callable[[Any], Mapping[str, Any]] | Mapping[str, Any] | None = None,
             targets: Iterable[str] = TARGET_NAMES, server: str = "h2", client: str = "h1",
             claims: Iterable[str] = (), whole_machine: bool = False, long: bool = False,
             ) -> Callable[[Callable[[RunContext], Iterable[Check]]], Callable[[RunContext], Iterable[Check]]]:
    """Register a scenario run function under `name`.

    `covers` lists the requirements its checks cite; a target that cannot run the scenario
    gets a skip for each of them, so the compliance matrix has no silent holes.
    `topology_params` is a mapping or a function of the validated parameters.
    `whole_machine` says its verdicts depend on the CPU the target gets, so the suite runs it alone;
    `long` that it runs for minutes by design, so it runs only when asked.
    """
    covered = tuple(requirements.validate(r) for r in covers)
    claimed = tuple(requirements.validate_claim(c) for c in claims)
    wanted = tuple(targets)
    for target in wanted:
        if target not in TARGET_NAMES:
            raise ValueError(f"scenario {name}: unknown target {target!r}")
    if callable(topology_params):
        topo = topology_params
    else:
        fixed = dict(topology_params or {})
        topo = lambda _params: fixed  # noqa: E731

    def register(run: Callable[[RunContext], Iterable[Check]]) -> Callable[[RunContext], Iterable[Check]]:
        if name in _REGISTRY and _REGISTRY[name].run is not run:
            raise ValueError(f"scenario {name!r} is registered twice")
        _REGISTRY[name] = Scenario(name, " ".join(purpose.split()), run, params, topology, topo,
                                   wanted, covered, server, client, claimed, whole_machine, long)
        return run
    return register


def registered() -> dict[str, Scenario]:
    return _REGISTRY


@dataclass
class RunContext:
    """What a scenario run gets: the lab, the target and its services, parameters, seed, outputs."""

    scenario: Scenario
    lab: Lab
    target: Target
    params: Any
    seed: int
    outdir: Path
    services: dict[str, int] = field(default_factory=dict)
    progress: Callable[[str], None] = lambda message: None
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.outdir.mkdir(parents=True, exist_ok=True)

    # --- where things are -------------------------------------------------------------
    @property
    def server(self) -> str:
        """The node the target runs on."""
        return self.scenario.server

    @property
    def client(self) -> str:
        """The node the Scapy peer and kernel clients speak from."""
        return self.scenario.client

    def iface(self, node: str) -> str:
        """The node's first interface (the one facing the other end on the base topologies)."""
        return self.lab.spec.interfaces_of(node)[0]

    def address(self, node: str, version: int = 4) -> str:
        return self.lab.address(node, version)

    def port(self, service: str) -> int:
        try:
            return self.services[service]
        except KeyError:
            raise RuntimeError(f"target {self.target.name} offers no {service!r} service "
                               f"(it offers: {', '.join(self.services) or 'none'})") from None

    def artifact(self, name: str) -> Path:
        """A path for an output file of this run (pcap, plot, log)."""
        return self.outdir / name

    def capture(self, node: str, iface: str, filter: str = "", name: str | None = None) -> Capture:
        return self.lab.capture(node, iface, filter, path=self.artifact(name or f"{node}-{iface}.pcap"))

    # --- checks -----------------------------------------------------------------------
    def check(self, id: str, requirement: str, ok: bool, sentence: str, *,
              pcaps: Iterable[Path | str] = (), plots: Iterable[Path | str] = (),
              counters: Mapping[str, int | float] | None = None,
              numbers: Mapping[str, Any] | None = None, claims: Iterable[str] = (),
              integrity: bool = False, subject: str | None = None) -> Check:
        """A pass (ok) or fail check for this run's target; the sentence says what was seen.

        `integrity` marks a check of data integrity (never a known finding); `subject` credits
        the verdict to another part of the lab than the target (the `middlebox` whose counters it judges).
        """
        return Check(id=id, requirement=requirement, claims=self._claims(claims),
                     target=subject or self.target.name, verdict=Verdict.PASS if ok else Verdict.FAIL,
                     sentence=sentence,
                     evidence=Evidence(pcaps=[str(p) for p in pcaps], plots=[str(p) for p in plots],
                                       counters=dict(counters or {}), numbers=dict(numbers or {})),
                     integrity=integrity)

    def skip(self, id: str, requirement: str, reason: str, *, claims: Iterable[str] = (),
             numbers: Mapping[str, Any] | None = None) -> Check:
        """A check that cannot apply to this target or setup; the reason is its sentence."""
        return Check(id=id, requirement=requirement, claims=self._claims(claims), target=self.target.name,
                     verdict=Verdict.SKIP, sentence=reason, evidence=Evidence(numbers=dict(numbers or {})))

    def _claims(self, claims: Iterable[str]) -> tuple[str, ...]:
        """The scenario's claims and the check's own, each once."""
        return tuple(dict.fromkeys((*self.scenario.claims, *claims)))
