"""`toelab graph TOPOLOGY|LAB [--format mermaid|dot|png]`: the lab drawn.

Nodes by kind (each kind its own shape), with their interfaces' addresses and, for engine
nodes, their engine settings (policy, capacity, mode, coalescing); links with the
interface names at both ends and the MTU. Mermaid and Graphviz dot are printed as text;
png is drawn with matplotlib into a file (no Graphviz needed).
"""
from __future__ import annotations

import argparse
import json
from collections import deque
from pathlib import Path

from lab.spec import TopologySpec

from .lab_commands import add_parameter_arguments, is_lab_id, load_spec

MERMAID_SHAPES = {"host": ('["', '"]'), "router": ('{{"', '"}}'), "switch": ('[/"', '"/]'),
                  "toe": ('(("', '"))'), "middlebox": ('[["', '"]]')}
DOT_SHAPES = {"host": "box", "router": "hexagon", "switch": "trapezium", "toe": "doubleoctagon",
              "middlebox": "component"}
COLOURS = {"host": "#dbe9f6", "router": "#fde2c4", "switch": "#e2e2e2", "toe": "#d4f0d4", "middlebox": "#f6d5e5"}


def node_lines(spec: TopologySpec, name: str) -> list[str]:
    """The text of a node: name and kind, each interface's addresses, the engine's scalar settings."""
    node = spec.nodes[name]
    lines = [f"{name} ({node.kind}{', stp' if node.stp else ''})"]
    for iface, addresses in spec.addresses(name).items():
        if addresses:
            lines.append(f"{iface}: {', '.join(str(a) for a in addresses)}")
    settings = engine_summary(node.engine)
    if settings:
        lines.append("engine " + " ".join(settings))
    return lines


def engine_summary(engine: dict, prefix: str = "") -> list[str]:
    """`key=value` for the engine's settings that are set, nested ones as `a_to_b.coalesce=lro`;
    two directions set alike are said once, as `both.`."""
    nested = {k: v for k, v in engine.items() if isinstance(v, dict)}
    if {"a_to_b", "b_to_a"} <= set(nested) and nested["a_to_b"] == nested["b_to_a"]:
        engine = {**{k: v for k, v in engine.items() if k not in ("a_to_b", "b_to_a")}, "both": nested["a_to_b"]}
    out = []
    for key, value in engine.items():
        if isinstance(value, dict):
            out += engine_summary(value, f"{prefix}{key}.")
        elif isinstance(value, (str, int, float, bool)) and value not in (None, False, 0, "off", ""):
            out.append(f"{prefix}{key}={value}")
    return out


def link_label(spec: TopologySpec, index: int) -> str:
    link = spec.links[index]
    (a, ia), (b, ib) = link.split(0), link.split(1)
    mtu = spec.link_mtu(a, ia) or 1500
    return f"{ia} - {ib}, mtu {mtu}"


def mermaid(spec: TopologySpec) -> str:
    out = [f"%% toelab topology {spec.name}", "graph LR"]
    for name, node in spec.nodes.items():
        opening, closing = MERMAID_SHAPES[node.kind]
        out.append(f"  {name}{opening}{'<br/>'.join(node_lines(spec, name))}{closing}")
    for i, link in enumerate(spec.links):
        out.append(f'  {link.split(0)[0]} ---|"{link_label(spec, i)}"| {link.split(1)[0]}')
    for kind, colour in COLOURS.items():
        members = [n for n, node in spec.nodes.items() if node.kind == kind]
        if members:
            out.append(f"  classDef {kind} fill:{colour}")
            out.append(f"  class {','.join(members)} {kind}")
    return "\n".join(out) + "\n"


def dot(spec: TopologySpec) -> str:
    out = [f"graph {json.dumps(spec.name)} {{", "  rankdir=LR;", '  node [fontname="Helvetica", style=filled];']
    for name, node in spec.nodes.items():
        label = "\\n".join(node_lines(spec, name)).replace('"', "'")
        out.append(f'  {name} [shape={DOT_SHAPES[node.kind]}, fillcolor="{COLOURS[node.kind]}", label="{label}"];')
    for i, link in enumerate(spec.links):
        out.append(f'  {link.split(0)[0]} -- {link.split(1)[0]} [label="{link_label(spec, i)}"];')
    out.append("}")
    return "\n".join(out) + "\n"


def layout(spec: TopologySpec) -> dict[str, tuple[float, float]]:
    """Columns by hops from the first node (breadth first), rows within a column; unlinked nodes last."""
    neighbours: dict[str, list[str]] = {name: [] for name in spec.nodes}
    for link in spec.links:
        a, b = link.split(0)[0], link.split(1)[0]
        neighbours[a].append(b)
        neighbours[b].append(a)
    column: dict[str, int] = {}
    for start in spec.nodes:
        if start in column:
            continue
        column[start] = max(column.values(), default=-1) + 1 if column else 0
        queue = deque([start])
        while queue:
            here = queue.popleft()
            for there in neighbours[here]:
                if there not in column:
                    column[there] = column[here] + 1
                    queue.append(there)
    rows: dict[int, int] = {}
    position = {}
    for name in spec.nodes:
        row = rows.get(column[name], 0)
        rows[column[name]] = row + 1
        position[name] = (float(column[name]), -float(row))
    return position


def png(spec: TopologySpec, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    position = layout(spec)
    width = max(x for x, _ in position.values()) + 1
    height = max(-y for _, y in position.values()) + 1
    fig, ax = plt.subplots(figsize=(3.2 * width + 1, 1.8 * height + 1))
    for i, link in enumerate(spec.links):
        (xa, ya), (xb, yb) = position[link.split(0)[0]], position[link.split(1)[0]]
        ax.plot([xa, xb], [ya, yb], color="#555555", zorder=1)
        ax.text((xa + xb) / 2, (ya + yb) / 2 + 0.08, link_label(spec, i), ha="center", fontsize=7, zorder=3)
    for name, (x, y) in position.items():
        kind = spec.nodes[name].kind
        ax.text(x, y, "\n".join(node_lines(spec, name)), ha="center", va="center", fontsize=8, zorder=2,
                bbox={"boxstyle": "round" if kind in ("host", "toe") else "square", "facecolor": COLOURS[kind]})
    ax.set_xlim(-0.6, width - 0.4)
    ax.set_ylim(-height + 0.4, 0.6)
    ax.axis("off")
    ax.set_title(f"{spec.name}: {spec.description}" if spec.description else spec.name, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="TOPOLOGY|LAB", help="a template (with -p parameters) or a running lab's id")
    add_parameter_arguments(p)
    p.add_argument("--format", choices=("mermaid", "dot", "png"), default="mermaid", help="what to draw")
    p.add_argument("-o", "--output", type=Path, help="png: the file to write (default: TOPOLOGY.png)")


def spec_of(target: str, params: list[str]) -> TopologySpec:
    from lab.errors import LabError
    from lab.state import pick_record

    if is_lab_id(target):
        if params:
            raise LabError(f"{target} is a running lab; -p parameters apply only to a topology")
        return TopologySpec.model_validate(pick_record(target).spec)
    return load_spec(target, params)


def run(args: argparse.Namespace) -> int:
    spec = spec_of(args.target, args.param)
    if args.format == "png":
        print(f"graph: {png(spec, args.output or Path(f'{spec.name}.png'))}")
    else:
        print(mermaid(spec) if args.format == "mermaid" else dot(spec), end="")
    return 0
