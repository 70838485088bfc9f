"""The judging logic of scenario checks, without root: each guard fails on the empty case.

A check must not pass with nothing measured: no flood arrived, the table never filled, nothing
was served, no ACK was captured. Each test feeds a check's judge that case and asserts a fail,
next to the case where it rightly passes.
"""
from __future__ import annotations

from pathlib import Path

from scenarios.host_cpu import Cost, host_spared, offload_saved
from scenarios.host_view import Setups, setups_judged
from scenarios.loss import LossyDownload, fast_repair_judged, recovery_judged, rto_bound_per_mib
from scenarios.lro_router import lro_collapsed, lro_oversize_dropped
from scenarios.pmtud import PathRun, Transfer, clamped, receiver_carried, segments_fit, send_mss_from_path, stalled
from scenarios.rfc9293 import ack_delay_bounded, ack_delays, acked_every_second, acks_delayed
from scenarios.syn_flood import (
    Attempt,
    flood_arrived,
    kept_serving,
    summarize,
    table_filled,
    table_recovered,
    table_stayed_empty,
    was_denied,
)
from scenarios.transfer import DownloadResult, EchoResult, Retransmission
from scenarios.wire import ChecksumState, TcpFrame


# --- syn_flood ---------------------------------------------------------------------------------
def test_flood_rate_fails_when_nothing_was_sent_even_with_min_rate_zero() -> None:
    assert flood_arrived(sent=600_000, rate=200_000, received=600_100, min_rate=30_000)
    assert not flood_arrived(sent=0, rate=0.0, received=0, min_rate=0)
    assert not flood_arrived(sent=600_000, rate=200_000, received=1000, min_rate=30_000), "the flood did not arrive"
    assert not flood_arrived(sent=60_000, rate=20_000, received=60_000, min_rate=30_000), "too slow to be a flood"


def test_table_recovers_fails_when_the_table_never_filled() -> None:
    assert table_recovered(peak=64, limit=64, left=0)
    assert not table_recovered(peak=3, limit=64, left=0), "an empty table 'recovers' trivially"
    assert not table_recovered(peak=0, limit=None, left=0), "a target that cannot tell its limit proves nothing"
    assert not table_recovered(peak=64, limit=64, left=30), "it did not recover"
    assert not table_filled(peak=10, limit=0)


def test_a_stateless_policy_must_keep_the_table_empty_under_a_real_flood() -> None:
    assert table_stayed_empty(arrived=True, peak=0)
    assert not table_stayed_empty(arrived=False, peak=0), "no flood: nothing to keep out"
    assert not table_stayed_empty(arrived=True, peak=64)


def attempts(ok: int, failed: int = 0, connect_s: float = 0.001) -> list[Attempt]:
    return ([Attempt(i * 0.05, connect_s, connect_s * 2) for i in range(ok)]
            + [Attempt(1.0, None, None, "TimeoutError") for _ in range(failed)])


def test_legit_served_fails_when_nothing_loaded_the_target_or_nothing_was_tried() -> None:
    good = summarize(attempts(60))
    assert kept_serving(good, 0.99, loaded=True)
    assert not kept_serving(good, 0.99, loaded=False), "no flood, or a table never full: served proves nothing"
    assert not kept_serving(summarize([]), 0.0, loaded=True), "no attempts"
    assert not kept_serving(summarize(attempts(50, 10)), 0.99, loaded=True)


def test_legit_denied_fails_without_load_and_passes_on_failures_or_slow_handshakes() -> None:
    assert was_denied(summarize(attempts(0, 60)), 0.99, loaded=True)
    assert was_denied(summarize(attempts(60, connect_s=1.2)), 0.99, loaded=True), "waited for SYN retransmission"
    assert not was_denied(summarize(attempts(0, 60)), 0.99, loaded=False), "failures without a flood are not denial"
    assert not was_denied(summarize(attempts(60)), 0.99, loaded=True)
    assert not was_denied(summarize([]), 0.99, loaded=True)


# --- PMTUD ----------------------------------------------------------------------------------------
def path_run(completed: bool = True, largest: int = 1360, frames: int = 1500) -> PathRun:
    return PathRun(Transfer(2 << 20, (2 << 20) if completed else 1000, completed, 1.0), Path("x.pcap"), largest, frames)


