"""The engine processes a lab starts run the build the lab's process chose, and TOELAB_PURE_PYTHON=1
reaches them (they inherit the environment); an echo through the engine is byte-exact on either."""
from __future__ import annotations

import io
import os
from collections.abc import Callable

import pytest

from lab.lab import Lab
from toe_engine import native
from toelab.shell import LabShell

pytestmark = pytest.mark.root

ECHO = ("import socket, sys; s = socket.create_connection((sys.argv[1], 7), timeout=10); "
        "data = bytes(range(256)) * 400; s.sendall(data); s.shutdown(socket.SHUT_WR); got = b''\n"
        "while len(got) < len(data):\n    chunk = s.recv(65536)\n    if not chunk: break\n    got += chunk\n"
        "print(got == data, len(got))")


@pytest.mark.parametrize("forced", [True, False], ids=["TOELAB_PURE_PYTHON=1", "as-built"])
def test_an_engine_node_runs_the_chosen_build(make_lab: Callable[..., Lab], monkeypatch: pytest.MonkeyPatch,
                                              forced: bool) -> None:
    if forced:
        monkeypatch.setenv(native.PURE_ENV, "1")
    else:
        monkeypatch.delenv(native.PURE_ENV, raising=False)
    expected = native.choose(os.environ).build
    lab = make_lab("toe_pair", offloads="false")
    stats = lab.engine("t1").stats()
    assert stats["build"] == ("pure" if forced else expected)
    done = lab.node("h1").run(["python3", "-c", ECHO, "10.0.7.2"], timeout=30)
    assert done.stdout.split() == ["True", str(256 * 400)], done.stdout + done.stderr
    assert lab.engine("t1").stats()["counters"]["conn_established"] >= 1
    shell = LabShell(lab, stdout=io.StringIO())
    shell.onecmd("toe stats t1")
    assert f"t1 (toe, endpoint), {stats['build']} engine" in " ".join(shell.stdout.getvalue().split())
