"""How long building and tearing down a lab takes, per lab and per node.

    time_build("chain", {"n": 50}, repeats=5)
    -> {"nodes": 50, "build_ms": ..., "down_ms": ..., "per_node_ms": ...}

Times are medians over the repeats; the first build of a process (imports, the kernel's
feature-name table) is done once untimed so it does not count.
"""
from __future__ import annotations

import statistics
import time
from typing import Any

from lab.lab import Lab
from lab.render import load_topology
from lab.spec import TopologySpec


def chain_spec(n: int, mtu: int = 1500) -> TopologySpec:
    """A routed line of `n` nodes (h1 - r1 - ... - h2) from topologies/chain.yaml.j2."""
    return load_topology("chain", {"n": n, "mtu": mtu})


def time_build(spec_or_name: TopologySpec | str, params: dict[str, Any] | None = None,
               repeats: int = 5, backend: str = "netns") -> dict[str, float]:
    """Median build and teardown times of a topology, and build time per node."""
    spec = spec_or_name if isinstance(spec_or_name, TopologySpec) else load_topology(spec_or_name, params or {})
    Lab.up(spec, backend=backend).down()
    builds, downs = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        lab = Lab.up(spec, backend=backend)
        built = time.perf_counter()
        lab.down()
        builds.append((built - start) * 1000)
        downs.append((time.perf_counter() - built) * 1000)
    build_ms = statistics.median(builds)
    return {"nodes": len(spec.nodes), "build_ms": round(build_ms, 2), "down_ms": round(statistics.median(downs), 2),
            "per_node_ms": round(build_ms / len(spec.nodes), 2)}