def test_black_hole_stalls_fails_when_the_same_transfer_never_worked_without_it() -> None:
    stuck = Transfer(2 << 20, 0, False, 5.0)
    assert stalled(path_run().transfer, stuck, 0.1)
    assert not stalled(None, stuck, 0.1), "nothing measured without the black hole"
    assert not stalled(path_run(completed=False).transfer, stuck, 0.1), "the target serves nothing at all"
    assert not stalled(path_run().transfer, path_run().transfer, 0.1), "it did not stall"


def test_pmtud_checks_fail_on_an_empty_capture() -> None:
    assert segments_fit(path_run(), 1360) and send_mss_from_path(path_run(largest=1348), 1360)
    empty = path_run(largest=0, frames=0)
    assert not segments_fit(empty, 1360)
    assert not send_mss_from_path(empty, 1360)
    assert not send_mss_from_path(path_run(largest=536), 1360), "a send MSS not taken from the path"
    assert not segments_fit(path_run(largest=1448), 1360)


def test_receiver_check_needs_the_clients_pmtud_to_have_happened() -> None:
    assert receiver_carried(path_run(), 1360)
    assert not receiver_carried(path_run(largest=1448), 1360), "the sender never lowered: nothing about PMTUD"
    assert not receiver_carried(path_run(largest=0, frames=0), 1360)
    assert not receiver_carried(path_run(completed=False), 1360)


def test_clamped_mss_fails_when_no_syn_ack_was_seen() -> None:
    assert clamped([1360], 1360)
    assert not clamped([], 1360)
    assert not clamped([1460], 1360)


# --- rfc9293 ACK timing ------------------------------------------------------------------------------
PEER, TARGET = ("10.0.0.1", 40000), ("10.0.0.2", 9)


def frame(ts: float, src: tuple[str, int], dst: tuple[str, int], seq: int, ack: int, length: int) -> TcpFrame:
    return TcpFrame(ts, src[0], dst[0], src[1], dst[1], seq, ack, "A", 65535, length, (), ChecksumState.CORRECT, 60)


def exchange(delays: list[float], size: int = 1000) -> list[TcpFrame]:
    frames, t, seq = [], 0.0, 2**32 - 1500  # wraps during the exchange
    for delay in delays:
        frames.append(frame(t, PEER, TARGET, seq, 1, size))
        seq = (seq + size) % 2**32
        frames.append(frame(t + delay, TARGET, PEER, 1, seq, 0))
        t += 1.0
    return frames


def test_ack_delays_are_timed_from_the_capture() -> None:
    measured = ack_delays(exchange([0.0001, 0.040, 0.005]), PEER, 1000)
    assert [round(d, 4) for d in measured] == [0.0001, 0.04, 0.005]
    assert ack_delays(exchange([0.001]), PEER, 536) == [], "segments of another size are not the isolated ones"


def test_delayed_acks_fail_on_nothing_captured_or_a_lone_late_ack() -> None:
    assert acks_delayed([0.04] * 10 + [0.0001] * 14, 24)
    assert not acks_delayed([], 24), "nothing acknowledged, nothing measured"
    assert not acks_delayed([0.04] + [0.0001] * 23, 24), "one late ACK out of 24 is noise, not delayed ACKs"
    assert not acks_delayed([0.04] * 20, 24), "segments left unacknowledged"
    assert not acks_delayed([], 0)


def test_ack_delay_bound_fails_on_nothing_captured() -> None:
    assert ack_delay_bounded([0.04] * 24, 24)
    assert not ack_delay_bounded([], 24) and not ack_delay_bounded([], 0)
    assert not ack_delay_bounded([0.6] * 24, 24)


FULL_MSS = 8960
IN_FLIGHT = 7 * FULL_MSS  # what a 64 KiB window lets be in flight
ALL = 24 * FULL_MSS


