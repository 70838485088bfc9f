"""`source_route`: what a TCP does with the IPv4 source route of the datagrams that open its connections.

RFC 9293 3.9.2.1 and RFC 1122 4.2.3.8: a connection opened passively by a SYN that arrived with
a completed source route must send all its segments back along the reversed route (MUST-53),
and a different route arriving later should override it (SHLD-24); a route the application
gave for an active open takes precedence over one received (MUST-52).

- Return route (MUST-53): the peer's SYN to echo arrives as if it came along a loose source
  route (LSRR, RFC 791 3.1) through two hops, the peer's own extra addresses on the link: the
  option lists them in the order passed, its pointer past the last. The target's SYN-ACK and
  every echoed data segment must go to the last hop, with LSRR pointer 4 naming the first hop
  and then the peer (RFC 1122 3.2.1.8c), and the echo must come back byte-exact. The peer sends
  the route on its SYN only, so the target has to have saved it.
- Later route (SHLD-24): more data then arrives along the hops the other way round; the echo of
  it should follow the reversal of this later route.
- Strict route (MUST-53 again): a SYN that came along a strict source route (SSRR) through the
  same hops is answered along its reversal, strict too.
- Application route first (MUST-52): an application in the target sets IP_OPTIONS (an LSRR
  through the first hop) and connects to the peer; the peer answers with a SYN-ACK that came
  along the other hop. The handshake's ACK and the application's data must still follow the
  application's route. A target whose socket API refuses IP_OPTIONS cannot be asked (MUST-51):
  that is a skip naming the refusal.

Preconditions, each failing the checks that need it: the same handshake and echo without the
route work on the same path; the source-routed SYN was seen arriving on the target's interface
(a capture there); for MUST-52, the target's own SYN followed the application's route.

Linux's IP layer drops every datagram carrying a source route unless
net.ipv4.conf.all.accept_source_route and the interface's are both 1 (ip_rcv_options); a host
ships with 0. RFC 1122 3.2.1.8 asks a host to be *able* to act as the final destination of a
source route, which Linux is once configured, and RFC 9293's requirements are about what TCP
does with a route IP delivers. So the scenario first records what the target does as shipped (a
source-routed SYN, then a fence connection: an answer would come before the fence's), then sets
both sysctls to 1 in the target's namespace and judges TCP there; each sentence says so.
"""
from __future__ import annotations

import socket
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import Field
from scapy.layers.inet import IP, TCP, IPOption_LSRR, IPOption_SSRR
from scapy.layers.l2 import Ether
from scapy.packet import Packet

from .addresses import read_all, with_ip_options
from .framework import Check, RunContext, ScenarioParams, scenario
from .peer import Peer, PeerTimeout, seq_add, tcp_payload
from .pkt.agent import Agent, agent_for
from .wire import PROTO_TCP, ChecksumState, checksum_state, read_pcap

#: The echoed payload: three segments, so "every segment" means more than one.
SEGMENT = 1000
PAYLOAD = bytes((i * 13 + 5) % 251 for i in range(3 * SEGMENT))
#: Echoed afterwards on the same connection, each segment carrying another route back (SHLD-24).
LATER_PAYLOAD = bytes((i * 17 + 3) % 251 for i in range(2 * SEGMENT))
#: What the application writes on its source-routed connection (the kernel agent writes zeros).
APP_BYTES = 2000


# --- the option, encoded and decoded with Scapy -----------------------------------------------------
@dataclass(frozen=True)
class SourceRoute:
    """A datagram's source route as on the wire: the option, its pointer and addresses, and where the datagram goes."""

    kind: str
    pointer: int
    route: tuple[str, ...]
    dst: str

    def __str__(self) -> str:
        return f"to {self.dst} with {self.kind} pointer {self.pointer} [{', '.join(self.route)}]"


def padded(option: Packet) -> bytes:
    """An IP option's bytes, padded with end-of-list octets to whole 32-bit words."""
    raw = bytes(option)
    return raw + bytes(-len(raw) % 4)


