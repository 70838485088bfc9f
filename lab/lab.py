"""The Lab: a running topology, from `Lab.up(spec)` to `lab.down()`.

    with Lab.up(load_topology("router_path")) as lab:
        lab.node("h1").run(["ping", "-c1", lab.address("h2")])

A lab is torn down when its `with` block ends, when the process exits (atexit), on SIGINT
(KeyboardInterrupt) and on SIGTERM (turned into `Terminated`, a SystemExit, while any lab is
up). A process killed outright leaves a record that `cleanup.clean()` removes. Engine node
kinds (`toe`, `middlebox`) are built as hosts; their kind (lab.kinds) then starts the engine
in them, and `lab.engine(node)` is its control handle.
"""
from __future__ import annotations

import atexit
import os
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .backend_netns import NetnsBuilder, check_buildable
from .capture import Capture
from .cleanup import remove_lab
from .errors import LabError
from .features import FeatureControl
from .interrupts import Terminated, raise_terminated, teardown_shielded  # noqa: F401  (Terminated: lab's API)
from .kinds import NODE_KINDS
from .netns import entered
from .node import Node
from .spec import TopologySpec
from .state import LabRecord, ProcessRecord, create_record, pick_record, process_start_time, read_record

if TYPE_CHECKING:
    from .engine_nodes import EngineHandle

CAPTURE_DIR = Path(tempfile.gettempdir()) / "toelab"


