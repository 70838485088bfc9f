"""The netns backend on real namespaces: connectivity, MTUs, offload features, bad input."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from lab import netns
from lab.errors import BackendError, LabError, SpecError
from lab.lab import Lab
from lab.netem import netem_available
from lab.node import RunResult
from lab.pytest_plugin import MakeLab, host_state, leftovers_since
from lab.render import load_topology
from lab.state import read_record

pytestmark = pytest.mark.root


def ping(lab: Lab, src: str, dst: str, size: int | None = None, dont_fragment: bool = False) -> RunResult:
    cmd = ["ping", "-n", "-c", "1", "-W", "2"]
    cmd += ["-s", str(size)] if size is not None else []
    cmd += ["-M", "do"] if dont_fragment else []
    return lab.node(src).run(cmd + [dst])


def test_router_path_pings_v4_and_v6_and_names_its_namespaces(make_lab: MakeLab) -> None:
    lab = make_lab("router_path")
    assert re.fullmatch(r"tl[0-9a-f]{4}", lab.id)
    assert {node.netns for node in lab.nodes.values()} == {f"{lab.id}-{n}" for n in ("h1", "r1", "h2")}
    assert {f"{lab.id}-{n}" for n in ("h1", "r1", "h2")} <= netns.list_names()
    for version in (4, 6):
        result = ping(lab, "h1", lab.address("h2", version))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "1 received" in result.stdout
    links = lab.node("r1").run(["ip", "-o", "link", "show"], check=True).stdout
    assert re.search(r"\beth0@", links) and re.search(r"\beth1@", links)
    assert lab.node("r1").run(["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "1"
    assert lab.node("h1").run("echo hi from $0", check=True).stdout == "hi from /bin/sh\n"


def test_every_interface_exists_only_inside_its_namespace(make_lab: MakeLab) -> None:
    before_root = host_state()["root_links"]
    lab = make_lab("bridge", n=3)
    assert host_state()["root_links"] == before_root
    s1 = lab.node("s1").run(["ip", "-o", "link", "show", "master", "br0"], check=True).stdout
    assert sorted(re.findall(r"\b(p\d)@", s1)) == ["p1", "p2", "p3"]
    assert ping(lab, "h1", lab.address("h3")).returncode == 0
    assert ping(lab, "h3", lab.address("h2", 6)).returncode == 0


def test_mtu_mismatch_df_ping_over_r1_respects_the_1400_path_mtu(make_lab: MakeLab) -> None:
    lab = make_lab("mtu_mismatch")
    mtu = lab.node("r1").run(["ip", "-o", "link", "show", "b"], check=True).stdout
    assert " mtu 1400 " in mtu
    assert " mtu 2000 " in lab.node("a").run(["ip", "-o", "link", "show", "r1"], check=True).stdout
    b_via_r1 = "10.0.3.1"
    fits = ping(lab, "a", b_via_r1, size=1400 - 28, dont_fragment=True)
    assert fits.returncode == 0, fits.stdout + fits.stderr
    too_big = ping(lab, "a", b_via_r1, size=1400 - 28 + 1, dont_fragment=True)
    assert too_big.returncode != 0
    assert re.search(r"[Ff]rag needed|Message too long|mtu ?= ?1400", too_big.stdout + too_big.stderr), too_big


def test_template_features_read_back_from_the_kernel(make_lab: MakeLab) -> None:
    lab = make_lab("two_hosts", tso=False, gro=True)
    for node in ("h1", "h2"):
        features = lab.features(node, "eth0")
        assert features["tso"] is False and features["gro"] is True
        shown = lab.node(node).run(["ethtool", "-k", "eth0"], check=True).stdout
        assert "tcp-segmentation-offload: off" in shown and "generic-receive-offload: on" in shown


def test_set_features_changes_and_reads_back(make_lab: MakeLab) -> None:
    lab = make_lab("two_hosts")
    assert lab.features("h1", "eth0")["tso"] is True
    state = lab.set_features("h1", "eth0", tso=False, gso=False)
    assert state["tso"] is False and state["gso"] is False
    assert "generic-segmentation-offload: off" in lab.node("h1").run(["ethtool", "-k", "eth0"]).stdout
    with pytest.raises(BackendError, match=r"node h1, interface eth0: offload feature lro .*refused"):
        lab.set_features("h1", "eth0", lro=True)


def test_capture_records_packets_after_it_starts(make_lab: MakeLab, tmp_path: Path) -> None:
    lab = make_lab("two_hosts")
    capture = lab.capture("h2", "eth0", filter="icmp", path=tmp_path / "h2.pcap")
    assert ping(lab, "h1", lab.address("h2")).returncode == 0
    path = capture.stop()
    data = path.read_bytes()
    assert data[:4] in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4")
    assert len(data) > 24 + 2 * (16 + 98) - 1  # header, echo request and reply (98-byte frames)
    assert str(path) in read_record(lab.id).captures  # type: ignore[union-attr]


def test_popen_is_recorded_and_killed_at_down(make_lab: MakeLab) -> None:
    lab = make_lab("two_hosts")
    proc = lab.node("h1").popen(["sleep", "600"])
    record = read_record(lab.id)
    assert record is not None and proc.pid in record.pids
    lab.down()
    assert proc.returncode is not None
    assert not any(name.startswith(lab.id) for name in netns.list_names())
    assert read_record(lab.id) is None
    lab.down()  # idempotent


# --- bad input: an error saying what and where, and nothing left behind ------------------
TWO_HOSTS = """\
{#- toelab
parameters:
  mtu: {default: 1500}
-#}
name: bad
nodes:
  h1:
    interfaces:
      eth0: {addresses: [10.9.0.1/24]FEATURES}
  h2:
    interfaces:
      eth0: {addresses: [ADDR2]}
links:
  - endpoints: ["h1:eth0", "H2END"]
    mtu: MTU
IMPAIR"""

BAD_INPUTS = {
    "unknown node in link": ({"H2END": "h9:eth0"}, {}, SpecError, r"line 14, links\[0\]\.endpoints\[1\]: .*unknown node 'h9'"),
    "duplicate address": ({"ADDR2": "10.9.0.1/24"}, {}, SpecError, r"line 12, .*address 10\.9\.0\.1 of h2:eth0 is already used by h1:eth0"),
    "interface name too long": ({"H2END": "h2:eth0_is_far_too_long"}, {}, SpecError,
                                r"line 14, .*'eth0_is_far_too_long' is 20 characters, over the kernel's limit of 15"),
    "mtu out of range": ({}, {"mtu": 70000}, SpecError, r"line 15, links\[0\]\.mtu: .*less than or equal to 65535"),
    "unknown offload feature": ({"FEATURES": ", features: {tso2: true}"}, {}, SpecError, r"line 9, .*features.*'tso2' is not allowed"),
    "undefined template variable": ({"MTU": "{{ mtuu }}"}, {}, SpecError, r"line 15: undefined template variable: 'mtuu' is undefined"),
    "undeclared parameter": ({}, {"speed": 10}, SpecError, r"parameter 'speed'.*declares no such parameter"),
    "impairments without netem": ({"IMPAIR": "    impairments: {delay_ms: 10}\n"}, {}, BackendError,
                                  r"link h1:eth0 - h2:eth0 asks for impairments, but this kernel has no netem qdisc; "
                                  r"put a middlebox node"),
    "feature refused by the kernel": ({"FEATURES": ", features: {lro: true}"}, {}, BackendError,
                                      r"node h1, interface eth0: offload feature lro \(rx-lro\) on was refused by the kernel"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_says_what_and_where_and_leaves_nothing(case: str, tmp_path: Path) -> None:
    edits, params, error, message = BAD_INPUTS[case]
    if case == "impairments without netem" and netem_available():
        pytest.skip("this kernel has netem")
    text = TWO_HOSTS
    for key, default in {"FEATURES": "", "ADDR2": "10.9.0.2/24", "H2END": "h2:eth0", "MTU": "{{ mtu }}", "IMPAIR": ""}.items():
        text = text.replace(key, edits.get(key, default))
    path = tmp_path / "bad.yaml.j2"
    path.write_text(text)
    before = host_state()
    with pytest.raises(error) as raised:
        Lab.up(load_topology(str(path), params))
    assert re.search(message, str(raised.value)), str(raised.value)
    assert isinstance(raised.value, LabError)
    assert leftovers_since(before) == []


def test_failure_half_way_removes_namespaces_already_built(tmp_path: Path) -> None:
    spec = load_topology("router_path")
    r1 = spec.nodes["r1"]
    eth1 = r1.interfaces["eth1"].model_copy(update={"features": {"lro": True}})
    r1 = r1.model_copy(update={"interfaces": {**r1.interfaces, "eth1": eth1}})
    broken = spec.model_copy(update={"nodes": {**spec.nodes, "r1": r1}})
    before = host_state()
    with pytest.raises(BackendError, match="node r1, interface eth1: offload feature lro"):
        Lab.up(broken)
    assert leftovers_since(before) == []
