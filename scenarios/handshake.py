"""`handshake`: the three-way handshake and TCP options, checked with crafted SYNs.

Each check opens its own connection to the target's echo service with a SYN carrying the
options under test, then reads what the target sends back: the SYN-ACK's options, and the
sizes and options of the segments that echo data. What a target must not answer is judged
against a fence (a good SYN sent after the bad one, whose SYN-ACK comes after any answer to
the bad one would have), never against a quiet period.

The link runs with TSO off: veth hands TSO super-frames over whole, so with it on the peer
would read the target's unsegmented sends instead of the segments it cut.
"""
from __future__ import annotations

from collections.abc import Iterator

from pydantic import Field
from scapy.layers.inet import TCP

from .framework import Check, RunContext, ScenarioParams, scenario
from .peer import Peer, PeerTimeout, TcpOptions, option_value, raw_options, seq_add, tcp_payload

UNKNOWN_OPTION = (99, b"toel")  # an unassigned option kind with a 4-byte body


class HandshakeParams(ScenarioParams):
    mtu: int = Field(1500, ge=576, le=9000, description="MTU of the link")
    small_mss: int = Field(600, ge=88, le=1400, description="MSS the peer announces to test segment sizing")
    echo_bytes: int = Field(3000, ge=100, le=60000, description="bytes echoed per connection")


@scenario("handshake", purpose="Handshake and options: MSS sent and honoured (only on SYN), default MSS, "
          "unknown and malformed options, window scaling and timestamps negotiated.",
          topology="two_hosts", params=HandshakeParams, topology_params=lambda p: {"mtu": p.mtu, "tso": "false"},
          covers=("RFC9293 3.5", "MUST-4", "MUST-5", "MUST-6", "MUST-7", "MUST-14", "MUST-15", "MUST-16",
                  "MUST-64", "MUST-65", "MUST-67", "MUST-68", "MUST-69", "RFC7323 2.2", "RFC7323 2.3",
                  "RFC7323 3.2"), claims=("TOE-5",))
def run(ctx: RunContext) -> Iterator[Check]:
    conversations = _Conversations(ctx)
    p = ctx.params
    ctx.progress("MSS")
    synack, segments = conversations.echo([("MSS", p.small_mss), ("NOP", None), ("NOP", None), ("EOL", None)])
    yield ctx.check("synack-acks-isn", "RFC9293 3.5", synack[TCP].ack == seq_add(conversations.last_isn, 1),
                    f"the SYN-ACK acknowledged ISN+{(synack[TCP].ack - conversations.last_isn) % (1 << 32)}")
    mss = option_value(synack, "MSS")
    yield ctx.check("synack-has-mss", "MUST-14", mss is not None, f"the SYN-ACK carried MSS {mss}")
    yield ctx.check("synack-mss-from-mtu", "MUST-67", mss == p.mtu - 40,
                    f"the SYN-ACK announced MSS {mss} on a link of MTU {p.mtu} (expected {p.mtu - 40})")
    yield _sizes_check(ctx, "mss-honoured", "MUST-16", segments, p.small_mss, f"after a SYN announcing MSS {p.small_mss}")
    yield _sizes_check(ctx, "mandatory-options", "MUST-4", segments, p.small_mss,
                       "after a SYN with MSS, NOP and EOL options")

    ctx.progress("default MSS")
    bare, segments = conversations.echo([])
    yield _sizes_check(ctx, "mss-default-536", "MUST-15", segments, 536, "after a SYN without an MSS option")
    yield ctx.check("wscale-only-if-offered", "RFC7323 2.2", option_value(bare, "WScale") is None,
                    f"a SYN without window scale drew a SYN-ACK with WScale {option_value(bare, 'WScale')}")
    stamps = [f for f in [bare, *segments] if option_value(f, "Timestamp") is not None]
    yield ctx.check("timestamps-only-if-offered", "RFC7323 3.2", not stamps,
                    f"a SYN without timestamps drew {len(stamps)} segments carrying them")

    ctx.progress("unaligned and unknown options")
    unaligned = [("NOP", None), ("MSS", p.small_mss + 100), ("NOP", None), ("NOP", None), ("NOP", None)]
    _, segments = conversations.echo(unaligned)
    yield _sizes_check(ctx, "unaligned-mss", "MUST-64", segments, p.small_mss + 100,
                       f"after a SYN with MSS {p.small_mss + 100} at an odd offset")
    synack, segments = conversations.echo([("MSS", 1460), UNKNOWN_OPTION], data_options=[UNKNOWN_OPTION])
    yield ctx.check("unknown-option-syn", "MUST-6", synack is not None,
                    "a SYN with unknown option kind 99 was answered with a SYN-ACK")
    yield _echo_check(ctx, "unknown-option-data", "MUST-5", conversations.last_echo, p.echo_bytes,
                      "data segments carrying unknown option kind 99")

    ctx.progress("malformed options")
    yield from _malformed(ctx, conversations)

    ctx.progress("window scale and timestamps")
    yield from _window_scale(ctx, conversations)
    yield from _timestamps(ctx, conversations)

    synacks = conversations.synacks
    malformed = [(f[TCP].sport, why) for f in synacks if (why := options_fault(raw_options(f)))]
    yield ctx.check("options-have-length", "MUST-68", bool(synacks) and not any("length" in w for _, w in malformed),
                    f"{len(synacks)} SYN-ACKs had {sum('length' in w for _, w in malformed)} options without a valid length")
    yield ctx.check("options-zero-padded", "MUST-69", bool(synacks) and not any("padding" in w for _, w in malformed),
                    f"{len(synacks)} SYN-ACKs had {sum('padding' in w for _, w in malformed)} non-zero bytes after EOL")
    with_mss = sum(option_value(f, "MSS") is not None for f in conversations.later)
    yield ctx.check("mss-only-on-syn", "MUST-65", bool(conversations.later) and with_mss == 0,
                    f"{with_mss} of {len(conversations.later)} non-SYN segments from the target carried an MSS option")