def test_ack_every_second_segment_counts_acks_over_the_stream() -> None:
    assert acked_every_second(12, ALL, 24, FULL_MSS, IN_FLIGHT)
    assert acked_every_second(21, ALL, 24, FULL_MSS, IN_FLIGHT), "Linux: quick ACKs, one now and then for four"
    assert not acked_every_second(8, ALL, 24, FULL_MSS, IN_FLIGHT), "every third segment"
    assert not acked_every_second(10, ALL, 24, FULL_MSS, IN_FLIGHT), "one ACK per read of a burst (seen: 8 to 11)"
    assert not acked_every_second(12, 10 * FULL_MSS, 24, FULL_MSS, IN_FLIGHT), "not all acknowledged"
    assert not acked_every_second(0, 0, 0, FULL_MSS, 0)


def test_ack_every_second_segment_needs_a_window_that_lets_an_ack_stretch() -> None:
    """Two segments in flight at most: any receiver ACKs at most two at a time, so the count means nothing."""
    assert not acked_every_second(12, ALL, 24, FULL_MSS, peak_in_flight=2 * FULL_MSS)
    assert acked_every_second(12, ALL, 24, FULL_MSS, peak_in_flight=3 * FULL_MSS)


# --- lro_router -----------------------------------------------------------------------------------
def test_lro_oversize_dropped_fails_when_nothing_was_merged_or_dropped() -> None:
    assert lro_oversize_dropped({"lro_merged": 40, "mtu_drops": 5, "icmp_frag_needed_sent": 5})
    assert not lro_oversize_dropped({"lro_merged": 0, "mtu_drops": 0, "icmp_frag_needed_sent": 0})
    assert not lro_oversize_dropped({"lro_merged": 40, "mtu_drops": 5, "icmp_frag_needed_sent": 0})


def test_lro_collapse_needs_the_same_path_to_work_with_gro() -> None:
    size = 4 << 20
    stalled_lro = EchoResult(size, 10_000, 4.0, False)
    healthy_gro = EchoResult(size, size, 0.5, True)
    assert lro_collapsed(stalled_lro, healthy_gro)
    assert not lro_collapsed(stalled_lro, EchoResult(size, 0, 30.0, False)), "nothing works: not LRO's doing"
    assert not lro_collapsed(EchoResult(size, size, 0.5, True), healthy_gro), "LRO did not collapse"


