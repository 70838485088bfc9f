"""Pure judging pieces of the claim scenarios: nftables rules and counters, socket listings, rate limits."""
from __future__ import annotations

import json

from scenarios.host_bypass import bypassed, limited, listed_ports, rule_counters, ruleset
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
