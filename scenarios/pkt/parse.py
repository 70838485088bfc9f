"""A parser for packetdrill's script language (as documented in google/packetdrill and used by the
Linux kernel's and FreeBSD's TCP test suites), written for toelab's runner.

    --tolerance_usecs=10000                   script options, at the top
    `sysctl -q net.ipv4.tcp_timestamps=0`      a shell command (here: in the target's node)
    0     socket(..., SOCK_STREAM, IPPROTO_TCP) = 3
    +0    bind(3, ..., ...) = 0
    +0    < S 0:0(0) win 32792 <mss 1000,sackOK,nop,nop,nop,wscale 7>
    +0    > S. 0:0(0) ack 1 <...>
    +.1   < . 1:1(0) ack 1 win 257
    0.1~0.3 > . 1:1(0) ack 1                 a time range; `*` is any time
    +0...0.2 read(4, ..., 1000) = 1000        a blocking call returning at 0.2
    +0    < icmp unreachable frag_needed mtu 1200 [1:1461(1460)]

Comments are `//` and `/* */`; a comment `// requirement: MUST-24` names what the script checks.
Lines are joined while brackets are open, so a call may span lines. Whatever cannot be run
(`%{ python }%`, UDP, IP-level packet syntax, unknown options) becomes an `Unsupported` event
or a script problem with its line number; the parser raises only for text that is not a
script at all (ScriptError, with file and line).

toelab extensions: flags in brackets are optional (`> R[.]`: a RST with or without ACK, where
stacks legitimately differ); `win A~B` on an outbound packet accepts any window in [A, B], for windows
that legitimately differ between stacks (`win` left out of an outbound packet is not checked);
`ttl N`, `tos N` and `ipopts HEX` on an outbound packet check its IP header (IP_TTL, IP_TOS,
IP_OPTIONS); `conn N` puts a
packet on the script's N-th connection (its own peer port), for scripts with several at once. A connect() to
`{sin_addr=inet_addr("a.b.c.d")}` goes to that address instead of the script's peer.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .model import Event, Icmp, Packet, Script, Shell, Syscall, TcpOption, Unsupported, When

_NUM = r"(?:\d+(?:\.\d*)?|\.\d+)"
_POINT = rf"\+?{_NUM}"
_TIME = re.compile(rf"^(\*|(?P<start>{_POINT})(?:\s*~\s*(?P<end>{_POINT}))?(?:\s*\.\.\.\s*(?P<block>{_POINT}))?)(?=\s|$)")
_SEQ = re.compile(r"^(\d+):(\d+)\((\d+)\)$")
_REQUIREMENT = re.compile(r"requirement:\s*([A-Za-z0-9][A-Za-z0-9 .\-]*[A-Za-z0-9])")
_SYSCALL = re.compile(r"^([a-z_][a-z0-9_]*)\s*\((.*)\)\s*=\s*(.+)$", re.S)
_OPTION_LINE = re.compile(r"^--([a-z_]+)(?:[=\s]\s*(.*))?$")
PACKET_FLAGS = frozenset("SFRP.UEW")
MAX_CONNECTIONS = 4
#: Script options the runner honours (the rest are reported as problems).
KNOWN_OPTIONS = frozenset({"ip_version", "mss", "local_ip", "remote_ip", "tolerance_usecs", "tolerance_percent",
                           "bind_port", "connect_port", "wire_client_dev", "wire_server_dev", "init_scripts"})


class ScriptError(ValueError):
    """Text that is not a packetdrill script; the message names the file and line."""


def parse_file(path: str | Path) -> Script:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ScriptError(f"{path}: cannot read the script: {exc.strerror}") from None
    return parse(text, str(path))


def parse(text: str, path: str = "<script>") -> Script:
    script = Script(path)
    script.requirements = [m.group(1).strip() for m in _REQUIREMENT.finditer(text)]
    for line, body in _statements(text, script):
        _statement(script, line, body)
    return script


# --- lines -----------------------------------------------------------------------------------

def _statements(text: str, script: Script) -> list[tuple[int, str]]:
    """(first line number, text) of each statement: comments gone, bracketed continuations joined."""
    out: list[tuple[int, str]] = []
    pending = ""
    start = 0
    in_block_comment = False
    in_python = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw
        if in_python:
            if "}%" in line:
                in_python = 0
            continue
        if in_block_comment:
            end = line.find("*/")
            if end < 0:
                continue
            line = line[end + 2:]
            in_block_comment = False
        line = _strip_comments(line)
        if "/*" in line:
            head, _, tail = line.partition("/*")
            if "*/" in tail:
                line = head + tail.partition("*/")[2]
            else:
                line, in_block_comment = head, True
        if "%{" in line and not pending:
            script.problems.append((number, "a %{ python }% block is not supported"))
            if "}%" not in line:
                in_python = number
            continue
        if not pending and not line.strip():
            continue
        if not pending:
            start = number
        pending = f"{pending} {line.strip()}" if pending else line.strip()
        if _balanced(pending):
            out.append((start, pending))
            pending = ""
    if pending:
        raise ScriptError(f"{script.path}:{start}: unbalanced brackets or backticks in {pending[:60]!r}")
    if in_python:
        script.problems.append((in_python, "a %{ python }% block is not closed"))
    return out


def _strip_comments(line: str) -> str:
    """Drop a `//` comment that is not inside a string or backticks."""
    quote = ""
    for i, char in enumerate(line):
        if quote:
            if char == quote:
                quote = ""
        elif char in "\"`":
            quote = char
        elif line.startswith("//", i):
            return line[:i]
    return line


def _balanced(text: str) -> bool:
    if text.count("`") % 2:
        return False
    depth = 0
    quote = ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"`":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
    return depth <= 0


# --- statements ----------------------------------------------------------------------------

def _statement(script: Script, line: int, text: str) -> None:
    option = _OPTION_LINE.match(text)
    if option:
        name, value = option.group(1), (option.group(2) or "").strip()
        if name not in KNOWN_OPTIONS:
            script.problems.append((line, f"script option --{name} is not supported"))
        script.options[name] = value
        script.option_lines[name] = line
        return
    when, rest = _when(text)
    if when is None:
        if text.startswith("`"):
            when, rest = When(0.0, relative=True), text
        else:
            script.events.append(Event(line, When(0.0, relative=True),
                                       Unsupported(text, "a statement must start with a time"), text))
            return
    script.events.append(Event(line, when, _action(rest.strip()), text))


def _when(text: str) -> tuple[When | None, str]:
    match = _TIME.match(text)
    if not match:
        return None, text
    rest = text[match.end():]
    if match.group(1) == "*":
        return When(any_time=True), rest
    start = match.group("start")
    end, block = match.group("end"), match.group("block")
    return When(start=float(start.lstrip("+")), relative=start.startswith("+"),
                end=float(end.lstrip("+")) if end else None, end_relative=bool(end and end.startswith("+")),
                blocking_end=float(block.lstrip("+")) if block else None,
                blocking_end_relative=bool(block and block.startswith("+"))), rest


def _action(text: str) -> Packet | Icmp | Syscall | Shell | Unsupported:
    try:
        if text.startswith("`"):
            if not text.endswith("`"):
                return Unsupported(text, "text after a backtick command")
            return Shell(text[1:-1].strip())
        if text[:1] in "<>":
            return _packet(text)
        match = _SYSCALL.match(text)
        if match:
            return _syscall(*match.groups())
    except _Unsupported as exc:
        return Unsupported(text, str(exc))
    except (ValueError, IndexError) as exc:
        return Unsupported(text, f"cannot parse: {exc}")
    return Unsupported(text, "neither a packet, a system call nor a shell command")


class _Unsupported(Exception):
    """A recognised construct the runner does not execute."""


# --- packets -----------------------------------------------------------------------------------

def _packet(text: str) -> Packet | Icmp:
    direction, body = text[0], text[1:].strip()
    options_text = None
    if body.endswith(">") and "<" in body:
        cut = body.index("<")
        body, options_text = body[:cut].strip(), body[cut + 1:-1].strip()
    words = body.split()
    if not words:
        raise ValueError("a packet line needs flags")
    head = words[0]
    if head == "icmp":
        return _icmp(direction, words[1:])
    if head in ("udp", "udplite") or head.startswith(("(", "[")) or head == "ecn":
        raise _Unsupported(f"{head} packets are not supported (TCP and ICMP only)")
    optional = ""
    if head.endswith("]") and "[" in head:  # toelab extension: R[.] is RST with or without ACK
        head, _, optional = head[:-1].partition("[")
    if not set(head + optional) <= PACKET_FLAGS or not head:
        raise ValueError(f"unknown TCP flags {words[0]!r}")
    fields: dict[str, Any] = {"direction": direction, "flags": head, "optional_flags": optional}
    rest = words[1:]
    if rest and _SEQ.match(rest[0]):
        seq, end, length = (int(x) for x in _SEQ.match(rest[0]).groups())  # type: ignore[union-attr]
        if (end - seq) % (1 << 32) != length:
            raise ValueError(f"{rest[0]}: end - start is not the length")
        fields.update(seq=seq, end=end, length=length)
        rest = rest[1:]
    while rest:
        key = rest[0]
        if key not in ("ack", "win", "urg", "ttl", "tos", "conn", "ipopts") or len(rest) < 2:
            raise _Unsupported(f"packet field {key!r} is not supported")
        value = rest[1]
        if key == "ipopts":
            fields["ip_options"] = bytes.fromhex(value)
        elif key == "win" and "~" in value:
            low, _, high = value.partition("~")
            fields.update(win=int(low), win_max=int(high))
        else:
            fields[key] = int(value, 0)
        rest = rest[2:]
    if not 1 <= fields.get("conn", 1) <= MAX_CONNECTIONS:
        raise _Unsupported(f"conn {fields['conn']}: a script has connections 1 to {MAX_CONNECTIONS}")
    if options_text is not None:
        if options_text == "...":
            fields["options_wildcard"] = True
        else:
            fields["options"] = tuple(_option(o.strip()) for o in options_text.split(",") if o.strip())
    return Packet(**fields)


def _option(text: str) -> TcpOption:
    words = text.split()
    name = words[0]
    if name in ("nop", "eol", "sackOK") and len(words) == 1:
        return TcpOption(name)
    if name in ("mss", "wscale") and len(words) == 2:
        return TcpOption(name, (int(words[1]),))
    if name == "TS" and len(words) == 5 and words[1] == "val" and words[3] == "ecr":
        return TcpOption("TS", (int(words[2]), int(words[4])))
    if name == "sack" and len(words) >= 2:
        blocks = []
        for block in words[1:]:
            left, _, right = block.partition(":")
            blocks.append((int(left), int(right)))
        return TcpOption("sack", tuple(blocks))
    raise _Unsupported(f"TCP option {text!r} is not supported")


def _icmp(direction: str, words: list[str]) -> Icmp:
    quoted = None
    if words and words[-1].startswith("[") and words[-1].endswith("]"):
        quoted = _SEQ.match(words[-1][1:-1])
        if quoted is None:
            raise _Unsupported(f"quoted segment {words[-1]} is not supported (use [start:end(len)])")
        words = words[:-1]
    if len(words) < 2:
        raise ValueError("an icmp line needs a type and a code")
    mtu = None
    if len(words) >= 4 and words[2] == "mtu":
        mtu = int(words[3])
    elif len(words) != 2:
        raise _Unsupported(f"icmp fields {' '.join(words[2:])!r} are not supported")
    return Icmp(direction, words[0], words[1], mtu,
                int(quoted.group(1)) if quoted else None, int(quoted.group(2)) if quoted else None)


# --- system calls --------------------------------------------------------------------------

def _syscall(name: str, args_text: str, result: str) -> Syscall:
    try:
        args = _Values(args_text).sequence(end="")
    except (ValueError, IndexError) as exc:
        raise ValueError(f"the arguments of {name}(): {exc}") from None
    words = result.strip().split(None, 2)
    ret = _Values(words[0]).value()
    errno = None
    if len(words) > 1:
        errno = words[1]
        if not re.fullmatch(r"E[A-Z0-9]+", errno):
            raise ValueError(f"{errno!r} is not an errno name")
        if len(words) > 2 and not (words[2].startswith("(") and words[2].endswith(")")):
            raise ValueError(f"unexpected text after the errno: {words[2]!r}")
    return Syscall(name, tuple(args), ret, errno)


_TOKEN = re.compile(r'\s*(\.\.\.|"(?:[^"\\]|\\.)*"|-?0x[0-9a-fA-F]+|-?\d+|[A-Za-z_][A-Za-z0-9_|]*|[\[\]{}(),=|])')


class _Values:
    """Arguments of a system call: `...`, numbers, names (`O_RDWR|O_NONBLOCK`), strings, [lists],
    {key=value structs} and calls such as htons(8080). `...` becomes None."""

    def __init__(self, text: str) -> None:
        self.tokens: list[str] = []
        pos = 0
        text = text.strip()
        while pos < len(text):
            match = _TOKEN.match(text, pos)
            if not match:
                raise ValueError(f"cannot read {text[pos:pos + 20]!r}")
            self.tokens.append(match.group(1))
            pos = match.end()
            while pos < len(text) and text[pos].isspace():
                pos += 1
        self.i = 0

    def peek(self) -> str:
        return self.tokens[self.i] if self.i < len(self.tokens) else ""

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if expected is not None and token != expected:
            raise ValueError(f"expected {expected!r}, found {token or 'the end'!r}")
        self.i += 1
        return token

    def sequence(self, end: str) -> list[Any]:
        items: list[Any] = []
        while self.peek() != end:
            items.append(self.value())
            if self.peek() == ",":
                self.take()
            elif self.peek() != end:
                raise ValueError(f"expected ',' or {end or 'the end'!r}, found {self.peek()!r}")
        return items

    def value(self) -> Any:
        token = self.take()
        if token == "...":
            return None
        if token == "[":
            items = self.sequence("]")
            self.take("]")
            return items
        if token == "{":
            return self._struct()
        if token.startswith('"'):
            return bytes(token[1:-1], "utf-8").decode("unicode_escape")
        if re.fullmatch(r"-?(0x[0-9a-fA-F]+|\d+)", token):
            return int(token, 0)
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_|]*", token):
            if self.peek() == "(":
                self.take()
                args = self.sequence(")")
                self.take(")")
                return {"call": token, "args": args}
            return token
        raise ValueError(f"unexpected {token!r}")

    def _struct(self) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        while self.peek() != "}":
            key = self.take()
            if key == "...":
                fields["..."] = None
            else:
                self.take("=")
                fields[key] = self.value()
            if self.peek() == ",":
                self.take()
        self.take("}")
        return fields
