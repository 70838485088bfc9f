"""Topology templates: find them, read their declared parameters, render them with Jinja2.

A template starts with a Jinja comment holding YAML metadata, so `toelab topologies` can
list it without rendering:

    {#- toelab
    description: h1 - r1 - h2, routed.
    parameters:
      mtu: {default: 1500, help: MTU of every link}
    -#}

Parameters given on the command line (`-p mtu=9000`) are converted to the type of the
declared default; an undeclared parameter or an undefined variable is an error naming the
template and the line, and so is `{{ fail("why") }}`, with which a template refuses a
combination of parameters it cannot build.
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import jinja2
import yaml

from .errors import SpecError
from .spec import TopologySpec, parse_spec

TOPOLOGY_DIR = Path(__file__).resolve().parent.parent / "topologies"
SUFFIX = ".yaml.j2"
_HEADER = re.compile(r"\A\s*\{#-?\s*toelab\s*\n(.*?)\n\s*-?#\}", re.S)


@dataclass(frozen=True)
class Parameter:
    name: str
    default: Any
    help: str = ""


@dataclass(frozen=True)
class Template:
    """A topology template file and its declared metadata."""

    name: str
    path: Path
    description: str
    parameters: dict[str, Parameter] = field(default_factory=dict)
    error: str | None = None  # why the header is unusable (`toelab topologies` lists it anyway)


def find_template(name_or_path: str) -> Path:
    """A template by name (in topologies/) or by path; error if there is none."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".j2", ".yaml", ".yml") or "/" in name_or_path:
        if candidate.is_file():
            return candidate
        raise SpecError(name_or_path, "", "no such template file")
    path = TOPOLOGY_DIR / f"{name_or_path}{SUFFIX}"
    if path.is_file():
        return path
    known = ", ".join(t.name for t in list_templates())
    raise SpecError(name_or_path, "", f"unknown topology; known ones are: {known}")


def read_template(path: Path) -> Template:
    text = path.read_text()
    name = path.name.removesuffix(SUFFIX).removesuffix(".yaml").removesuffix(".yml")
    match = _HEADER.match(text)
    if not match:
        return Template(name, path, "", {})
    header_line = text[:match.start(1)].count("\n") + 1
    try:
        meta = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {header_line + mark.line}, header" if mark else "header"
        raise SpecError(str(path), where, f"metadata is not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(meta, dict):
        raise SpecError(str(path), f"line {header_line}, header",
                        f"the header must be a mapping with 'description' and 'parameters', not {type(meta).__name__}")
    declared = meta.get("parameters") or {}
    if not isinstance(declared, dict):
        raise SpecError(str(path), f"line {header_line}, header.parameters", "parameters must be a mapping of "
                        f"name: {{default: ..., help: ...}}, not {type(declared).__name__}")
    params = {}
    for key, value in declared.items():
        if value is not None and not isinstance(value, dict):
            raise SpecError(str(path), f"line {header_line}, header.parameters.{key}",
                            f"a parameter must be a mapping {{default: ..., help: ...}}, not {value!r}")
        params[str(key)] = Parameter(str(key), (value or {}).get("default"), str((value or {}).get("help", "")))
    return Template(name, path, str(meta.get("description", "")), params)


def list_templates() -> list[Template]:
    """Every template in topologies/; one whose header is broken comes with its error instead of raising."""
    out = []
    for path in sorted(TOPOLOGY_DIR.glob(f"*{SUFFIX}")):
        try:
            out.append(read_template(path))
        except SpecError as exc:
            out.append(Template(path.name.removesuffix(SUFFIX), path, "", {}, error=str(exc)))
    return out


def coerce(value: str, like: Any) -> Any:
    """Turn a command-line string into the type of the parameter's default."""
    if isinstance(like, bool):
        lowered = value.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{value!r} is not a boolean (use true or false)")
    if isinstance(like, int):
        return int(value)
    if isinstance(like, float):
        return float(value)
    return value


def resolve_parameters(template: Template, given: dict[str, Any]) -> dict[str, Any]:
    """Declared defaults overridden by `given`, typed; undeclared names are errors."""
    values = {name: p.default for name, p in template.parameters.items()}
    for key, raw in given.items():
        if key not in template.parameters:
            known = ", ".join(template.parameters) or "none"
            raise SpecError(str(template.path), f"parameter {key!r}", f"the template declares no such parameter (it has: {known})")
        default = template.parameters[key].default
        try:
            values[key] = coerce(raw, default) if isinstance(raw, str) and default is not None else raw
        except ValueError as exc:
            raise SpecError(str(template.path), f"parameter {key!r}", f"cannot use {raw!r}: {exc}") from None
    return values


def _template_line(path: Path) -> int | None:
    """The template line being rendered when Jinja raised, from the traceback."""
    tb = sys.exc_info()[2]
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == str(path):
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _source_keeping_lines(path: Path) -> str:
    """The template text with its metadata header blanked to the same number of lines.

    Jinja drops a comment's newlines; blanking the header instead keeps each line of the
    rendered YAML on the line of the template it came from (outside loops), so errors
    found in the rendered YAML point at the right template line.
    """
    text = path.read_text()
    match = _HEADER.match(text)
    if not match:
        return text
    return "\n" * match.group(0).count("\n") + text[match.end():]


class TemplateRefusal(Exception):
    """Raised by `{{ fail("...") }}` in a template: a parameter combination it cannot build."""


def _fail(message: str) -> None:
    raise TemplateRefusal(message)


def render(path: Path, params: dict[str, Any]) -> str:
    """The template rendered with `params`; every failure is a SpecError naming the template line.

    A template is one file: `{% include %}`, `{% import %}` and `{% extends %}` are refused.
    """
    source = _source_keeping_lines(path)

    def load(name: str) -> tuple[str, str, Callable[[], bool]] | None:
        return (source, str(path), lambda: True) if name == path.name else None

    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(load),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    env.globals["fail"] = _fail
    try:
        return env.get_template(path.name).render(**params)
    except TemplateRefusal as exc:
        line = _template_line(path)
        raise SpecError(str(path), f"line {line}" if line else "", str(exc)) from None
    except jinja2.TemplateSyntaxError as exc:
        raise SpecError(str(path), f"line {exc.lineno}", f"template syntax error: {exc.message}") from None
    except jinja2.UndefinedError as exc:
        line = _template_line(path)
        raise SpecError(str(path), f"line {line}" if line else "", f"undefined template variable: {exc.message}") from None
    except jinja2.TemplateNotFound as exc:
        line = _template_line(path)
        raise SpecError(str(path), f"line {line}" if line else "",
                        f"{{% include/import/extends %}} of {exc.name!r} is not supported: a template is one file") from None
    except Exception as exc:  # an expression failed: {{ 1500 // n }} with n=0, {{ mtu + "x" }}
        line = _template_line(path)
        raise SpecError(str(path), f"line {line}" if line else "",
                        f"the template's expression failed with {type(exc).__name__}: {exc}") from None


def load_topology(name_or_path: str, given: dict[str, Any] | None = None) -> TopologySpec:
    """Find, render and validate a topology; the one entry point for users of templates."""
    path = find_template(name_or_path)
    template = read_template(path)
    params = resolve_parameters(template, given or {})
    return parse_spec(render(path, params), str(path))


def parse_assignments(pairs: list[str], what: str = "-p") -> dict[str, str]:
    """`key=value` strings from the command line into a dict; a malformed one is an error."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SpecError(what, repr(pair), "expected key=value")
        out[key.strip()] = value.strip()
    return out
