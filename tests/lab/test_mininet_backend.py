"""The Mininet backend builds the same spec and carries packets; it refuses what it cannot honour."""
from __future__ import annotations

import pytest

from lab.errors import BackendError
from lab.lab import Lab
from lab.render import load_topology
from lab.state import list_records
from lab.tools import ping

pytestmark = [pytest.mark.root, pytest.mark.mininet]


def test_router_path_pings_across_in_mininet() -> None:
    spec = load_topology("router_path", {"mtu": "1400"})
    with Lab.up(spec, backend="mininet") as lab:
        assert any(r.lab_id == lab.id and r.backend == "mininet" for r in list_records())
        for version in (4, 6):
            result = ping(lab, "h1", lab.address("h2", version), count=2)
            assert result.ok, result.output
        link = lab.node("h1").run(["ip", "-o", "link", "show", "eth0"]).stdout
        assert "mtu 1400" in link
        assert lab.node("r1").run(["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "1"
        assert lab.set_features("r1", "eth0", gro=False)["gro"] is False
        assert lab.features("r1", "eth0")["gro"] is False
    assert all(r.lab_id != lab.id for r in list_records())


def test_mininet_refuses_engine_nodes_before_building() -> None:
    spec = load_topology("router_path")
    spec = spec.model_copy(update={"nodes": {**spec.nodes, "r1": spec.nodes["r1"].model_copy(update={"kind": "middlebox"})}})
    before = {r.lab_id for r in list_records()}
    with pytest.raises(BackendError, match="node 'r1' is of kind 'middlebox', which only the netns backend runs"):
        Lab.up(spec, backend="mininet")
    assert {r.lab_id for r in list_records()} == before
