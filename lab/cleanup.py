"""Removing labs: by id from any process (`toelab down`), and the remains of dead owners (`toelab clean`).

Only what a lab record names is touched: its processes (by PID, checked against the recorded
start time so a recycled PID is never killed) and its namespaces. Processes are signalled
through pidfds, which keep pointing at the same process however long the wait.
"""
from __future__ import annotations

import os
import select
import shutil
import signal
import time
from collections.abc import Iterable

from .netns import delete as delete_namespace
from .state import STATE_DIR, LabRecord, ProcessRecord, is_alive, list_records, pick_record, remove_record

TERM_GRACE_S = 2.0
KILL_GRACE_S = 2.0


def _open_pidfds(processes: Iterable[ProcessRecord]) -> dict[int, tuple[ProcessRecord, int]]:
    pidfds = {}
    for proc in processes:
        if not is_alive(proc.pid, proc.start_time):
            continue
        try:
            fd = os.pidfd_open(proc.pid)
        except ProcessLookupError:
            continue
        if is_alive(proc.pid, proc.start_time):  # still the recorded process now that the pidfd pins it
            pidfds[fd] = (proc, fd)
        else:
            os.close(fd)
    return pidfds


def _signal(proc: ProcessRecord, pidfd: int, sig: signal.Signals) -> None:
    try:
        if proc.group:
            os.killpg(proc.pid, sig)
        else:
            signal.pidfd_send_signal(pidfd, sig)
    except ProcessLookupError:
        pass


def _wait_exited(pidfds: dict[int, tuple[ProcessRecord, int]], timeout_s: float) -> None:
    """Remove from `pidfds` each process that exits within the timeout (a pidfd turns readable)."""
    poller = select.poll()
    for fd in pidfds:
        poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + timeout_s
    while pidfds:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        for fd, _ in poller.poll(remaining * 1000):
            poller.unregister(fd)
            os.close(fd)
            del pidfds[fd]


def stop_processes(processes: Iterable[ProcessRecord]) -> None:
    """SIGTERM each recorded process (its group if it leads one), wait briefly, then SIGKILL."""
    pidfds = _open_pidfds(processes)
    try:
        for proc, fd in pidfds.values():
            _signal(proc, fd, signal.SIGTERM)
        _wait_exited(pidfds, TERM_GRACE_S)
        for proc, fd in pidfds.values():
            _signal(proc, fd, signal.SIGKILL)
        _wait_exited(pidfds, KILL_GRACE_S)
    finally:
        for fd in pidfds:
            os.close(fd)


def remove_lab(record: LabRecord) -> list[str]:
    """Kill the lab's processes, delete its namespaces, drop its record; the namespaces removed."""
    stop_processes(record.processes)
    removed = [name for name in record.namespaces if delete_namespace(name)]
    shutil.rmtree(STATE_DIR / record.lab_id, ignore_errors=True)  # the lab's runtime files (control sockets)
    remove_record(record.lab_id)
    return removed


def down_lab(lab_id: str) -> list[str]:
    """Tear down a lab by id from any process; the namespaces removed."""
    return remove_lab(pick_record(lab_id))



def clean() -> list[str]:
    """Remove every lab whose owning process died; return their ids.

    A lab with a live owner, and a detached lab (`toelab up`), are left alone.
    """
    removed = []
    for record in list_records():
        if record.detached or record.owner_alive():
            continue
        remove_lab(record)
        removed.append(record.lab_id)
    return removed
