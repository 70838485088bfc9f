"""Lab state records: /run/toelab/<labid>.json says what a lab made, so any process can remove it.

A record is written before the first namespace exists (naming every namespace the lab will
make) and rewritten as processes and captures are added. Each write is atomic (a temporary
file renamed over the record), so a reader never sees half a record. The owner is a PID plus
its start time from /proc/<pid>/stat, so a recycled PID is not mistaken for a live owner.
"""
from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import BackendError, LabError
from .netns import list_names

STATE_DIR = Path("/run/toelab")
LAB_ID_PREFIX = "tl"


def process_start_time(pid: int) -> int | None:
    """The start time (clock ticks since boot) of a process, or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # Fields after the command name (which may hold spaces and parentheses); starttime is field 22.
    return int(stat[stat.rindex(")") + 2:].split()[19])


def is_alive(pid: int, start_time: int | None) -> bool:
    """True if `pid` runs and is the same process that started at `start_time`."""
    current = process_start_time(pid)
    return current is not None and (start_time is None or current == start_time)


@dataclass
class ProcessRecord:
    pid: int
    start_time: int | None
    node: str
    argv: str
    group: bool  # the process leads its own process group, which is killed with it


@dataclass
class LabRecord:
    lab_id: str
    topology: str
    backend: str
    owner_pid: int | None  # None once detached (`toelab up`): only `toelab down` removes it
    owner_start_time: int | None
    created: float
    namespaces: list[str]
    status: str = "building"
    processes: list[ProcessRecord] = field(default_factory=list)
    captures: list[str] = field(default_factory=list)
    creator_pid: int | None = None  # who built it, kept when the lab is detached
    creator_ppid: int | None = None  # and its parent, so a test can tell its own children's labs
    spec: dict | None = None  # the validated topology (TopologySpec as JSON), so other processes can attach

    @property
    def path(self) -> Path:
        return record_path(self.lab_id)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    @property
    def detached(self) -> bool:
        return self.owner_pid is None

    def owner_alive(self) -> bool:
        return self.owner_pid is not None and is_alive(self.owner_pid, self.owner_start_time)

    def owner_description(self) -> str:
        if self.detached:
            return "detached"
        return f"pid {self.owner_pid}" + ("" if self.owner_alive() else " (dead)")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> LabRecord:
        data = json.loads(text)
        data["processes"] = [ProcessRecord(**p) for p in data.get("processes", [])]
        return cls(**data)

    def save(self) -> None:
        """Rewrite the record atomically."""
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(self.to_json())
        os.replace(tmp, self.path)


def record_path(lab_id: str) -> Path:
    return STATE_DIR / f"{lab_id}.json"


def namespace_name(lab_id: str, node: str) -> str:
    return f"{lab_id}-{node}"


def _id_in_use(lab_id: str) -> bool:
    return record_path(lab_id).exists() or any(name.startswith(lab_id + "-") for name in list_names())


def unused_lab_id() -> str:
    """A lab id no record and no namespace uses (for backends that keep no record)."""
    for _ in range(64):
        lab_id = LAB_ID_PREFIX + secrets.token_hex(2)
        if not _id_in_use(lab_id):
            return lab_id
    raise BackendError(f"could not find an unused lab id in {STATE_DIR}")


def create_record(topology: str, backend: str, nodes: list[str], spec: dict | None = None) -> LabRecord:
    """Pick an unused lab id and write its record, atomically reserving the id.

    The id is reserved by hard-linking a complete temporary record to its final name, which
    fails if another process (another pytest-xdist worker) took the same id first.
    """
    STATE_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    pid = os.getpid()
    for _ in range(64):
        lab_id = LAB_ID_PREFIX + secrets.token_hex(2)
        if _id_in_use(lab_id):
            continue
        record = LabRecord(lab_id, topology, backend, pid, process_start_time(pid), time.time(),
                           [namespace_name(lab_id, node) for node in nodes],
                           creator_pid=pid, creator_ppid=os.getppid(), spec=spec)
        tmp = STATE_DIR / f".{lab_id}.new{pid}"
        tmp.write_text(record.to_json())
        try:
            os.link(tmp, record.path)
        except FileExistsError:
            continue
        finally:
            tmp.unlink()
        return record
    raise BackendError(f"could not find an unused lab id in {STATE_DIR}")


def read_record(lab_id: str) -> LabRecord | None:
    try:
        return LabRecord.from_json(record_path(lab_id).read_text())
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, KeyError) as exc:
        raise BackendError(f"lab record {record_path(lab_id)} is unreadable: {exc}") from None


def list_records() -> list[LabRecord]:
    """Every lab recorded on this machine, oldest first."""
    if not STATE_DIR.is_dir():
        return []
    records = []
    for path in STATE_DIR.glob(f"{LAB_ID_PREFIX}*.json"):
        record = read_record(path.stem)
        if record is not None:
            records.append(record)
    return sorted(records, key=lambda r: r.created)


def remove_record(lab_id: str) -> None:
    record_path(lab_id).unlink(missing_ok=True)


def describe_labs() -> str:
    """The labs on this machine, for messages: `tl1a2b (router_path), ...` or `none`."""
    return ", ".join(f"{r.lab_id} ({r.topology})" for r in list_records()) or "none"


def pick_record(lab_id: str | None) -> LabRecord:
    """The record of lab `lab_id`, or of the only lab there is when None; LabError otherwise."""
    if lab_id is not None:
        record = read_record(lab_id)
        if record is None:
            raise LabError(f"there is no lab {lab_id!r} (labs: {describe_labs()})")
        return record
    records = list_records()
    if len(records) != 1:
        raise LabError(f"there are {len(records)} labs; name one: {describe_labs()}")
    return records[0]