# --- loss ---------------------------------------------------------------------------------------------
def test_throughput_by_loss_fails_on_an_rto_storm_a_stall_or_nothing_measured() -> None:
    size = 3 << 20
    base = DownloadResult(size, size, 0.1)  # 250 Mbit/s

    def lossy(seconds: float, rtos: int, got: int = size) -> LossyDownload:
        return LossyDownload(DownloadResult(size, got, seconds), rtos)

    good = {1.0: lossy(0.2, 0), 5.0: lossy(1.5, 2), 10.0: lossy(7.5, 15)}
    assert recovery_judged(base, 0, good, 30.0) == (True, "")
    ok, why = recovery_judged(base, 0, {**good, 10.0: lossy(7.5, 93)}, 30.0)
    assert not ok and "loss=10% took 31.00 RTOs per MiB (at most 14.48)" in why, "collapsed into timeouts"
    assert not recovery_judged(base, 0, {5.0: lossy(1.5, 12)}, 30.0)[0], "4 per MiB at 5 %: more than 3.62"
    assert not recovery_judged(base, 0, {1.0: lossy(0.3, 6)}, 30.0)[0], "2 per MiB at 1 %: more than 1"
    assert not recovery_judged(base, 0, {1.0: lossy(60.0, 0)}, 30.0)[0], "no RTO, yet over the time limit: no progress either"
    assert not recovery_judged(base, 0, {}, 30.0)[0], "nothing measured under loss"
    assert not recovery_judged(DownloadResult(size, 0, 20.0), 0, good, 30.0)[0], "no lossless reference"
    assert recovery_judged(base, 3, {10.0: lossy(7.5, 45)}, 30.0) == (True, ""), "15/MiB: 14.48 + the path's 1"
    assert not recovery_judged(base, 3, {10.0: lossy(7.5, 50)}, 30.0)[0], "16.7/MiB: more than the path explains"
    assert not recovery_judged(base, 0, {1.0: lossy(20.0, 0, size // 2)}, 30.0)[0], "incomplete"
    assert not recovery_judged(base, 0, {10.0: lossy(7.5, 15, 0)}, 30.0)[0], "nothing moved: no RTO per MiB to read"
    assert rto_bound_per_mib(0.5) == 1.0 and round(rto_bound_per_mib(10), 2) == 14.48



def test_fast_retransmit_fails_when_a_stack_sits_on_three_duplicate_acks_or_only_times_out() -> None:
    fast = Retransmission(1.0, 3, 0.0004, 0.003)
    rack = Retransmission(2.0, 1, None, 0.004)  # RACK-TLP: resent on time, before the third duplicate ACK
    quick = [0.003, 0.004]
    assert fast_repair_judged([fast, rack], quick) == (True, "")
    assert fast_repair_judged([rack, rack], quick) == (True, ""), "RFC 8985 needs no third duplicate ACK"
    assert fast_repair_judged([], quick) == (True, ""), "holes resent before the cumulative ACK reached them"
    ok, why = fast_repair_judged([fast, Retransmission(3.0, 5, 0.3, 0.31)], [*quick, 0.31])
    assert not ok and "1 resends came over 50 ms after the third duplicate ACK and as late as an RTO (the longest " \
        "300 ms after it)" in why
    assert fast_repair_judged([fast, Retransmission(3.0, 4, 0.08, 0.09)], quick) == (True, ""), \
        "answered late by a busy sender, yet before any RTO"
    assert fast_repair_judged([fast, Retransmission(3.0, 9, 0.4, 0.41, first_at_ack=False)], quick) == (True, ""), \
        "a lost resend sent again later is no wait on the duplicate ACKs"
    assert not fast_repair_judged([], [])[0], "nothing was lost or nothing captured"
    ok, why = fast_repair_judged([Retransmission(1.0, 0, None, 0.2)], [0.2, 0.4])
    assert not ok and "none of 2 resends came before an RTO could expire" in why, "only timeouts"


def test_resend_delays_count_every_range_sent_again_from_its_first_send() -> None:
    from scenarios.transfer import resend_delays

    def data(ts: float, seq: int, length: int = 1000) -> TcpFrame:
        return TcpFrame(ts, "s", "c", 19, 5000, seq, 0, "A", 65535, length, (), ChecksumState.CORRECT, length + 66)
    frames = [data(0.0, 0), data(0.001, 1000), data(0.002, 2000), data(0.010, 1000), data(0.5, 0, 3000)]
    assert [round(d, 3) for d in resend_delays(frames, ("s", 19))] == [0.009, 0.5]
    assert resend_delays([], ("s", 19)) == []

# --- host_view (TOE-2) --------------------------------------------------------------------------
def setups(attempts: int = 800, ok: int | None = None, cpu_us: float = 40.0, wire: int = 3200, loopback: int = 0,
           passed: int | None = None) -> Setups:
    done = attempts if ok is None else ok
    return Setups(attempts, done, 0.5, done * cpu_us / 1e6, 2000.0, wire, loopback, passed)


def test_setup_rate_compares_the_engine_with_the_host_stack_off_its_path() -> None:
    engine, host = setups(cpu_us=220), setups(cpu_us=30, wire=0, loopback=4800, passed=0)
    assert setups_judged(True, engine, host, engine_served=800) == (True, "")
    assert not setups_judged(True, setups(cpu_us=25), host, engine_served=800)[0], "the engine was no costlier"
    ok, why = setups_judged(True, engine, setups(cpu_us=30, wire=3200, loopback=0, passed=3200), engine_served=800)
    assert not ok and "did not go over loopback" in why and "in the reference's path" in why, "a reference behind the engine"
    ok, why = setups_judged(True, engine, host, engine_served=10)
    assert not ok and "the engine served 10 of 800" in why, "the host stack served them on the engine's fallback"
    assert not setups_judged(True, engine, host, engine_served=None)[0]
    assert not setups_judged(True, setups(wire=100), host, engine_served=800)[0], "nothing crossed the wire"
    assert not setups_judged(True, setups(ok=700, cpu_us=220), host, engine_served=800)[0], "setups failed"



def test_frames_are_read_from_the_interfaces_own_row_of_proc_net_dev() -> None:
    from scenarios.host_side import net_dev_rx_packets

    text = ("Inter-|   Receive                            |  Transmit\n"
            " face |bytes    packets errs drop fifo frame compressed multicast|bytes packets\n"
            "    lo:    4200      42    0    0    0     0          0         0     4200      42\n"
            "  eth0: 1234567    3201    0    0    0     0          0         0   999999    3100\n")
    assert net_dev_rx_packets(text, "eth0") == 3201 and net_dev_rx_packets(text, "lo") == 42
    assert net_dev_rx_packets(text, "toe0") is None

def test_setup_rate_fails_on_nothing_measured() -> None:
    empty = setups(attempts=0, wire=0)
    assert not setups_judged(False, empty, empty, None)[0]
    assert not setups_judged(True, empty, empty, 0)[0]
    assert not setups_judged(False, setups(cpu_us=0), setups(wire=0, loopback=4800), None)[0], "no CPU time read"


def test_setup_rate_on_one_stack_needs_the_wire_and_loopback_alike() -> None:
    host = setups(cpu_us=45, wire=0, loopback=4800)
    assert setups_judged(False, setups(cpu_us=40), host, None) == (True, "")
    assert not setups_judged(False, setups(cpu_us=400), host, None)[0], "tenfold on one stack"


def test_segment_size_checks_fail_on_a_burst_too_small_to_show_anything() -> None:
    from scenarios.rfc9293 import full_sized, window_filled
    assert full_sized([8960] * 7 + [2815], 8960)
    assert not full_sized([2815], 8960), "one segment: nothing to compare"
    assert not full_sized([], 8960)
    assert not full_sized([8960, 4000, 8960], 8960)
    assert window_filled(in_flight=62720, window=65535, mss=8960)
    assert not window_filled(in_flight=17920, window=65535, mss=8960), "a window never filled offers no runt"


def test_legit_prompt_fails_without_load_without_handshakes_or_when_queued() -> None:
    from scenarios.syn_flood import answered_promptly
    assert answered_promptly(summarize(attempts(60, connect_s=0.0002)), 50.0, loaded=True)
    assert not answered_promptly(summarize(attempts(60, connect_s=0.0002)), 50.0, loaded=False)
    assert not answered_promptly(summarize(attempts(0, 60)), 50.0, loaded=True), "nothing connected"
    assert not answered_promptly(summarize(attempts(60, connect_s=0.3)), 50.0, loaded=True), "queued behind the flood"


# --- host_cpu (TOE-16) --------------------------------------------------------------------------
def cost(gbit: float = 2.0, server: float = 0.4, engine: float = 0.0, client: float = 0.3, error: str = "") -> Cost:
    return Cost(gbit, 1.0, server, engine, client, 0.1, 0.0, 0.8, 0.1, error=error, longest_gap_s=5.0 if error else 0.01)


def test_offload_saves_cpu_fails_on_a_stalled_or_unread_transfer() -> None:
    assert offload_saved(cost(server=0.2), cost(server=0.6)) == (True, "")
    assert not offload_saved(cost(server=0.6), cost(server=0.2))[0], "offloads cost more"
    ok, why = offload_saved(cost(server=0.2, error="TimeoutError: timed out"), cost(server=0.6))
    assert not ok and "offloads on: the transfer ended early (TimeoutError: timed out)" in why and "5.00 s" in why
    assert not offload_saved(cost(gbit=0.0), cost())[0], "nothing moved"
    assert not offload_saved(cost(server=0.01, client=0.01), cost())[0], "too few clock ticks to read"


def test_host_stack_spared_fails_when_the_host_flow_cost_the_host_nothing_or_a_flow_stalled() -> None:
    offloaded, hosted = cost(server=0.5, engine=0.5), cost(server=0.6, engine=0.2)
    assert host_spared(offloaded, hosted) == (True, "")
    assert not host_spared(cost(server=0.5, engine=0.2), hosted)[0], "the host stack worked for the offloaded flow"
    assert not host_spared(offloaded, cost(server=0.3, engine=0.3))[0], "nothing to compare with"
    assert "the offloaded flow: the transfer ended early" in host_spared(cost(error="closed early"), hosted)[1]