class _Conversations:
    """Opens connections for the checks and keeps every SYN-ACK and later segment as evidence."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.synacks: list = []
        self.later: list = []
        self.last_isn = 0
        self.last_echo = b""

    def peer(self) -> Peer:
        return Peer(self.ctx.lab, self.ctx.client, self.ctx.address(self.ctx.server), self.ctx.port("echo"),
                    rng=self.ctx.rng)

    def echo(self, syn_options: TcpOptions | bytes, data_options: TcpOptions | None = None,
             window: int = 65535) -> tuple:
        """Handshake with `syn_options`, send `echo_bytes` in 1000-byte segments, read them back."""
        payload = bytes(i % 251 for i in range(self.ctx.params.echo_bytes))
        with self.peer() as peer:
            self.last_isn = peer.isn
            synack = peer.handshake(syn_options, window=window)
            self.synacks.append(synack)
            for offset in range(0, len(payload), 1000):
                peer.send_data(payload[offset:offset + 1000], options=data_options)
            data, segments = peer.receive(len(payload))
            self.later += [f for f in peer.received if "S" not in str(f[TCP].flags)]
            peer.abort()
        self.last_echo = data if data == payload else b"mismatch:" + data[:16]
        return synack, segments


def _sizes_check(ctx: RunContext, id: str, requirement: str, segments: list, limit: int, when: str) -> Check:
    sizes = [len(tcp_payload(f)) for f in segments]
    ok = bool(sizes) and max(sizes) <= limit
    return ctx.check(id, requirement, ok, f"{when}, the target's {len(sizes)} data segments were at most "
                     f"{max(sizes, default=0)} bytes (limit {limit})", numbers={"largest": max(sizes, default=0),
                                                                                "limit": limit})


def _echo_check(ctx: RunContext, id: str, requirement: str, echoed: bytes, expected: int, what: str) -> Check:
    ok = len(echoed) == expected and not echoed.startswith(b"mismatch:")
    return ctx.check(id, requirement, ok, f"{what} were accepted: {len(echoed)} of {expected} bytes came back intact")


def _malformed(ctx: RunContext, conversations: _Conversations) -> Iterator[Check]:
    """SYNs whose option lengths are zero or overrun the header: the target copes, then serves."""
    cases = {"zero-length": bytes([99, 0, 1, 1]), "header-overrunning": bytes([2, 40, 5, 0xB4])}
    for name, options in cases.items():
        with conversations.peer() as bad:
            bad.send(bad.segment("S", seq=bad.isn, options=options))
            try:
                with conversations.peer() as good:
                    good.handshake()
                    good.abort()
                answer = bad.drain()
                fine = True
                sentence = (f"after a SYN with a {name} option the target answered "
                            f"{'with ' + str(answer[0][TCP].flags) if answer else 'nothing'} and still served a new connection")
            except PeerTimeout as exc:
                fine, sentence = False, f"after a SYN with a {name} option a new connection failed: {exc}"
            if bad.received:
                bad.snd_nxt = seq_add(bad.isn, 1)
                bad.abort()
        yield ctx.check(f"malformed-option[{name}]", "MUST-7", fine, sentence)


def _window_scale(ctx: RunContext, conversations: _Conversations) -> Iterator[Check]:
    """Offer shift 7, then advertise a window field of 4 (512 bytes): the target must send more than 4, at most 512."""
    payload = bytes(2000)
    with conversations.peer() as peer:
        synack = peer.handshake([("MSS", 1460), ("NOP", None), ("WScale", 7)], ack_window=4)
        conversations.synacks.append(synack)
        shift = option_value(synack, "WScale")
        yield ctx.check("wscale-negotiated", "RFC7323 2.2", shift is not None,
                        f"a SYN offering window scale 7 drew a SYN-ACK with WScale {shift}")
        for offset in range(0, len(payload), 1000):
            peer.send(peer.segment("PA", payload[offset:offset + 1000], window=4))
            peer.snd_nxt = seq_add(peer.snd_nxt, 1000)
        try:
            first = peer.expect(payload=True)
            size = len(tcp_payload(first))
            ok, sentence = 4 < size <= 512, (f"with a window field of 4 at shift 7 (512 bytes) the target's first "
                                             f"echo segment carried {size} bytes")
        except PeerTimeout as exc:
            ok, sentence = False, f"with a scaled window of 512 bytes the target sent no data: {exc}"
        conversations.later += [f for f in peer.received if "S" not in str(f[TCP].flags)]
        peer.abort()
    yield ctx.check("wscale-applied", "RFC7323 2.3", ok, sentence)


def _timestamps(ctx: RunContext, conversations: _Conversations) -> Iterator[Check]:
    ts_val = ctx.rng.getrandbits(31)
    with conversations.peer() as peer:
        synack = peer.handshake([("MSS", 1460), ("NOP", None), ("NOP", None), ("Timestamp", (ts_val, 0))])
        conversations.synacks.append(synack)
        stamp = option_value(synack, "Timestamp")
        yield ctx.check("timestamps-negotiated", "RFC7323 3.2", stamp is not None and stamp[1] == ts_val,
                        f"a SYN with TSval {ts_val} drew a SYN-ACK with timestamp {stamp}")
        peer.send_data(b"timestamped")
        sent_val = peer.ts_val
        try:
            reply = peer.expect(payload=True)
            echoed = option_value(reply, "Timestamp")
            ok = echoed is not None and echoed[1] == sent_val
            sentence = f"data sent with TSval {sent_val} was echoed in a segment with timestamp {echoed}"
        except PeerTimeout as exc:
            ok, sentence = False, f"timestamped data was not echoed: {exc}"
        conversations.later += [f for f in peer.received if "S" not in str(f[TCP].flags)]
        peer.abort()
    yield ctx.check("timestamps-echoed", "RFC7323 3.2", ok, sentence)


def options_fault(options: bytes) -> str:
    """Why an option list is malformed ("length ..." or "padding ..."), or "" if it is well formed."""
    i = 0
    while i < len(options):
        kind = options[i]
        if kind == 0:
            return "" if not any(options[i + 1:]) else f"padding: non-zero byte after EOL at offset {i}"
        if kind == 1:
            i += 1
            continue
        if i + 1 >= len(options) or options[i + 1] < 2 or i + options[i + 1] > len(options):
            return f"length: option kind {kind} at offset {i} has no valid length"
        i += options[i + 1]
    return ""
