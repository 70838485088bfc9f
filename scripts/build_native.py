"""Compile the engine's per-packet modules with mypyc into build/native/<key>/, unless that build exists.

Run by scripts/setup.sh; `--check` only says (exit status) whether the build for the tree as it
is now exists. The build is made in a temporary directory and renamed into place complete, so a
reader sees either the whole build or none of it; toe_engine/native.py decides whether to use it.
Exit status: 0 built or up to date, 1 the build failed (its log is build/native/build.log).
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import fcntl
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import TextIO

CALLER_ENV = dict(os.environ)
if __name__ == "__main__":
    os.environ["TOELAB_PURE_PYTHON"] = "1"  # this process only reads the sources: no note about a stale build
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from toe_engine import native  # noqa: E402

OPT_LEVEL = "3"


def _module_file(module: str) -> Path | None:
    base = REPO.joinpath(*module.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def import_closure(modules: tuple[str, ...]) -> list[str]:
    """Every toe_engine file mypy reads for the set: the set, what it imports, and their packages."""
    seen: dict[str, Path] = {}
    todo = list(modules)
    while todo:
        module = todo.pop()
        path = _module_file(module)
        if module in seen or path is None:
            continue
        seen[module] = path
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        package = parts if path.name == "__init__.py" else parts[:-1]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                todo += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                anchor = package[:len(package) - node.level + 1] if node.level else []
                base = ".".join([*anchor, *([node.module] if node.module else [])])
                todo += [base, *(f"{base}.{alias.name}" for alias in node.names)]
    return sorted(str(p.relative_to(REPO)) for m, p in seen.items() if m.split(".")[0] == "toe_engine")


def _compile(work: Path, log: TextIO) -> dict[str, str]:
    """mypyc and the C compiler into work/out; returns the source hashes mypy read."""
    from mypyc.build import mypycify
    from setuptools import setup  # type: ignore[import-untyped]

    closure = import_closure(native.COMPILED)
    before = native.source_hashes(closure)
    sources = [str(native.source_path(m).relative_to(REPO)) for m in native.COMPILED]
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        cache = f"--cache-dir={work.parent / '.mypy_cache'}"  # its own, beside the builds, not the tree's
        extensions = mypycify([cache, *sources], opt_level=OPT_LEVEL, group_name=native.GROUP, target_dir=str(work / "c"))
        if native.source_hashes(closure) != before:
            raise RuntimeError("the engine's sources changed while mypyc read them")
        setup(name=native.GROUP, ext_modules=extensions, script_args=[
            "build_ext", "--build-lib", str(work / "out"), "--build-temp", str(work / "obj"), "-j", "2"])
    return before


def _first_error(log: Path, exc: BaseException) -> str:
    """The line a reader needs: mypy's or the compiler's first error, else the exception."""
    for line in log.read_text(errors="replace").splitlines():
        if ": error:" in line:
            return line.strip()
    return f"{type(exc).__name__}: {exc}"


def build(root: Path = native.BUILD_ROOT) -> int:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time; a second set-up waits, then finds it made
        if native.choose({}, root).build == "compiled":
            return 0
        print("toelab: compiling the engine's per-packet modules with mypyc (a minute or so)", flush=True)
        work = root / f".work-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        os.chdir(REPO)  # mypycify names modules by their paths from here
        started = time.monotonic()
        with open(root / "build.log", "w") as log:
            try:
                hashes = _compile(work, log)
            except (Exception, SystemExit) as exc:  # setuptools reports a compiler failure as SystemExit
                print(f"native build failed: {exc}", file=log, flush=True)
                shutil.rmtree(work, ignore_errors=True)
                print(f"toelab: the engine's native build failed ({_first_error(root / 'build.log', exc)}); "
                      f"toelab runs the engine as pure Python (log: {root / 'build.log'}).")
                return 1
        key = native.build_key(hashes)
        manifest = {"key": key, "modules": list(native.COMPILED), "sources": hashes, "opt_level": OPT_LEVEL,
                    "seconds": round(time.monotonic() - started, 1)}
        (work / "out" / native.MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        previous = (root / native.LATEST).read_text().strip() if (root / native.LATEST).exists() else ""
        shutil.rmtree(root / key, ignore_errors=True)
        (work / "out").rename(root / key)
        shutil.rmtree(work, ignore_errors=True)
        (root / ".latest.tmp").write_text(key + "\n")
        os.replace(root / ".latest.tmp", root / native.LATEST)
        for old in root.iterdir():  # keep this build and the one before it (a process may be loading it)
            if old.is_dir() and old.name not in (key, previous):
                shutil.rmtree(old, ignore_errors=True)
        return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 0 if toelab would run the compiled build (it exists for the current sources)")
    args = parser.parse_args()
    if args.check:
        return 0 if native.choose(CALLER_ENV).build == "compiled" else 1
    return build()


if __name__ == "__main__":
    sys.exit(main())
