"""Engine nodes in a lab: the `middlebox` kind, and handles on every engine's control socket.

A `kind: middlebox` node's `engine:` settings are a `MiddleboxConfig`; they are validated
while the spec is parsed (so a bad setting is a SpecError with its line, before anything is
built), and once the lab is built the middlebox process is started inside the node and
awaited until it prints `ready`. Its control socket lives in the lab's runtime directory,
/run/toelab/<labid>/<node>.sock, which teardown removes with the lab.

    with Lab.up(load_topology("middlebox_chain", {"loss": 2})) as lab:
        lab.engine("mb").set(loss=5, direction="a_to_b")
        lab.engine("mb").stats()["counters"]["impair_dropped"]

`EngineHandle` only needs a control socket path, so any engine kind registers its handle
with `lab.register_engine` and gets `lab.engine(name)` and the shell's `toe` commands.
"""
from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from toe_engine.runtime.control import control_request

from .errors import BackendError, LabError
from .node import Node
from .spec import EngineSettingsError, NodeSpec
from .state import STATE_DIR
from .tools import wait_for_line

if TYPE_CHECKING:
    from .lab import Lab

MIDDLEBOX_MODULE = "toe_engine.runtime.middlebox_main"
READY_TIMEOUT_S = 15.0
#: Fields of a middlebox `set` request; any other key given to `EngineHandle.set` is an impairment.
MIDDLEBOX_SET_FIELDS = frozenset({"direction", "coalesce", "tso", "seed", "impairments"})

SetShaper = Callable[[Mapping[str, Any]], dict[str, Any]]


class EngineError(LabError):
    """An engine's control socket refused a request or could not be reached."""


def runtime_dir(lab: Lab) -> Path:
    """The lab's directory for sockets and logs; `remove_lab` deletes it with the lab."""
    return runtime_dir_of(lab.id)


def runtime_dir_of(lab_id: str) -> Path:
    return STATE_DIR / lab_id


def nest_dotted(flat: Mapping[str, Any]) -> dict[str, Any]:
    """`{"gemodel.p": 1}` -> `{"gemodel": {"p": 1}}`, so flat command-line keys reach nested fields."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        target = out
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
    return out


def shape_middlebox_set(changes: Mapping[str, Any]) -> dict[str, Any]:
    """Flat changes into a middlebox `set` request: known fields stay, the rest are impairments."""
    request = {key: value for key, value in changes.items() if key in MIDDLEBOX_SET_FIELDS}
    impairments = nest_dotted({key: value for key, value in changes.items() if key not in MIDDLEBOX_SET_FIELDS})
    if impairments:
        request["impairments"] = {**request.get("impairments", {}), **impairments}
    return request


#: kind -> how `EngineHandle.set(**changes)` turns its keyword arguments into a `set` request.
SET_SHAPERS: dict[str, SetShaper] = {"middlebox": shape_middlebox_set}


@dataclass(frozen=True)
class EngineHandle:
    """Talks to one engine node's control socket (JSON lines); kind-agnostic."""

    node: str
    kind: str
    control: Path

    def request(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Send one request; the answer without its `ok`, or EngineError with the engine's reason."""
        try:
            answer = control_request(str(self.control), dict(request))
        except (OSError, ConnectionError, ValueError) as exc:
            raise EngineError(f"engine on node {self.node!r} did not answer on {self.control}: {exc}") from None
        if not answer.pop("ok", False):
            raise EngineError(f"engine on node {self.node!r} refused {request.get('cmd')!r}: "
                              f"{answer.get('error', 'no reason given')}")
        return answer

    def stats(self) -> dict[str, Any]:
        return self.request({"cmd": "stats"})

    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = self.request({"cmd": "config"})["config"]
        return config

    def set(self, **changes: Any) -> dict[str, Any]:
        """Change settings at run time (`set(loss=5, direction="a_to_b")`); returns the config now in force."""
        shape = SET_SHAPERS.get(self.kind, dict)
        config: dict[str, Any] = self.request({"cmd": "set", **shape(changes)})["config"]
        return config


# --- the middlebox kind -------------------------------------------------------------------------

def validate_middlebox(node: NodeSpec, interfaces: list[str]) -> None:
    """Spec-time check of a middlebox node's `engine:` settings (its kind's validator in lab.kinds)."""
    from toe_engine.runtime.middlebox import MiddleboxConfig

    try:
        config = MiddleboxConfig.model_validate(node.engine)
    except ValidationError as exc:
        error = exc.errors()[0]
        path = tuple(error["loc"])
        where = ".".join(str(part) for part in path)
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        raise EngineSettingsError(f"{where}: {message}" if where else message, path) from None
    for field, iface in (("a", config.a), ("b", config.b)):
        if iface not in interfaces:
            raise EngineSettingsError(f"{field}: interface {iface!r} is not one of the node's "
                                      f"({', '.join(interfaces) or 'none'})", (field,))
    if config.a == config.b:
        raise EngineSettingsError(f"b: both ports are {config.a!r}; a middlebox needs two interfaces", ("b",))
    if config.mode == "router":
        for iface in (config.a, config.b):
            ispec = node.interfaces.get(iface)
            if ispec is None or not ispec.addresses:
                raise EngineSettingsError(f"mode: router mode needs addresses on {iface!r}, which has none "
                                          "(use mode: bridge for an addressless middlebox)", ("mode",))


def start_middlebox(lab: Lab, node: Node) -> None:
    """After-build hook: run the middlebox in the node and wait for its `ready` line."""
    from toe_engine.runtime.middlebox import MiddleboxConfig

    config = MiddleboxConfig.parse(lab.spec.nodes[node.name].engine)
    control = start_engine_process(lab, node, MIDDLEBOX_MODULE, config.model_dump(mode="json"),
                                   f"middlebox on node {node.name}")
    lab.register_engine(EngineHandle(node.name, "middlebox", control))


def start_engine_process(lab: Lab, node: Node, module: str, config: dict[str, Any], what: str) -> Path:
    """Run an engine program (`python -m module --config JSON --control SOCKET`) in the node; its control socket."""
    directory = runtime_dir(lab)
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    control = directory / f"{node.name}.sock"
    argv = [sys.executable, "-m", module, "--config", json.dumps(config), "--control", str(control)]
    await_ready(node, argv, directory / f"{node.name}.log", what)
    return control


def await_ready(node: Node, argv: list[str], log_path: Path, what: str) -> None:
    """Start `argv` in the node with stderr to `log_path`; return once it prints `ready`, else BackendError
    with the last line it logged."""
    log_path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        proc = node.popen(argv, stdout=subprocess.PIPE, stderr=log)
    try:
        wait_for_line(proc, "ready", what=what, timeout_s=READY_TIMEOUT_S)
    except RuntimeError as exc:
        said = log_path.read_text(errors="replace").strip().splitlines()
        raise BackendError(f"{exc} ({said[-1] if said else 'it wrote nothing to its log'})") from None