class _LiveLabs:
    """Labs of this process not yet down: signal handlers and atexit while there are any."""

    def __init__(self) -> None:
        self.labs: list[Lab] = []
        self._previous: dict[int, Any] = {}
        self._lock = threading.Lock()
        atexit.register(self.down_all)

    def add(self, lab: Lab) -> None:
        with self._lock:
            self.labs.append(lab)
            if len(self.labs) == 1:
                self._install()

    def discard(self, lab: Lab) -> None:
        with self._lock:
            if lab in self.labs:
                self.labs.remove(lab)
                if not self.labs:
                    self._restore()

    def down_all(self) -> None:
        """At exit: down this process's labs (not those a forked parent owns)."""
        for lab in list(reversed(self.labs)):
            if lab.record.owner_pid == os.getpid():
                lab.down()

    def _install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:  # a program's own handler (toelab's) stays
            self._previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, raise_terminated)
        if signal.getsignal(signal.SIGINT) is signal.SIG_DFL:
            self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)

    def _restore(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


_live = _LiveLabs()


class Lab:
    """A running lab of the netns backend. Build one with `Lab.up`."""

    def __init__(self, spec: TopologySpec, record: LabRecord) -> None:
        self.spec = spec
        self._record = record
        self.nodes: dict[str, Node] = {
            name: Node(name, node.kind, record.namespaces[i], self._track)
            for i, (name, node) in enumerate(spec.nodes.items())
        }
        self._children: list[subprocess.Popen[Any]] = []
        self._captures = 0
        self._is_down = False
        self._detached = False
        self._engines: dict[str, EngineHandle] = {}
        self._attached = False

    @classmethod
    def up(cls, spec: TopologySpec, backend: str = "netns") -> Lab:
        """Validate, build and return a running lab; on any failure nothing is left behind."""
        if backend == "mininet":
            from .backend_mininet import MininetLab
            return MininetLab(spec)  # type: ignore[return-value]
        if backend != "netns":
            raise LabError(f"unknown backend {backend!r}: use netns or mininet")
        check_buildable(spec)
        record = create_record(spec.name, backend, list(spec.nodes), spec=spec.model_dump(mode="json"))
        lab = cls(spec, record)
        _live.add(lab)
        try:
            NetnsBuilder(spec, {name: node.netns for name, node in lab.nodes.items()}).build()
            record.status = "up"
            record.save()
            for node in lab.nodes.values():
                start = NODE_KINDS[node.kind].starter()
                if start is not None:
                    start(lab, node)
        except BaseException:
            lab.down()
            raise
        return lab

    @classmethod
    def attach(cls, lab_id: str) -> Lab:
        """A handle on a running lab that another process built (`toelab up`); leaving it leaves the lab up.

        Processes started through it are recorded in the lab's record, so `toelab down` stops
        them; `release()` (or the end of a `with` block) stops those this process started.
        """
        from .engine_nodes import EngineHandle, runtime_dir_of

        record = pick_record(lab_id)
        if record.backend != "netns" or record.spec is None or record.status != "up":
            raise LabError(f"lab {lab_id} cannot be attached to: it is {record.status}, built by the "
                           f"{record.backend} backend{'' if record.spec else ' without a recorded topology'}")
        lab = cls(TopologySpec.model_validate(record.spec), record)
        lab._attached = True
        for name, node in lab.spec.nodes.items():
            control = runtime_dir_of(lab_id) / f"{name}.sock"
            if control.exists():
                lab.register_engine(EngineHandle(name, node.kind, control))
        return lab

    @property
    def attached(self) -> bool:
        """True for a handle from `Lab.attach`: this process did not build the lab and will not remove it."""
        return self._attached

    def release(self) -> None:
        """Of an attached lab: stop the processes this process started in it and forget them; the lab stays."""
        mine = {proc.pid for proc in self._children}
        with teardown_shielded():
            for proc in self._children:
                self._reap(proc)
            self._children.clear()
            current = read_record(self.id)
            if current is not None:
                current.processes = [p for p in current.processes if p.pid not in mine]
                current.save()
                self._record = current

    # --- identity -----------------------------------------------------------------------
    @property
    def id(self) -> str:
        return self._record.lab_id

    @property
    def record(self) -> LabRecord:
        return self._record

    def __repr__(self) -> str:
        return f"<Lab {self.id} {self.spec.name} ({len(self.nodes)} nodes){' down' if self._is_down else ''}>"

    def node(self, name: str) -> Node:
        try:
            return self.nodes[name]
        except KeyError:
            raise LabError(f"lab {self.id} has no node {name!r} (it has: {', '.join(self.nodes)})") from None

    def address(self, node: str, version: int = 4) -> str:
        """The node's first IPv4 (or IPv6) address, without prefix length."""
        self.node(node)
        addr = self.spec.first_address(node, version)
        if addr is None:
            raise LabError(f"node {node!r} of lab {self.id} has no IPv{version} address")
        return addr

    # --- engines ---------------------------------------------------------------------------
    def register_engine(self, handle: EngineHandle) -> None:
        """Make `engine(handle.node)` return `handle`; engine kinds call this once their process is ready."""
        self._engines[handle.node] = handle

    def engines(self) -> dict[str, EngineHandle]:
        """Every engine node with a handle, by node name, in the spec's order."""
        return {name: self._engines[name] for name in self.spec.nodes if name in self._engines}

    def engine(self, node: str) -> EngineHandle:
        """The control handle of an engine node; LabError if the node runs no engine."""
        self.node(node)
        handle = self._engines.get(node)
        if handle is None:
            running = ", ".join(self.engines()) or "none"
            raise LabError(f"node {node!r} of lab {self.id} runs no engine (engine nodes: {running})")
        return handle

    # --- processes, captures, features ---------------------------------------------------
    def _track(self, node: Node, proc: subprocess.Popen[Any], argv: list[str]) -> None:
        """Record a process started in a node, so teardown (here or elsewhere) kills it."""
        self._children.append(proc)
        try:
            group = os.getpgid(proc.pid) == proc.pid
        except ProcessLookupError:
            group = False
        if self._attached:  # the record is shared with its owner and other attached processes
            self._record = read_record(self.id) or self._record
        self._record.processes.append(
            ProcessRecord(proc.pid, process_start_time(proc.pid), node.name, " ".join(argv)[:200], group))
        self._record.save()

    def capture(self, node: str, iface: str, filter: str = "", path: Path | str | None = None) -> Capture:
        """Start tcpdump on a node's interface; returns once it is listening."""
        self._check_interface(node, iface)
        self._captures += 1
        if path is None:
            path = CAPTURE_DIR / self.id / f"{node}-{iface}-{self._captures}.pcap"
        capture = Capture(self.node(node), iface, Path(path), filter)
        self._record.captures.append(str(capture.path))
        self._record.save()
        return capture

    def _check_interface(self, node: str, iface: str) -> None:
        if iface not in self.spec.interfaces_of(self.node(node).name) and iface not in ("lo", "br0"):
            raise LabError(f"node {node!r} has no interface {iface!r} "
                           f"(it has: {', '.join(self.spec.interfaces_of(node))})")

    def features(self, node: str, iface: str) -> dict[str, bool]:
        """The interface's offload features as the kernel reports them now."""
        self._check_interface(node, iface)
        with entered(self.node(node).netns):
            control = FeatureControl()
        with control:
            return control.read(iface)

    def set_features(self, node: str, iface: str, **wanted: bool) -> dict[str, bool]:
        """Change offload features; returns all of them as read back (a refusal raises BackendError)."""
        self._check_interface(node, iface)
        with entered(self.node(node).netns):
            control = FeatureControl()
        with control:
            return control.apply(iface, wanted, where=f"node {node}, interface {iface}")

    def set_link_state(self, a: str, b: str, up: bool) -> list[str]:
        """Set both ends of every link between nodes `a` and `b` up or down; the `node:iface` ends changed."""
        from .tools import set_link_state

        return set_link_state(self, a, b, up)

    # --- teardown -------------------------------------------------------------------------
    def down(self) -> None:
        """Kill the lab's processes and remove its namespaces and record; idempotent."""
        if self._is_down:
            return
        if self._attached:
            raise LabError(f"lab {self.id} was attached to, not built here: remove it with `toelab down {self.id}`")
        with teardown_shielded():
            remove_lab(self._record)
            for proc in self._children:
                self._reap(proc)
            self._is_down = True
            _live.discard(self)

    @staticmethod
    def _reap(proc: subprocess.Popen[Any]) -> None:
        """Kill what is left of a child's process group (its PID is still ours until reaped), then reap."""
        if proc.returncode is None:
            try:
                if os.getpgid(proc.pid) == proc.pid:
                    os.killpg(proc.pid, signal.SIGKILL)
                else:
                    proc.kill()
            except ProcessLookupError:
                pass
            proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()

    def detach(self) -> None:
        """Leave the lab running after this process exits; only `toelab down` removes it then."""
        self._record.owner_pid = None
        self._record.owner_start_time = None
        self._record.save()
        self._detached = True
        _live.discard(self)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._attached:
            self.release()
        elif not self._detached:
            self.down()