def completed_route(hops: Sequence[str], strict: bool = False) -> bytes:
    """A loose source route as it reaches its destination: each hop recorded in turn, the pointer past the last."""
    option = IPOption_SSRR if strict else IPOption_LSRR
    return padded(option(routers=list(hops), pointer=4 + 4 * len(hops)))


def application_route(hops: Sequence[str]) -> bytes:
    """IP_OPTIONS for a connection through `hops`: Linux sends to the first and lists the rest, then the destination."""
    return padded(IPOption_LSRR(routers=list(hops), pointer=4))


def return_route(hops: Sequence[str], source: str, kind: str = "LSRR") -> SourceRoute:
    """The reply to a datagram from `source` along `hops`: to the last hop, then back through the others to it."""
    if not hops:
        raise ValueError("a source route names at least one hop")
    *before, last = hops
    return SourceRoute(kind, 4, (*reversed(before), source), last)


def sent_route(hops: Sequence[str], destination: str) -> SourceRoute:
    """What a datagram an application sends along `hops` to `destination` carries as it leaves: to the first hop."""
    first, *rest = hops
    return SourceRoute("LSRR", 4, (*rest, destination), first)


def source_route(frame: Packet) -> SourceRoute | None:
    """The frame's loose or strict source route with the datagram's destination, or None if it carries none."""
    for option in frame[IP].options:
        if isinstance(option, (IPOption_LSRR, IPOption_SSRR)):
            kind = "SSRR" if isinstance(option, IPOption_SSRR) else "LSRR"
            return SourceRoute(kind, option.pointer, tuple(option.routers), frame[IP].dst)
    return None


def route_text(frame: Packet | None) -> str:
    if frame is None:
        return "nothing"
    route = source_route(frame)
    return str(route) if route is not None else f"to {frame[IP].dst} with no source route"


def checksum_between(frame: Ether, src: str, dst: str) -> ChecksumState:
    """The frame's TCP checksum judged over a pseudo-header of `src` and `dst` (complete, or left for offload)."""
    raw = bytes(frame.original) if frame.original else bytes(frame)
    ip_at = 14
    ihl, total = (raw[ip_at] & 0x0F) * 4, struct.unpack_from("!H", raw, ip_at + 2)[0]
    segment = raw[ip_at + ihl:ip_at + total]
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, PROTO_TCP, len(segment))
    return checksum_state(pseudo, segment)


# --- one exchange with echo --------------------------------------------------------------------------
@dataclass
class Exchange:
    """What the target sent one connection: its SYN-ACK, its data segments (retransmissions too), the echo read."""

    synack: Ether | None = None
    segments: list[Ether] = field(default_factory=list)
    echoed: bytes = b""

    @property
    def exact(self) -> bool:
        return self.echoed == PAYLOAD


def echo_exchange(peer: Peer, ip_options: bytes = b"") -> Exchange:
    """Handshake (the SYN alone carrying `ip_options`), PAYLOAD to echo in segments, the echo read and acknowledged."""
    syn = peer.segment("S", seq=peer.isn, options=[("MSS", 1460)])
    peer.send(with_ip_options(syn, ip_options) if ip_options else syn)
    try:
        synack = peer.expect("SA", ack=seq_add(peer.isn, 1))
    except PeerTimeout:
        return Exchange()
    peer.peer_isn = synack[TCP].seq
    peer.snd_nxt, peer.rcv_nxt = seq_add(peer.isn, 1), seq_add(peer.peer_isn, 1)
    peer.send(peer.segment("A"))
    echoed, segments = echo(peer, PAYLOAD)
    return Exchange(synack, segments, echoed)


def echo(peer: Peer, payload: bytes, ip_options: bytes = b"") -> tuple[bytes, list[Ether]]:
    """`payload` to echo in segments, each carrying `ip_options`: the echo read back (acknowledged) and the target's
    data segments that carried it, retransmissions too."""
    mark = len(peer.received)
    for offset in range(0, len(payload), SEGMENT):
        chunk = payload[offset:offset + SEGMENT]
        frame = peer.segment("PA", chunk)
        peer.send(with_ip_options(frame, ip_options) if ip_options else frame)
        peer.snd_nxt = seq_add(peer.snd_nxt, len(chunk))
    try:
        echoed, _ = peer.receive(len(payload))
    except PeerTimeout:
        echoed = b""
    return echoed, [f for f in peer.received[mark:] if tcp_payload(f)]


