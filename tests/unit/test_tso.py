"""TSO: a 64 KiB send becomes MSS-sized frames, checked independently with Scapy."""
from __future__ import annotations

import socket

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from toe_engine.codec import build_tcp_frame
from toe_engine.counters import Counters
from toe_engine.offload import segment_frame
from toe_engine.segment import ACK, CWR, FIN, PSH, Segment, TcpOptions

MAC_A, MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
V4 = (socket.inet_pton(socket.AF_INET, "10.0.0.1"), socket.inet_pton(socket.AF_INET, "10.0.0.2"))
V6 = (socket.inet_pton(socket.AF_INET6, "fd00::1"), socket.inet_pton(socket.AF_INET6, "fd00::2"))
PAYLOAD = bytes(i % 253 for i in range(65536))
SEQ = 0xFFFF0000  # wraps inside the send


def super_frame(v6: bool, flags: int, options: TcpOptions | None = None) -> bytearray:
    src, dst = V6 if v6 else V4
    seg = Segment(40000, 80, SEQ, 1234, flags, 502, PAYLOAD, options or TcpOptions())
    return build_tcp_frame(MAC_A, MAC_B, src, dst, seg, ip_id=0xFFF0)


def scapy_checksums_ok(frame: bytes, v6: bool) -> bool:
    """Let Scapy recompute both checksums from scratch and compare."""
    pkt = Ether(frame)
    ip_layer = pkt[IPv6] if v6 else pkt[IP]
    tcp = pkt[TCP]
    sent_tcp = tcp.chksum
    del tcp.chksum
    if not v6:
        sent_ip = ip_layer.chksum
        del ip_layer.chksum
    rebuilt = Ether(bytes(pkt))
    return rebuilt[TCP].chksum == sent_tcp and (v6 or rebuilt[IP].chksum == sent_ip)


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_64k_at_mss_1460(v6: bool) -> None:
    counters = Counters()
    frames = segment_frame(super_frame(v6, ACK | PSH | FIN | CWR), 1460, counters=counters)
    assert len(frames) == 45 and counters["tso_segments"] == 45
    joined = b""
    for index, frame in enumerate(frames):
        pkt = Ether(bytes(frame))
        tcp = pkt[TCP]
        payload = bytes(tcp.payload)
        expected_len = 1460 if index < 44 else 65536 - 44 * 1460
        assert len(payload) == expected_len
        assert tcp.seq == (SEQ + index * 1460) & 0xFFFFFFFF
        assert tcp.ack == 1234 and tcp.window == 502
        last, first = index == 44, index == 0
        assert bool(tcp.flags & PSH) == last and bool(tcp.flags & FIN) == last
        assert bool(tcp.flags & CWR) == first
        assert tcp.flags & ACK
        if v6:
            assert pkt[IPv6].plen == 20 + expected_len
        else:
            assert pkt[IP].len == 40 + expected_len
            assert pkt[IP].id == (0xFFF0 + index) & 0xFFFF
            assert pkt[IP].flags.DF
        assert scapy_checksums_ok(bytes(frame), v6)
        joined += payload
    assert joined == PAYLOAD


def test_options_are_copied_and_fixed_id_kept() -> None:
    frames = segment_frame(super_frame(False, ACK, TcpOptions(timestamp=(5, 6))), 1448, fixed_id=True)
    assert len(frames) == 46
    for frame in frames:
        pkt = Ether(bytes(frame))
        assert pkt[IP].id == 0xFFF0
        assert dict(pkt[TCP].options)["Timestamp"] == (5, 6)
        assert len(pkt[TCP].payload) <= 1448


def test_small_send_is_one_frame() -> None:
    frame = build_tcp_frame(MAC_A, MAC_B, *V4, Segment(1, 2, 3, 4, ACK | PSH, 5, b"x" * 100))
    assert [bytes(f) for f in segment_frame(frame, 1460)] == [bytes(frame)]


def test_not_tcp_is_refused() -> None:
    with pytest.raises(ValueError):
        segment_frame(b"\x00" * 60, 1460)
