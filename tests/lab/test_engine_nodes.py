"""Middlebox nodes built from templates: started with the lab, driven by lab.engine() and the shell, gone after teardown."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from lab.engine_nodes import EngineError, runtime_dir
from lab.errors import SpecError
from lab.lab import Lab
from lab.pytest_plugin import host_state, leftovers_since
from lab.render import load_topology
from toelab.shell import LabShell
from lab.spec import parse_spec

pytestmark = pytest.mark.root
REPO = Path(__file__).resolve().parents[2]

BAD_TEMPLATE = """\
name: bad_middlebox
nodes:
  h1:
    interfaces:
      eth0: {addresses: [10.0.9.1/24]}
  mb:
    kind: middlebox
    engine:
      mode: bridge
      a_to_b:
        coalesce: fast
  h2:
    interfaces:
      eth0: {addresses: [10.0.9.2/24]}
links:
  - endpoints: ["h1:eth0", "mb:eth0"]
  - endpoints: ["mb:eth1", "h2:eth0"]
"""


def ping(lab: Lab, count: int = 3, dst: str | None = None) -> int:
    """Replies h1 got from h2 (fast pings, one-second wait for the last)."""
    out = lab.node("h1").run(["ping", "-n", "-q", "-c", str(count), "-i", "0.01", "-W", "1",
                              dst or lab.address("h2")], timeout=30).stdout
    return int(out.split(" received")[0].rsplit(" ", 1)[1])


def shell_says(shell: LabShell, line: str) -> str:
    out = shell.stdout
    assert isinstance(out, io.StringIO)
    out.seek(0)
    out.truncate()
    shell.onecmd(line)
    return out.getvalue()


def test_router_middlebox_from_template_forwards_and_counts(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab("middlebox_chain")
    assert set(lab.engines()) == {"mb"}
    assert lab.node("mb").run("sysctl -n net.ipv4.ip_forward").stdout.strip() == "0"
    assert ping(lab, 5) == 5
    stats = lab.engine("mb").stats()
    assert stats["mode"] == "router"
    assert stats["directions"]["a_to_b"]["fwd_frames"] >= 5 and stats["directions"]["b_to_a"]["fwd_frames"] >= 5
    assert stats["counters"]["arp_requests_sent"] >= 1
    assert lab.engine("mb").config()["a_to_b"]["coalesce"] == "off"


def test_bridge_mode_and_impairments_from_template_parameters(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab("middlebox_chain", mode="bridge", loss=100)
    assert lab.spec.addresses("mb") == {"eth0": [], "eth1": []}
    assert ping(lab, 3, dst="10.0.3.2") == 0
    dropped = lab.engine("mb").stats()["directions"]["a_to_b"]["impair_dropped"]
    assert dropped >= 3
    assert lab.engine("mb").config()["b_to_a"]["seed"] == 2


def test_set_changes_impairments_at_run_time(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab("middlebox_chain")
    mb = lab.engine("mb")
    config = mb.set(loss=100, direction="a_to_b")
    assert config["a_to_b"]["impairments"]["loss"] == 100 and config["b_to_a"]["impairments"]["loss"] == 0
    assert ping(lab, 3) == 0
    assert mb.stats()["directions"]["a_to_b"]["impair_dropped"] >= 3
    mb.set(loss=0, direction="a_to_b")
    assert ping(lab, 3) == 3
    with pytest.raises(EngineError, match="loss"):
        mb.set(loss=150)
    with pytest.raises(EngineError, match="unknown cmd"):
        mb.request({"cmd": "nope"})


def test_shell_toe_commands(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab("middlebox_chain")
    shell = LabShell(lab, stdout=io.StringIO())
    assert ping(lab, 2) == 2
    table = shell_says(shell, "toe stats")
    assert "mb (middlebox, router)" in table and "a_to_b" in table and "fwd_frames" in table
    fwd_row = next(line for line in table.splitlines() if "fwd_frames" in line)
    assert [int(cell) for cell in fwd_row.replace("│", " ").split()[1:]][-1] >= 4
    assert "eth1.tx_frames" in shell_says(shell, "toe stats mb")
    assert "keeps no connection table" in shell_says(shell, "toe conns")
    said = shell_says(shell, "toe set mb loss=5 direction=a_to_b")
    assert 'mb a_to_b: coalesce=off tso=False seed=1 impairments={"loss": 5.0}' in said
    assert "mb b_to_a: coalesce=off tso=False seed=2 impairments={}" in said
    assert lab.engine("mb").config()["a_to_b"]["impairments"]["loss"] == 5
    said = shell_says(shell, "toe set mb gemodel.p=2 gemodel.r=30 direction=b_to_a coalesce=gro")
    assert '"gemodel": {"p": 2.0, "r": 30.0' in said and "b_to_a: coalesce=gro" in said
    assert "runs no engine" in shell_says(shell, "toe stats h1")
    assert "refused 'set'" in shell_says(shell, "toe set mb loss=500")
    assert "usage: toe" in shell_says(shell, "toe")
    assert "toe stats [NODE]" in shell_says(shell, "help")


def test_bad_engine_settings_are_a_spec_error_with_line_before_anything_is_built(tmp_path: Path) -> None:
    before = host_state()
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_TEMPLATE)
    with pytest.raises(SpecError) as caught:
        Lab.up(load_topology(str(path)))
    assert caught.value.where == "line 11, nodes.mb.engine.a_to_b.coalesce", caught.value
    assert "'off', 'gro' or 'lro'" in caught.value.what
    with pytest.raises(SpecError, match=r"line \d+, nodes.mb.engine.a_to_b.impairments: .*two loss models"):
        load_topology("middlebox_chain", {"loss": "5", "gemodel_p": "1"})
    with pytest.raises(SpecError, match="router mode needs addresses"):
        parse_spec(BAD_TEMPLATE.replace("mode: bridge", "mode: router").replace("coalesce: fast", "coalesce: gro"), "t")
    with pytest.raises(SpecError, match="interface 'eth7' is not one of the node's"):
        parse_spec(BAD_TEMPLATE.replace("coalesce: fast", "coalesce: gro").replace("mode: bridge", "b: eth7"), "t")
    assert leftovers_since(before) == []


def test_process_and_socket_gone_after_teardown_also_after_failure(tmp_path: Path) -> None:
    lab = Lab.up(load_topology("middlebox_chain"))
    pid = lab.record.processes[0].pid
    control, directory = lab.engine("mb").control, runtime_dir(lab)
    assert control.is_socket()
    lab.down()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not directory.exists()

    with pytest.raises(AssertionError):
        with Lab.up(load_topology("middlebox_chain")) as failing:
            pid, directory = failing.record.processes[0].pid, runtime_dir(failing)
            raise AssertionError("a failing test")
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not directory.exists()


CRASHING_TEST = """
import json
from lab.lab import Lab
from lab.render import load_topology
lab = Lab.up(load_topology("middlebox_chain"))
print(json.dumps({"pid": lab.record.processes[0].pid, "dir": str(lab.engine("mb").control.parent)}), flush=True)
raise SystemExit("the test failed")
"""


def test_process_gone_when_the_owning_process_exits_with_an_error() -> None:
    before = host_state()
    done = subprocess.run([sys.executable, "-c", CRASHING_TEST], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "the test failed" in done.stderr
    started = json.loads(done.stdout)
    with pytest.raises(ProcessLookupError):
        os.kill(started["pid"], 0)
    assert not Path(started["dir"]).exists()
    assert leftovers_since(before) == []


def test_middlebox_that_cannot_start_fails_the_build_and_leaves_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    import lab.engine_nodes
    from lab.errors import BackendError

    monkeypatch.setattr(lab.engine_nodes, "MIDDLEBOX_MODULE", "toe_engine.runtime.no_such_module")
    before = host_state()
    with pytest.raises(BackendError, match="middlebox on node mb did not become ready.*No module named"):
        Lab.up(load_topology("middlebox_chain"))
    assert leftovers_since(before) == []
