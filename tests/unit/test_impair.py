"""The impairment model: netem's statistics, reproducibility by seed, rate in simulated time."""
from __future__ import annotations

import math
import struct

import pytest

from toe_engine.impair import (
    LOG_DROPPED,
    LOG_REORDERED,
    GilbertElliott,
    Impairer,
    ImpairmentSpec,
    ImpairmentSpecError,
)

N = 100_000
SEED = 20240611


def frame(index: int, size: int = 100) -> bytes:
    return struct.pack("!I", index) + bytes(size - 4)


def index_of(data: bytes) -> int:
    return struct.unpack_from("!I", data)[0]


def drive(imp: Impairer, n: int, spacing: float, size: int = 100) -> list[tuple[float, bytes]]:
    """Submit n frames `spacing` seconds apart; collect (delivery time, frame), polling at every deadline."""
    out: list[tuple[float, bytes]] = []
    for i in range(n):
        now = i * spacing
        while (due := imp.next_deadline()) is not None and due < now:
            out += [(due, f) for f in imp.poll(due)]
        imp.submit(frame(i, size), now)
        out += [(now, f) for f in imp.poll(now)]
    while (due := imp.next_deadline()) is not None:
        out += [(due, f) for f in imp.poll(due)]
    return out


def test_no_impairment_passes_everything_in_order_at_once() -> None:
    imp = Impairer(ImpairmentSpec(), SEED)
    out = drive(imp, 1000, 0.001)
    assert [index_of(f) for _, f in out] == list(range(1000))
    assert all(t == pytest.approx(index_of(f) * 0.001) for t, f in out)
    assert imp.stats["passed"] == 1000 and imp.stats["delayed"] == 0


def test_random_loss_rate() -> None:
    imp = Impairer(ImpairmentSpec(loss=5), SEED)
    out = drive(imp, N, 0.0001)
    assert abs(imp.stats["dropped"] / N - 0.05) < 0.003
    assert len(out) == N - imp.stats["dropped"] == imp.stats["passed"]


def test_correlated_loss_keeps_the_mean_and_clusters() -> None:
    imp = Impairer(ImpairmentSpec(loss=5, loss_correlation=50), SEED, record=True)
    drive(imp, N, 0.0001)
    lost = [bool(code & LOG_DROPPED) for code in imp.log_codes]
    assert abs(sum(lost) / N - 0.05) < 0.005
    after_loss = [b for a, b in zip(lost, lost[1:]) if a]
    # P(loss | previous loss) = rho + (1 - rho) * p = 0.525, against 0.05 without correlation.
    assert abs(sum(after_loss) / len(after_loss) - 0.525) < 0.03


def test_gilbert_elliott_matches_its_stationary_loss_and_burst_length() -> None:
    model = GilbertElliott(p=1, r=10, one_minus_h=100, one_minus_k=0)
    assert model.stationary_loss() == pytest.approx(0.01 / 0.11)
    imp = Impairer(ImpairmentSpec(gemodel=model), SEED, record=True)
    drive(imp, N, 0.0001)
    assert abs(imp.stats["dropped"] / N - model.stationary_loss()) < 0.01
    bursts, run = [], 0
    for code in imp.log_codes:
        if code & LOG_DROPPED:
            run += 1
        elif run:
            bursts.append(run)
            run = 0
    assert abs(sum(bursts) / len(bursts) - 10) < 1.0  # mean bad-state sojourn 1/r


def test_gilbert_elliott_with_partial_losses_in_both_states() -> None:
    model = GilbertElliott(p=5, r=20, one_minus_h=60, one_minus_k=2)
    imp = Impairer(ImpairmentSpec(gemodel=model), SEED)
    drive(imp, N, 0.0001)
    expected = (0.20 * 0.02 + 0.05 * 0.60) / 0.25
    assert abs(imp.stats["dropped"] / N - expected) < 0.01


