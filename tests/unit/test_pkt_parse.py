"""The packetdrill parser: timing, packets, options, system calls, and lines it cannot run."""
from __future__ import annotations

import pytest

from scenarios.pkt.model import Icmp, Packet, Shell, Syscall, TcpOption, Unsupported, When
from scenarios.pkt.parse import ScriptError, parse
from scenarios.pkt.session import unsupported_lines

SCRIPT = """// requirement: MUST-24
--tolerance_usecs=10000
`sysctl -q net.ipv4.tcp_timestamps=0`
0   socket(..., SOCK_STREAM, IPPROTO_TCP) = 3
+0  setsockopt(3, SOL_SOCKET, SO_LINGER, {onoff=1, linger=0}, 8) = 0
+.1 < S 0:0(0) win 32792 <mss 1000,sackOK,nop,nop,nop,wscale 7>
+0  > S. 0:0(0) ack 1 <...>
0.1~0.3 > . 1:1(0) ack 1 win 100~200 <nop,nop,TS val 1 ecr 2,sack 1:2 3:4>
+0...0.2 read(4, ..., 1000) = 1000
+0 connect(3, ..., ...) = -1 EINPROGRESS (Operation now in progress)
+0 poll([{fd=4, events=POLLIN, revents=POLLIN}], 1, 0) = 1
/* a comment
   over lines */
+0 fcntl(3, F_SETFL, O_RDWR|O_NONBLOCK) = 0
+0 < icmp unreachable frag_needed mtu 1200 [1:1461(1460)]
* > R[.] 1:1(0)
+0 setsockopt(3, SOL_SOCKET,
               SO_KEEPALIVE, [1], 4) = 0
"""


def events():
    return parse(SCRIPT, "t.pkt").events


def test_options_requirements_and_line_numbers() -> None:
    script = parse(SCRIPT, "t.pkt")
    assert script.options == {"tolerance_usecs": "10000"}
    assert script.requirements == ["MUST-24"]
    assert [e.line for e in script.events] == [3, 4, 5, 6, 7, 8, 9, 10, 11, 14, 15, 16, 17]
    assert script.unsupported() == []


def test_times_absolute_relative_any_range_and_blocking() -> None:
    when = [e.when for e in events()]
    assert when[1] == When(0.0)
    assert when[3] == When(0.1, relative=True)
    assert when[5] == When(0.1, end=0.3)
    assert when[6] == When(0.0, relative=True, blocking_end=0.2)
    assert when[11].any_time


def test_packets_flags_sequence_window_and_options() -> None:
    syn, synack, ack = (e.action for e in events()[3:6])
    assert syn == Packet("<", "S", seq=0, end=0, length=0, win=32792, options=(
        TcpOption("mss", (1000,)), TcpOption("sackOK"), TcpOption("nop"), TcpOption("nop"), TcpOption("nop"),
        TcpOption("wscale", (7,))))
    assert synack.options_wildcard and synack.ack == 1
    assert (ack.win, ack.win_max) == (100, 200)
    assert ack.options[2] == TcpOption("TS", (1, 2)) and ack.options[3] == TcpOption("sack", ((1, 2), (3, 4)))
    rst = events()[11].action
    assert (rst.flags, rst.optional_flags) == ("R", ".")


def test_system_calls_with_structs_lists_errno_and_continuation_lines() -> None:
    linger = events()[2].action
    assert linger == Syscall("setsockopt", (3, "SOL_SOCKET", "SO_LINGER", {"onoff": 1, "linger": 0}, 8), 0)
    connect = events()[7].action
    assert (connect.ret, connect.errno) == (-1, "EINPROGRESS")
    poll = events()[8].action
    assert poll.args[0] == [{"fd": 4, "events": "POLLIN", "revents": "POLLIN"}]
    assert events()[9].action.args[2] == "O_RDWR|O_NONBLOCK"
    assert events()[12].action == Syscall("setsockopt", (3, "SOL_SOCKET", "SO_KEEPALIVE", [1], 4), 0)


