"""`toelab bench loss` without root: its rows follow the benchmark convention, from runs measured elsewhere."""
from __future__ import annotations

import argparse

import pytest

import toelab.benches.loss as bench
from scenarios.targets import UnknownCounter, delta
from toelab.benches.loss import ENGINE_COUNTERS, KERNEL_CC, MIB, SETTINGS, Run, rows, table

#: Kernel runs by label: (seconds per transfer, congestion control it ran).
KERNEL = {"kernel": (0.1, "bbr"), "kernel-reno": (0.2, "reno"), "kernel-cubic": (0.4, "cubic"),
          "kernel-bbr": (0.1, "bbr")}


def runs(engine_seconds: float = 1.0, kernels: tuple[str, ...] = ("kernel", "kernel-reno"),
         engine_cc: str = "newreno") -> list[Run]:
    out = []
    for setting, _ in SETTINGS:
        for kind, size in (("download", 3 * MIB), ("echo", MIB)):
            for label in kernels:
                seconds, cc = KERNEL[label]
                out.append(Run(kind, setting, label, size, size, seconds, True, {}, cc))
            counters = {name: 0 for name in ENGINE_COUNTERS.values()} | {"rto_expired": 3, "tlp_probes": 6}
            out.append(Run(kind, setting, "toe", size, size, engine_seconds, engine_seconds < 30, counters, engine_cc))
    return out


def test_one_row_per_transfer_and_setting_with_the_like_for_like_kernel_as_reference() -> None:
    data = rows(runs())
    assert [r["measurement"] for r in data][:5] == ["download, loss=0%", "download, loss=1%", "download, loss=5%",
                                                    "download, loss=10%", "download, gemodel=1/50/50"]
    assert len(data) == 2 * len(SETTINGS)
    row = data[3]
    assert {k: row[k] for k in ("bench", "unit", "reference", "engine", "ratio", "kernel_cc")} == {
        "bench": "loss", "unit": "Mbit/s", "reference": 125.83, "engine": 25.17, "ratio": 0.2, "kernel_cc": "reno"}
    assert (row["default_reference"], row["default_ratio"], row["kernel_default_cc"]) == (251.66, 0.1, "bbr")
    assert row["kernel_seconds"] == 0.2 and row["default_seconds"] == 0.1, "the reference's time is the like one's"
    assert row["engine_rto_per_mib"] == 1.0 and row["engine_tlp_per_mib"] == 2.0, "per MiB of the 3 MiB moved"
    assert data[5]["engine_rto_per_mib"] == 3.0, "the echo moved 1 MiB"


@pytest.mark.parametrize("engine_cc", sorted(KERNEL_CC))
def test_the_reference_is_the_kernel_running_the_engines_algorithm(engine_cc: str) -> None:
    like = f"kernel-{KERNEL_CC[engine_cc]}"
    data = rows(runs(kernels=(like, "kernel"), engine_cc=engine_cc), engine_cc)
    seconds = KERNEL[like][0]
    assert data[0]["reference"] == round(3 * MIB * 8 / seconds / 1e6, 2)
    assert data[0]["kernel_cc"] == KERNEL_CC[engine_cc] and data[0]["kernel_default_cc"] == "bbr"


def test_where_the_default_is_the_matching_algorithm_both_columns_are_that_run() -> None:
    data = rows(runs(kernels=("kernel-bbr",), engine_cc="bbr"), "bbr")
    assert data[0]["reference"] == data[0]["default_reference"] and data[0]["ratio"] == data[0]["default_ratio"]
    assert data[0]["kernel_default_cc"] == "bbr"


def test_the_table_says_which_kernel_is_which() -> None:
    data = rows(runs())
    for each in data:
        each["engine_cc"] = "newreno"
    t = table(data)
    headers = [str(c.header) for c in t.columns]
    assert headers[1] == "kernel reno Mbit/s" and headers[4] == "kernel bbr" and headers[3] == "engine/kernel"
    assert "like for like" in str(t.title) and "newreno" in str(t.title)
    assert "download, loss=10%" in str(t.columns[0]._cells)


