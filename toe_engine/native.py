"""Which build of the engine's per-packet modules runs: the mypyc-compiled one or the Python source.

`scripts/build_native.py` compiles the modules in `COMPILED` with mypyc, from the same source,
into `build/native/<key>/` beside the package (never next to the .py files, so a plain import
always finds the source), with a manifest of the hash of every file mypy read for it: the set
and everything it imports, since compiled code is built against their types. `activate()`,
called once from toe_engine/__init__.py before any engine module loads, puts that build in
front of the source only when every one of those files is unchanged; otherwise the whole set
runs from source (native and interpreted classes of one chain cannot mix) and a stale build
says so once on stderr. `TOELAB_PURE_PYTHON=1` forces the source; subprocesses inherit it.
"""
from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import Iterable, Mapping, Sequence

PACKAGE_DIR = Path(__file__).resolve().parent
BUILD_ROOT = PACKAGE_DIR.parent / "build" / "native"
GROUP = "toe_engine_native"  # mypyc's shared library of the set is the module GROUP + "__mypyc"
MANIFEST = "manifest.json"
LATEST = "latest"  # file in BUILD_ROOT naming the key of the most recent build
PURE_ENV = "TOELAB_PURE_PYTHON"
NOTED_ENV = "TOELAB_NATIVE_NOTED"  # the stale key already reported, so subprocesses stay quiet

COMPILED: tuple[str, ...] = (
    "toe_engine.checksum",
    "toe_engine.counters",
    "toe_engine.segment",
    "toe_engine.endpoint",
    "toe_engine.synpath",
    "toe_engine.resources.syncookie",
    "toe_engine.resources.memory",
    "toe_engine.resources.table",
    "toe_engine.resources.bufpool",
    "toe_engine.resources.policy",
    "toe_engine.resources.manager",
    "toe_engine.apps.base",
    "toe_engine.apps.http",
    "toe_engine.codec",
    "toe_engine.codec.arp",
    "toe_engine.codec.drop",
    "toe_engine.codec.ethernet",
    "toe_engine.codec.frame",
    "toe_engine.codec.icmp",
    "toe_engine.codec.ipv4",
    "toe_engine.codec.ipv6",
    "toe_engine.codec.tcp",
    "toe_engine.tcp.config",
    "toe_engine.tcp.events",
    "toe_engine.tcp.seqnum",
    "toe_engine.tcp.isn",
    "toe_engine.tcp.rtt",
    "toe_engine.tcp.timers",
    "toe_engine.tcp.reassembly",
    "toe_engine.tcp.rtx_queue",
    "toe_engine.tcp.congestion",
    "toe_engine.tcp.congestion.base",
    "toe_engine.tcp.congestion.newreno",
    "toe_engine.tcp.congestion.cubic",
    "toe_engine.tcp.congestion.bbr",
    "toe_engine.tcp.tcb",
    "toe_engine.tcp.recovery",
    "toe_engine.tcp.timeouts",
    "toe_engine.tcp.output",
    "toe_engine.tcp.input",
    "toe_engine.tcp.connection",
    "toe_engine.tcp.stack",
    # the middlebox's per-frame path (in memory, router + GRO, CPU per MSS frame: about 30 % less)
    "toe_engine.offload",
    "toe_engine.offload.csum",
    "toe_engine.offload.gro",
    "toe_engine.offload.lro",
    "toe_engine.offload.tso",
    "toe_engine.offload.rx_gro",
    "toe_engine.runtime.stages",
    # the endpoint's data path between the drivers and the core (per frame: ACK deferral, SYNs, GRO, headers)
    "toe_engine.runtime.datapath",
    "toe_engine.runtime.router",
)


@dataclass(frozen=True)
class Choice:
    """The build in use and why: `build` is "compiled" or "pure"."""

    build: str
    reason: str
    directory: Path | None = None
    stale: tuple[str, ...] = ()


def source_path(module: str, package_dir: Path = PACKAGE_DIR) -> Path:
    """The .py file of a module of the set (a package's is its __init__.py)."""
    rel = Path(*module.split(".")[1:])
    package_init = package_dir / rel / "__init__.py"
    return package_init if package_init.exists() else package_dir / rel.with_suffix(".py")


