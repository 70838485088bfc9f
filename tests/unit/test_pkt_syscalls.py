"""System calls as agent requests, answers judged against the script, file descriptors mapped."""
from __future__ import annotations

import pytest

from scenarios.pkt.model import Syscall
from scenarios.pkt.parse import parse
from scenarios.pkt.syscalls import CallError, Endpoints, FdMap, judge, request_for

WHERE = Endpoints(bind_port=8080, remote_ip="10.0.0.1", remote_port=40000)


def call(text: str) -> Syscall:
    (event,) = parse(f"+0 {text}\n").events
    assert isinstance(event.action, Syscall), event.action
    return event.action


def test_the_scripts_fd_is_mapped_onto_the_agents_handle() -> None:
    fds = FdMap()
    assert judge(call("socket(..., SOCK_STREAM, IPPROTO_TCP) = 3"), {"ret": 17}, fds) is None
    assert request_for(call("listen(3, 5) = 0"), fds, WHERE) == {"op": "listen", "h": 17, "backlog": 5}
    with pytest.raises(CallError, match="never opened"):
        request_for(call("close(4) = 0"), fds, WHERE)


def test_dots_are_the_runs_ports_and_addresses() -> None:
    fds = FdMap({3: 3})
    assert request_for(call("bind(3, ..., ...) = 0"), fds, WHERE)["port"] == 8080
    assert request_for(call("connect(3, ..., ...) = 0"), fds, WHERE) | {} == {"op": "connect", "h": 3,
                                                                              "ip": "10.0.0.1", "port": 40000}
    bcast = call('connect(3, {sin_family=AF_INET, sin_addr=inet_addr("255.255.255.255")}, 16) = -1 ENETUNREACH')
    assert request_for(bcast, fds, WHERE)["ip"] == "255.255.255.255"


def test_reads_writes_options_and_poll() -> None:
    fds = FdMap({4: 9})
    assert request_for(call("recv(4, ..., 100, MSG_OOB) = 1"), fds, WHERE) == {"op": "read", "h": 9, "n": 100,
                                                                                "flags": ["MSG_OOB"]}
    assert request_for(call("setsockopt(4, SOL_SOCKET, SO_LINGER, {onoff=1, linger=0}, 8) = 0"), fds, WHERE)[
        "value"] == {"onoff": 1, "linger": 0}
    assert request_for(call("poll([{fd=4, events=POLLIN|POLLOUT}], 1, 50) = 1"), fds, WHERE) == {
        "op": "poll", "fds": [{"h": 9, "events": ["POLLIN", "POLLOUT"]}], "timeout_ms": 50}


@pytest.mark.parametrize("text, answer, problem", [
    ("write(4, ..., 10) = 10", {"ret": 5}, "expected result 10 but got 5"),
    ("read(4, ..., 10) = -1 ECONNRESET", {"ret": -1, "errno": "EPIPE"}, "expected errno ECONNRESET but got EPIPE"),
    ("connect(4, ..., ...) = -1 EINPROGRESS", {"ret": -1, "errno": "EALREADY"}, "expected errno EINPROGRESS"),
    ("getsockopt(4, SOL_SOCKET, SO_ERROR, [ECONNREFUSED], [4]) = 0", {"ret": 0, "value": 0}, "expected ECONNREFUSED"),
    ("getsockopt(4, IPPROTO_TCP, TCP_MAXSEG, [1000], [4]) = 0", {"ret": 0, "value": 1448}, "expected 1000"),
    ("poll([{fd=4, events=POLLIN, revents=POLLIN}], 1, 0) = 1", {"ret": 1, "revents": [["POLLOUT"]]},
     "expected revents POLLIN"),
])
def test_a_wrong_answer_says_what_was_expected(text: str, answer: dict, problem: str) -> None:
    fds = FdMap({4: 4})
    found = judge(call(text), answer, fds)
    assert found is not None and problem in found, found


def test_right_answers_pass_including_errno_names_as_values() -> None:
    fds = FdMap({4: 4})
    assert judge(call("read(4, ..., 10) = -1 ECONNRESET (Connection reset by peer)"),
                 {"ret": -1, "errno": "ECONNRESET"}, fds) is None
    assert judge(call("getsockopt(4, SOL_SOCKET, SO_ERROR, [ECONNREFUSED], [4]) = 0"), {"ret": 0, "value": 111},
                 fds) is None
