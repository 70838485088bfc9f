"""Topology spec validation: each mistake is one SpecError naming the source, the line and the field."""
from __future__ import annotations

import ipaddress
import re

import pytest

from lab.errors import SpecError
from lab.spec import ETHTOOL_FEATURES, RouteSpec, TopologySpec, parse_spec

GOOD = """\
name: t
nodes:
  h1:
    interfaces:
      eth0: {addresses: [10.0.0.1/24, "fd00::1/64"], mtu: 1400, features: {tso: false}}
    routes:
      - {dst: default, via: 10.0.0.2}
      - {dst: default6, via: "fd00::2"}
  h2:
    kind: router
    interfaces:
      eth0: {addresses: [10.0.0.2/24, "fd00::2/64"]}
    sysctls: {net.ipv4.tcp_sack: 0}
links:
  - endpoints: ["h1:eth0", "h2:eth0"]
    mtu: 1500
"""


def line_with(text: str, token: str) -> int:
    """1-based number of the first line holding `token`."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if token in line)


def error_of(text: str) -> SpecError:
    with pytest.raises(SpecError) as raised:
        parse_spec(text, "t.yaml")
    return raised.value


def test_good_spec_parses_and_answers_questions() -> None:
    spec = parse_spec(GOOD, "t.yaml")
    assert isinstance(spec, TopologySpec)
    assert spec.interfaces_of("h1") == ["eth0"]
    assert spec.link_mtu("h1", "eth0") == 1400 and spec.link_mtu("h2", "eth0") == 1500
    assert spec.first_address("h2") == "10.0.0.2" and spec.first_address("h2", 6) == "fd00::2"
    assert spec.nodes["h1"].routes[1].family == 6 and spec.nodes["h1"].routes[0].family == 4
    assert spec.interface("h1", "eth0").features == {"tso": False}
    assert spec.addresses("h2") == {"eth0": [ipaddress.ip_interface("10.0.0.2/24"), ipaddress.ip_interface("fd00::2/64")]}


def test_route_family_comes_from_gateway_or_prefix() -> None:
    assert RouteSpec(dst="fd00:9::/64", dev="eth0").family == 6
    assert RouteSpec(dst="default", via="fd00::1").family == 6
    assert RouteSpec(dst="default", dev="eth0").family == 4


def test_feature_map_names_kernel_features() -> None:
    assert set(ETHTOOL_FEATURES) == {"tso", "gso", "gro", "lro", "rx_csum", "tx_csum", "sg"}


@pytest.mark.parametrize(
    ("old", "new", "line_token", "message"),
    [
        ("kind: router", "kind: hub", "kind: hub", r"nodes\.h2\.kind: 'hub' is not allowed here"),
        ("kind: router", "colour: red", "colour: red", r"nodes\.h2\.colour: unknown field 'colour'"),
        ('"h2:eth0"]', '"h9:eth0"]', "endpoints", r"links\[0\]\.endpoints\[1\]: link endpoint 'h9:eth0' names unknown node 'h9'"),
        ('"h2:eth0"]', '"h2eth0"]', "endpoints", r"links\[0\]\.endpoints: endpoint 'h2eth0' is not of the form 'node:iface'"),
        ('"h2:eth0"]', '"h1:eth0"]', "endpoints", r"link joins 'h1:eth0' to itself"),
        ("mtu: 1500", "mtu: 67", "mtu: 67", r"links\[0\]\.mtu: Input should be greater than or equal to 68"),
        ("mtu: 1500", "mtu: 65536", "mtu: 65536", r"links\[0\]\.mtu: Input should be less than or equal to 65535"),
        ("tso: false", "tso2: false", "tso2", r"nodes\.h1\.interfaces\.eth0\.features\.tso2: 'tso2' is not allowed here"),
        ("10.0.0.2/24, ", "10.0.0.1/24, ", "10.0.0.1/24, \"fd00::2", r"address 10\.0\.0\.1 of h2:eth0 is already used by h1:eth0"),
        ("mtu: 1400", "mtu: 1200", "mtu: 1200", r"h1:eth0 has an IPv6 address but MTU 1200 is below IPv6's minimum of 1280"),
        ("dst: default,", "dst: default, dev: eth7,", "eth7", r"nodes\.h1\.routes\[0\]\.dev: route via device 'eth7', which node 'h1' does not have"),
        ("{dst: default, via: 10.0.0.2}", "{dst: default}", "{dst: default}", r"nodes\.h1\.routes\[0\]: route needs 'via' or 'dev'"),
        ("dst: default,", "dst: nowhere,", "nowhere", r"'nowhere' is neither 'default', 'default6' nor an address prefix"),
        ("net.ipv4.tcp_sack", "kernel.pid_max", "kernel.pid_max", r"sysctl 'kernel\.pid_max' is not a per-namespace net\.\* setting"),
        ("10.0.0.2/24, ", "10.0.0.999/24, ", "10.0.0.999", r"nodes\.h2\.interfaces\.eth0\.addresses"),
        ("  h2:\n", "  h2-bad:\n", "h2-bad", r"node name 'h2-bad' must be a letter"),
    ],
)
def test_each_mistake_names_line_and_field(old: str, new: str, line_token: str, message: str) -> None:
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    if "h2-bad" in new:
        text = text.replace('"h2:eth0"', '"h2-bad:eth0"')
    err = error_of(text)
    assert str(err).startswith(f"t.yaml: line {line_with(text, line_token)}, "), str(err)
    assert re.search(message, str(err)), str(err)


def test_interface_name_over_15_characters() -> None:
    text = GOOD.replace('"h2:eth0"]', '"h2:abcdefghijklmnop"]')
    err = error_of(text)
    assert f"line {line_with(text, 'abcdefghijklmnop')}" in str(err)
    assert "'abcdefghijklmnop' is 16 characters, over the kernel's limit of 15" in str(err)


def test_interface_name_with_bad_characters() -> None:
    err = error_of(GOOD.replace('"h2:eth0"]', '"h2:eth 0"]'))
    assert "interface name 'eth 0' may hold only letters" in str(err)


def test_endpoint_used_by_two_links() -> None:
    text = GOOD + '  - endpoints: ["h1:eth0", "h2:eth1"]\n'
    err = error_of(text)
    assert f"line {len(text.splitlines())}" in str(err)
    assert "endpoint 'h1:eth0' is already used by link 0" in str(err)


def test_configured_interface_without_link() -> None:
    text = GOOD.replace("    sysctls:", "      eth5: {mtu: 1500}\n    sysctls:")
    err = error_of(text)
    assert f"line {line_with(text, 'eth5')}" in str(err) and "interface h2:eth5 is configured but no link creates it" in str(err)


def test_switch_ports_take_no_addresses_and_switches_no_routes() -> None:
    err = error_of(GOOD.replace("kind: router", "kind: switch"))
    assert "switch port h2:eth0 cannot carry addresses" in str(err)
    text = GOOD.replace("kind: router", "kind: switch").replace('{addresses: [10.0.0.2/24, "fd00::2/64"]}', "{}")
    text = text.replace("    sysctls:", "    routes: [{dst: default, dev: eth0}]\n    sysctls:")
    assert "switch 'h2' cannot have routes" in str(error_of(text))


def test_yaml_syntax_error_has_a_line() -> None:
    text = GOOD.replace("links:", "links: [")
    err = error_of(text)
    assert "YAML syntax error" in str(err) and "line " in str(err)


def test_document_must_be_a_mapping() -> None:
    assert str(error_of("- a\n- b\n")) == "t.yaml: line 1: the topology must be a mapping with 'name', 'nodes' and 'links'"


def test_missing_nodes() -> None:
    assert "nodes: Field required" in str(error_of("name: t\n"))


def test_node_kinds_table_and_the_spec_agree() -> None:
    """Every kind a template may name has an entry in lab.kinds (and no entry is unreachable)."""
    from typing import get_args

    from lab.kinds import NODE_KINDS
    from lab.spec import NodeKind

    assert set(get_args(NodeKind)) == set(NODE_KINDS)
    for kind in NODE_KINDS.values():  # every named function imports and is callable
        for function in (kind.validator(), kind.starter()):
            assert function is None or callable(function)
