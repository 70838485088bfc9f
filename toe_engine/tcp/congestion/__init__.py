"""Congestion control algorithms, chosen by name in TcpConfig.congestion."""
from __future__ import annotations

from toe_engine.tcp.congestion.base import CongestionControl
from toe_engine.tcp.congestion.bbr import Bbr
from toe_engine.tcp.congestion.cubic import Cubic
from toe_engine.tcp.congestion.newreno import NewReno

ALGORITHMS: dict[str, type[CongestionControl]] = {NewReno.name: NewReno, Cubic.name: Cubic, Bbr.name: Bbr}


def create(name: str, mss: int, initial_window_segments: int) -> CongestionControl:
    """Instantiate the algorithm called `name`; ValueError names the known ones.

    Each class is called by its own name, once per connection: one taken from ALGORITHMS is called
    as a Python object in the compiled build (its __init__ arguments parsed as a Python call's)."""
    if name == NewReno.name:
        return NewReno(mss, initial_window_segments)
    if name == Cubic.name:
        return Cubic(mss, initial_window_segments)
    if name == Bbr.name:
        return Bbr(mss, initial_window_segments)
    raise ValueError(f"unknown congestion control {name!r}; known: {', '.join(sorted(ALGORITHMS))}")


__all__ = ["ALGORITHMS", "Bbr", "CongestionControl", "Cubic", "NewReno", "create"]
