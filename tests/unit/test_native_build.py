"""The engine's build choice (toe_engine/native.py): compiled only when every source it was built
from is unchanged, the whole set or none of it, and TOELAB_PURE_PYTHON=1 always wins."""
from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from toe_engine import native

ROOT = Path(__file__).resolve().parents[2]
SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def _builder() -> ModuleType:
    """scripts/build_native.py as a module (not run as a script, so it leaves this process's environment alone)."""
    spec = importlib.util.spec_from_file_location("build_native", ROOT / "scripts" / "build_native.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_build(root: Path, sources: dict[str, str], modules: tuple[str, ...] = native.COMPILED,
               artifacts: bool = True) -> Path:
    """A build directory as scripts/build_native.py leaves it, with empty files for the extensions."""
    key = native.build_key(sources, modules)
    directory = root / key
    directory.mkdir(parents=True)
    (directory / native.MANIFEST).write_text(json.dumps({"key": key, "modules": list(modules), "sources": sources}))
    if artifacts:
        for path in native.artifacts(directory).values():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"")
    (root / native.LATEST).write_text(key + "\n")
    return directory


def current(paths: list[str]) -> dict[str, str]:
    return native.source_hashes(paths)


PATHS = ["toe_engine/tcp/tcb.py", "toe_engine/tcp/input.py", "toe_engine/endpoint.py"]


def test_a_build_of_the_sources_as_they_are_is_chosen(tmp_path: Path) -> None:
    directory = fake_build(tmp_path, current(PATHS))
    choice = native.choose({}, tmp_path)
    assert (choice.build, choice.directory, choice.stale) == ("compiled", directory, ())


def test_one_changed_source_makes_the_whole_set_pure_and_is_named(tmp_path: Path) -> None:
    sources = current(PATHS) | {"toe_engine/tcp/input.py": "0" * 64}
    fake_build(tmp_path, sources)
    choice = native.choose({}, tmp_path)
    assert (choice.build, choice.directory, choice.stale) == ("pure", None, ("toe_engine/tcp/input.py",))
    assert native.stale_note(choice) == (
        "toelab: toe_engine/tcp/input.py changed since the engine's native build; the engine runs pure Python "
        "until scripts/setup.sh rebuilds it.")


def test_a_source_gone_since_the_build_counts_as_changed(tmp_path: Path) -> None:
    fake_build(tmp_path, current(PATHS) | {"toe_engine/tcp/gone.py": "1" * 64})
    assert native.choose({}, tmp_path).stale == ("toe_engine/tcp/gone.py",)


def test_pure_python_forced_by_the_environment_wins_over_a_good_build(tmp_path: Path) -> None:
    fake_build(tmp_path, current(PATHS))
    assert native.choose({"TOELAB_PURE_PYTHON": "1"}, tmp_path) == native.Choice("pure", "TOELAB_PURE_PYTHON=1")
    assert native.choose({"TOELAB_PURE_PYTHON": "0"}, tmp_path).build == "compiled"


@pytest.mark.parametrize("damage", ["no build", "another module set", "an extension missing", "a broken manifest"])
def test_anything_short_of_a_complete_matching_build_is_pure(tmp_path: Path, damage: str) -> None:
    if damage == "another module set":
        fake_build(tmp_path, current(PATHS), modules=native.COMPILED[:-1])
    elif damage == "an extension missing":
        directory = fake_build(tmp_path, current(PATHS))
        native.artifacts(directory)["toe_engine.tcp.stack"].unlink()
    elif damage == "a broken manifest":
        directory = fake_build(tmp_path, current(PATHS))
        (directory / native.MANIFEST).write_text("{")
    choice = native.choose({}, tmp_path)
    assert (choice.build, choice.directory) == ("pure", None)
    assert bool(choice.stale) is (damage in ("another module set", "an extension missing"))


def test_extensions_sit_where_build_ext_puts_them(tmp_path: Path) -> None:
    paths = native.artifacts(tmp_path)
    assert paths["toe_engine.tcp.tcb"] == tmp_path / "toe_engine" / "tcp" / f"tcb{SUFFIX}"
    assert paths["toe_engine.codec"] == tmp_path / "toe_engine" / "codec" / f"__init__{SUFFIX}"
    assert paths[native.GROUP + "__mypyc"] == tmp_path / f"{native.GROUP}__mypyc{SUFFIX}"


