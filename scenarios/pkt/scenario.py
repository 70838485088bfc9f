"""`pkt`: toelab's packetdrill scripts as a scenario family, so their verdicts join the report.

One lab (two hosts, TSO off so the peer reads the segments the target cut) and one started
target serve every script in turn (scenarios.pkt.session.Session gives each its own ports).
Each script gives one check per requirement it names: pass, fail (with the line, what was
expected and what came, and the pcap), or skip when it uses a construct the runner does not run.
"""
from __future__ import annotations

import re
from collections.abc import Iterator

from pydantic import Field

from scenarios.framework import Check, Evidence, RunContext, ScenarioParams, Verdict, scenario

from .agent import agent_for
from .library import label, load, own_scripts, requirements_of
from .session import ScriptResult, Session

DEFAULT_REQUIREMENT = "RFC9293 3.10.7.4"


class PktParams(ScenarioParams):
    scripts: str = Field("**/*.pkt", description="which of scenarios/pkt/scripts to run (a glob)")


@scenario("pkt", purpose="packetdrill scripts (system calls and segments on one timeline) over the wire: the RFC 9293 "
          "state x event matrix and the application interface (Nagle, keep-alive, R2, TTL/TOS, urgent data, errors).",
          topology="two_hosts", params=PktParams, topology_params={"tso": "false"},
          covers=requirements_of(own_scripts()) or (DEFAULT_REQUIREMENT,),
          # scripts time segments against the target's delayed-ACK and retransmission timers (5 ms on the
          # engine): on a loaded machine the peer's "+0" segments reach it further apart than that
          whole_machine=True)
def run(ctx: RunContext) -> Iterator[Check]:
    paths = own_scripts(ctx.params.scripts)
    with Session(ctx.lab, ctx.target.name, ctx.server, ctx.client,
                 agent_for(ctx.target, ctx.lab, ctx.server), ctx.outdir) as session:
        for path, script in zip(paths, load(paths)):
            ctx.progress(label(path))
            yield from checks_of(ctx.target.name, label(path), session.run(script))


def checks_of(target: str, name: str, result: ScriptResult) -> Iterator[Check]:
    """One check per requirement the script names (its first names its id, the others get [REQ])."""
    requirements = result.requirements or [DEFAULT_REQUIREMENT]
    verdict = {"pass": Verdict.PASS, "unsupported": Verdict.SKIP}.get(result.verdict, Verdict.FAIL)
    base = re.sub(r"[^a-z0-9_.\-]+", "-", name.lower().replace("/", "."))
    evidence = Evidence(pcaps=[result.pcap] if result.pcap else [],
                        numbers={"line": result.line, "duration_s": round(result.duration_s, 3)})
    for i, requirement in enumerate(requirements):
        check_id = base if i == 0 else f"{base}[{requirement.replace(' ', '_')}]"
        yield Check(id=f"pkt.{check_id}", requirement=requirement, target=target, verdict=verdict,
                    sentence=result.summary(), evidence=evidence)
