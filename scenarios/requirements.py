"""Requirement references a check may cite: RFC 9293 IDs from the RFC's own table, or an RFC section.

The RFC 9293 table (Appendix B) ships with toelab in `data/rfc9293-requirements.csv`, so a
check citing `MUST-99` is caught when it is made, not when someone reads the report.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

CSV_PATH = Path(__file__).parent / "data" / "rfc9293-requirements.csv"
RFC9293_ID = re.compile(r"^(MUST|SHLD|MAY)-\d+$")
#: Another RFC and section: `RFC5961 3.2`, `RFC2018 4`, `RFC7323 2.2`, or a whole RFC `RFC5681`.
RFC_SECTION = re.compile(r"^RFC\d{3,5}( \d+(\.\d+)*)?$")


@dataclass(frozen=True)
class Requirement:
    id: str
    level: str
    group: str
    feature: str


@cache
def rfc9293() -> dict[str, list[Requirement]]:
    """RFC 9293 requirements by ID; some IDs name several rows (IPv4/IPv6 variants)."""
    table: dict[str, list[Requirement]] = {}
    with CSV_PATH.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            req = Requirement(row["req"].strip(), row["level"].strip(), row["group"].strip(), row["feature"].strip())
            table.setdefault(req.id, []).append(req)
    return table


def validate(reference: str) -> str:
    """Return `reference` if it names an RFC 9293 ID from the table or an RFC section; else ValueError."""
    if RFC9293_ID.match(reference):
        if reference not in rfc9293():
            raise ValueError(f"{reference!r} is not a requirement ID in RFC 9293's table ({CSV_PATH.name})")
        return reference
    if RFC_SECTION.match(reference):
        return reference
    raise ValueError(f"{reference!r} is neither an RFC 9293 ID like 'MUST-18' nor an RFC section like 'RFC5961 3.2'")


def describe(reference: str) -> str:
    """A short human description: the RFC 9293 feature text, or the reference itself."""
    rows = rfc9293().get(reference)
    if not rows:
        return reference
    return f"{rows[0].level}: {rows[0].group}: " + "; ".join(r.feature for r in rows)


def sort_key(reference: str) -> tuple[int, str, int, str]:
    """RFC 9293 IDs first, by level and number (MUST-2 before MUST-10), then other RFCs."""
    if match := re.match(r"^(MUST|SHLD|MAY)-(\d+)$", reference):
        return (0, match.group(1), int(match.group(2)), "")
    return (1, "", 0, reference)


# --- TOE claims -------------------------------------------------------------------------------
#: What is said about TCP offload engines (TOE-1 ... TOE-19), each with how a lab shows it.
CLAIMS_CSV = Path(__file__).parent / "data" / "toe-claims.csv"
CLAIM_ID = re.compile(r"^TOE-\d+$")


@dataclass(frozen=True)
class Claim:
    id: str
    source: str
    brief: str
    how: str


@cache
def toe_claims() -> dict[str, Claim]:
    """The TOE claims by ID, in the table's order."""
    with CLAIMS_CSV.open(newline="", encoding="utf-8") as f:
        return {row["claim"].strip(): Claim(row["claim"].strip(), row["source"].strip(),
                                            row["claim in brief"].strip(), row["how a lab shows it"].strip())
                for row in csv.DictReader(f)}


def validate_claim(claim: str) -> str:
    """Return `claim` if it is an ID of the TOE claims table (`TOE-6`); else ValueError."""
    if claim not in toe_claims():
        shape = "" if CLAIM_ID.match(claim) else " (claims look like 'TOE-6')"
        raise ValueError(f"{claim!r} is not a claim in {CLAIMS_CSV.name}{shape}")
    return claim


def claim_sort_key(claim: str) -> int:
    """TOE-2 before TOE-10."""
    return int(claim.rpartition("-")[2])
