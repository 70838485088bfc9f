"""Layers run one way: toe_engine <- lab <- scenarios <- toelab (CLI, benchmarks, demo).

Every import statement of every module is read with `ast` (also those inside functions,
which a run-time check of sys.modules would miss) and resolved to a module name; an import
that runs back up, a scenario reaching into lab's internals, or a method patched onto a
class from another module fails with the file and line.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("toe_engine", "lab", "scenarios", "toelab")
#: package -> the packages it may not import.
FORBIDDEN = {
    "toe_engine": ("lab", "scenarios", "toelab"),
    "lab": ("scenarios", "toelab"),
    "scenarios": ("toelab",),
    "toelab": (),
}
#: lab's internals: how it builds namespaces. Scenarios use Lab, Node, render, tools, capture, errors.
LAB_INTERNALS = ("lab.netns", "lab.netlink", "lab.backend_netns", "lab.backend_mininet", "lab.features",
                 "lab.yamlpos", "lab.state", "lab.cleanup", "lab.kinds")


def modules() -> list[tuple[str, Path]]:
    out = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out.append((".".join(parts), path))
    return out


def imports_of(name: str, path: Path) -> list[tuple[str, int]]:
    """(imported module, line) for every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((target, node.lineno))
            out.extend((f"{target}.{alias.name}", node.lineno) for alias in node.names)
    return out


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_every_package_imports_only_downwards() -> None:
    wrong = []
    for name, path in modules():
        package = name.split(".")[0]
        for target, line in imports_of(name, path):
            for up in FORBIDDEN[package]:
                if within(target, up):
                    wrong.append(f"{path.relative_to(REPO)}:{line} imports {target}")
    assert wrong == [], "imports that run back up a layer:\n" + "\n".join(sorted(set(wrong)))


def test_scenarios_use_only_labs_public_api() -> None:
    wrong = []
    for name, path in modules():
        if not within(name, "scenarios"):
            continue
        for target, line in imports_of(name, path):
            if any(within(target, internal) for internal in LAB_INTERNALS):
                wrong.append(f"{path.relative_to(REPO)}:{line} imports {target}")
    assert wrong == [], "scenarios reaching into lab's internals:\n" + "\n".join(sorted(set(wrong)))


def registrations(path: Path) -> list[str]:
    """Module-level statements that change something imported from another module: `X.attr = ...`,
    `X[key] = ...`, `X.append(...)` and the like."""
    tree = ast.parse(path.read_text(), str(path))
    imported = {alias.asname or alias.name for node in tree.body if isinstance(node, ast.ImportFrom)
                for alias in node.names}
    found = []
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, (ast.AnnAssign, ast.AugAssign)) else []
        for target in targets:
            if isinstance(target, (ast.Attribute, ast.Subscript)) and isinstance(target.value, ast.Name) \
                    and target.value.id in imported:
                found.append(f"{path.name}:{node.lineno} changes {target.value.id}")
        call = node.value if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) else None
        if call is not None and isinstance(call.func, ast.Attribute) and isinstance(call.func.value, ast.Name) \
                and call.func.value.id in imported and call.func.attr in ("append", "update", "setdefault", "add"):
            found.append(f"{path.name}:{node.lineno} calls {call.func.value.id}.{call.func.attr}")
    return found


def test_nothing_registers_itself_in_another_module_on_import() -> None:
    """`Lab.engine = engine` or `BENCHES["core"] = ...` at import time in another module is how a layer grows
    a hidden arrow and a registry fills by side effect; tables are written where they are defined."""
    wrong = [f"{path.relative_to(REPO).parent}/{hit}" for _, path in modules() for hit in registrations(path)]
    assert wrong == [], "\n".join(wrong)


def test_the_import_reader_sees_a_violation(tmp_path: Path) -> None:
    """The checks above can fail: a relative import back up is resolved and caught."""
    module = tmp_path / "bad.py"
    module.write_text("from ..scenarios import runner\nimport toelab.cli\n")
    found = [t for t, _ in imports_of("lab.bad", module)]
    assert "scenarios" in found and "toelab.cli" in found
    assert any(within(t, "scenarios") for t in found)
    patched = tmp_path / "patch.py"
    patched.write_text("from lab.lab import Lab\nfrom toelab.bench import BENCHES\nLab.engine = len\n"
                       "BENCHES['x'] = 1\nBENCHES.append(2)\n")
    assert len(registrations(patched)) == 3


@pytest.mark.parametrize(("module", "must_not_load"), [
    ("lab.errors", ("pyroute2", "rich", "toe_engine", "toelab", "scenarios", "lab.lab", "jinja2", "pydantic")),
    ("lab.spec", ("pyroute2", "rich", "toe_engine", "toelab", "scenarios")),
    ("toe_engine.endpoint", ("lab", "scenarios", "toelab", "pyroute2")),
    ("toelab.cli", ("scenarios", "pyroute2", "toe_engine", "rich")),
])
def test_importing_a_module_loads_nothing_above_or_heavy(module: str, must_not_load: tuple[str, ...]) -> None:
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    loaded = done.stdout.split()
    assert module in loaded
    heavy = [m for m in loaded if any(within(m, p) for p in must_not_load)]
    assert heavy == [], f"importing {module} loads {heavy[:8]}"