def test_gemodel_with_p_only_is_bernoulli_loss() -> None:
    model = GilbertElliott(p=3)
    assert model.stationary_loss() == pytest.approx(0.03)


def test_duplicate_rate_and_copies_are_identical() -> None:
    imp = Impairer(ImpairmentSpec(duplicate=3), SEED)
    out = drive(imp, N, 0.0001)
    assert abs(imp.stats["duplicated"] / N - 0.03) < 0.003
    assert len(out) == N + imp.stats["duplicated"]
    indices = [index_of(f) for _, f in out]
    assert len(set(indices)) == N


def test_corrupt_flips_exactly_one_bit_beyond_the_offset() -> None:
    imp = Impairer(ImpairmentSpec(corrupt=2, corrupt_offset=34), SEED)
    out = drive(imp, N, 0.0001)
    changed = 0
    for _, data in out:
        original = frame(index_of(data))
        if data != original:
            changed += 1
            diff = [i for i, (a, b) in enumerate(zip(data, original)) if a != b]
            assert len(diff) == 1 and diff[0] >= 34
            assert bin(data[diff[0]] ^ original[diff[0]]).count("1") == 1
    assert changed == imp.stats["corrupted"]
    assert abs(changed / N - 0.02) < 0.003


def test_corrupt_leaves_frames_shorter_than_the_offset_alone() -> None:
    imp = Impairer(ImpairmentSpec(corrupt=100, corrupt_offset=200), SEED)
    out = drive(imp, 100, 0.001)
    assert all(f == frame(index_of(f)) for _, f in out)
    assert imp.stats["corrupted"] == 0


def test_reorder_with_gap_follows_netem() -> None:
    # netem: after gap-1 delayed packets, each packet is sent at once with probability
    # `reorder` (restarting the count); on average one in gap-1 + 1/p packets jumps ahead.
    imp = Impairer(ImpairmentSpec(reorder=25, gap=5, delay_ms=10), SEED, record=True)
    out = drive(imp, N, 0.001)
    assert abs(imp.stats["reordered"] / N - 1 / 8) < 0.005
    reordered = [i for i, code in enumerate(imp.log_codes) if code & LOG_REORDERED]
    gaps = [b - a for a, b in zip(reordered, reordered[1:])]
    assert min(gaps) >= 5
    # a reordered packet overtakes the delayed ones before it
    order = [index_of(f) for _, f in out]
    first = reordered[0]
    assert order.index(first) < order.index(first - 1)
    assert sorted(order) == list(range(N))


def test_reorder_without_gap_is_a_plain_probability() -> None:
    imp = Impairer(ImpairmentSpec(reorder=25, delay_ms=10), SEED)
    drive(imp, N, 0.001)
    assert abs(imp.stats["reordered"] / N - 0.25) < 0.005


def test_uniform_jitter_bounds_and_mean() -> None:
    imp = Impairer(ImpairmentSpec(delay_ms=20, jitter_ms=5), SEED)
    out = drive(imp, N, 0.0001)
    delays = [t - index_of(f) * 0.0001 for t, f in out]
    assert min(delays) >= 0.015 - 1e-9 and max(delays) <= 0.025 + 1e-9
    assert abs(sum(delays) / N - 0.020) < 0.0002
    assert imp.stats["delayed"] == N


def test_normal_jitter_mean_and_deviation() -> None:
    imp = Impairer(ImpairmentSpec(delay_ms=50, jitter_ms=5, distribution="normal"), SEED)
    out = drive(imp, N, 0.0001)
    delays = [t - index_of(f) * 0.0001 for t, f in out]
    mean = sum(delays) / N
    std = math.sqrt(sum((d - mean) ** 2 for d in delays) / N)
    assert abs(mean - 0.050) < 0.0002
    assert abs(std - 0.005) < 0.0002


