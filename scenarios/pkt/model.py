"""What a parsed packetdrill script is made of: timed events of three kinds, and script options.

Every event keeps its line number, so a verdict names the line as packetdrill would. A
construct the runner does not support is kept as an `Unsupported` event (with its reason)
rather than raising: one unknown line never stops a script from being read.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Option names as scripts write them.
OPTION_NAMES = ("mss", "sackOK", "TS", "nop", "wscale", "sack", "eol", "FO", "md5")


@dataclass(frozen=True)
class When:
    """An event's time: absolute or relative (`+t`), any (`*`), a range (`t1~t2`), a blocking span (`t1...t2`)."""

    start: float = 0.0
    relative: bool = False
    any_time: bool = False
    end: float | None = None  # range end (`~`), in the same frame as start
    end_relative: bool = False
    blocking_end: float | None = None  # `...t2`: a system call that returns at t2
    blocking_end_relative: bool = False


@dataclass(frozen=True)
class TcpOption:
    """One TCP option: kind name and its values (mss N; wscale N; TS (val, ecr); sack ((a, b), ...))."""

    name: str
    values: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Packet:
    """A `<` (inbound: injected) or `>` (outbound: expected) TCP segment."""

    direction: str  # "<" or ">"
    flags: str  # packetdrill letters, "." meaning ACK
    optional_flags: str = ""  # toelab extension (`R[.]`): flags the segment may or may not carry
    seq: int | None = None  # None: not given (outbound: not checked)
    end: int | None = None
    length: int | None = None
    ack: int | None = None
    urg: int | None = None
    win: int | None = None
    win_max: int | None = None  # `win a~b`: a toelab extension for windows that legitimately differ
    options: tuple[TcpOption, ...] | None = None  # None: no option list given
    options_wildcard: bool = False  # `<...>`: any options
    ttl: int | None = None  # toelab extension on outbound lines: the IP TTL (hop limit) it must carry
    tos: int | None = None  # toelab extension: the IP TOS byte (traffic class) it must carry
    ip_options: bytes | None = None  # toelab extension (`ipopts HEX`): the IP options it must carry
    conn: int = 1  # toelab extension (`conn 2`): which of the script's connections (peer ports) it belongs to


@dataclass(frozen=True)
class Icmp:
    """`< icmp unreachable frag_needed mtu 1200 [1:1461(1460)]`: an ICMP error quoting a target segment."""

    direction: str
    kind: str
    code: str
    mtu: int | None = None
    quoted_seq: int | None = None
    quoted_end: int | None = None


@dataclass(frozen=True)
class Syscall:
    """`name(args) = ret [ERRNO (text)]`; args are parsed values (ints, names, lists, dicts, None for `...`)."""

    name: str
    args: tuple[Any, ...]
    ret: Any
    errno: str | None = None


@dataclass(frozen=True)
class Shell:
    """A backtick command, run in the target's node."""

    command: str


@dataclass(frozen=True)
class Unsupported:
    """A line the runner cannot execute; the script's verdict reports it with `reason`."""

    text: str
    reason: str


Action = Packet | Icmp | Syscall | Shell | Unsupported


@dataclass(frozen=True)
class Event:
    line: int
    when: When
    action: Action
    text: str


@dataclass
class Script:
    """A parsed script: its options (`--name=value` lines), events in order, and the requirement it names."""

    path: str
    options: dict[str, str] = field(default_factory=dict)
    option_lines: dict[str, int] = field(default_factory=dict)  # where each option was given
    events: list[Event] = field(default_factory=list)
    requirements: list[str] = field(default_factory=list)
    #: Lines outside the timeline the runner cannot honour (a `%{ }%` block, an unknown option), with reasons.
    problems: list[tuple[int, str]] = field(default_factory=list)

    def connections(self) -> int:
        """How many peer ports the script speaks from (`conn N` on its packet lines; 1 without)."""
        return max([e.action.conn for e in self.events if isinstance(e.action, Packet)], default=1)

    def unsupported(self) -> list[tuple[int, str]]:
        """Every unsupported construct the parser found as (line, reason), in line order."""
        found = self.problems + [(e.line, e.action.reason) for e in self.events if isinstance(e.action, Unsupported)]
        return sorted(found)
