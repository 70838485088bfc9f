"""Every bad template and topology is one sentence naming file, line and field; the CLI exits 2 and makes nothing.

The library-level cases need no root. The CLI cases run `toelab up` in a subprocess; as root
they would build if the input were accepted, so "nothing created" is checked for real
(namespaces, records, root-namespace links before and after).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import lab.render
from lab.errors import SpecError
from lab.pytest_plugin import host_state, leftovers_since
from lab.render import list_templates, load_topology
from lab.spec import parse_spec

REPO = Path(__file__).resolve().parents[2]
HEADER = "{#- toelab\ndescription: test\nparameters:\n  n: {default: 0, help: a number}\n  mtu: {default: 1500, help: MTU}\n-#}\n"
TWO_HOSTS = """name: t
nodes:
  h1: {kind: host, interfaces: {eth0: {addresses: [10.0.0.1/24]}}}
  h2: {kind: host, interfaces: {eth0: {addresses: [10.0.0.2/24]}}}
links:
  - endpoints: ["h1:eth0", "h2:eth0"]
    mtu: MTU
"""
SWITCH_RING = """name: ring
nodes:
  s1: {kind: switch STP}
  s2: {kind: switch STP}
  s3: {kind: switch STP}
links:
  - endpoints: ["s1:p2", "s2:p1"]
  - endpoints: ["s2:p3", "s3:p2"]
  - endpoints: ["s3:p1", "s1:p3"]
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.yaml.j2"
    path.write_text(text)
    return path


def error_of(path: Path, **params: object) -> str:
    with pytest.raises(SpecError) as info:
        load_topology(str(path), params)
    return str(info.value)


# --- the library: one SpecError sentence with file, line and field ----------------------------
@pytest.mark.parametrize(("header", "expected"), [
    ("{#- toelab\n- just\n- a list\n-#}\n", "line 2, header: the header must be a mapping"),
    ("{#- toelab\ndescription: x\nparameters: [n, mtu]\n-#}\n", "line 2, header.parameters: parameters must be a mapping"),
    ("{#- toelab\ndescription: x\nparameters:\n  n: 5\n-#}\n", "header.parameters.n: a parameter must be a mapping"),
    ("{#- toelab\ndescription: [unclosed\n-#}\n", "header: metadata is not valid YAML"),
])
def test_header_that_is_not_a_mapping_is_one_sentence(tmp_path: Path, header: str, expected: str) -> None:
    path = write(tmp_path, "hdr", header + TWO_HOSTS.replace("MTU", "1500"))
    message = error_of(path)
    assert message.startswith(str(path)) and expected in message


@pytest.mark.parametrize(("expression", "params", "expected"), [
    ("{{ 1500 // n }}", {"n": 0}, "ZeroDivisionError: integer division or modulo by zero"),
    ('{{ mtu + "x" }}', {}, "TypeError: unsupported operand"),
    ('{{ "%d" % "x" }}', {}, "TypeError: %d format"),
])
def test_python_error_inside_a_template_names_its_line(tmp_path: Path, expression: str, params: dict[str, object],
                                                       expected: str) -> None:
    text = HEADER + TWO_HOSTS.replace("MTU", expression)
    path = write(tmp_path, "expr", text)
    message = error_of(path, **params)
    line = text.splitlines().index(f"    mtu: {expression}") + 1
    assert f"{path}: line {line}: the template's expression failed with {expected}" in message


@pytest.mark.parametrize("statement", ['{% include "other.yaml.j2" %}', '{% import "x.j2" as x %}',
                                       '{% extends "base.j2" %}'])
def test_include_import_extends_are_refused_not_recursed(tmp_path: Path, statement: str) -> None:
    write(tmp_path, "other", TWO_HOSTS.replace("MTU", "1500"))
    path = write(tmp_path, "inc", HEADER + statement + "\n" + TWO_HOSTS.replace("MTU", "1500"))
    message = error_of(path)
    assert "is not supported: a template is one file" in message
    assert f"{path}: line 7" in message


def test_one_bad_template_does_not_break_the_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "good", HEADER + TWO_HOSTS.replace("MTU", "1500"))
    write(tmp_path, "bad", "{#- toelab\nparameters: 7\n-#}\n" + TWO_HOSTS)
    monkeypatch.setattr(lab.render, "TOPOLOGY_DIR", tmp_path)
    listed = {t.name: t for t in list_templates()}
    assert set(listed) == {"good", "bad"}
    assert listed["good"].error is None and set(listed["good"].parameters) == {"n", "mtu"}
    assert listed["bad"].error is not None and "parameters must be a mapping" in listed["bad"].error


def test_duplicate_keys_name_both_lines() -> None:
    text = TWO_HOSTS.replace("MTU", "1500") .replace("links:", "  h1: {kind: router}\nlinks:")
    with pytest.raises(SpecError) as info:
        parse_spec(text, "dup.yaml")
    assert str(info.value) == "dup.yaml: line 5, nodes.h1: duplicate key 'h1': on line 3 and again on line 5"


