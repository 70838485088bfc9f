"""What runs the sans-IO engine on real interfaces: the event loop and the frame forwarder."""
from __future__ import annotations

from toe_engine.runtime.forwarder import Forwarder, Stage, TimedStage
from toe_engine.runtime.loop import EventLoop, LoopStats, TimerHandle

__all__ = ["EventLoop", "Forwarder", "LoopStats", "Stage", "TimedStage", "TimerHandle"]
