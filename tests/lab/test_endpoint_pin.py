"""`pin: true` keeps a one-queue engine endpoint on the core it started on; by default it may move."""
from __future__ import annotations

import json
import os

import pytest

from lab.lab import Lab
from lab.pytest_plugin import MakeLab
from lab.spec import parse_spec

pytestmark = pytest.mark.root


def _spec(engine: dict[str, object]) -> str:
    return ("name: pin_pair\nnodes:\n  h1:\n    interfaces: {eth0: {addresses: [10.0.7.1/24]}}\n"
            f"  t1:\n    kind: toe\n    interfaces: {{eth0: {{addresses: [10.0.7.2/24]}}}}\n    engine: {json.dumps(engine)}\n"
            'links:\n  - endpoints: ["h1:eth0", "t1:eth0"]\n')


def _engine_affinity(lab: Lab) -> set[int]:
    pids = [p.pid for p in lab.record.processes if p.node == "t1" and "endpoint_main" in p.argv]
    assert len(pids) == 1
    return os.sched_getaffinity(pids[0])


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="pinning is visible only with two cores or more")
@pytest.mark.parametrize("pin", [True, False], ids=["pinned", "free"])
def test_pin_keeps_the_engine_on_one_core(make_lab: MakeLab, pin: bool) -> None:
    lab = make_lab(parse_spec(_spec({"pin": pin}), "pin_pair.yaml"))
    affinity = _engine_affinity(lab)
    assert len(affinity) == 1 if pin else affinity == os.sched_getaffinity(0)