def test_shell_and_icmp_lines() -> None:
    assert events()[0].action == Shell("sysctl -q net.ipv4.tcp_timestamps=0")
    assert events()[10].action == Icmp("<", "unreachable", "frag_needed", 1200, 1, 1461)


@pytest.mark.parametrize("line, reason", [
    ("+0 > udp (1)", "udp packets"),
    ("+0 < [ect0] . 1:1(0) ack 1 win 10", "[ect0] packets"),
    ("+0 > S 0:0(0) <mss 1460,FO abcd>", "TCP option 'FO abcd'"),
    ("+0 ioctl(4, SIOCINQ, [0]) = 0", "ioctl() is not supported"),
    ("+0 sendto(3, ..., 0, MSG_FASTOPEN, ..., ...) = 0", "flag MSG_FASTOPEN"),
    ("+0 setsockopt(3, SOL_TCP, TCP_FASTOPEN, [1], 4) = 0", "TCP_FASTOPEN is not supported"),
    ("+0 %{ assert tcpi_rto == 1000 }%", "%{ python }%"),
    ("+0 sendmsg(4, {msg_name(...)=...}, 0) = 10", "sendmsg"),
    ("what is this", "must start with a time"),
])
def test_what_cannot_run_is_reported_with_its_line(line: str, reason: str) -> None:
    script = parse(f"0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n{line}\n")
    found = unsupported_lines(script)
    assert len(found) == 1 and found[0][0] == 2 and reason in found[0][1], found


def test_packets_name_their_connection_and_the_script_counts_them() -> None:
    script = parse("+0 < S 0:0(0) win 10 conn 3 <mss 1460>\n+0 > S. 0:0(0) ack 1\n")
    assert [e.action.conn for e in script.events] == [3, 1]
    assert script.connections() == 3
    (event,) = parse("+0 < S 0:0(0) win 10 conn 9\n").events
    assert isinstance(event.action, Unsupported) and "connections 1 to 4" in event.action.reason


def test_script_options_the_lab_cannot_honour_are_reported() -> None:
    assert unsupported_lines(parse("--ip_version=ipv6\n--mss=1000\n--local_ip=192.168.0.1\n")) == [
        (1, "--ip_version=ipv6: the wire side speaks IPv4 only"),
        (2, "--mss=1000: the lab's link gives an MSS of 1460, and a run does not change it")]
    assert unsupported_lines(parse("--mss=1460\n--ip_version=ipv4\n--remote_ip=192.0.2.1\n")) == []
    assert parse("--frobnicate=1\n").problems == [(1, "script option --frobnicate is not supported")]


def test_an_unclosed_bracket_is_an_error_naming_file_and_line() -> None:
    with pytest.raises(ScriptError, match=r"x.pkt:2: unbalanced"):
        parse("0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n+0 write(3, ..., 10 = 10\n", "x.pkt")


def test_a_bad_seq_length_is_unsupported_not_a_crash() -> None:
    (event,) = parse("+0 < P. 1:11(5) ack 1 win 10\n").events
    assert isinstance(event.action, Unsupported) and "length" in event.action.reason


def test_every_script_of_toelab_parses_runs_nothing_unsupported_and_names_a_requirement() -> None:
    from scenarios.pkt.library import load, own_scripts
    from scenarios.requirements import validate
    paths = own_scripts()
    assert len(paths) >= 150
    for path, script in zip(paths, load(paths)):
        assert unsupported_lines(script) == [], path
        assert script.requirements, f"{path} names no requirement"
        for requirement in script.requirements:
            validate(requirement)


def test_the_committed_state_matrix_is_what_its_generator_writes() -> None:
    import importlib.util
    import sys

    from scenarios.pkt.library import SCRIPTS
    spec = importlib.util.spec_from_file_location("generate_states", SCRIPTS / "generate_states.py")
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = generator  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(generator)
    finally:
        del sys.modules[spec.name]
    written = 0
    for state in generator.STATES:
        for kind in ("rst", "syn", "fin", "ack", "data"):
            for position in generator.POSITIONS:
                path = SCRIPTS / "states" / state.name / f"{kind}-{position}.pkt"
                assert path.read_text() == generator.script(state, kind, position), path
                written += 1
    assert written == 7 * 5 * 4
