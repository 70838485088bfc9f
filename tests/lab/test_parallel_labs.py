"""Sixteen labs built side by side (`pytest -n 2` builds two at a time): unique ids, no collisions."""
from __future__ import annotations

import pytest

from lab import netns
from lab.pytest_plugin import MakeLab

pytestmark = pytest.mark.root
CASES = [("two_hosts", "h1", "h2") if i % 2 == 0 else ("router_path", "h1", "h2") for i in range(16)]


@pytest.mark.parametrize(("topology", "src", "dst"), CASES, ids=[f"{i:02d}-{c[0]}" for i, c in enumerate(CASES)])
def test_lab_builds_and_works_beside_others(make_lab: MakeLab, topology: str, src: str, dst: str) -> None:
    lab = make_lab(topology)
    mine = {name for name in netns.list_names() if name.startswith(lab.id + "-")}
    assert mine == {node.netns for node in lab.nodes.values()}
    result = lab.node(src).run(["ping", "-n", "-c", "1", "-W", "2", lab.address(dst)])
    assert result.returncode == 0, result.stdout + result.stderr
    addresses = lab.node(dst).run(["ip", "-o", "-4", "addr", "show", "eth0"], check=True).stdout
    assert lab.address(dst) in addresses
