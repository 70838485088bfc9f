"""`toelab graph`: kinds, interfaces, addresses, MTUs and engine settings, as mermaid, dot and png."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from lab.render import load_topology
from toelab.graph import dot, layout, mermaid, png

REPO = Path(__file__).resolve().parents[2]


def test_mermaid_has_every_node_by_kind_and_every_link_with_interfaces_and_mtu() -> None:
    spec = load_topology("router_path", {"mtu": "1400"})
    text = mermaid(spec)
    assert text.splitlines()[1] == "graph LR"
    assert 'h1["h1 (host)<br/>eth0: 10.0.1.2/24, fd00:1::2/64"]' in text
    assert 'r1{{"r1 (router)' in text  # routers are hexagons
    assert 'h1 ---|"eth0 - eth0, mtu 1400"| r1' in text
    assert 'r1 ---|"eth1 - eth0, mtu 1400"| h2' in text


def test_engine_nodes_show_their_policy_and_kind_shape() -> None:
    spec = load_topology("toe_pair", {"policy": "deny:rst", "capacity": "8"})
    text = dot(spec)
    assert "t1 [shape=doubleoctagon" in text
    assert "policy=deny:rst" in text and "capacity=8" in text
    assert text.startswith('graph "toe_pair" {') and text.rstrip().endswith("}")
    mb = mermaid(load_topology("middlebox_chain", {"coalesce": "lro"}))
    assert 'mb[["mb (middlebox)' in mb and "coalesce=lro" in mb


def test_png_is_drawn_and_layout_puts_a_chain_in_columns(tmp_path: Path) -> None:
    spec = load_topology("chain", {"n": "5"})
    columns = sorted({x for x, _ in layout(spec).values()})
    assert columns == [0.0, 1.0, 2.0, 3.0, 4.0]
    out = png(spec, tmp_path / "chain.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000


def test_graph_command_prints_and_refuses_bad_input() -> None:
    done = subprocess.run([sys.executable, "-m", "toelab", "graph", "bridge", "-p", "n=2", "--format", "dot"],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0 and "s1 [shape=trapezium" in done.stdout
    bad = subprocess.run([sys.executable, "-m", "toelab", "graph", "bridge", "-p", "n=x"], capture_output=True,
                         text=True, timeout=60, cwd=REPO)
    assert bad.returncode == 2 and "cannot use 'x'" in bad.stderr
