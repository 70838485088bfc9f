"""Every `toelab bench NAME` writes rows in the benchmark convention (DESIGN.md, "Benchmarks").

Benchmarks that need root and minutes are checked from recorded measurements (figures of
earlier runs on this machine), through the same row-building functions the benchmarks call;
`bench core` runs for real, briefly, through the command line.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import get_type_hints

import pytest
from rich.table import Table

import toelab.bench as bench_command
from scenarios.queues import BurstRow, CoalescingRow
from toelab.bench import BENCHES, NAMES, Bench
from toelab.benches import engine, flood, http_setup, lab, loss, middlebox, queues, syn_path
from toelab.benches.rows import BadRow, Measured, Row, check_row, row

ROOT = Path(__file__).resolve().parents[2]


def recorded_loss() -> list[Row]:
    runs = []
    for setting, _ in loss.SETTINGS:
        for kind, size in (("download", 3 * loss.MIB), ("echo", loss.MIB)):
            counters = {name: 2 for name in loss.ENGINE_COUNTERS.values()}
            runs += [loss.Run(kind, setting, "kernel", size, size, 0.1, True, {}),
                     loss.Run(kind, setting, "kernel-reno", size, size, 0.2, True, {}),
                     loss.Run(kind, setting, "toe", size, size // 2, 30.0, False, counters)]
    return loss.rows(runs)


#: Per benchmark, its rows from a recorded measurement. A benchmark added to BENCHES needs one here.
RECORDED: dict[str, Callable[[], list[Row]]] = {
    "lab": lambda: lab.lab_rows(10, {"build_ms": 212.4, "down_ms": 95.0, "per_node_ms": 21.24},
                                {"build_ms": 2950.0, "down_ms": 1210.5, "per_node_ms": 295.0}),
    "core": lambda: engine.core_rows([("MSS frames, software checksums", 27.4, 23210),
                                      ("64 KiB super-frames (TSO+GSO)", 412.0, 600)],
                                     [(1, 14.2), (1000, 14.6), (64000, 15.9)], 20000),
    "engine": lambda: (engine.endpoint_rows(True, {"gbit": 28.07, "iperf_gbit": 30.1},
                                            {"gbit": 12.58, "cores": 1.0})
                       + engine.endpoint_rows(True, {"gbit": 21.6, "iperf_gbit": 30.1},
                                              {"gbit": 16.2, "cores": 0.99}, engine.BUSY_POLL_US)
                       + http_setup.http_rows(http_setup.SideTotals(33_801, 0, 0, 3.0, 0.87, 0.92, 152_105, 152_104,
                                                                    [11_000.0, 11_534.0]),
                                              http_setup.SideTotals(13_500, 0, 0, 3.0, 0.58, 2.01, 54_000, 27_000,
                                                                    [4_400.0, 4_600.0]),
                                              http_setup.SideTotals(24_800, 0, 0, 3.0, 0.92, 0.61, 99_200, 49_600,
                                                                    [8_200.0, 8_300.0]),
                                              http_setup.SideTotals(81_000, 0, 0, 3.0, 0.45, 0.33, 324_000, 162_000,
                                                                    [27_000.0, 27_100.0]),
                                              http_setup.SideTotals(21_000, 0, 0, 3.0, 0.9, 0.5, 84_000, 42_000,
                                                                    [7_000.0, 7_100.0]),
                                              http_setup.MemoryCost(114.9, 4.0, 2.0),
                                              http_setup.MemoryCost(131.2, 4.0, 2.0))
                       + engine.endpoint_rows(False, {"gbit": 7.55, "iperf_gbit": 8.0},
                                              {"gbit": 0.43, "cores": 1.0})
                       + queues.scaling_rows({"gbit": 0.5, "cores": 1.0},
                                             {"gbit": 0.8, "cores": 1.9, "rx_queue_0_frames": 9e4,
                                              "rx_queue_1_frames": 8e4})),
    "middlebox": lambda: middlebox.middlebox_rows(
        middlebox.Forwarding("kernel router (GRO off)", [19.16, 21.0, 18.5], 21.8, 0.0, 12.0),
        [middlebox.Forwarding("engine, router mode", [10.15, 9.8, 10.4], 11.3, 5.3, 3.4),
         middlebox.Forwarding("engine, bridge mode", [14.92, 13.0, 15.1], 16.0, 6.9, 4.8)],
        middlebox.Forwarding(middlebox.CEILING, [15.6, 16.2, 14.9], 18.0, 4.5, 5.0),
        middlebox.Forwarding(middlebox.SPINNING, [17.0, 16.5, 17.2], 19.0, 9.5, 5.5, polls=True))
    + middlebox.router_cost_rows([("64 KiB GSO super-frame", 0.72, 4.81), ("pure ACK", 0.5, 1.61)]),
    "flood": lambda: flood.flood_rows(9100.0, [(1, 251_000.0), (2, 402_000.0)]),
    "loss": recorded_loss,
    "rings": lambda: queues.ring_rows([BurstRow(64, 266240, 60000, 9000, 51000),
                                       BurstRow(16384, 34603008, 60000, 60000, 0)]),
    "coalescing": lambda: queues.coalescing_rows([CoalescingRow(0, 180.0, 900.0, 60.0, 0.4, 2.5),
                                                  CoalescingRow(1000, 1150.0, 2100.0, 40.0, 0.5, 1.9)]),
    "syn_path": lambda: syn_path.syn_path_rows([("answered with a cookie", 20.1, 5.0),
                                                ("dropped and counted (deny)", 7.9, 2.5),
                                                (syn_path.RUNTIME_LABEL, 23.6, 7.7)]),
    "syn_queues": lambda: queues.syn_queue_rows(200_000, {"sent": 400_000, "flood_s": 2.0, "answered": 42_854,
                                                          "missed": 357_146},
                                                {"sent": 400_000, "flood_s": 2.0, "answered": 63_186,
                                                 "missed": 336_814}),
}


def test_every_benchmark_has_a_recorded_measurement_here() -> None:
    assert sorted(RECORDED) == sorted(NAMES)


@pytest.mark.parametrize("bench", BENCHES, ids=NAMES)
def test_every_benchmark_function_returns_a_table_and_rows(bench: Bench) -> None:
    assert get_type_hints(bench.load())["return"] is Measured


@pytest.mark.parametrize("name", NAMES)
def test_rows_follow_the_convention(name: str) -> None:
    rows = RECORDED[name]()
    assert rows
    for r in rows:
        assert check_row(r, name) is r
        assert json.loads(json.dumps(r, allow_nan=False)) == r
    measurements = [r["measurement"] for r in rows]
    assert len(set(measurements)) == len(measurements), "each row is a different figure"


def test_the_figures_land_where_the_convention_puts_them() -> None:
    lab_build = RECORDED["lab"]()[0]
    assert (lab_build["reference"], lab_build["engine"], lab_build["ratio"]) == (2950.0, 212.4, 0.072)
    core = RECORDED["core"]()
    assert [r["reference"] for r in core] == [None, None, None, 14.2, 14.2], "per-frame cost against 1 connection"
    assert core[4]["ratio"] == 1.12 and core[4]["connections"] == 64000
    engine_rows = {r["measurement"]: r for r in RECORDED["engine"]()}
    polled = engine_rows[f"bulk to discard, offloads on, busy-poll {engine.BUSY_POLL_US} µs"]
    assert (polled["reference"], polled["engine"], polled["ratio"], polled["busy_poll_us"]) == (21.6, 16.2, 0.75, 100)
    assert engine_rows[f"engine CPU per Gbit/s, offloads on, busy-poll {engine.BUSY_POLL_US} µs"]["cores"] == 0.99
    assert engine_rows["bulk to discard, offloads on"]["busy_poll_us"] == 0
    bulk_off = engine_rows["bulk to discard, offloads off"]
    assert (bulk_off["reference"], bulk_off["engine"], bulk_off["ratio"]) == (7.55, 0.43, 0.057)
    polling = engine_rows[http_setup.POLLING_MEASUREMENT]
    assert (polling["reference"], polling["engine"], polling["ratio"]) == (11267, 7000, 0.621)
    assert polling["round_ratios"] == [0.636, 0.616] and str(engine.BUSY_POLL_US) in polling["measurement"]
    http = engine_rows["HTTP connection setups (connect, GET, close)"]
    assert (http["unit"], http["reference"], http["engine"], http["ratio"]) == ("1/s", 11267, 4500, 0.399)
    assert (http["engine_segments_per_conn"], http["kernel_segments_per_conn"]) == (6.0, 9.0)
    assert http["engine_cpu_us_per_conn"] == 148.9 and http["client_cpu_us_per_conn"] == 43.0
    assert http["round_ratios"] == [0.4, 0.399] and http["rounds"] == 2
    runtime = engine_rows["HTTP connection in memory through the endpoint runtime, no system calls "
                          "(reference: the core alone)"]
    assert (runtime["reference"], runtime["engine"], runtime["ratio"]) == (114.9, 131.2, 1.142)
    forwarding = RECORDED["middlebox"]()
    assert [r["ratio"] for r in forwarding] == [0.53, None, 1.399, 0.779, None, 1.328, 0.814, None, 0.959,
                                                0.887, None, 1.434, 0.651, 1.876, 0.956, 1.725, 0.15, 0.311], \
        "medians: 10.15 / 19.16 ...; chains: (3.4 + 5.3) / 11.3 against 12.0 / 21.8 ...; against the ceiling: " \
        "10.15 / 15.6, (5.3 / 11.3) / (4.5 / 18.0) ..."
    assert middlebox.CEILING in forwarding[6]["measurement"] and "user-space ceiling" in forwarding[6]["measurement"]
    assert middlebox.SPINNING in forwarding[9]["measurement"] and forwarding[10]["engine"] == 0.5
    assert forwarding[13]["engine_own_core_s_per_gb"] == 0.219 and forwarding[12]["round_ratios"] == [0.651, 0.605, 0.698]
    assert (forwarding[0]["best_ratio"], forwarding[12]["best_ratio"]) == (0.495, 0.642), "10.4 / 21.0, 10.4 / 16.2"
    assert forwarding[2]["reference"] == 0.5505 and forwarding[2]["ends_core_s_per_gb"] == 0.3009
    assert forwarding[0]["kernel_runs"] == [19.16, 21.0, 18.5] and forwarding[1]["engine"] == 0.469
    assert forwarding[0]["round_ratios"] == [0.53, 0.467, 0.562] and forwarding[0]["rounds"] == 3
    assert [(r["workers"], r["ratio"]) for r in RECORDED["flood"]()] == [(1, 27.582), (2, 44.176)]
    incomplete = RECORDED["loss"]()[0]
    assert incomplete["engine_complete"] is False and incomplete["ratio"] == round(
        incomplete["engine"] / incomplete["reference"], 3)


@pytest.mark.parametrize(("change", "why"), [
    ({"ratio": 0.6}, "ratio 0.6 is not engine/reference = 0.5"),
    ({"reference": None}, "ratio must be null when reference is None"),
    ({"reference": 0}, "ratio must be null when reference is 0"),
    ({"engine": float("nan"), "ratio": None, "reference": None}, "engine: must be a finite number"),
    ({"engine": True}, "engine: Input should be a valid number"),
    ({"unit": None}, "unit: Input should be a valid string"),
    ({"measurement": " "}, "measurement: must not be empty"),
    ({"extra": {1, 2}}, "is not JSON"),
])
def test_a_row_outside_the_convention_is_refused_saying_why(change: dict[str, object], why: str) -> None:
    good = {"bench": "core", "measurement": "m", "unit": "µs", "reference": 2.0, "engine": 1.0, "ratio": 0.5}
    with pytest.raises(BadRow, match=why.replace("(", r"\(")):
        check_row(good | change)


def test_a_missing_field_and_a_row_of_another_bench_are_refused() -> None:
    with pytest.raises(BadRow, match="ratio: Field required"):
        check_row({"bench": "core", "measurement": "m", "unit": "", "reference": None, "engine": 1})
    with pytest.raises(BadRow, match="says bench 'engine', but 'core' made it"):
        check_row(row("engine", "m", "", None, 1), "core")


def _args(tmp_path: Path, *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench_command.add_arguments(parser)
    return parser.parse_args([*argv, "--json", str(tmp_path / "out" / "rows.json")])


def first(args: argparse.Namespace) -> Measured:
    return Measured(Table(), [row("first", "a", "1/s", 2, 1), row("first", "b", "1/s", None, 3)])


def second(args: argparse.Namespace) -> Measured:
    return Measured(Table(), [row("second", "c", "s", 4, 2)])


def broken(args: argparse.Namespace) -> Measured:
    raise RuntimeError("the lab would not build")


def test_all_benchmarks_write_one_file_even_when_a_later_one_fails(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    benches = tuple(Bench(name, f"{__name__}:{name}", needs_root=False) for name in ("first", "second", "broken"))
    monkeypatch.setattr(bench_command, "BENCHES", benches)
    monkeypatch.setattr(bench_command, "NAMES", ("first", "second", "broken"))
    args = _args(tmp_path, "first", "second")
    assert bench_command.run(args) == 0
    written = json.loads(args.json.read_text())
    assert [(r["bench"], r["measurement"], r["ratio"]) for r in written] == [
        ("first", "a", 0.5), ("first", "b", None), ("second", "c", 0.5)]
    assert all(isinstance(r["load_before"], float) and r["load_before"] >= 0 for r in written)
    args = _args(tmp_path)
    with pytest.raises(RuntimeError, match="would not build"):
        bench_command.run(args)
    assert [r["measurement"] for r in json.loads(args.json.read_text())] == ["a", "b", "c"]


def test_json_to_a_directory_is_one_sentence_before_anything_runs(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "toelab", "bench", "core", "--json", str(tmp_path)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 2
    assert done.stderr.strip().endswith(f"--json {tmp_path}: is a directory; give a file name")
    assert list(tmp_path.iterdir()) == []


def test_bad_connection_counts_are_refused() -> None:
    done = subprocess.run([sys.executable, "-m", "toelab", "bench", "core", "--core-connections", "1,0"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 2 and "'1,0': every connection count must be at least 1" in done.stderr


def test_bench_core_runs_and_writes_its_rows(tmp_path: Path) -> None:
    out = tmp_path / "core.json"
    done = subprocess.run([sys.executable, "-m", "toelab", "bench", "core", "--core-mib", "0.25",
                           "--core-connections", "1,64", "--core-frames", "300", "--json", str(out)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "6 rows written to" in done.stdout and "in-order 1448 B data frame, 64" in done.stdout
    rows = json.loads(out.read_text())
    for r in rows:
        check_row(r, "core")
    assert len({r["load_before"] for r in rows}) == 1, "one load reading per benchmark"
    assert [r["measurement"] for r in rows] == [f"bulk echo, {label}" for label, *_ in engine.CORE_BULK] + [
        "in-order 1448 B data frame, 1 connections open", "in-order 1448 B data frame, 64 connections open",
        "in-order 1448 B data frame through the runtime, 64 per batch, receive GRO on (reference: off)"]
    bulk, (one, many), gro = rows[:3], rows[3:5], rows[5]
    assert gro["engine"] > 0 and gro["reference"] > 0, "both sides of the receive-GRO row measured (speed is the bench's)"
    assert all(r["engine"] > 0 and r["frames"] > 0 for r in bulk)
    assert bulk[2]["frames"] < bulk[0]["frames"], "super-frames carry the same bytes in fewer frames"
    assert one["reference"] is None and many["reference"] == one["engine"] > 0
    assert (many["connections"], many["frames"]) == (64, 300)


def test_a_busy_polling_middlebox_is_set_against_the_busy_polling_ceiling_and_a_sleeping_one_against_the_sleeping() -> None:
    kernel = middlebox.Forwarding(middlebox.KERNEL, [20.0, 20.0, 20.0], 21.0, 0.0, 12.0)
    sleeping = middlebox.Forwarding("engine, router mode", [11.0, 12.0, 13.0], 12.0, 5.0, 4.0)
    polling = middlebox.Forwarding("engine, router mode, busy-polling 100 µs", [14.0, 15.0, 16.0], 15.0, 7.5, 5.0,
                                   polls=True)
    ceiling = middlebox.Forwarding(middlebox.CEILING, [11.0, 11.5, 12.5], 12.0, 4.8, 4.0)
    spinning = middlebox.Forwarding(middlebox.SPINNING, [15.0, 14.5, 16.5], 15.0, 7.0, 5.0, polls=True)
    rows = {r["measurement"]: r for r in middlebox.middlebox_rows(kernel, [sleeping, polling], ceiling, spinning)}
    against = {name: r for name, r in rows.items() if "(reference: the user-space ceiling" in name and r["unit"] == "Gbit/s"}
    assert len(against) == 2
    (slept,) = [r for name, r in against.items() if name.startswith(f"forwarding h1 -> mb -> h2 (iperf3), {sleeping.label} (")]
    (polled,) = [r for name, r in against.items() if polling.label in name]
    assert (slept["reference"], slept["ratio"]) == (11.5, 1.043) and "busy-polling)" not in slept["measurement"]
    assert (polled["reference"], polled["ratio"]) == (15.0, 1.0) and polled["measurement"].endswith("busy-polling)")
    own = rows[f"middlebox CPU per GB forwarded, {polling.label} (reference: the user-space ceiling, a bare AF_PACKET "
               "forwarder busy-polling)"]
    assert own["engine_own_core_s_per_gb"] == round(7.5 / 15.0 - 7.0 / 15.0, 4)