def test_an_incomplete_engine_transfer_is_shown_so() -> None:
    data = rows(runs(engine_seconds=30.0))
    assert not data[0]["engine_complete"]
    assert "(incomplete)" in str(table(data).columns[2]._cells)


def test_a_counter_the_engine_lacks_is_an_error_not_zero() -> None:
    with pytest.raises(UnknownCounter, match="rack_retransmits"):
        delta({"rto_expired": 0}, {"rto_expired": 2}, *ENGINE_COUNTERS.values())


def test_the_bench_says_in_one_sentence_which_counter_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    def measure(endpoints: list[bench.Endpoint], repeats: int) -> list[Run]:
        if any(e.endpoint == "toe" for e in endpoints):
            delta({}, {"rto_expired": 1}, *ENGINE_COUNTERS.values())
        return []
    monkeypatch.setattr(bench, "measure", measure)
    with pytest.raises(bench.MissingCounter, match="no counter 'fast_retransmits', 'rack_retransmits'") as info:
        bench.bench_loss(argparse.Namespace(repeats=1, json=None))
    assert info.value.exit_code == 1 and "\n" not in str(info.value)


@pytest.mark.parametrize(("engine_cc", "kernels"), [(None, ["reno", None]), ("cubic", ["cubic", None]),
                                                    ("bbr", ["bbr"])])
def test_the_kernel_runs_the_engines_algorithm_and_its_default_once(
        monkeypatch: pytest.MonkeyPatch, engine_cc: str | None, kernels: list[str | None]) -> None:
    asked: dict[str, list[str | None]] = {"kernel": [], "toe": []}
    cc = engine_cc or "newreno"

    def measure(endpoints: list[bench.Endpoint], repeats: int) -> list[Run]:
        for e in endpoints:
            asked[e.endpoint].append(e.congestion if e.endpoint == "kernel" else e.engine_cc)
        labels = {e.label for e in endpoints}
        return [r for r in runs(kernels=tuple(KERNEL), engine_cc=cc) if r.endpoint in labels]
    monkeypatch.setattr(bench, "measure", measure)
    monkeypatch.setattr(bench, "_default_cc", lambda: "bbr")
    measured = bench.bench_loss(argparse.Namespace(repeats=1, json=None, engine_cc=engine_cc))
    assert asked == {"kernel": kernels, "toe": [engine_cc]}
    assert {r["engine_cc"] for r in measured.rows} == {cc}
    assert {r["kernel_cc"] for r in measured.rows} == {KERNEL_CC[cc]}


