"""Report pcaps: headers and the first payload bytes kept, original lengths recorded, gzipped, evidence relinked."""
from __future__ import annotations

from pathlib import Path

from scapy.all import ICMP, IP, TCP, UDP, Dot1Q, Ether, IPv6, Raw, wrpcap
from scapy.utils import RawPcapReader

from scenarios.framework import Check, Evidence, Verdict
from scenarios.pcap_trim import PAYLOAD_BYTES, SNAPLEN, kept_length, relink, trim_pcaps

TS = [("Timestamp", (1, 2)), ("NOP", None), ("NOP", None)]


def test_kept_length_is_headers_plus_the_first_payload_bytes() -> None:
    assert kept_length(bytes(Ether() / IP() / TCP(options=TS) / Raw(bytes(1000)))) == 14 + 20 + 32 + PAYLOAD_BYTES
    assert kept_length(bytes(Ether() / IPv6() / TCP() / Raw(bytes(1000)))) == 14 + 40 + 20 + PAYLOAD_BYTES
    assert kept_length(bytes(Ether() / Dot1Q() / IP() / UDP() / Raw(bytes(1000)))) == 18 + 20 + 8 + PAYLOAD_BYTES
    assert kept_length(bytes(Ether() / IP() / TCP())) == 54  # no payload: all of it
    assert kept_length(bytes(Ether() / IP() / ICMP() / Raw(bytes(1000)))) == SNAPLEN  # errors quote headers
    assert kept_length(b"\x00" * 20) == 20  # too short to parse: what there is


def test_trim_gzips_keeps_wire_lengths_and_relinks_evidence(tmp_path: Path) -> None:
    run = tmp_path / "scenario" / "toe"
    run.mkdir(parents=True)
    frames = [Ether() / IP(dst="10.0.0.2") / TCP(seq=i, options=TS) / Raw(bytes([i]) * 1448) for i in range(50)]
    wrpcap(str(run / "bulk.pcap"), frames)
    (run / "notes.pcap").write_text("not a capture")  # left as it is
    check = Check(id="x", requirement="MUST-1", target="toe", verdict=Verdict.PASS, sentence="s",
                  evidence=Evidence(pcaps=[str(run / "bulk.pcap")]))
    renamed = trim_pcaps(tmp_path)
    relink([check], renamed)
    assert check.evidence.pcaps == [str(run / "bulk.pcap.gz")]
    assert not (run / "bulk.pcap").exists() and (run / "notes.pcap").read_text() == "not a capture"
    records = [(bytes(data), meta.wirelen) for data, meta in RawPcapReader(str(run / "bulk.pcap.gz"))]
    assert len(records) == 50
    assert all(len(data) == 14 + 20 + 32 + PAYLOAD_BYTES and wire == len(frames[0]) for data, wire in records)
    assert records[7][0] == bytes(frames[7])[:len(records[7][0])]  # the bytes kept are the packet's own
    assert (run / "bulk.pcap.gz").stat().st_size < 50 * 100
    again = Check(id="x", requirement="MUST-1", target="toe", verdict=Verdict.PASS, sentence="s",
                  evidence=Evidence(pcaps=[str(run / "bulk.pcap")]))
    relink([again], trim_pcaps(tmp_path))  # nothing left to trim: the evidence still finds its file
    assert again.evidence.pcaps == [str(run / "bulk.pcap.gz")]
