"""The bare responder (toelab.benches.bare_responder), frame by frame, without a wire: what it sends
for each frame of the loadgen's connection, that its answer is byte for byte the engine's, that its
partial checksums come out right once completed, and that no frame, however broken, makes it raise;
and that its C twin builds, is given the same answer and refuses bad arguments."""
from __future__ import annotations

import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from toe_engine.checksum import internet_checksum
from toe_engine.codec import build_tcp_frame, parse_frame
from toe_engine.codec.arp import ARP_REPLY, ARP_REQUEST, ArpPacket, build_arp
from toe_engine.codec.ethernet import ETHERTYPE_ARP, build_ethernet
from toe_engine.endpoint import EndpointConfig, EndpointCore
from toe_engine.io.vnet import PLAIN_VNET_BYTES, VnetHeader
from toe_engine.resources import ResourceConfig
from toe_engine.segment import ACK, FIN, PSH, RST, SYN, Segment, TcpOptions
from toe_engine.testing import IP_A, IP_B, MAC_A, MAC_B
from toelab.benches.bare_responder import (BROADCAST, BareResponder, Reply, ResponderCounters, build_c_responder,
                                           loadgen_response)
from toelab.benches.http_setup import BARE_C_MEASUREMENT, BARE_PYTHON_MEASUREMENT, SideTotals, http_rows
from toelab.benches.loadgen import REQUEST, complete_response

PORT, SPORT, ISN = 80, 40000, 5000
LINUX_SYN = TcpOptions(mss=1460, sack_permitted=True, wscale=9, timestamp=(777, 0))


def client_frame(seq: int, ack: int, flags: int, payload: bytes = b"", opts: TcpOptions | None = None,
                 dst_ip: bytes = IP_B, dport: int = PORT, dst_mac: bytes = MAC_B) -> bytearray:
    return build_tcp_frame(MAC_A, dst_mac, IP_A, dst_ip,
                           Segment(SPORT, dport, seq, ack, flags, 83, payload, opts or TcpOptions(timestamp=(777, 0))))


def completed(reply: Reply) -> Segment:
    """The reply's TCP segment once its checksum is completed as the kernel does for NEEDS_CSUM;
    asserts the result passes checksum verification."""
    header, frame = reply
    vnet = VnetHeader.unpack(header)
    assert vnet.needs_csum and not vnet.is_gso
    data = bytearray(frame)
    start = vnet.csum_start
    struct.pack_into("!H", data, start + vnet.csum_offset, internet_checksum(memoryview(data)[start:]))
    parsed = parse_frame(bytes(data), verify_csum=True)
    assert parsed.drop_reason is None and parsed.eth_src == MAC_B and parsed.eth_dst == MAC_A
    assert parsed.ip_src == IP_B and parsed.ip_dst == IP_A and parsed.tcp is not None
    assert vnet.hdr_len == parsed.payload_offset
    return parsed.tcp


def engine_response(request: bytes) -> bytes:
    """What the engine endpoint's HTTP service sends for `request` on a fresh connection."""
    core = EndpointCore(EndpointConfig(MAC_B, (IP_B,), services={PORT: "http"},
                                       resources=ResourceConfig(capacity=4), secret=b"bare"))
    core.neighbors.learn(IP_A, MAC_A)

    def send(frame: bytearray) -> list[Segment]:
        core.from_wire(bytes(frame), 1.0)
        return [seg for seg in (parse_frame(bytes(tx.frame), verify_csum=False).tcp for tx in core.poll_wire())
                if seg is not None]

    (synack,) = send(client_frame(ISN, 0, SYN, opts=LINUX_SYN))
    send(client_frame(ISN + 1, synack.seq + 1, ACK))
    return b"".join(bytes(seg.payload) for seg in send(client_frame(ISN + 1, synack.seq + 1, ACK | PSH, request)))


