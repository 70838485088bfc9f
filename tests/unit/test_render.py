"""Topology templates: every one renders with its defaults and with parameters; errors name the line."""
from __future__ import annotations

from pathlib import Path

import pytest

from lab.errors import SpecError
from lab.render import coerce, find_template, list_templates, load_topology, parse_assignments
from lab.spec import TopologySpec

TEMPLATES = [t.name for t in list_templates()]


def test_the_base_templates_are_there() -> None:
    assert {"two_hosts", "router_path", "bridge", "mtu_mismatch", "middlebox_chain", "chain"} <= set(TEMPLATES)


@pytest.mark.parametrize("name", TEMPLATES)
def test_every_template_renders_with_defaults(name: str) -> None:
    spec = load_topology(name)
    assert isinstance(spec, TopologySpec) and spec.nodes
    for link in spec.links:
        for index in (0, 1):
            assert link.split(index)[0] in spec.nodes


@pytest.mark.parametrize("name", TEMPLATES)
def test_every_template_declares_documented_parameters(name: str) -> None:
    template = next(t for t in list_templates() if t.name == name)
    assert template.description
    for parameter in template.parameters.values():
        assert parameter.help, f"{name}: parameter {parameter.name} has no help"


@pytest.mark.parametrize(
    ("name", "params", "check"),
    [
        ("two_hosts", {"mtu": 9000, "tso": False, "gro": True},
         lambda s: s.links[0].mtu == 9000 and s.interface("h1", "eth0").features == {"tso": False, "gro": True}),
        ("two_hosts", {"mtu": "1280", "tso": "off"}, lambda s: s.links[0].mtu == 1280 and not s.interface("h2", "eth0").features["tso"]),
        ("router_path", {"mtu": 1400}, lambda s: [l.mtu for l in s.links] == [1400, 1400]),
        ("router_path", {"egress_mtu": 1300, "router_gro": False},
         lambda s: [l.mtu for l in s.links] == [1500, 1300] and s.interface("r1", "eth1").features == {"gro": False}),
        ("bridge", {"n": 5}, lambda s: len(s.nodes) == 6 and s.first_address("h5") == "10.0.10.5" and s.first_address("h5", 6) == "fd00:10::5"),
        ("bridge", {"n": 1, "mtu": 9000}, lambda s: len(s.links) == 1 and s.links[0].mtu == 9000),
        ("mtu_mismatch", {}, lambda s: s.link_mtu("r1", "b") == 1400 and s.link_mtu("r2", "b") == 1500 and s.nodes["r1"].nft is None),
        ("mtu_mismatch", {"mtu_r1_b": 1280, "r1_drop_icmp": True},
         lambda s: s.link_mtu("b", "r1") == 1280 and "packet-too-big drop" in (s.nodes["r1"].nft or "")
         and "maxseg" not in (s.nodes["r1"].nft or "")),
        ("mtu_mismatch", {"r1_clamp_mss": True}, lambda s: "maxseg size set rt mtu" in (s.nodes["r1"].nft or "")),
        ("middlebox_chain", {"mtu": 9000, "egress_mtu": 1500}, lambda s: [l.mtu for l in s.links] == [9000, 1500]),
        ("chain", {"n": 2}, lambda s: list(s.nodes) == ["h1", "h2"] and s.links[0].endpoints == ("h1:eth0", "h2:eth0")),
        ("chain", {"n": 50}, lambda s: len(s.nodes) == 50 and len(s.links) == 49 and s.nodes["r48"].kind == "router"),
        ("chain", {"n": 300}, lambda s: len(s.links) == 299 and s.first_address("h2") == "10.101.48.2"),
    ],
)
def test_templates_honour_parameters(name: str, params: dict[str, object], check) -> None:  # type: ignore[no-untyped-def]
    assert check(load_topology(name, params))


def test_unknown_topology_lists_known_ones() -> None:
    with pytest.raises(SpecError, match=r"no_such: unknown topology; known ones are: .*router_path"):
        load_topology("no_such")


def test_missing_template_file() -> None:
    with pytest.raises(SpecError, match=r"/nowhere/x\.yaml\.j2: no such template file"):
        find_template("/nowhere/x.yaml.j2")


def test_undeclared_parameter_names_the_parameters_there_are() -> None:
    with pytest.raises(SpecError, match=r"router_path\.yaml\.j2: parameter 'speed': the template declares no such "
                                        r"parameter \(it has: mtu, egress_mtu, router_gro\)"):
        load_topology("router_path", {"speed": "10"})


def test_parameter_of_wrong_type() -> None:
    with pytest.raises(SpecError, match=r"parameter 'mtu': cannot use 'big'"):
        load_topology("router_path", {"mtu": "big"})
    with pytest.raises(SpecError, match=r"parameter 'tso': cannot use 'maybe': 'maybe' is not a boolean"):
        load_topology("two_hosts", {"tso": "maybe"})


def test_parameter_out_of_range_names_the_template_line() -> None:
    path = find_template("router_path")
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "mtu: {{ mtu }}" in text)
    with pytest.raises(SpecError, match=rf"router_path\.yaml\.j2: line {line}, links\[0\]\.mtu: Input should be greater"):
        load_topology("router_path", {"mtu": 40})


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "t.yaml.j2"
    path.write_text(text)
    return str(path)


HEADER = "{#- toelab\ndescription: test\nparameters:\n  mtu: {default: 1500, help: mtu}\n-#}\n"


def test_undefined_variable_names_the_line(tmp_path: Path) -> None:
    text = HEADER + "name: t\nnodes:\n  h1: {}\n  h2: {}\nlinks:\n  - endpoints: [h1:e, h2:e]\n    mtu: {{ mtuu }}\n"
    with pytest.raises(SpecError, match=r"t\.yaml\.j2: line 12: undefined template variable: 'mtuu' is undefined"):
        load_topology(write(tmp_path, text))


def test_template_syntax_error_names_the_line(tmp_path: Path) -> None:
    text = HEADER + "name: t\n{% if %}\nnodes: {}\n"
    with pytest.raises(SpecError, match=r"line 7: template syntax error"):
        load_topology(write(tmp_path, text))


def test_spec_error_in_rendered_yaml_points_at_template_line(tmp_path: Path) -> None:
    text = HEADER + "name: t\nnodes:\n  h1: {}\n  h2: {kind: hub}\nlinks: []\n"
    with pytest.raises(SpecError, match=r"line 9, nodes\.h2\.kind: 'hub' is not allowed here"):
        load_topology(write(tmp_path, text))


def test_bad_header_metadata(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"header: metadata is not valid YAML"):
        load_topology(write(tmp_path, "{#- toelab\nparameters: [\n-#}\nname: t\nnodes: {}\n"))


def test_command_line_assignments_and_coercion() -> None:
    assert parse_assignments(["mtu=1400", " n = 3 "]) == {"mtu": "1400", "n": "3"}
    with pytest.raises(SpecError, match="expected key=value"):
        parse_assignments(["mtu"])
    assert coerce("on", True) is True and coerce("1400", 1) == 1400 and coerce("0.5", 1.0) == 0.5 and coerce("x", "") == "x"