def test_small_jitter_keeps_order_large_jitter_reorders() -> None:
    calm = Impairer(ImpairmentSpec(delay_ms=10, jitter_ms=0.4), SEED)
    order = [index_of(f) for _, f in drive(calm, 10_000, 0.001)]
    assert order == sorted(order)
    wild = Impairer(ImpairmentSpec(delay_ms=10, jitter_ms=5), SEED)
    order = [index_of(f) for _, f in drive(wild, 10_000, 0.001)]
    assert order != sorted(order)


def test_rate_limit_gives_the_configured_throughput() -> None:
    rate = 10_000_000
    imp = Impairer(ImpairmentSpec(rate_bps=rate, limit=100_000), SEED)
    out = drive(imp, 5000, 0.0001, size=1000)  # offered 80 Mbit/s
    assert len(out) == 5000
    elapsed = out[-1][0] - out[0][0]
    throughput = (len(out) - 1) * 1000 * 8 / elapsed
    assert throughput == pytest.approx(rate, rel=1e-6)
    assert [index_of(f) for _, f in out] == list(range(5000))


def test_rate_with_delay_adds_the_delay_once() -> None:
    imp = Impairer(ImpairmentSpec(rate_bps=8_000_000, delay_ms=5), SEED)
    out = drive(imp, 3, 0.0, size=1000)  # three back-to-back 1 ms frames
    assert [t for t, _ in out] == pytest.approx([0.006, 0.007, 0.008])


def test_queue_limit_tail_drops() -> None:
    imp = Impairer(ImpairmentSpec(rate_bps=1_000_000, limit=50), SEED)
    for i in range(200):
        imp.submit(frame(i), 0.0)
    assert imp.stats["rate_dropped"] == 150 and len(imp) == 50
    delivered = imp.poll(math.inf)
    assert [index_of(f) for f in delivered] == list(range(50))


def test_rate_limited_flow_under_overload_still_gets_the_rate() -> None:
    rate = 1_000_000
    imp = Impairer(ImpairmentSpec(rate_bps=rate, limit=20), SEED)
    out = drive(imp, 20_000, 0.0002, size=250)  # offered 10 Mbit/s
    assert imp.stats["rate_dropped"] > 0
    elapsed = out[-1][0] - out[0][0]
    assert (len(out) - 1) * 250 * 8 / elapsed == pytest.approx(rate, rel=0.01)


def full_spec() -> ImpairmentSpec:
    return ImpairmentSpec(
        loss=2, duplicate=2, corrupt=2, reorder=10, gap=3, delay_ms=5, jitter_ms=2, rate_bps=100_000_000
    )


def run_logged(seed: int) -> Impairer:
    imp = Impairer(full_spec(), seed, record=True)
    drive(imp, 20_000, 0.0001)
    return imp


def test_same_seed_gives_the_same_decisions() -> None:
    a, b = run_logged(7), run_logged(7)
    assert a.log_codes == b.log_codes and a.log_times == b.log_times
    assert a.stats == b.stats


def test_different_seed_gives_different_decisions() -> None:
    a, b = run_logged(7), run_logged(8)
    assert a.log_codes != b.log_codes


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"loss": -1}, "loss"),
        ({"loss": 101}, "loss"),
        ({"duplicate": 200}, "duplicate"),
        ({"corrupt_correlation": -5}, "corrupt_correlation"),
        ({"gap": 5}, "gap"),
        ({"reorder": 25}, "delay_ms"),
        ({"delay_ms": -1}, "delay_ms"),
        ({"rate_bps": 0}, "rate_bps"),
        ({"limit": 0}, "limit"),
        ({"gemodel": {"p": 1, "r": 150}}, "gemodel.r"),
        ({"loss": 1, "gemodel": {"p": 1}}, "gemodel"),
        ({"jitter": 3}, "jitter"),
        ({"loss": "lots"}, "loss"),
    ],
)
def test_validation_errors_name_the_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(ImpairmentSpecError) as caught:
        ImpairmentSpec.parse(data)
    message = str(caught.value)
    assert field in message
    assert "\n" not in message
