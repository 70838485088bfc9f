"""Benchmark rows: the one shape every `toelab bench NAME --json FILE` writes, so CI can track each figure.

    {"bench": NAME, "measurement": "...", "unit": "...", "reference": x, "engine": y, "ratio": y/x, ...}

`reference` is what the row is measured against in the same run (the kernel, Mininet, one
queue, Scapy), None where there is none; `engine` is the figure measured; `build` is the engine
build the figure was measured on ("compiled" or "pure", toe_engine/native.py); extra fields a row
needs go beside them. A benchmark function returns `Measured(table, rows)`: the table for the
terminal, the rows for the file. Rows are plain dicts (JSON as they are) checked by BenchRow.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator
from rich.table import Table

from toe_engine import native

Row = dict[str, Any]
#: How far a row's ratio may be from engine/reference: it is rounded to 3 places.
RATIO_TOLERANCE = 0.0006


class BenchRow(BaseModel):
    """One row of the benchmark convention (DESIGN.md, "Benchmarks"); extra fields are kept as they are."""

    model_config = ConfigDict(extra="allow", strict=True)

    bench: str
    measurement: str
    unit: str
    reference: float | int | None
    engine: float | int
    ratio: float | int | None
    build: Literal["compiled", "pure"] | None = None

    @field_validator("bench", "measurement")
    @classmethod
    def _named(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("reference", "engine", "ratio")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and (isinstance(value, bool) or not math.isfinite(value)):
            raise ValueError("must be a finite number")
        return value

    @model_validator(mode="after")
    def _ratio_is_engine_over_reference(self) -> BenchRow:
        if not self.reference:
            if self.ratio is not None:
                raise ValueError(f"ratio must be null when reference is {self.reference!r}")
        elif self.ratio is None or abs(self.ratio - self.engine / self.reference) > RATIO_TOLERANCE * max(
                1.0, abs(self.ratio)):
            raise ValueError(f"ratio {self.ratio!r} is not engine/reference = {self.engine / self.reference:.4g}")
        return self


class Measured(NamedTuple):
    """What a benchmark function returns: the terminal's table and the rows for `--json`."""

    table: Table
    rows: list[Row]


class BadRow(ValueError):
    """A benchmark produced a row outside the convention: a bug in that benchmark."""


def row(bench: str, measurement: str, unit: str, reference: float | None, engine: float, **extra: Any) -> Row:
    """A row of `bench`, its ratio engine/reference (None without a reference or with a zero one), and
    the engine build this process runs (engine processes it starts inherit the same choice)."""
    return check_row({"bench": bench, "measurement": measurement, "unit": unit, "reference": reference,
                      "engine": engine, "ratio": round(engine / reference, 3) if reference else None,
                      "build": native.build(), **extra})


def check_row(data: Row, bench: str | None = None) -> Row:
    """`data` unchanged if it follows the convention (and belongs to `bench` when given); BadRow saying why if not."""
    try:
        BenchRow.model_validate(data)
    except ValidationError as exc:
        raise BadRow(f"benchmark row {data.get('measurement')!r} breaks the row convention: {_why(exc)}") from None
    try:
        json.dumps(data, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise BadRow(f"benchmark row {data['measurement']!r} is not JSON: {exc}") from None
    if bench is not None and data["bench"] != bench:
        raise BadRow(f"benchmark row {data['measurement']!r} says bench {data['bench']!r}, but {bench!r} made it")
    return data


def _why(exc: ValidationError) -> str:
    """The first problem pydantic found, in one line: `field: message`."""
    first = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"][:1])
    message = first["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def write_rows(path: Path, rows: list[Row]) -> None:
    """The rows as one JSON list, the file's parent made if needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def table_of(title: str, rows: list[Row]) -> Table:
    """The plain reference / engine / ratio table of rows, for benchmarks with no table of their own."""
    table = Table(title=title)
    for column in ("measurement", "reference", "engine", "ratio"):
        table.add_column(column, justify="right")
    for r in rows:
        ref = "" if r["reference"] is None else f"{r['reference']:,} {r['unit']}"
        table.add_row(r["measurement"], ref, f"{r['engine']:,} {r['unit']}",
                      "" if r["ratio"] is None else f"{r['ratio']:.3f}")
    return table
