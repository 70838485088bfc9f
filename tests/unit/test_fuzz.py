"""The engine's own fuzzer: a bounded run per exhaustion policy, and proof its checks can fail."""
from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest

from toe_engine.codec import parse_frame
from toe_engine.fuzz.generator import FAMILIES
from toe_engine.fuzz.invariants import DropTally, check
from toe_engine.fuzz.runner import POLICIES, FuzzConfig, FuzzRun, fuzz

FRAMES = 25_000  # ~2-3 s of CPU per policy here


@pytest.mark.parametrize("policy", POLICIES)
def test_a_bounded_fuzz_run_raises_nothing_and_keeps_every_invariant(policy: str) -> None:
    report = fuzz(FuzzConfig(frames=FRAMES, policy=policy, seed=20261201))
    assert dict(report.exceptions) == {}
    assert report.violations == 0, report.violation_samples
    counters = collections.Counter(report.counters)
    assert counters["app_errors"] == 0
    # preconditions that make the verdict mean something: the frames reached deep and the table filled
    assert set(report.families) >= set(FAMILIES) | {"in_order_traffic"}
    assert counters["conn_established"] > 20 and counters["rx_malformed"] > 1000 and counters["rx_csum_errors"] > 100
    assert counters["table_high_water"] >= 32  # at least the embryonic share (half the table) filled
    exhausted = {"fallback": "conn_fallback", "syncookie": "syncookies_sent"}.get(policy, "conn_denied")
    assert counters[exhausted] > 100
    if policy in ("fallback", "deny:drop"):  # deny:rst and syncookie churn flows too fast to echo much
        assert report.echoed_bytes + counters["app_rx_bytes"] > 10_000


def test_a_run_is_exact_for_its_seed() -> None:
    one = fuzz(FuzzConfig(frames=3000, seed=5)).counters
    two = fuzz(FuzzConfig(frames=3000, seed=5)).counters
    assert one == two


def _run_with_traffic(frames: int = 3000) -> FuzzRun:
    run = FuzzRun(FuzzConfig(frames=frames, seed=3))
    run.run()
    assert run.core.stack.connections(), "the run left no connection to check"
    return run


def test_the_invariants_see_a_broken_sequence_space_and_a_leak() -> None:
    run = _run_with_traffic()
    assert check(run.core, run.peers, run.drops) == []
    key = run.core.stack.connections()[0]
    conn = run.core.stack.connection(key)
    conn.snd_una, conn.snd_nxt = conn.snd_nxt + 1, conn.snd_nxt
    conn.snd_buf += b"z" * 10
    broken = " ".join(check(run.core, run.peers, run.drops))
    assert "SND.UNA" in broken and "buffer memory accounts" in broken


def test_the_invariants_see_drop_counters_that_disagree_with_the_parser() -> None:
    run = _run_with_traffic()
    tally = DropTally(run.drops.reasons.copy())
    tally.add(parse_frame(b"\x00" * 10).drop_reason)
    assert any("drop counters" in line for line in check(run.core, run.peers, tally))


def test_the_invariants_see_bytes_that_are_not_the_stream() -> None:
    run = _run_with_traffic()
    run.peers[0].mismatches = 1
    run.peers[1].wrong_mac = 2
    broken = " ".join(check(run.core, run.peers, run.drops))
    assert "not a prefix" in broken and "another MAC" in broken


class _FailsAtFrame:
    """The run's engine core, except that one frame's from_wire raises (the core's own methods
    cannot be patched: in the compiled build it is a native class)."""

    def __init__(self, run: FuzzRun, index: int) -> None:
        self._core, self._run, self._index = run.core, run, index

    def __getattr__(self, name: str) -> object:
        return getattr(self._core, name)

    def from_wire(self, frame: bytes, now: float, csum_ok: bool = False) -> bool:
        if self._run.index == self._index:
            raise RuntimeError("planted")
        return self._core.from_wire(frame, now, csum_ok)


def test_an_exception_is_counted_by_site_with_a_reproducer(tmp_path: Path) -> None:
    run = FuzzRun(FuzzConfig(frames=200, seed=4, reproducer_dir=tmp_path))
    run.core = _FailsAtFrame(run, 150)  # type: ignore[assignment]
    report = run.run()
    (site,) = report.exceptions
    assert "RuntimeError: planted" in site and report.exceptions[site] == 1
    saved = json.loads(Path(report.reproducers[site]).read_text())
    assert (saved["seed"], saved["policy"], saved["frame_index"]) == (4, "fallback", 150)
    assert saved["replay"] == "toelab fuzz --policy fallback --seed 4 --frames 151"
    assert saved["recent_frames"][-1]["index"] == 150 and "planted" in saved["traceback"]


def test_coverage_guided_inputs_play_on_a_fresh_engine() -> None:
    pytest.importorskip("atheris")
    import random

    from toe_engine.fuzz.guided import run_input

    rng = random.Random(7)
    for size in range(0, 2000, 5):
        run_input(rng.randbytes(size))
    for policy in POLICIES:
        run_input(bytes(range(256)) * 4, policy)


def test_engines_echo_through_mutating_wires_whole_or_as_a_prefix_and_leak_nothing() -> None:
    from toe_engine.fuzz.mutation import MUTATIONS, mutated_echo

    results = [mutated_echo(seed, size=100_000, rate=0.05) for seed in range(60)]
    assert [r.exceptions for r in results if r.exceptions] == []
    assert [r.leftovers for r in results if r.leftovers] == []
    assert all(r.prefix for r in results)
    # preconditions: the mutations happened, some transfers survived them and some did not
    assert set().union(*(r.mutations for r in results)) == set(MUTATIONS)
    assert 10 < sum(r.intact for r in results) < 60
