"""Pure judging pieces of the claim scenarios: nftables rules and counters, socket listings, rate limits."""
from __future__ import annotations

import json

from scenarios.host_bypass import bypassed, limited, rule_counters, ruleset
from scenarios.host_view import listed_ports
from scenarios.host_side import Flow


def test_ruleset_comments_each_rule_and_counters_are_read_back_by_comment() -> None:
    text = ruleset("t", [("a", "tcp dport 9 counter drop"), ("b", "tcp dport 19 counter")])
    assert 'tcp dport 9 counter drop comment "a"' in text and "hook input priority 0" in text
    listing = {"nftables": [{"metainfo": {}}, {"table": {"name": "t"}},
                            {"rule": {"comment": "a", "expr": [{"match": {}}, {"counter": {"packets": 3, "bytes": 180}},
                                                               {"drop": None}]}},
                            {"rule": {"comment": "b", "expr": [{"counter": {"packets": 0, "bytes": 0}}]}},
                            {"rule": {"expr": [{"counter": {"packets": 9, "bytes": 1}}]}}]}
    counters = rule_counters(json.dumps(listing))
    assert counters["a"] == 3 and counters["b"] == 0 and counters["missing"] == 0


def test_listed_ports_reads_ss_and_proc_net_tcp_including_mapped_ipv6() -> None:
    ss = "0      0      [::ffff:10.0.0.2]:5009      [::ffff:10.0.0.1]:40000\n0 0 10.0.0.2:22 10.0.0.1:5\n"
    proc = ("  sl  local_address rem_address   st tx_queue\n"
            "   0: 0200000A:1391 0100000A:9C40 01 00000000:00000000\n"
            "   1: 0200000A:0009 0100000A:9C41 0A 00000000:00000000\n"
            "  sl  local_address                         remote_address                        st\n"
            "   0: 0000000000000000FFFF00000200000A:138F 0000000000000000FFFF00000100000A:9C42 01 0\n")
    in_ss, in_proc = listed_ports(ss, proc)
    assert in_ss == {5009, 22}
    assert in_proc == {0x1391, 0x138F}  # the listener (state 0A) is not an established connection