def test_the_manifest_covers_what_the_set_imports() -> None:
    closure = _builder().import_closure(native.COMPILED)
    for module in native.COMPILED:
        assert str(native.source_path(module).relative_to(ROOT)) in closure
    # endpoint.py is built against the resource manager's types, and the package __init__ runs first
    assert {"toe_engine/resources/manager.py", "toe_engine/tcp/events.py", "toe_engine/__init__.py"} <= set(closure)
    assert not [p for p in closure if not p.startswith("toe_engine/")]


def test_the_build_this_process_chose_is_the_one_imported() -> None:
    choice = native.activate()
    for module in native.COMPILED:
        loaded = sys.modules.get(module) or __import__(module, fromlist=["_"])
        where = Path(loaded.__file__ or "")
        if choice.build == "compiled":
            assert choice.directory is not None and where.is_relative_to(choice.directory) and where.name.endswith(
                SUFFIX), module
        else:
            assert where == native.source_path(module), module


def _imported_from(env: dict[str, str]) -> dict[str, str]:
    code = ("import json, toe_engine.native as n, toe_engine.tcp.connection as c, toe_engine.endpoint as e; "
            "print(json.dumps({'build': n.build(), 'connection': c.__file__, 'endpoint': e.__file__}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60, check=True)
    return json.loads(done.stdout)


def test_pure_python_forced_in_a_fresh_process_imports_the_source() -> None:
    seen = _imported_from(os.environ | {"TOELAB_PURE_PYTHON": "1"})
    assert seen == {"build": "pure", "connection": str(ROOT / "toe_engine/tcp/connection.py"),
                    "endpoint": str(ROOT / "toe_engine/endpoint.py")}


def test_a_fresh_process_makes_the_same_choice_as_this_one() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TOELAB_PURE_PYTHON"}
    before = native.choose(env).build
    seen = _imported_from(env)
    after = native.choose(env).build  # the same unless a source was saved meanwhile
    assert seen["build"] in {before, after}
    assert Path(seen["connection"]).suffix == (".so" if seen["build"] == "compiled" else ".py")


def test_bench_rows_say_which_build_measured_them() -> None:
    from toelab.benches.rows import BadRow, check_row, row

    made = row("core", "bulk echo", "MB/CPU-s", None, 1.0)
    assert made["build"] == native.build() and made["build"] in ("compiled", "pure")
    with pytest.raises(BadRow, match="build"):
        check_row(made | {"build": "fast"})


def test_a_compiled_package_finds_its_other_submodules_in_the_source(tmp_path: Path) -> None:
    finder = native._BuildFinder(tmp_path)
    assert finder.find_spec("toe_engine.codec.frame").origin == str(native.artifacts(tmp_path)["toe_engine.codec.frame"])
    assert finder.find_spec("toe_engine.codec.no_such_module") is None
    assert finder.find_spec("toe_engine.runtime.loop") is None  # not below a compiled package: the usual finders
    finder.packages["toe_engine.tcp"] = str(ROOT / "toe_engine" / "tcp")  # as if toe_engine.tcp were compiled
    spec = finder.find_spec("toe_engine.tcp.testing")
    assert spec is not None and spec.origin == str(ROOT / "toe_engine" / "tcp" / "testing.py")


@pytest.mark.parametrize("forced", [True, False], ids=["TOELAB_PURE_PYTHON=1", "as-built"])
def test_bench_core_says_which_build_it_measured(tmp_path: Path, forced: bool) -> None:
    env = {k: v for k, v in os.environ.items() if k != native.PURE_ENV} | ({native.PURE_ENV: "1"} if forced else {})
    before = native.choose(env).build
    out = tmp_path / "core.json"
    done = subprocess.run([sys.executable, "-m", "toelab", "bench", "core", "--core-mib", "0.1", "--core-connections",
                           "1", "--core-frames", "100", "--json", str(out)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr
    seen = done.stdout.split("\n", 1)[0].removeprefix("engine build: ").split(" ", 1)[0]
    assert seen in {before, native.choose(env).build}, done.stdout  # the same unless a source was saved meanwhile
    assert seen == "pure" or not forced
    assert {r["build"] for r in json.loads(out.read_text())} == {seen}


def test_a_failed_build_is_summed_up_by_its_first_error(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    log.write_text("running build_ext\ntoe_engine/tcp/input.py:12: error: Name \"x\" is not defined  [name-defined]\n"
                   "toe_engine/tcp/input.py:14: error: another\n")
    first = _builder()._first_error(log, SystemExit(1))
    assert first == 'toe_engine/tcp/input.py:12: error: Name "x" is not defined  [name-defined]'
    log.write_text("gcc: fatal error\n")
    assert _builder()._first_error(log, SystemExit(1)) == "SystemExit: 1"

