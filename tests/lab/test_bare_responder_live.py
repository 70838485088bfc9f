"""The bare responders on a real wire: toe_pair's h1 client (the bench's loadgen, unchanged) against
toelab.benches.bare_responder (Python) and its C twin on t1's port, t1 a plain host whose kernel is
shut out of that port as a toe node's is. Every connection gets its whole response, the kernel never
sees a segment (so no RST of its races the responder), and SIGTERM ends the responder with its
counters and no process left."""
from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import pytest

from lab.lab import Lab
from lab.pytest_plugin import MakeLab
from toelab.benches import bare_responder
from toelab.benches.http_setup import _kernel_segments
from toelab.benches.loadgen import REQUEST

pytestmark = pytest.mark.root

SECONDS = 0.5
WANTED = 100  # connections per mode at least, sequential


def _one_response(lab: Lab) -> tuple[bytes, int]:
    """One connection from h1's kernel: the whole response, and the MSS the kernel took from the SYN-ACK."""
    with lab.node("h1").inside():
        sock = socket.create_connection((lab.address("t1"), 80), timeout=5)
    with sock:
        mss = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
        sock.sendall(REQUEST)
        chunks = []
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks), mss


def _clients(lab: Lab, mode: str) -> dict[str, float]:
    done = lab.node("h1").run([sys.executable, "-m", "toelab.benches.loadgen", mode, lab.address("t1"), "80",
                               str(SECONDS)], timeout=60, check=True)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["failures"] == 0 and result["bad_responses"] == 0, result
    assert result["connections"] >= WANTED, f"too few connections to judge: {result}"
    return result


@pytest.mark.parametrize("kind", ["python", "c"])
def test_every_loadgen_connection_is_answered_whole_and_sigterm_leaves_no_process(
        make_lab: MakeLab, tmp_path: Path, kind: str) -> None:
    program = None
    if kind == "c":
        program = bare_responder.build_c_responder(tmp_path)
        if program is None:
            pytest.skip("no C compiler")
    lab = make_lab("toe_pair", t1_kind="host")
    proc = bare_responder.start_in_lab(lab, "t1", program=program)
    response, mss = _one_response(lab)
    assert response == bare_responder.loadgen_response() and mss == 1460  # the SYN-ACK's MSS, no timestamps
    aborted = _clients(lab, "http")  # the client's RST ends each connection
    closed = _clients(lab, "http-fin")  # the client's FIN, which the responder ACKs
    counters = bare_responder.stop(proc)
    connections = int(aborted["connections"] + closed["connections"]) + 1
    assert counters.syn_acks == counters.responses == connections, counters
    assert counters.fin_acks == closed["connections"] + 1, counters  # the test's own connection closes with a FIN
    assert counters.malformed == counters.unanswerable == 0 and counters.arp_replies >= 1, counters
    assert _kernel_segments(lab, "t1") == (0, 0)  # t1's kernel TCP neither received nor sent anything
    assert proc.returncode == 0
    with pytest.raises(ProcessLookupError):
        os.kill(proc.pid, 0)