def open_peer(ctx: RunContext, hops: Sequence[str] = (), dport: int | None = None, sport: int | None = None) -> Peer:
    """A peer to the target's echo (or `dport`) that also reads what the target sends to the `hops`."""
    return Peer(ctx.lab, ctx.client, ctx.address(ctx.server), dport or ctx.port("echo"), rng=ctx.rng, sport=sport,
                timeout_s=2.0, also_to=tuple(hops))


# --- the scenario ------------------------------------------------------------------------------------
class SourceRouteParams(ScenarioParams):
    accept_source_route: bool = Field(True, description="set accept_source_route=1 in the target's namespace before "
                                      "judging TCP (false: judge the target's IP layer as shipped)")


@scenario("source_route", purpose="IPv4 source routes: a passive connection opened by a source-routed SYN sends "
          "along the reversed route; an application's own route takes precedence over a received one.",
          topology="two_hosts", params=SourceRouteParams, topology_params={"mtu": 1500, "tso": "false"},
          covers=("MUST-52", "MUST-53", "SHLD-24"), claims=("TOE-5",))
def run(ctx: RunContext) -> Iterator[Check]:
    hops = add_hops(ctx)
    ctx.progress("a source-routed SYN as shipped")
    shipped = answered_as_shipped(ctx, hops)
    settings = accept_source_routes(ctx) if ctx.params.accept_source_route else {}
    ctx.progress("the return route")
    yield from _return_route(ctx, hops, shipped, settings)
    ctx.progress("an application's own route")
    yield from _application_route(ctx, hops)


def add_hops(ctx: RunContext, count: int = 2) -> list[str]:
    """The hops of the routes: the highest unused addresses of the peer's subnet, added to the peer's interface."""
    first = ctx.lab.spec.addresses(ctx.client)[ctx.iface(ctx.client)][0]
    used = {ctx.address(ctx.server), ctx.address(ctx.client)}
    hops = [str(a) for a in reversed(list(first.network.hosts())) if str(a) not in used][:count]
    for hop in hops:
        ctx.lab.node(ctx.client).run(["ip", "addr", "add", f"{hop}/{first.network.prefixlen}", "dev",
                                      ctx.iface(ctx.client)], check=True)
    return hops


def accept_source_routes(ctx: RunContext) -> dict[str, int]:
    """accept_source_route=1 for `all` and the target's interface in its namespace: IP then delivers source routes."""
    settings = {f"net.ipv4.conf.{name}.accept_source_route": 1 for name in ("all", ctx.iface(ctx.server))}
    ctx.lab.node(ctx.server).write_sysctls(dict(settings))
    return settings


def answered_as_shipped(ctx: RunContext, hops: Sequence[str]) -> bool | None:
    """Whether the target answered a source-routed SYN before a later fence connection echoed (None: no echo)."""
    with open_peer(ctx) as fence:
        probe_port = fence.sport + 1 if fence.sport < 60000 else fence.sport - 1
        sock = fence.open_socket(f"tcp and src host {fence.dst} and dst port {probe_port}")
        try:
            syn = fence.segment("S", seq=ctx.rng.getrandbits(32), sport=probe_port, options=[("MSS", 1460)])
            fence.send(with_ip_options(syn, completed_route(hops)))
            exchange = echo_exchange(fence)
            answers = read_all(sock)
        finally:
            sock.close()
            if fence.peer_isn is not None:
                fence.abort()
    return bool(answers) if exchange.exact else None


def _shipped_text(shipped: bool | None, settings: dict[str, int]) -> str:
    seen = {True: "answered", False: "dropped without an answer", None: "could not be told (the fence failed)"}[shipped]
    if not settings:
        return f"with the target's namespace as shipped (where a first source-routed SYN was {seen})"
    names = " and ".join(f"{k.split('.')[3]}" for k in settings)
    return (f"with accept_source_route=1 ({names}) in the target's namespace (as shipped, a source-routed SYN was "
            f"{seen})")


