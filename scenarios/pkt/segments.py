"""Script packets to wire segments and back: relative sequence numbers, options, matching.

As packetdrill does, a script speaks of the target's sequence space relative to the target's
ISN: the script's `> S` or `> S.` line says the ISN is (usually) 0, and the live ISN seen on
the wire fixes the offset for every later line. Sequence numbers the script gives for its own
side (the `<` lines' seq, the `>` lines' ack) go on the wire as written, so the script's own
ISN is the one it writes. The same holds for timestamps: an inbound `TS ... ecr E` is the
script's E mapped through the offset learned from the target's first TSval.

Pure code: frames are Scapy packets, nothing is sent here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scapy.layers.inet import IP, TCP
from scapy.packet import Raw

from .model import Packet, TcpOption

MOD = 1 << 32
FLAG_BITS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, ".": 0x10, "U": 0x20, "E": 0x40, "W": 0x80}
_OPTION_TO_SCAPY = {"mss": "MSS", "wscale": "WScale", "sackOK": "SAckOK", "nop": "NOP", "eol": "EOL",
                    "TS": "Timestamp", "sack": "SAck"}


class MappingError(ValueError):
    """A script line needs an offset the script has not established yet (say, an ack before any SYN)."""


def flag_bits(letters: str) -> int:
    bits = 0
    for letter in letters:
        bits |= FLAG_BITS[letter]
    return bits


def flag_letters(bits: int) -> str:
    """packetdrill's spelling of a flag set: S, F, R, P in that order, then '.', U, E, W."""
    return "".join(letter for letter in "SFRP.UEW" if bits & FLAG_BITS[letter])


@dataclass
class SeqMap:
    """Offsets from script numbers to live ones, for the target's sequence space and TSval clock."""

    local_offset: int | None = None
    ts_offset: int | None = None

    def learn(self, script: Packet, seg: TCP) -> None:
        """Fix the target's ISN offset from its SYN (or SYN-ACK), and the TSval offset from its first stamp."""
        if self.local_offset is None and "S" in script.flags and script.seq is not None:
            self.local_offset = (seg.seq - script.seq) % MOD
        if self.ts_offset is None and script.options:
            for option in script.options:
                if option.name == "TS":
                    stamp = _timestamp(seg)
                    if stamp is not None:
                        self.ts_offset = (stamp[0] - option.values[0]) % MOD

    def local(self, value: int, what: str) -> int:
        """A script number in the target's sequence space, made live."""
        if self.local_offset is None:
            raise MappingError(f"{what} {value} is relative to the target's ISN, which no `>` SYN has shown yet")
        return (value + self.local_offset) % MOD

    def script_local(self, live: int) -> int:
        """A live number in the target's sequence space, as the script would write it."""
        return (live - (self.local_offset or 0)) % MOD


def inbound(packet: Packet, seqmap: SeqMap, *, sport: int, dport: int) -> TCP:
    """The TCP header and payload of a `<` line, live."""
    flags = flag_bits(packet.flags)
    ack = seqmap.local(packet.ack, "ack") if packet.ack is not None else 0
    if ack and not flags & FLAG_BITS["."]:
        ack = 0
    options = [_scapy_option(option, seqmap) for option in packet.options or ()]
    tcp = TCP(sport=sport, dport=dport, seq=(packet.seq or 0) % MOD, ack=ack, flags=flags,
              window=65535 if packet.win is None else packet.win, urgptr=packet.urg or 0, options=options)
    if packet.length:
        tcp = tcp / Raw(bytes(packet.length))
    return tcp


def _scapy_option(option: TcpOption, seqmap: SeqMap) -> tuple[str, Any]:
    name = _OPTION_TO_SCAPY[option.name]
    if option.name in ("mss", "wscale"):
        return name, option.values[0]
    if option.name == "TS":
        val, ecr = option.values
        if ecr and seqmap.ts_offset is not None:
            ecr = (ecr + seqmap.ts_offset) % MOD
        return name, (val, ecr)
    if option.name == "sack":
        edges: list[int] = []
        for left, right in option.values:
            edges += [seqmap.local(left, "sack edge"), seqmap.local(right, "sack edge")]
        return name, tuple(edges)
    if option.name == "sackOK":
        return name, b""
    return name, None


def live_options(frame: Any) -> list[TcpOption]:
    """The options of a received segment as the script writes them, in wire order, from the raw bytes."""
    ip = frame[IP]
    raw = bytes(ip)[ip.ihl * 4:]
    data = raw[20:(raw[12] >> 4) * 4]
    out: list[TcpOption] = []
    i = 0
    while i < len(data):
        kind = data[i]
        if kind == 0:
            out.append(TcpOption("eol"))
            break
        if kind == 1:
            out.append(TcpOption("nop"))
            i += 1
            continue
        if i + 1 >= len(data) or data[i + 1] < 2:
            out.append(TcpOption(f"malformed-{kind}"))
            break
        length = data[i + 1]
        body = data[i + 2:i + length]
        if kind == 2 and len(body) == 2:
            out.append(TcpOption("mss", (int.from_bytes(body, "big"),)))
        elif kind == 3 and len(body) == 1:
            out.append(TcpOption("wscale", (body[0],)))
        elif kind == 4:
            out.append(TcpOption("sackOK"))
        elif kind == 5:
            edges = [int.from_bytes(body[j:j + 4], "big") for j in range(0, len(body) - 3, 4)]
            out.append(TcpOption("sack", tuple(zip(edges[::2], edges[1::2]))))
        elif kind == 8 and len(body) == 8:
            out.append(TcpOption("TS", (int.from_bytes(body[:4], "big"), int.from_bytes(body[4:], "big"))))
        else:
            out.append(TcpOption(f"kind-{kind}", (body.hex(),)))
        i += length
    return out


