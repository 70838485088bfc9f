"""Congestion control algorithms, chosen by name in TcpConfig.congestion."""
from __future__ import annotations

from toe_engine.tcp.congestion.base import CongestionControl
from toe_engine.tcp.congestion.bbr import Bbr
from toe_engine.tcp.congestion.cubic import Cubic
from toe_engine.tcp.congestion.newreno import NewReno

ALGORITHMS: dict[str, type[CongestionControl]] = {NewReno.name: NewReno, Cubic.name: Cubic, Bbr.name: Bbr}


def create(name: str, mss: int, initial_window_segments: int) -> CongestionControl:
    """Instantiate the algorithm called `name`; ValueError names the known ones."""
    try:
        cls = ALGORITHMS[name]
    except KeyError:
        raise ValueError(f"unknown congestion control {name!r}; known: {', '.join(sorted(ALGORITHMS))}") from None
    return cls(mss, initial_window_segments)


__all__ = ["ALGORITHMS", "Bbr", "CongestionControl", "Cubic", "NewReno", "create"]