def _arrived(pcap: Path) -> int:
    """Frames in a capture."""
    return len(list(read_pcap(pcap)))


def _return_route(ctx: RunContext, hops: Sequence[str], shipped: bool | None,
                  settings: dict[str, int]) -> Iterator[Check]:
    peer_address = ctx.address(ctx.client)
    expected = return_route(hops, peer_address)
    with open_peer(ctx) as plain_peer:
        plain = echo_exchange(plain_peer)
        plain_peer.abort()
    with open_peer(ctx, hops) as peer:
        capture = ctx.capture(ctx.server, ctx.iface(ctx.server), f"tcp and src port {peer.sport} and "
                              "tcp[tcpflags] & tcp-syn != 0 and ip[0] & 0x0f > 5", name="routed-syn.pcap")
        try:
            routed = echo_exchange(peer, completed_route(hops))
        finally:
            pcap = capture.stop()
        later_echoed, later_segments = echo(peer, LATER_PAYLOAD, completed_route(list(reversed(hops)))) \
            if routed.exact else (b"", [])
        if routed.synack is not None:
            peer.abort()
    arrived = _arrived(pcap)
    seen = {0: "not seen", 1: "seen"}.get(arrived, f"seen {arrived} times")
    context = (f"{_shipped_text(shipped, settings)}, a SYN that came along LSRR [{', '.join(hops)}] ({seen} on the "
               "target's interface)")
    precondition = (f"; the same handshake without the route {'echoed exactly' if plain.exact else 'did not echo'}"
                    if not plain.exact or not arrived else "")
    base = {"as_shipped_answered": shipped, "syn_arrived": arrived, "plain_echoed": plain.exact}
    good_synack = routed.synack is not None and source_route(routed.synack) == expected
    if routed.synack is not None:
        checksum = checksum_between(routed.synack, ctx.address(ctx.server), peer_address)
        answer = (f"drew a SYN-ACK {route_text(routed.synack)}, its TCP checksum {checksum.value} over the peer's own "
                  "address")
    else:
        checksum, answer = ChecksumState.WRONG, "drew no SYN-ACK"
    ultimate = checksum in (ChecksumState.CORRECT, ChecksumState.PARTIAL)
    yield ctx.check("return-route[syn-ack]", "MUST-53", plain.exact and arrived > 0 and good_synack and ultimate,
                    f"{context} {answer}; the reversed route is {expected}{precondition}",
                    numbers={**base, "synack": routed.synack is not None, "synack_routed": int(good_synack),
                             "checksum_over_ultimate": ultimate}, pcaps=[pcap])
    following = [f for f in routed.segments if source_route(f) == expected]
    others = sorted({route_text(f) for f in routed.segments if source_route(f) != expected})
    yield ctx.check("return-route[data]", "MUST-53",
                    plain.exact and arrived > 0 and bool(routed.segments) and len(following) == len(routed.segments),
                    f"{context}; of its {len(routed.segments)} echoed data segments {len(following)} went {expected}"
                    + (f", the others {'; '.join(others)}" if others else "") + precondition,
                    numbers={**base, "segments": len(routed.segments), "segments_routed": len(following)})
    yield _later_route(ctx, hops, routed, later_echoed, later_segments)
    yield _strict_route(ctx, hops, plain.exact)
    yield ctx.check("source-routed-echo-byte-exact", "MUST-53", routed.exact,
                    f"{len(PAYLOAD)} bytes sent on the connection opened by the source-routed SYN came back "
                    + ("exactly" if routed.exact else f"as {len(routed.echoed)} bytes"),
                    numbers={"echoed": len(routed.echoed)}, integrity=True)