def payload_length(frame: Any) -> int:
    ip = frame[IP]
    tcp = frame[TCP]
    return max(0, ip.len - ip.ihl * 4 - tcp.dataofs * 4)


def _timestamp(seg: TCP) -> tuple[int, int] | None:
    for kind, value in seg.options:
        if kind == "Timestamp":
            return value  # type: ignore[no-any-return]
    return None


def describe(frame: Any, seqmap: SeqMap) -> str:
    """A received segment in script syntax, sequence numbers relative as the script writes them."""
    tcp = frame[TCP]
    length = payload_length(frame)
    seq = seqmap.script_local(tcp.seq)
    text = f"{flag_letters(int(tcp.flags))} {seq}:{(seq + length) % MOD}({length})"
    if tcp.flags & FLAG_BITS["."]:
        text += f" ack {tcp.ack}"
    if tcp.flags & FLAG_BITS["U"]:
        text += f" urg {tcp.urgptr}"
    text += f" win {tcp.window}"
    options = live_options(frame)
    if options:
        text += " <" + ",".join(_option_text(o, seqmap, outbound=True) for o in options) + ">"
    return text


def _option_text(option: TcpOption, seqmap: SeqMap, outbound: bool = False) -> str:
    if option.name == "TS":
        val, ecr = option.values
        if outbound and seqmap.ts_offset is not None:
            val = (val - seqmap.ts_offset) % MOD
        return f"TS val {val} ecr {ecr}"
    if option.name == "sack":
        return "sack " + " ".join(f"{a}:{b}" for a, b in option.values)
    if option.values:
        return f"{option.name} {' '.join(str(v) for v in option.values)}"
    return option.name


def mismatch(packet: Packet, frame: Any, seqmap: SeqMap) -> str | None:
    """Why a received segment is not the `>` line's, or None if it is; learns the ISN offset from a SYN."""
    tcp = frame[TCP]
    flags = int(tcp.flags)
    if flags & ~flag_bits(packet.optional_flags) != flag_bits(packet.flags):
        wanted = packet.flags + (f"[{packet.optional_flags}]" if packet.optional_flags else "")
        return f"flags {flag_letters(flags) or 'none'} where the script has {wanted}"
    seqmap.learn(packet, tcp)
    length = payload_length(frame)
    if packet.seq is not None:
        want = seqmap.local(packet.seq, "seq")
        if tcp.seq != want:
            return f"seq {seqmap.script_local(tcp.seq)} where the script has {packet.seq}"
        if packet.length is not None and length != packet.length:
            return f"{length} bytes of data where the script has {packet.length}"
    if packet.ack is not None and flags & FLAG_BITS["."] and tcp.ack != packet.ack % MOD:
        return f"ack {tcp.ack} where the script has {packet.ack}"
    if packet.win is not None:
        high = packet.win if packet.win_max is None else packet.win_max
        if not packet.win <= tcp.window <= high:
            wanted = f"{packet.win}" if packet.win_max is None else f"{packet.win}~{high}"
            return f"win {tcp.window} where the script has {wanted}"
    ip = frame[IP]
    if packet.ttl is not None and ip.ttl != packet.ttl:
        return f"ttl {ip.ttl} where the script has {packet.ttl}"
    if packet.tos is not None and ip.tos != packet.tos:
        return f"tos {ip.tos:#x} where the script has {packet.tos:#x}"
    if packet.ip_options is not None:
        got = bytes(ip)[20:ip.ihl * 4]
        if got != packet.ip_options:
            return f"IP options {got.hex() or 'none'} where the script has {packet.ip_options.hex()}"
    if packet.urg is not None and tcp.urgptr != packet.urg:
        return f"urg {tcp.urgptr} where the script has {packet.urg}"
    if packet.options is not None and not packet.options_wildcard:
        live = live_options(frame)
        problem = _options_mismatch(packet.options, live, seqmap)
        if problem:
            return problem
    return None


def _options_mismatch(wanted: tuple[TcpOption, ...], live: list[TcpOption], seqmap: SeqMap) -> str | None:
    def text(options: Any) -> str:
        return "<" + ",".join(_option_text(o, seqmap, outbound=True) for o in options) + ">"

    if [o.name for o in wanted] != [o.name for o in live]:
        return f"options {text(live)} where the script has {text(wanted)}"
    for want, got in zip(wanted, live):
        if want.name == "TS":
            if want.values[1] != got.values[1]:
                return f"TS ecr {got.values[1]} where the script has {want.values[1]}"
        elif want.values != got.values:
            return f"options {text(live)} where the script has {text(wanted)}"
    return None