def test_a_limited_flow_ran_into_the_limit_and_a_bypassing_one_went_well_past_it() -> None:
    mib = 1 << 20
    at_limit = Flow(mib, mib, mib * 8 / 40e6)           # 40 Mbit/s
    way_over = Flow(mib, mib, mib * 8 / 400e6)          # 400 Mbit/s
    crawled = Flow(mib, 1000, 2.0)                       # stalled: not the limit's doing
    assert limited(at_limit, 40) and not limited(way_over, 40) and not limited(crawled, 40)
    assert bypassed(way_over, 40) and not bypassed(at_limit, 40)
    assert not bypassed(Flow(mib, mib // 2, 0.001), 40)  # fast but incomplete is no bypass


def test_jain_index_and_the_share_of_two_flows() -> None:
    from scenarios.cc_share import Share, jain_index

    assert jain_index([10, 10]) == 1.0 and jain_index([10, 0]) == 0.5 and jain_index([0, 0]) == 0.0
    share = Share(service_mbit=30, host_mbit=10, rate_mbit=40)
    assert share.utilisation == 1.0 and share.service_share == 0.75 and round(share.jain, 3) == 0.8


def test_ping_summary_and_the_congestion_control_ss_names_per_port() -> None:
    from scenarios.cc_share import congestion_of, ping_rtt_ms

    assert ping_rtt_ms("5 packets transmitted\nrtt min/avg/max/mdev = 10.101/12.250/15.0/1.1 ms\n") == 12.25
    assert ping_rtt_ms("5 packets transmitted, 0 received, 100% packet loss") is None
    ss = ("0  95568  [::ffff:10.0.2.2]:19 [::ffff:10.0.1.2]:51598\n\t bbr wscale:9,9 rto:212 bbr:(bw:0bps)\n"
          "0  1000   10.0.2.2:5019 10.0.1.2:40000\n\t reno wscale:9,9 rto:204\n")
    assert congestion_of(ss, 19) == "bbr" and congestion_of(ss, 5019) == "reno" and congestion_of(ss, 9) is None


def test_a_stream_counts_bytes_inside_a_window_only() -> None:
    from scenarios.host_side import Stream

    flow = Stream(19, ((0.0, 0), (0.4, 100), (0.6, 300), (1.0, 700), (1.4, 900)))
    assert flow.bytes_between(0.5, 1.5) == 600 and flow.bytes_between(2, 3) == 0


def test_cpu_readings_from_proc_stat_and_pid_stat() -> None:
    from scenarios.cpu_cost import CLOCK_TICKS, MachineTimes, ProcessTimes, parse_pid_stat, parse_proc_stat

    machine = parse_proc_stat("cpu  100 5 50 1000 7 3 20 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n")
    assert machine == MachineTimes((100 + 5 + 50 + 3 + 20) / CLOCK_TICKS, 20 / CLOCK_TICKS)  # iowait is idle
    assert (machine - MachineTimes(1.0, 0.1)).busy == machine.busy - 1.0
    line = "4242 (python3 -m x (y)) S 1 2 3 4 5 6 7 8 9 10 300 45 0 0 20 0 1 0 100 0 0"
    assert parse_pid_stat(line) == (300 + 45) / CLOCK_TICKS
    before = ProcessTimes({1: 1.0, 2: 5.0}, {1: "python -m toe_engine.runtime.endpoint_main", 2: "python -m lab.services"})
    after = ProcessTimes({1: 3.0, 2: 5.5, 3: 0.25}, {**before.commands, 3: "tcpdump"})
    assert after.since(before) == 2.75
    assert after.since(before, matching="endpoint_main") == 2.0
    assert after.since(before, excluding="endpoint_main") == 0.75


def test_the_engine_takes_its_congestion_control_at_run_time_by_name() -> None:
    import pytest

    from toe_engine.runtime.endpoint import DEFAULT_TCP, check_runtime_tcp
    from toe_engine.tcp.config import TcpConfig

    current = TcpConfig(mss=1460, tso_segments=1, **{k: v for k, v in DEFAULT_TCP.items() if k != "tso_segments"})
    assert check_runtime_tcp(current, {"congestion": "cubic"}) == {"congestion": "cubic"}
    with pytest.raises(ValueError, match="tcp.congestion must be one of .*cubic.*newreno"):
        check_runtime_tcp(current, {"congestion": "no-such-algorithm"})


def test_nmap_fingerprints_parse_into_fields_and_differences_skip_volatile_ones() -> None:
    from scenarios.fingerprint import VOLATILE, differing, nmap_result

    xml = ('<osmatch name="Linux 3.1" accuracy="95" line="1"/><osfingerprint fingerprint="OS:SCAN(V=7.93%E=4)SEQ(SP=104%'
           'GCD=1%ISR=10E%TI=I%TS=A)OPS(O1=M5B4ST11NW8&#xa;OS:%O2=M5B4)WIN(W1=FFFF)T1(R=Y%DF=Y%T=40)&#xa;"/>')
    conclusion, fields = nmap_result(xml)
    assert conclusion == "Linux 3.1 (95 %)"
    assert fields["SEQ.TI"] == "I" and fields["OPS.O1"] == "M5B4ST11NW8" and fields["OPS.O2"] == "M5B4"
    other = {**fields, "SEQ.SP": "FF", "SEQ.TI": "Z", "WIN.W1": "1C48", "SCAN.V": "x"}
    del other["T1.DF"]
    assert differing(fields, other, VOLATILE) == ["SEQ.TI: I vs Z", "T1.DF: Y vs -", "WIN.W1: FFFF vs 1C48"]
    assert nmap_result("<nmaprun/>") == ("no OS match", {})


def test_p0f_log_lines_give_syn_ack_signatures_by_server_port() -> None:
    from scenarios.fingerprint import p0f_fields, p0f_signatures

    log = ("[2026/12/01 09:36:14] mod=syn|cli=10.0.0.1/1|srv=10.0.0.2/9|subj=cli|os=Linux|raw_sig=4:64+0:0:1460:x:y:z:0\n"
           "[2026/12/01 09:36:14] mod=syn+ack|cli=10.0.0.1/1|srv=10.0.0.2/9|subj=srv|os=???|dist=0|params=none|"
           "raw_sig=4:64+0:0:1460:65535,8:mss,sok,ts,nop,ws:df,id+:0\n")
    seen = p0f_signatures(log)
    assert list(seen) == [9] and seen[9][0] == "???"
    fields = p0f_fields(seen[9][1])
    assert fields["wsize,scale"] == "65535,8" and fields["quirks"] == "df,id+" and fields["olayout"] == "mss,sok,ts,nop,ws"


def test_repair_options_carry_what_the_connection_negotiated() -> None:
    import struct

    from scenarios.tcp_repair import (TCPI_OPT_SACK, TCPI_OPT_TIMESTAMPS, TCPI_OPT_WSCALE, TCPOPT_MSS,
                                      TCPOPT_SACK_PERM, TCPOPT_TIMESTAMP, TCPOPT_WINDOW, RepairState, repair_options)

    state = RepairState(("10.0.0.2", 5100), ("10.0.0.1", 4000), 1, 2, b"", b"", (0, 0, 0, 0, 0), 1448, 7, 9,
                        TCPI_OPT_WSCALE | TCPI_OPT_SACK | TCPI_OPT_TIMESTAMPS, 0)
    pairs = list(struct.iter_unpack("=II", repair_options(state)))
    assert pairs == [(TCPOPT_MSS, 1448), (TCPOPT_WINDOW, 7 | 9 << 16), (TCPOPT_SACK_PERM, 0), (TCPOPT_TIMESTAMP, 0)]
    bare = RepairState(*state.__dict__.values())
    object.__setattr__(bare, "options", 0)
    assert list(struct.iter_unpack("=II", repair_options(bare))) == [(TCPOPT_MSS, 1448)]


def test_largest_window_scales_what_follows_the_syn_ack(tmp_path) -> None:
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    from scenarios.host_view import largest_window

    server, client = "10.0.0.2", "10.0.0.1"
    frames = [Ether() / IP(src=client, dst=server) / TCP(sport=4000, dport=9, flags="S", window=64240),
              Ether() / IP(src=server, dst=client) / TCP(sport=9, dport=4000, flags="SA", window=1000,
                                                          options=[("MSS", 1460), ("WScale", 7)]),
              Ether() / IP(src=server, dst=client) / TCP(sport=9, dport=4000, flags="A", window=300),
              Ether() / IP(src=server, dst=client) / TCP(sport=5009, dport=4001, flags="A", window=9999)]
    pcap = tmp_path / "w.pcap"
    wrpcap(str(pcap), frames)
    assert largest_window(pcap, server, 9) == 300 << 7
    assert largest_window(pcap, server, 19) == 0


def test_nflog_bind_request_and_log_prefixes_from_a_datagram() -> None:
    import socket
    import struct

    from scenarios.nflog import NFULA_CFG_CMD, NFULA_CFG_QTHRESH, NFULA_PREFIX, config_message, prefixes

    msg = config_message(7, seq=3)
    length, kind, flags, seq, _ = struct.unpack_from("=IHHII", msg)
    assert length == len(msg) and kind == 0x0401 and flags == 0x5 and seq == 3
    assert struct.unpack_from("!H", msg, 18)[0] == 7  # res_id: the group, in network order
    assert struct.unpack_from("=HH", msg, 20)[1] == NFULA_CFG_CMD and msg[24] == 1  # bind
    assert struct.unpack_from("=HH", msg, 28)[1] == NFULA_CFG_QTHRESH and struct.unpack_from("!I", msg, 32)[0] == 1

    def packet(prefix: bytes) -> bytes:
        attr = struct.pack("=HH", 4 + len(prefix) + 1, NFULA_PREFIX) + prefix + b"\0"
        attr += b"\0" * (-len(attr) % 4)
        other = struct.pack("=HHI", 8, 1, 0)  # another attribute before it
        body = struct.pack("=BBH", socket.AF_INET, 0, socket.htons(7)) + other + attr
        return struct.pack("=IHHII", 16 + len(body), 0x0400, 0, 0, 0) + body

    assert prefixes(packet(b"toelab-host ") + packet(b"x")) == ["toelab-host ", "x"]
    assert prefixes(b"") == [] and prefixes(struct.pack("=IHHII", 16, 2, 0, 0, 0)) == []
