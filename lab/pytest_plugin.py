"""pytest support for toelab: the `root` marker and the `make_lab` fixture factory.

Load it with `pytest_plugins = ["lab.pytest_plugin"]`. Labs get unique ids through their
state records, so pytest-xdist workers build in parallel without colliding.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .lab import Lab
from .render import load_topology
from .spec import TopologySpec

ROOT_REASON = "needs root: builds network namespaces"
MakeLab = Callable[..., Lab]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "root: needs root (builds real namespaces and sends real packets)")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") is not None and os.geteuid() != 0:
        pytest.skip(ROOT_REASON)


@pytest.fixture
def make_lab() -> Iterator[MakeLab]:
    """Build labs for one test: `make_lab("router_path", mtu=1400)` or `make_lab(spec)`.

    Every lab made is torn down when the test ends, pass or fail.
    """
    labs: list[Lab] = []

    def make(topology: str | TopologySpec, **params: Any) -> Lab:
        if os.geteuid() != 0:
            pytest.skip(ROOT_REASON)
        spec = topology if isinstance(topology, TopologySpec) else load_topology(topology, params)
        lab = Lab.up(spec)
        labs.append(lab)
        return lab

    yield make
    for lab in reversed(labs):
        lab.down()


def _root_links() -> frozenset[str]:
    return frozenset(os.listdir("/sys/class/net"))


def host_state() -> dict[str, frozenset[str]]:
    """What a lab could leave behind on this machine: namespaces, records, root-namespace links."""
    from .netns import list_names
    from .state import STATE_DIR
    records = frozenset(p.name for p in STATE_DIR.glob("*")) if STATE_DIR.is_dir() else frozenset()
    return {"namespaces": frozenset(list_names()), "records": records, "root_links": _root_links()}


def leftovers_since(before: dict[str, frozenset[str]]) -> list[str]:
    """What appeared since `before` and is not part of another live process's lab.

    Other pytest-xdist workers build labs meanwhile; theirs are told apart by the creator in
    their records (a lab's record exists for as long as its namespaces do).
    """
    from .netns import exists
    from .state import read_record
    now = host_state()
    out = sorted(f"root link {name}" for name in now["root_links"] - before["root_links"])

    me = os.getpid()

    def foreign(lab_id: str) -> bool:
        """Built by another process that is neither this one nor one of its children."""
        record = read_record(lab_id)
        return record is not None and me not in (record.creator_pid, record.creator_ppid)

    for name in sorted(now["records"] - before["records"]):
        if name.startswith("."):  # `.<id>.new<pid>`: create_record's reservation, gone when it returns
            if name.endswith(f".new{me}"):
                out.append(f"record {name}")
            continue
        record = read_record(name.split(".", 1)[0])
        if record is not None and me in (record.creator_pid, record.creator_ppid):  # None: removed meanwhile
            out.append(f"record {name}")
    for name in sorted(now["namespaces"] - before["namespaces"]):
        if not foreign(name.split("-", 1)[0]) and exists(name):
            out.append(f"namespace {name}")
    return out