def test_the_endpoints_take_turns_at_every_setting_and_repeat(monkeypatch: pytest.MonkeyPatch) -> None:
    """All labs are up before the first transfer and the endpoints alternate, so a busy moment of the
    machine falls on every endpoint alike; each endpoint keeps its label and the seeds are the setting's."""
    events: list[tuple[object, ...]] = []

    class FakeLab:
        def __init__(self, number: int) -> None:
            self.number = number

        def __enter__(self) -> FakeLab:
            events.append(("up", self.number))
            return self

        def __exit__(self, *exc: object) -> None:
            events.append(("down", self.number))

        def node(self, name: str) -> object:
            return type("Node", (), {"write_sysctls": lambda _self, sysctls: None})()

    class FakeTarget:
        def __init__(self, name: str) -> None:
            self.name = name

        def start(self, lab: FakeLab, node: str) -> dict[str, int]:
            return {"chargen": 19, "echo": 7}

        def stop(self) -> None:
            events.append(("stop", self.name))

    built = iter(range(10))
    monkeypatch.setattr(bench, "load_topology", lambda name, params: None)
    monkeypatch.setattr(bench.Lab, "up", lambda spec: FakeLab(next(built)))
    monkeypatch.setattr(bench, "make", FakeTarget)
    monkeypatch.setattr(bench, "_kernel_cc", lambda lab: "cubic")
    monkeypatch.setattr(bench, "impair_middlebox", lambda lab, impairments, seed: events.append(("seed", lab.number, seed)))

    def transfers(target: FakeTarget, lab: FakeLab, services: dict[str, int], setting: str, repeat: int,
                  counter_names: tuple[str, ...]) -> list[Run]:
        events.append(("run", lab.number, setting, repeat))
        return [Run("download", setting, target.name, 1, 1, 1.0, True, {})]
    monkeypatch.setattr(bench, "_transfers", transfers)
    got = bench.measure([bench.Endpoint("kernel", "reno"), bench.Endpoint("toe")], repeats=2)
    ran = [e for e in events if e[0] == "run"]
    assert events[:2] == [("up", 0), ("up", 1)]
    assert ran == [("run", lab, setting, repeat) for setting, _ in SETTINGS for repeat in (0, 1) for lab in (0, 1)]
    seeds = [e for e in events if e[0] == "seed"]
    assert seeds[:4] == [("seed", 0, bench.SEED), ("seed", 1, bench.SEED), ("seed", 0, bench.SEED + 1),
                         ("seed", 1, bench.SEED + 1)]
    assert [r.endpoint for r in got[:2]] == ["kernel-reno", "toe"]
    assert [r.congestion for r in got[:2]] == ["cubic", "newreno"]
    assert {("stop", "kernel"), ("stop", "toe"), ("down", 0), ("down", 1)} <= set(events[-4:])


def test_repeats_are_pooled_not_the_median_and_rtos_are_per_mib_of_all_repeats() -> None:
    """Two fast engine downloads and one slow: the row's goodput is total bytes over total time
    (the median would drop the slow one), its RTOs per MiB count all three."""
    out = []
    for seconds, rtos in ((1.0, 0), (1.0, 0), (4.0, 6)):
        for setting, _ in SETTINGS:
            for kind in ("download", "echo"):
                out.append(Run(kind, setting, "kernel-reno", 3 * MIB, 3 * MIB, 0.5, True,
                               {"TcpExtTCPTimeouts": 3, "TcpExtTCPLossProbes": 1}, "reno"))
                counters = {name: 0 for name in ENGINE_COUNTERS.values()} | {"rto_expired": rtos,
                                                                             "rto_lost_probe": rtos}
                out.append(Run(kind, setting, "toe", 3 * MIB, 3 * MIB, seconds, True, counters, "newreno"))
    row = rows(out)[2]
    assert row["measurement"] == "download, loss=5%" and row["repeats"] == 3
    assert row["engine"] == round(9 * MIB * 8 / 6.0 / 1e6, 2) and row["engine_seconds"] == 2.0
    assert row["reference"] == round(9 * MIB * 8 / 1.5 / 1e6, 2) and row["kernel_seconds"] == 0.5
    assert row["engine_rto_per_mib"] == round(6 / 9, 2) and row["engine_rto_lost_probe_per_mib"] == round(6 / 9, 2)
    assert row["kernel_rto_per_mib"] == 1.0 and row["kernel_tlp_per_mib"] == round(3 / 9, 2)
    assert "total bytes over total time" in row["pooled"]


def test_kernel_figures_are_none_without_its_counters_and_lossy_downloads_are_long() -> None:
    row = rows(runs())[2]
    assert row["kernel_rto_per_mib"] is None and row["engine_rto_other_per_mib"] == 0.0
    assert set(bench.DOWNLOAD_BYTES) == {setting for setting, _ in SETTINGS}
    assert all(bench.DOWNLOAD_BYTES[s] >= 8 * MIB for s in ("loss=1%", "loss=5%", "gemodel=1/50/50"))
    assert all(bench.DOWNLOAD_BYTES[s] >= 32 * MIB for s in ("loss=1%", "gemodel=1/50/50"))  # an RTO every 8-25 MiB