def _strict_route(ctx: RunContext, hops: Sequence[str], plain_echoed: bool) -> Check:
    """A strict source route (SSRR) the same way: its reversal, strict too, carries the SYN-ACK and the echo."""
    expected = return_route(hops, ctx.address(ctx.client), "SSRR")
    with open_peer(ctx, hops) as peer:
        strict = echo_exchange(peer, completed_route(hops, strict=True))
        if strict.synack is not None:
            peer.abort()
    sent = ([strict.synack] if strict.synack is not None else []) + strict.segments
    following = [f for f in sent if source_route(f) == expected]
    others = sorted({route_text(f) for f in sent if source_route(f) != expected})
    return ctx.check("return-route[ssrr]", "MUST-53",
                     plain_echoed and strict.exact and strict.synack is not None and len(following) == len(sent),
                     f"a SYN that came along SSRR [{', '.join(hops)}] drew "
                     f"{'a SYN-ACK' if strict.synack is not None else 'no SYN-ACK'} and an echo of "
                     f"{len(strict.echoed)} of {len(PAYLOAD)} bytes; {len(following)} of those {len(sent)} segments "
                     f"went {expected}" + (f", the others {'; '.join(others)}" if others else "")
                     + ("" if plain_echoed else "; the same handshake without the route did not echo"),
                     numbers={"synack": strict.synack is not None, "segments": len(sent),
                              "segments_routed": len(following), "echoed": len(strict.echoed)})


def _later_route(ctx: RunContext, hops: Sequence[str], routed: Exchange, echoed: bytes,
                 segments: list[Ether]) -> Check:
    """SHLD-24: data arriving along another route (the hops the other way round) moves the replies to its reversal."""
    peer_address = ctx.address(ctx.client)
    first, later = return_route(hops, peer_address), return_route(list(reversed(hops)), peer_address)
    on_later = [f for f in segments if source_route(f) == later]
    on_first = [f for f in segments if source_route(f) == first]
    others = sorted({route_text(f) for f in segments if source_route(f) not in (first, later)})
    exact = echoed == LATER_PAYLOAD
    if not routed.exact:
        sentence = "the connection opened by the source-routed SYN did not echo, so no later route was sent"
    else:
        sentence = (f"after the echo, {len(LATER_PAYLOAD)} more bytes came in segments along LSRR "
                    f"[{', '.join(reversed(hops))}] (the hops the other way round) and were echoed "
                    f"{'exactly' if exact else f'as {len(echoed)} bytes'} in {len(segments)} segments: {len(on_later)} "
                    f"went {later}, {len(on_first)} still {first}"
                    + (f", the others {'; '.join(others)}" if others else ""))
    return ctx.check("later-route-overrides", "SHLD-24",
                     routed.exact and exact and bool(segments) and len(on_later) == len(segments), sentence,
                     numbers={"segments": len(segments), "segments_on_later_route": len(on_later),
                              "segments_on_first_route": len(on_first), "echoed": len(echoed)})


# --- an application's own route ----------------------------------------------------------------------
def _application_route(ctx: RunContext, hops: Sequence[str]) -> Iterator[Check]:
    agent = agent_for(ctx.target, ctx.lab, ctx.server)()
    try:
        yield from _routed_connect(ctx, agent, hops)
    finally:
        agent.close()


@dataclass
class ActiveOpen:
    """What the target sent on a connection its application opened: SYN, the handshake's ACK, data and its segments."""

    connect: str = ""
    syn: Ether | None = None
    ack: Ether | None = None
    data: bytes = b""
    segments: list[Ether] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return self.data == bytes(APP_BYTES)


