"""The judging helpers of the rfc9293 and reordering scenarios fail on wrong behaviour, not only pass on right.

The scenarios themselves run in tests/lab/test_scenarios_kernel.py; these feed the helpers the
evidence a broken TCP would produce (an RFC 793 urgent pointer, wrong SACK blocks, predictable
ISNs) and need no root.
"""
from __future__ import annotations

import random

from scenarios.reordering import Reply, _merge, _sack_fault
from scenarios.rfc9293 import CHI2_15DF_P001, _chi_square, _seq_diff, _urgent_verdict


def test_urgent_verdict_accepts_inline_and_out_of_band_and_rejects_rfc793_pointer() -> None:
    stream = bytes(range(100))
    assert _urgent_verdict(stream, stream, 50)[0]
    assert _urgent_verdict(stream, stream[:49] + stream[50:], 50)[0]
    ok, sentence = _urgent_verdict(stream, stream[:50] + stream[51:], 50)
    assert not ok and "last urgent octet" in sentence
    assert not _urgent_verdict(stream, stream[:-1], 50)[0]


def _reply(piece: tuple[int, int], held_before: list[tuple[int, int]], sack: list[tuple[int, int]]) -> Reply:
    after = _merge(held_before + [piece])
    overlap = [(max(a, piece[0]), min(b, piece[1])) for a, b in held_before if a < piece[1] and piece[0] < b]
    return Reply(piece, "ooo", 0, after, overlap, ack=0, sack=sack)


def test_sack_fault_names_each_rfc2018_violation() -> None:
    held = [(100, 200), (300, 400), (500, 600), (700, 800)]
    right = _reply((900, 1000), held, [(900, 1000), (700, 800), (500, 600), (300, 400)])
    assert _sack_fault(right) == ""
    assert "first block" in _sack_fault(_reply((900, 1000), held, [(700, 800), (900, 1000)]))
    assert "not all ranges" in _sack_fault(_reply((900, 1000), held, [(900, 1000), (700, 790)]))
    assert "blocks for" in _sack_fault(_reply((900, 1000), held, [(900, 1000), (700, 800)]))
    assert "repeat" in _sack_fault(_reply((900, 1000), held, [(900, 1000), (700, 800), (700, 800), (500, 600)]))
    assert _sack_fault(_reply((900, 1000), held, [])) == "no SACK block"


def test_sack_fault_accepts_a_dsack_block_before_the_sack_blocks() -> None:
    reply = _reply((150, 350), [(300, 400)], [(300, 350), (150, 400)])
    assert _sack_fault(reply) == ""
    assert "first block" in _sack_fault(_reply((150, 350), [(300, 400)], [(300, 350), (300, 400)]))


def test_isn_statistics_flag_a_counter_and_pass_a_prf() -> None:
    rng = random.Random(7)
    prf = [rng.getrandbits(32) for _ in range(200)]
    deltas = [(b - a) % (1 << 32) for a, b in zip(prf, prf[1:])]
    assert _chi_square([d >> 28 for d in deltas], 16) < CHI2_15DF_P001
    counter = [(64000 * i) % (1 << 32) for i in range(200)]
    steps = [(b - a) % (1 << 32) for a, b in zip(counter, counter[1:])]
    assert _chi_square([d >> 28 for d in steps], 16) > CHI2_15DF_P001
    assert _seq_diff(5, (1 << 32) - 5) == 10 and _seq_diff(0, 10) == -10
