"""The scenario framework without root: registry, parameters, checks, requirements, report, plots, wire."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import Field, ValidationError
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

import scenarios
from scenarios import requirements
from scenarios.framework import Check, Evidence, ScenarioError, ScenarioParams, ScenarioResult, Verdict, scenario
from scenarios.handshake import options_fault
from scenarios.plots import time_sequence
from scenarios.report import results_data, write_report
from scenarios.runner import collect, skip_all
from scenarios.targets import TargetUnavailable, UnknownCounter, delta, reading
from scenarios.wire import ChecksumState, ones_sum, parse_tcp, tcp_frames


class DemoParams(ScenarioParams):
    rate: int = Field(10, ge=1, description="segments per second")
    mode: str = Field("fast", pattern="^(fast|slow)$", description="how")


@scenario("unit_demo", purpose="A scenario for unit tests.", topology="two_hosts", params=DemoParams,
          covers=("MUST-3", "RFC5961 3.2"))
def _demo(ctx):
    return []


def check(verdict: str = "pass", target: str = "kernel", requirement: str = "MUST-3", id: str = "c1") -> Check:
    return Check(id=id, requirement=requirement, target=target, verdict=Verdict(verdict), sentence="seen.")


# --- registry and parameters ---------------------------------------------------------------
def test_registry_finds_builtin_scenarios_and_rejects_unknown() -> None:
    names = [s.name for s in scenarios.all()]
    assert {"checksum", "handshake", "unit_demo"} <= set(names)
    assert names == sorted(names)
    assert scenarios.get("checksum").topology == "two_hosts"
    with pytest.raises(ScenarioError, match="no scenario 'nope'"):
        scenarios.get("nope")


def test_registering_a_name_twice_with_another_function_fails() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        scenario("unit_demo", purpose="x", topology="two_hosts", covers=())(lambda ctx: [])


def test_scenario_declaration_validates_requirements_and_targets() -> None:
    with pytest.raises(ValueError, match="MUST-999"):
        scenario("bad_req", purpose="x", topology="two_hosts", covers=("MUST-999",))
    with pytest.raises(ValueError, match="unknown target"):
        scenario("bad_target", purpose="x", topology="two_hosts", covers=(), targets=("bsd",))


def test_params_parse_with_defaults_and_types() -> None:
    s = scenarios.get("unit_demo")
    assert s.parse_params([]).rate == 10
    params = s.parse_params(["rate=25", "mode=slow"])
    assert (params.rate, params.mode) == (25, "slow")
    assert [p.name for p in s.parameters()] == ["rate", "mode"]
    assert s.parameters()[0].default == 10 and s.parameters()[0].type == "int"


@pytest.mark.parametrize("assignments, message", [
    (["rate=abc"], "parameter 'rate'"),
    (["rate=0"], "greater than or equal to 1"),
    (["mode=medium"], "parameter 'mode'"),
    (["colour=red"], "has no parameter 'colour' (it has: rate, mode)"),
    (["rate"], "not of the form KEY=VALUE"),
])
def test_bad_params_are_one_sentence_with_exit_status_2(assignments: list[str], message: str) -> None:
    with pytest.raises(ScenarioError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        scenarios.get("unit_demo").parse_params(assignments)
    assert info.value.exit_code == 2
    assert "\n" not in str(info.value)


# --- checks and requirements -----------------------------------------------------------------
def test_requirement_ids_come_from_the_rfc9293_table() -> None:
    assert requirements.validate("MUST-18") == "MUST-18"
    assert requirements.validate("SHLD-19") == "SHLD-19"
    assert requirements.validate("RFC5961 3.2") == "RFC5961 3.2"
    assert requirements.validate("RFC2018 4") == "RFC2018 4"
    for bad in ("MUST-999", "MUST18", "must-18", "RFC 5961", "rfc5961 3.2", ""):
        with pytest.raises(ValueError):
            requirements.validate(bad)
    assert "checksum" in requirements.describe("MUST-3").lower()
    assert len(requirements.rfc9293()) > 100


def test_check_model_rejects_bad_fields() -> None:
    assert check().verdict is Verdict.PASS
    with pytest.raises(ValidationError, match="MUST-0"):
        check(requirement="MUST-0")
    with pytest.raises(ValidationError, match="target"):
        check(target="bsd")
    with pytest.raises(ValidationError, match="check id"):
        check(id="Bad Id")
    with pytest.raises(ValidationError, match="one non-empty line"):
        Check(id="x", requirement="MUST-3", target="kernel", verdict=Verdict.PASS, sentence="two\nlines")
    assert check(id="bad-csum[rx_csum=on]").id.endswith("]")


def test_result_fails_on_a_failing_check_or_an_error_but_not_on_skips() -> None:
    base = dict(scenario="s", purpose="p", target="kernel", seed=1, params={})
    assert not ScenarioResult(**base, checks=[check(), check("skip")]).failed
    assert ScenarioResult(**base, checks=[check(), check("fail")]).failed
    assert ScenarioResult(**base, error="RuntimeError: boom").failed


def test_an_unavailable_target_skips_every_covered_requirement() -> None:
    checks = skip_all(scenarios.get("unit_demo"), "toe", "not yet")
    assert [(c.requirement, c.verdict, c.sentence) for c in checks] == [
        ("MUST-3", Verdict.SKIP, "not yet"), ("RFC5961 3.2", Verdict.SKIP, "not yet")]


# --- report ----------------------------------------------------------------------------------
def synthetic_results(tmp_path: Path) -> list[ScenarioResult]:
    plot = tmp_path / "s" / "kernel" / "plot.png"
    plot.parent.mkdir(parents=True)
    plot.write_bytes(b"\x89PNG fake")
    base = dict(scenario="s", purpose="p", seed=1, params={"rate": 1})
    kernel = ScenarioResult(**base, target="kernel", checks=[
        check("pass"), check("pass", requirement="MUST-2", id="c2"),
        Check(id="c3", requirement="RFC5961 3.2", target="kernel", verdict=Verdict.PASS, sentence="ok <b>",
              evidence=Evidence(pcaps=[str(tmp_path / "s/kernel/x.pcap")], plots=[str(plot)], counters={"n": 3}))])
    toe = ScenarioResult(**base, target="toe", checks=[
        check("fail", target="toe"), check("pass", target="toe", requirement="MUST-2", id="c2"),
        check("skip", target="toe", requirement="RFC5961 3.2", id="c3")])
    return [kernel, toe]


def test_matrix_marks_differences_between_targets(tmp_path: Path) -> None:
    data = results_data(synthetic_results(tmp_path), tmp_path)
    rows = {row["requirement"]: row for row in data["matrix"]}
    assert list(rows) == ["MUST-2", "MUST-3", "RFC5961 3.2"]
    assert rows["MUST-3"]["differs"] and rows["MUST-3"]["cells"]["toe"]["verdict"] == "fail"
    assert not rows["MUST-2"]["differs"]
    assert not rows["RFC5961 3.2"]["differs"], "a skip is not a difference"
    assert data["summary"]["differences"] == ["MUST-3"]
    assert data["summary"]["by_target"]["toe"] == {"pass": 1, "fail": 1, "skip": 1}
    assert data["results"][0]["checks"][2]["evidence"]["pcaps"] == ["s/kernel/x.pcap"]


def test_report_writes_html_and_json(tmp_path: Path) -> None:
    index = write_report(synthetic_results(tmp_path), tmp_path)
    html = index.read_text()
    assert 'class="diff"' in html and "MUST-3" in html
    assert "ok &lt;b&gt;" in html, "sentences are escaped"
    assert 'href="s/kernel/x.pcap"' in html
    assert "data:image/png;base64," in html
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["summary"]["failed"] is True and data["targets"] == ["kernel", "toe"]


# --- captures and plots ------------------------------------------------------------------------
def transfer_frames() -> list[Ether]:
    """A sender at 10.0.0.2:19 sends 6 segments (the 3rd retransmitted); the receiver ACKs with SACK."""
    frames = []
    t = 0.0
    isn = 0xFFFFF000  # wraps inside the transfer

    def add(pkt: Ether) -> None:
        nonlocal t
        pkt.time = t
        t += 0.001
        frames.append(pkt)

    for i in (0, 1, 3, 4, 2):
        add(Ether() / IP(src="10.0.0.2", dst="10.0.0.1") / TCP(sport=19, dport=40000, seq=(isn + 1000 * i) % 2**32,
                                                                flags="PA") / (b"x" * 1000))
        if i == 3:
            add(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(
                sport=40000, dport=19, flags="A", ack=(isn + 2000) % 2**32,
                options=[("SAck", ((isn + 3000) % 2**32, (isn + 4000) % 2**32))]))
    add(Ether() / IP(src="10.0.0.2", dst="10.0.0.1") / TCP(sport=19, dport=40000, seq=(isn + 2000) % 2**32,
                                                            flags="PA") / (b"x" * 1000))
    add(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=40000, dport=19, flags="A", ack=(isn + 5000) % 2**32))
    return frames


def test_time_sequence_plot_from_a_pcap(tmp_path: Path) -> None:
    pcap = tmp_path / "t.pcap"
    wrpcap(str(pcap), transfer_frames())
    figures = time_sequence(pcap, tmp_path / "t.png")
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"
    assert figures["segments"] == 6 and figures["bytes"] == 6000
    assert figures["retransmissions"] == 2, "the late segment 2 and its repeat do not advance the top"
    assert figures["acks"] == 2 and figures["acks_with_sack"] == 1


def test_wire_parses_sack_and_classifies_checksums(tmp_path: Path) -> None:
    pcap = tmp_path / "t.pcap"
    frames = transfer_frames()
    good = Ether(bytes(frames[0]))
    bad = good.copy()
    bad[TCP].chksum ^= 0x0101
    wrpcap(str(pcap), frames + [bad])
    parsed = tcp_frames(pcap)
    assert parsed[3].sack == (((0xFFFFF000 + 3000) % 2**32, (0xFFFFF000 + 4000) % 2**32),)
    assert parsed[0].checksum is ChecksumState.CORRECT
    assert parsed[-1].checksum is ChecksumState.WRONG
    # A partial checksum holds the pseudo-header sum (what a sender leaves for checksum offload).
    raw = bytearray(bytes(good))
    seg_len = len(raw) - 34
    seed = ones_sum(bytes(raw[26:34]) + bytes([0, 6]) + seg_len.to_bytes(2, "big"))
    raw[50:52] = seed.to_bytes(2, "big")
    assert parse_tcp(0.0, bytes(raw)).checksum is ChecksumState.PARTIAL


def test_options_fault_finds_missing_lengths_and_dirty_padding() -> None:
    assert options_fault(bytes([2, 4, 5, 0xB4, 1, 1, 0, 0])) == ""
    assert options_fault(bytes([2, 4, 5, 0xB4, 0, 7, 0, 0])).startswith("padding")
    assert options_fault(bytes([99, 0, 1, 1])).startswith("length")
    assert options_fault(bytes([2, 40, 5, 0xB4])).startswith("length")


# --- collecting a run's checks -----------------------------------------------------------------
def collected(produce) -> ScenarioResult:
    result = ScenarioResult(scenario="unit_demo", purpose="p", target="toe", seed=1, params={})
    collect(result, scenarios.get("unit_demo"), produce)
    return result


def test_failures_made_before_the_target_gave_out_stay_failures() -> None:
    def produce():
        yield check("fail", target="toe", requirement="MUST-3")
        raise TargetUnavailable("the engine died")
    result = collected(produce)
    assert result.failed and result.skipped == "the engine died"
    assert [(c.requirement, c.verdict) for c in result.checks] == [
        ("MUST-3", Verdict.FAIL), ("RFC5961 3.2", Verdict.SKIP)], "only the unjudged requirement is skipped"


def test_a_target_unavailable_at_once_skips_every_requirement() -> None:
    def produce():
        raise TargetUnavailable("no such thing here")
    result = collected(produce)
    assert not result.failed and all(c.verdict is Verdict.SKIP for c in result.checks) and len(result.checks) == 2


def test_a_scenario_that_makes_no_checks_is_an_error() -> None:
    result = collected(lambda: iter(()))
    assert result.failed and result.error.startswith("NoChecks: scenario unit_demo made no checks")


def test_a_scenario_that_yields_something_else_is_an_error() -> None:
    result = collected(lambda: iter(["not a check"]))
    assert result.failed and "yielded str" in result.error


def test_check_can_be_credited_to_the_middlebox_and_marked_integrity() -> None:
    c = Check(id="x", requirement="MUST-3", target="middlebox", verdict=Verdict.PASS, sentence="s.", integrity=True)
    assert c.target == "middlebox" and c.integrity
    with pytest.raises(ValidationError, match="target"):
        Check(id="x", requirement="MUST-3", target="router", verdict=Verdict.PASS, sentence="s.")


def test_matrix_has_a_column_for_checks_credited_to_the_middlebox(tmp_path: Path) -> None:
    results = synthetic_results(tmp_path)
    results[1].checks.append(Check(id="lro", requirement="RFC1191 4", target="middlebox", verdict=Verdict.FAIL,
                                   sentence="merged."))
    results[0].checks.append(Check(id="lro", requirement="RFC1191 4", target="kernel", verdict=Verdict.PASS,
                                   sentence="fine."))
    data = results_data(results, tmp_path)
    assert data["targets"] == ["kernel", "middlebox", "toe"]
    row = next(r for r in data["matrix"] if r["requirement"] == "RFC1191 4")
    assert row["cells"] == {"middlebox": {"verdict": "fail", "count": 1}, "kernel": {"verdict": "pass", "count": 1}}
    assert not row["differs"], "a middlebox's verdict is not a difference between the targets"
    assert data["summary"]["by_target"]["middlebox"] == {"pass": 0, "fail": 1, "skip": 0}
    assert data["summary"]["by_target"]["toe"] == {"pass": 1, "fail": 1, "skip": 1}


# --- counters ------------------------------------------------------------------------------------
def test_delta_of_a_counter_the_target_does_not_have_is_an_error() -> None:
    assert delta({"a": 1}, {"a": 4, "b": 2}, "a", "b") == {"a": 3, "b": 2}
    with pytest.raises(UnknownCounter, match="no counter 'retransmitz'"):
        delta({"a": 1}, {"a": 4}, "retransmitz")
    assert reading({"a": 0}, "a") == 0
    with pytest.raises(UnknownCounter, match="no counter 'b'"):
        reading({"a": 0}, "b")


# --- the one client ---------------------------------------------------------------------------------
def _serve_once(handler) -> tuple[str, int]:
    import socket
    import threading
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn, listener:
            handler(conn)
    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()


def _echo(conn) -> None:
    while chunk := conn.recv(1 << 16):
        conn.sendall(chunk)


def test_echo_client_hashes_what_came_back() -> None:
    from scenarios import clients
    out = clients.echo(*_serve_once(_echo), 300_000, 7, 5.0)
    assert out["bytes"] == 300_000 and out["got_sha256"] == out["sent_sha256"]


def test_echo_client_sees_corruption_and_shortfall() -> None:
    from scenarios import clients

    def corrupting(conn) -> None:
        data = b""
        while len(data) < 1000:
            data += conn.recv(1 << 16)
        conn.sendall(bytes([data[0] ^ 1]) + data[1:500])
    out = clients.echo(*_serve_once(corrupting), 1000, 7, 2.0)
    assert out["bytes"] == 500 and out["got_sha256"] != out["sent_sha256"]


def test_chargen_client_counts_bytes_until_close() -> None:
    from scenarios import clients
    out = clients.chargen(*_serve_once(lambda conn: conn.sendall(b"x" * 70_000)), 100_000, 2.0)
    assert out["bytes"] == 70_000


def test_wire_reads_classic_pcap_only_and_says_what_else_it_got(tmp_path: Path) -> None:
    from scapy.utils import wrpcapng

    from scenarios.wire import read_pcap
    frames = transfer_frames()
    wrpcap(str(tmp_path / "t.pcap"), frames)
    stamps = [ts for ts, _ in read_pcap(tmp_path / "t.pcap")]
    assert len(stamps) == len(frames) and abs(stamps[1] - stamps[0] - 0.001) < 1e-6
    wrpcapng(str(tmp_path / "t.pcapng"), frames)
    with pytest.raises(ValueError, match="pcapng capture, not classic pcap"):
        list(read_pcap(tmp_path / "t.pcapng"))
    (tmp_path / "x.pcap").write_bytes(b"not a capture at all")
    with pytest.raises(ValueError, match="is not a classic pcap file"):
        list(read_pcap(tmp_path / "x.pcap"))


def test_wait_for_capture_returns_once_the_file_holds_what_is_asked(tmp_path: Path) -> None:
    from scenarios.transfer import wait_for_capture
    pcap = tmp_path / "t.pcap"
    wrpcap(str(pcap), transfer_frames())
    assert wait_for_capture(pcap, lambda frames: len(frames) >= 8, 1.0)
    assert not wait_for_capture(pcap, lambda frames: len(frames) >= 9, 0.1), "the time limit ends a wait in vain"


def test_context_checks_carry_their_subject_and_integrity(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from scenarios.framework import RunContext
    target = SimpleNamespace(name="toe")
    ctx = RunContext(scenarios.get("unit_demo"), lab=None, target=target, params=None,  # type: ignore[arg-type]
                     seed=1, outdir=tmp_path / "out")
    mine = ctx.check("a", "MUST-3", True, "seen.")
    theirs = ctx.check("b", "RFC1191 4", False, "merged.", subject="middlebox")
    exact = ctx.check("c", "MUST-3", True, "same bytes.", integrity=True)
    assert (mine.target, theirs.target, exact.target) == ("toe", "middlebox", "toe")
    assert (mine.integrity, exact.integrity) == (False, True)
    assert theirs.verdict is Verdict.FAIL


def test_wire_takes_lengths_from_the_ip_header_of_a_cut_capture() -> None:
    frame = bytes(transfer_frames()[0])
    whole = parse_tcp(0.0, frame)
    cut = parse_tcp(0.0, frame[:54 + 16])  # headers and 16 bytes of the 1000-byte payload
    assert whole is not None and cut is not None
    assert (whole.payload_len, cut.payload_len) == (1000, 1000)
    assert cut.checksum is ChecksumState.TRUNCATED and whole.checksum is ChecksumState.CORRECT