def active_open(ctx: RunContext, agent: Agent, handle: int, hops: Sequence[str], synack_options: bytes) -> ActiveOpen:
    """The application connects with socket `handle` and writes APP_BYTES; the peer answers its SYN with a SYN-ACK
    carrying `synack_options` and reads the data, acknowledging it."""
    server, peer_address = ctx.address(ctx.server), ctx.address(ctx.client)
    local_port, peer_port = ctx.rng.sample(range(20000, 60000), 2)
    opened = ActiveOpen()
    with open_peer(ctx, hops, dport=local_port, sport=peer_port) as peer:
        for request in ({"op": "bind", "h": handle, "port": local_port, "ip": server},
                        {"op": "fcntl", "h": handle, "command": "F_SETFL", "flags": ["O_RDWR", "O_NONBLOCK"]}):
            if (done := agent.call(request)).get("ret") != 0:
                raise RuntimeError(f"the target's {request['op']} failed: {done}")
        connecting = agent.call({"op": "connect", "h": handle, "ip": peer_address, "port": peer_port})
        opened.connect = str(connecting.get("errno", connecting.get("ret")))
        try:
            opened.syn = peer.expect("S")
            peer.peer_isn = opened.syn[TCP].seq
            peer.rcv_nxt = seq_add(peer.peer_isn, 1)
            synack = peer.segment("SA", seq=peer.isn, options=[("MSS", 1460)])
            peer.send(with_ip_options(synack, synack_options) if synack_options else synack)
            peer.snd_nxt = seq_add(peer.isn, 1)
            opened.ack = peer.expect("A", ack=peer.snd_nxt, payload=False)
            agent.call({"op": "poll", "fds": [{"h": handle, "events": ["POLLOUT"]}], "timeout_ms": 2000})
            agent.call({"op": "write", "h": handle, "n": APP_BYTES})
            opened.data, _ = peer.receive(APP_BYTES)
        except PeerTimeout:
            pass
        opened.segments = [f for f in peer.received if tcp_payload(f)]
        if opened.syn is not None:
            peer.abort()
    return opened


def _routed_connect(ctx: RunContext, agent: Agent, hops: Sequence[str]) -> Iterator[Check]:
    own, received = hops[0], hops[1]
    routed_handle = agent.call({"op": "socket"})["ret"]
    answer = agent.call({"op": "setsockopt", "h": routed_handle, "level": "IPPROTO_IP", "name": "IP_OPTIONS",
                         "value": application_route([own]).decode("latin-1")})
    if answer.get("ret") != 0:
        reason = (f"the target's socket API refused IP_OPTIONS ({answer.get('errno', 'no errno')}), so an application "
                  "cannot give a route of its own (MUST-51) to take precedence over a received one")
        yield ctx.skip("application-route-first", "MUST-52", reason)
        yield ctx.skip("application-routed-data-byte-exact", "MUST-52", reason)
        return
    plain = active_open(ctx, agent, agent.call({"op": "socket"})["ret"], (), b"")
    routed = active_open(ctx, agent, routed_handle, hops, completed_route([received]))
    expected = sent_route([own], ctx.address(ctx.client))
    own_route = routed.syn is not None and source_route(routed.syn) == expected
    after = ([routed.ack] if routed.ack is not None else []) + routed.segments
    following = [f for f in after if source_route(f) == expected]
    others = sorted({route_text(f) for f in after if source_route(f) != expected})
    precondition = ("" if own_route else
                    f"; the application's route was not in force, its SYN went {route_text(routed.syn)}")
    if not plain.exact:
        precondition += f"; the same open without routes did not carry its data ({len(plain.data)} bytes arrived)"
    yield ctx.check("application-route-first", "MUST-52",
                    plain.exact and own_route and routed.ack is not None and bool(routed.segments)
                    and len(following) == len(after),
                    f"with IP_OPTIONS LSRR [{own}] set by the application before connect() (which answered "
                    f"{routed.connect}), its SYN went {route_text(routed.syn)}; after a SYN-ACK that came along LSRR "
                    f"[{received}], {len(following)} of its {len(after)} later segments (the handshake's ACK "
                    f"{'and' if routed.ack is not None else 'never came, nor'} its data) went {expected}"
                    + (f", the others {'; '.join(others)}" if others else "") + precondition,
                    numbers={"plain_open": plain.exact, "syn_routed": own_route, "ack": routed.ack is not None,
                             "segments": len(after), "segments_routed": len(following)})
    yield ctx.check("application-routed-data-byte-exact", "MUST-52", routed.exact,
                    f"{APP_BYTES} bytes the application wrote on its source-routed connection arrived "
                    + ("exactly" if routed.exact else f"as {len(routed.data)} bytes"),
                    numbers={"received": len(routed.data)}, integrity=True)
