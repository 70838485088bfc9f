"""CPU accounting for the claim scenarios: what a node's processes and the machine's softirqs spent.

A namespace has no CPU counters of its own, so a node's cost is the user and system time of
the processes in its network namespace (/proc/PID/stat, found by their /proc/PID/ns/net),
which covers a kernel sender's TCP work done in its send calls and the engine's whole
process. Softirq time (where a receiving or forwarding kernel spends most) is the machine's,
from /proc/stat, and counts everything on the machine: it is evidence, read beside an idle
window of the same length taken just before, never a verdict on a shared machine.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lab.node import Node

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: /proc/stat cpu columns: user nice system idle iowait irq softirq steal; busy is all but idle and iowait
_BUSY = (0, 1, 2, 5, 6, 7)
_SOFTIRQ = 6


@dataclass(frozen=True)
class ProcessTimes:
    """CPU seconds per process (user + system) of one namespace at one moment, by PID, with its command."""

    seconds: dict[int, float]
    commands: dict[int, str]

    def since(self, before: ProcessTimes, *, matching: str = "", excluding: str = "") -> float:
        """CPU seconds spent since `before` by processes whose command holds `matching` and not `excluding`."""
        total = 0.0
        for pid, now in self.seconds.items():
            command = self.commands.get(pid, "")
            if matching and matching not in command or excluding and excluding in command:
                continue
            total += now - before.seconds.get(pid, 0.0)
        return total


@dataclass(frozen=True)
class MachineTimes:
    """The machine's busy and softirq CPU seconds (all CPUs) from /proc/stat."""

    busy: float
    softirq: float

    def __sub__(self, other: MachineTimes) -> MachineTimes:
        return MachineTimes(self.busy - other.busy, self.softirq - other.softirq)


def parse_proc_stat(text: str) -> MachineTimes:
    fields = [int(v) for v in text.splitlines()[0].split()[1:]]
    return MachineTimes(sum(fields[i] for i in _BUSY) / CLOCK_TICKS, fields[_SOFTIRQ] / CLOCK_TICKS)


def parse_pid_stat(text: str) -> float:
    """utime + stime of a /proc/PID/stat line, in seconds (the command may hold spaces and parentheses)."""
    fields = text.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_times() -> MachineTimes:
    return parse_proc_stat(Path("/proc/stat").read_text())


def parse_schedstat(text: str) -> float:
    """The run time of a /proc/PID/task/TID/schedstat line (its first field, nanoseconds), in seconds."""
    return int(text.split()[0]) / 1e9


def process_runtime(pid: int) -> float:
    """CPU seconds the threads of a live process have run, to the nanosecond (scheduler run time).

    /proc/PID/stat counts in clock ticks (10 ms): a batch of work costing a few milliseconds
    reads as 0 or 10. The scheduler's own run time has no such step; it misses threads that
    have exited, which the processes read here (the engine, lab.services) do not start.
    """
    total = 0.0
    for task in os.scandir(f"/proc/{pid}/task"):
        try:
            total += parse_schedstat(Path(task.path, "schedstat").read_text())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def namespace_times(node: Node, *, precise: bool = False) -> ProcessTimes:
    """CPU seconds of every process in `node`'s network namespace (`precise`: scheduler run time, not ticks)."""
    inode = os.stat(node.namespace_path).st_ino
    seconds: dict[int, float] = {}
    commands: dict[int, str] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry.name}/ns/net").st_ino != inode:
                continue
            seconds[int(entry.name)] = (process_runtime(int(entry.name)) if precise else
                                        parse_pid_stat(Path(f"/proc/{entry.name}/stat").read_text()))
            commands[int(entry.name)] = Path(f"/proc/{entry.name}/cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return ProcessTimes(seconds, commands)