def source_hashes(paths: Iterable[str], root: Path = PACKAGE_DIR.parent) -> dict[str, str]:
    """sha256 of each file (paths relative to the repository); "" for one that is gone."""
    hashes = {}
    for rel in paths:
        try:
            hashes[rel] = hashlib.sha256((root / rel).read_bytes()).hexdigest()
        except OSError:
            hashes[rel] = ""
    return hashes


def build_key(hashes: dict[str, str], modules: Sequence[str] = COMPILED) -> str:
    """One name for a build: the sources, the set and the interpreter's ABI."""
    text = json.dumps({"sources": hashes, "modules": list(modules), "abi": importlib.machinery.EXTENSION_SUFFIXES[0]},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def artifacts(directory: Path, modules: Sequence[str] = COMPILED) -> dict[str, Path]:
    """Each compiled module's extension inside a build directory, and the group's shared library."""
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    paths = {GROUP + "__mypyc": directory / (GROUP + "__mypyc" + suffix)}
    for module in modules:
        parts = module.split(".")
        if source_path(module).name == "__init__.py":
            parts.append("__init__")
        paths[module] = directory.joinpath(*parts[:-1], parts[-1] + suffix)
    return paths


def choose(environ: Mapping[str, str] = os.environ, root: Path = BUILD_ROOT) -> Choice:
    """Decide the build without importing anything of the set.

    The latest build's manifest lists every file mypy read for it (the set and all it imports);
    the build is used only if each still has the hash it was built from.
    """
    if environ.get(PURE_ENV, "") not in ("", "0"):
        return Choice("pure", f"{PURE_ENV}={environ[PURE_ENV]}")
    try:
        key = (root / LATEST).read_text().strip()
        manifest = json.loads((root / key / MANIFEST).read_text())
        built: dict[str, str] = manifest["sources"]
        modules = tuple(manifest["modules"])
    except (OSError, ValueError, KeyError, TypeError):
        return Choice("pure", "no native build")
    if modules != COMPILED:
        return Choice("pure", f"native build {key} is of another module set", stale=("the compiled set",))
    changed = tuple(p for p, h in source_hashes(built).items() if h != built[p])
    if changed:
        return Choice("pure", f"sources changed since native build {key}", stale=changed)
    if not all(p.is_file() for p in artifacts(root / key).values()):
        return Choice("pure", f"native build {key} is incomplete", stale=("the build itself",))
    return Choice("compiled", f"native build {key}", root / key)


class _BuildFinder:
    """Finds the modules of one complete native build; a compiled package's other submodules
    come from the source tree (its __path__ names the build directory)."""

    def __init__(self, directory: Path) -> None:
        self.paths = artifacts(directory)
        self.packages = {m: str(source_path(m).parent) for m, p in self.paths.items() if p.stem.startswith("__init__.")}

    def find_spec(self, fullname: str, path: object = None, target: ModuleType | None = None) -> ModuleSpec | None:
        where = self.paths.get(fullname)
        if where is None:
            source_dir = self.packages.get(fullname.rpartition(".")[0])
            return None if source_dir is None else importlib.machinery.PathFinder.find_spec(fullname, [source_dir])
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(where))
        return importlib.util.spec_from_file_location(fullname, where, loader=loader)


def stale_note(choice: Choice) -> str:
    """The one stderr line for a build that no longer matches its sources."""
    shown = ", ".join(choice.stale[:3]) + (f" and {len(choice.stale) - 3} more" if len(choice.stale) > 3 else "")
    return (f"toelab: {shown} changed since the engine's native build; the engine runs pure Python "
            "until scripts/setup.sh rebuilds it.")


_active: Choice | None = None


def activate() -> Choice:
    """Choose once per process, before the set is imported; later calls return the same choice."""
    global _active
    if _active is not None:
        return _active
    choice = choose()
    loaded = [m for m in COMPILED if m in sys.modules]
    if choice.build == "compiled" and loaded:  # too late to switch: say what runs
        choice = Choice("pure", f"already imported from source: {', '.join(loaded)}")
    if choice.build == "compiled" and choice.directory is not None:
        sys.meta_path.insert(0, _BuildFinder(choice.directory))
    elif choice.stale and os.environ.get(NOTED_ENV) != choice.reason:
        print(stale_note(choice), file=sys.stderr)
        os.environ[NOTED_ENV] = choice.reason  # said once: the engine processes this one starts stay quiet
    _active = choice
    return choice


def build() -> str:
    """"compiled" or "pure": the build this process runs."""
    return activate().build