def test_a_syn_is_answered_with_a_syn_ack_carrying_only_mss_and_the_same_isn_each_time() -> None:
    responder = BareResponder(MAC_B, IP_B)
    reply = responder.answer(client_frame(ISN, 0, SYN, opts=LINUX_SYN))
    assert reply is not None
    synack = completed(reply)
    assert synack.flags == SYN | ACK and synack.ack == ISN + 1 and (synack.src_port, synack.dst_port) == (PORT, SPORT)
    opts = synack.options
    assert (opts.mss, opts.wscale, opts.sack_permitted, opts.timestamp) == (1460, None, False, None)
    again = responder.answer(client_frame(ISN, 0, SYN, opts=LINUX_SYN))  # a retransmitted SYN
    assert again is not None and completed(again).seq == synack.seq
    fresh = BareResponder(MAC_B, IP_B).answer(client_frame(ISN + 7, 0, SYN, opts=LINUX_SYN))
    assert fresh is not None and completed(fresh).seq == synack.seq  # of the 4-tuple alone: no state, no clock
    assert responder.counters == ResponderCounters(syn_acks=2)


def test_the_get_is_answered_with_the_engines_response_bytes_its_ack_and_a_fin_in_one_frame() -> None:
    responder = BareResponder(MAC_B, IP_B)
    our_seq = 123456789
    assert responder.answer(client_frame(ISN + 1, our_seq + 1, ACK)) is None  # the handshake's ACK
    reply = responder.answer(client_frame(ISN + 1, our_seq + 1, ACK | PSH, REQUEST))
    assert reply is not None
    answer = completed(reply)
    assert answer.flags == ACK | PSH | FIN
    assert answer.seq == our_seq + 1 and answer.ack == ISN + 1 + len(REQUEST)
    assert bytes(answer.payload) == engine_response(REQUEST) and complete_response(bytes(answer.payload))
    assert responder.counters == ResponderCounters(responses=1, ignored=1)


def test_resets_and_acks_draw_nothing_and_a_fin_draws_its_ack() -> None:
    responder = BareResponder(MAC_B, IP_B)
    assert responder.answer(client_frame(ISN + 51, 999, RST | ACK)) is None
    assert responder.answer(client_frame(ISN + 51, 999, ACK)) is None
    assert responder.answer(client_frame(ISN, 999, SYN | ACK)) is None
    reply = responder.answer(client_frame(ISN + 51, 999, FIN | ACK))
    assert reply is not None
    ack = completed(reply)
    assert ack.flags == ACK and ack.seq == 999 and ack.ack == ISN + 52 and not ack.payload
    assert responder.counters == ResponderCounters(fin_acks=1, ignored=3)


def test_frames_for_another_address_port_or_mac_are_ignored() -> None:
    responder = BareResponder(MAC_B, IP_B)
    for frame in (client_frame(ISN, 0, SYN, dst_ip=IP_A), client_frame(ISN, 0, SYN, dport=81),
                  client_frame(ISN, 0, SYN, dst_mac=BROADCAST)):
        assert responder.answer(frame) is None
    assert responder.counters == ResponderCounters(ignored=3)


def test_an_arp_request_for_its_address_is_answered_and_others_are_not() -> None:
    responder = BareResponder(MAC_B, IP_B)

    def request(target: bytes) -> bytes:
        return build_ethernet(BROADCAST, MAC_A, ETHERTYPE_ARP) + build_arp(
            ArpPacket(ARP_REQUEST, MAC_A, IP_A, b"\0" * 6, target))

    reply = responder.answer(request(IP_B))
    assert reply is not None and reply[0] == PLAIN_VNET_BYTES
    parsed = parse_frame(bytes(reply[1]))
    assert parsed.eth_dst == MAC_A and parsed.eth_src == MAC_B
    assert parsed.arp == ArpPacket(ARP_REPLY, MAC_B, IP_B, MAC_A, IP_A)
    assert responder.answer(request(IP_A)) is None
    assert responder.counters == ResponderCounters(arp_replies=1, ignored=1)


@pytest.mark.parametrize("request_bytes", [REQUEST[:20], REQUEST.replace(b"/64", b"/5000")],
                         ids=["no-whole-head", "body-beyond-one-segment"])
def test_a_request_it_cannot_answer_in_one_segment_is_counted_not_answered(request_bytes: bytes) -> None:
    responder = BareResponder(MAC_B, IP_B)
    assert responder.answer(client_frame(ISN + 1, 1, ACK | PSH, request_bytes)) is None
    assert responder.answer(client_frame(ISN + 1, 1, ACK | PSH, request_bytes)) is None  # the kept answer too
    assert responder.counters == ResponderCounters(unanswerable=2)


