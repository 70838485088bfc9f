"""bench engine's bulk rows from kernel/engine pairs: medians of each side, the pairs' own ratios."""
from __future__ import annotations

from toelab.benches.engine import endpoint_rows, paired_medians


def test_each_side_is_the_median_of_its_repeats_and_the_pairs_ratios_are_kept() -> None:
    pairs = [({"gbit": 20.0, "frames_per_ack": 1.0}, {"gbit": 10.0, "cores": 0.9, "frames_per_ack": 2.0}),
             ({"gbit": 10.0, "frames_per_ack": 3.0}, {"gbit": 8.0, "cores": 1.0, "frames_per_ack": 4.0}),
             ({"gbit": 16.0, "frames_per_ack": 2.0}, {"gbit": 12.0, "cores": 0.8, "frames_per_ack": 6.0})]
    kernel, engine = paired_medians(pairs)
    assert kernel == {"gbit": 16.0, "frames_per_ack": 2.0}
    assert (engine["gbit"], engine["cores"], engine["frames_per_ack"]) == (10.0, 0.9, 4.0)
    assert (engine["ratio"], engine["ratio_min"], engine["ratio_max"], engine["repeats"]) == (0.75, 0.5, 0.8, 3)
    on, cpu = endpoint_rows(True, {**kernel, "iperf_gbit": 30.0}, engine)
    assert (on["reference"], on["engine"], on["ratio"]) == (16.0, 10.0, 0.625)  # medians' ratio, as every row's
    assert (on["pair_ratio"], on["pair_ratio_min"], on["pair_ratio_max"], on["repeats"]) == (0.75, 0.5, 0.8, 3)
    assert cpu["engine"] == round(0.9 / 10.0, 3)


def test_one_transfer_each_is_its_own_median() -> None:
    kernel, engine = paired_medians([({"gbit": 9.0}, {"gbit": 3.0, "cores": 0.5})])
    assert kernel["gbit"] == 9.0 and engine["ratio"] == engine["ratio_min"] == engine["ratio_max"] == 3.0 / 9.0