def test_duplicate_keys_deeper_down_too() -> None:
    text = TWO_HOSTS.replace("MTU", "1500").replace("{kind: host, interfaces", "{kind: host, kind: router, interfaces", 1)
    with pytest.raises(SpecError, match=r"line 3, nodes\.h1\.kind: duplicate key 'kind': on line 3 and again on line 3"):
        parse_spec(text, "dup.yaml")


def test_a_loop_of_switches_without_stp_is_refused() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(SWITCH_RING.replace(" STP", ""), "ring.yaml")
    message = str(info.value)
    assert message.startswith("ring.yaml: line 9, links[2].endpoints: link s3:p1 - s1:p3 closes a loop of switches "
                              "(s1, s2, s3)"), message
    assert "stp: true" in message


def test_a_loop_of_switches_with_stp_is_accepted_and_a_chain_needs_none() -> None:
    spec = parse_spec(SWITCH_RING.replace(" STP", ", stp: true"), "ring.yaml")
    assert all(node.stp for node in spec.nodes.values())
    chain = "\n".join(SWITCH_RING.replace(" STP", "").splitlines()[:-1]) + "\n"
    assert len(parse_spec(chain, "chain.yaml").links) == 2


def test_two_links_between_the_same_switches_are_a_loop() -> None:
    text = SWITCH_RING.replace(" STP", "").replace('  - endpoints: ["s2:p3", "s3:p2"]\n  - endpoints: ["s3:p1", "s1:p3"]\n',
                                                   '  - endpoints: ["s1:p9", "s2:p9"]\n')
    with pytest.raises(SpecError, match="closes a loop of switches"):
        parse_spec(text, "double.yaml")


def test_stp_on_a_host_is_refused() -> None:
    text = TWO_HOSTS.replace("MTU", "1500").replace("h1: {kind: host,", "h1: {kind: host, stp: true,")
    with pytest.raises(SpecError, match="nodes.h1.stp: stp is a switch setting"):
        parse_spec(text, "stp.yaml")


# --- the CLI: exit 2, one sentence, no traceback, nothing left ----------------------------
def toelab(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "toelab", *args], capture_output=True, text=True, timeout=60,
                          cwd=REPO, env=env)


@pytest.mark.parametrize("case", ["header", "zero", "type", "include", "dup", "loop"])
def test_cli_bad_templates_exit_2_with_one_sentence_and_make_nothing(tmp_path: Path, case: str) -> None:
    texts = {
        "header": "{#- toelab\nparameters: [1, 2]\n-#}\n" + TWO_HOSTS.replace("MTU", "1500"),
        "zero": HEADER + TWO_HOSTS.replace("MTU", "{{ 1500 // n }}"),
        "type": HEADER + TWO_HOSTS.replace("MTU", '{{ mtu + "x" }}'),
        "include": HEADER + '{% include "x.j2" %}\n' + TWO_HOSTS.replace("MTU", "1500"),
        "dup": TWO_HOSTS.replace("MTU", "1500").replace("links:", "  h2: {kind: host}\nlinks:"),
        "loop": SWITCH_RING.replace(" STP", ""),
    }
    path = write(tmp_path, case, texts[case])
    before = host_state()
    done = toelab("up", str(path))
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"toelab: {path}: line "), done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert leftovers_since(before) == []


def test_cli_topologies_lists_a_broken_template_beside_the_good_ones() -> None:
    done = toelab("topologies", "--json")
    assert done.returncode == 0, done.stderr
    import json
    names = {t["name"] for t in json.loads(done.stdout)}
    assert {"two_hosts", "router_path"} <= names


def path_without(tmp_path: Path, missing: str) -> str:
    """A PATH holding the lab's usual tools except `missing`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("ip", "ethtool", "tcpdump", "iperf3", "ping", "nft", "tc"):
        found = next((Path(d) / tool for d in ("/usr/sbin", "/usr/bin", "/sbin", "/bin") if (Path(d) / tool).exists()),
                     None)
        if found is not None and tool != missing:
            (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


@pytest.mark.skipif(os.geteuid() != 0, reason="the tool check comes after the root check")
@pytest.mark.parametrize(("args", "missing", "said"), [
    (["up", "toe_pair"], "nft", "loads nftables rules into node"),
    (["run", "handshake"], "tcpdump", "toelab run captures every scenario's packets"),
    (["demo"], "iperf3", "toelab demo measures router_path with iperf3"),
])
def test_a_missing_tool_is_named_before_anything_is_built(tmp_path: Path, args: list[str], missing: str,
                                                          said: str) -> None:
    before = host_state()
    done = toelab(*args, env={**os.environ, "PATH": path_without(tmp_path, missing)})
    assert done.returncode == 2, done.stdout + done.stderr
    message = " ".join(done.stderr.split())
    assert said in message and f"{missing} is not installed" in message, message
    assert "apt-get install" in message
    assert leftovers_since(before) == []