def test_no_frame_makes_it_raise_and_broken_ones_are_counted() -> None:
    responder = BareResponder(MAC_B, IP_B)
    good = bytes(client_frame(ISN + 1, 1, ACK | PSH, REQUEST))
    rng = random.Random(7)
    frames = [good[:n] for n in range(len(good))]
    frames += [bytes(b ^ (rng.randrange(1, 256) if rng.random() < 0.05 else 0) for b in good) for _ in range(300)]
    frames += [bytes(rng.randrange(256) for _ in range(rng.randrange(80))) for _ in range(300)]
    for frame in frames:
        reply = responder.answer(frame)
        assert reply is None or isinstance(reply[1], (bytes, bytearray))
    counters = responder.counters
    assert counters.malformed >= 40  # every IPv4 frame cut inside its headers or payload, at least
    total = sum(vars(counters).values())
    assert total == len(frames)  # every frame accounted for exactly once


@pytest.mark.parametrize(("argv", "message"), [
    ([], "usage: python -m toelab.benches.bare_responder"),
    (["eth0", "not-an-address"], "'not-an-address' must be an IPv4 address"),
    (["eth0", "10.0.7.2", "70000"], "must be an IPv4 address and PORT 1-65535"),
    (["nosuch0", "10.0.7.2"], "no interface 'nosuch0' in this namespace"),
])
def test_bad_arguments_get_one_sentence_and_exit_2(argv: list[str], message: str) -> None:
    done = subprocess.run([sys.executable, "-m", "toelab.benches.bare_responder", *argv], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and not done.stdout
    assert message in done.stderr.strip().splitlines()[-1]  # one sentence (after the engine build's note, if any)


def test_the_c_responder_is_given_the_engines_answer_to_the_loadgens_get() -> None:
    assert loadgen_response() == engine_response(REQUEST)


@pytest.fixture(scope="module")
def c_responder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    program = build_c_responder(tmp_path_factory.mktemp("bare"))
    if program is None:
        pytest.skip("no C compiler")
    return program


@pytest.mark.parametrize(("argv", "message"), [
    ([], "four arguments wanted"),
    (["eth0", "10.0.7", "80", "r"], "the address must be IPv4"),
    (["eth0", "10.0.7.2", "80x", "r"], "PORT must be 1-65535"),
    (["eth0", "10.0.7.2", "80", "r" * 1461], "RESPONSE must fit one segment"),
    (["nosuch0", "10.0.7.2", "80", "r"], "no such interface in this namespace"),
])
def test_the_c_responder_builds_and_refuses_bad_arguments_in_one_sentence(
        c_responder: Path, argv: list[str], message: str) -> None:
    done = subprocess.run([str(c_responder), *argv], capture_output=True, text=True, timeout=10)
    assert done.returncode == 2 and not done.stdout
    assert len(done.stderr.splitlines()) == 1 and message in done.stderr


def test_the_bare_rows_give_the_engines_rate_over_theirs_and_the_kernels_share_of_their_cpu() -> None:
    kernel = SideTotals(30_000, 0, 0, 1.0, 0.6, 0.5, 0, 0, [30_000.0], 0.2)
    engine = SideTotals(9_000, 0, 0, 1.0, 0.2, 0.7, 0, 0, [9_000.0], 0.1)
    python = SideTotals(18_000, 1, 0, 1.0, 0.3, 0.54, 72_000, 36_000, [18_000.0], 0.18, 36_000)
    c = SideTotals(40_000, 0, 0, 1.0, 0.5, 0.44, 160_000, 80_000, [40_000.0], 0.4)
    rows = {r["measurement"]: r for r in http_rows(kernel, engine, python, c)}
    bare_py, bare_c = rows[BARE_PYTHON_MEASUREMENT], rows[BARE_C_MEASUREMENT]
    assert (bare_py["engine"], bare_py["ratio"], bare_py["engine_over_bare"]) == (18_000, 0.6, 0.5)
    assert (bare_c["ratio"], bare_c["engine_over_bare"], bare_c["round_ratios"]) == (1.333, 0.225, [1.333])
    assert (bare_py["responder_cpu_us_per_conn"], bare_py["responder_sys_us_per_conn"]) == (30.0, 10.0)
    assert bare_py["failures"] == 1 and bare_py["frames_per_conn"] == 6.0 and bare_py["responder_sleeps_per_conn"] == 2.0
    assert rows["HTTP connection setups (connect, GET, close)"]["engine_sys_us_per_conn"] == 11.1
