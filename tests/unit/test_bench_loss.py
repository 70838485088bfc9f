"""`toelab bench loss` without root: its rows follow the benchmark convention, from runs measured elsewhere."""
from __future__ import annotations

import pytest

from scenarios.targets import UnknownCounter, delta
from toelab.benches.loss import ENGINE_COUNTERS, MIB, SETTINGS, Run, rows, table


def runs(engine_seconds: float = 1.0) -> list[Run]:
    out = []
    for setting, _ in SETTINGS:
        for kind, size in (("download", 3 * MIB), ("echo", MIB)):
            out.append(Run(kind, setting, "kernel", size, size, 0.1, True, {}))
            out.append(Run(kind, setting, "kernel-reno", size, size, 0.2, True, {}))
            counters = {name: 0 for name in ENGINE_COUNTERS.values()} | {"rto_expired": 3, "tlp_probes": 6}
            out.append(Run(kind, setting, "toe", size, size, engine_seconds, engine_seconds < 30, counters))
    return out


def test_one_row_per_transfer_and_setting_with_the_kernel_as_reference() -> None:
    data = rows(runs())
    assert [r["measurement"] for r in data][:5] == ["download, loss=0%", "download, loss=1%", "download, loss=5%",
                                                    "download, loss=10%", "download, gemodel=1/50/50"]
    assert len(data) == 2 * len(SETTINGS)
    row = data[3]
    assert {k: row[k] for k in ("bench", "unit", "reference", "engine", "ratio")} == {
        "bench": "loss", "unit": "Mbit/s", "reference": 251.66, "engine": 25.17, "ratio": 0.1}
    assert (row["reno_reference"], row["reno_ratio"]) == (125.83, 0.2)
    assert row["engine_rto_per_mib"] == 1.0 and row["engine_tlp_per_mib"] == 2.0, "per MiB of the 3 MiB moved"
    assert data[5]["engine_rto_per_mib"] == 3.0, "the echo moved 1 MiB"
    assert "download, loss=10%" in str(table(data).columns[0]._cells)


def test_an_incomplete_engine_transfer_is_shown_so() -> None:
    data = rows(runs(engine_seconds=30.0))
    assert not data[0]["engine_complete"]
    assert "(incomplete)" in str(table(data).columns[2]._cells)


def test_a_counter_the_engine_lacks_is_an_error_not_zero() -> None:
    with pytest.raises(UnknownCounter, match="rack_retransmits"):
        delta({"rto_expired": 0}, {"rto_expired": 2}, *ENGINE_COUNTERS.values())


def test_the_bench_says_in_one_sentence_which_counter_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    import toelab.benches.loss as bench

    def measure(endpoint: str, repeats: int, congestion: str | None = None, engine_cc: str | None = None) -> list[Run]:
        if endpoint == "toe":
            delta({}, {"rto_expired": 1}, *ENGINE_COUNTERS.values())
        return []
    monkeypatch.setattr(bench, "measure_endpoint", measure)
    with pytest.raises(bench.MissingCounter, match="no counter 'fast_retransmits', 'rack_retransmits'") as info:
        bench.bench_loss(argparse.Namespace(repeats=1, json=None))
    assert info.value.exit_code == 1 and "\n" not in str(info.value)


@pytest.mark.parametrize("engine_cc", [None, "bbr"])
def test_the_engine_runs_the_congestion_control_asked_for_and_each_row_names_it(
        monkeypatch: pytest.MonkeyPatch, engine_cc: str | None) -> None:
    import argparse

    import toelab.benches.loss as bench

    asked: list[str | None] = []

    def measure(endpoint: str, repeats: int, congestion: str | None = None, engine_cc: str | None = None) -> list[Run]:
        if endpoint == "toe":
            asked.append(engine_cc)
        label = endpoint if congestion is None else f"{endpoint}-{congestion}"
        return [r for r in runs() if r.endpoint == label]
    monkeypatch.setattr(bench, "measure_endpoint", measure)
    measured = bench.bench_loss(argparse.Namespace(repeats=1, json=None, engine_cc=engine_cc))
    assert asked == [engine_cc]
    assert {r["engine_cc"] for r in measured.rows} == {engine_cc or "newreno"}
