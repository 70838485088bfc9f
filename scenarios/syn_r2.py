"""`syn_r2`: R2 for a SYN, at least 3 minutes (MUST-23), watched in full on the wire. A long scenario.

An application in the target connects to a peer that never answers: the peer's node drops
everything sent to the port (an nftables rule, so its kernel sends no RST either), while a
packet socket on its interface sees each SYN arrive. The run watches the SYNs and polls the
application's connect() until it fails or 3 minutes and a margin have passed since the first
SYN, then asks the wire: a SYN-ACK for that SYN draws the handshake's ACK from a TCP still
trying, a RST from one that gave up. The check passes only for a TCP alive after 180 s.

R2 is a time, so no observation can be shorter than the 3 minutes it asks for: a target that
gives up earlier is judged (and the run ends) when its connect() fails, one that holds on when
the 3 minutes are over. `toelab run` runs a long scenario's targets side by side, each in its
own lab, so `--target both` takes one wait, not two; `run all` includes it only with --long.
"""
from __future__ import annotations

import errno
import select
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydantic import Field
from scapy.layers.inet import TCP
from scapy.layers.l2 import Ether

from .framework import Check, RunContext, ScenarioParams, scenario
from .peer import Peer, PeerTimeout, flag_set, seq_add
from .pkt.agent import Agent, agent_for

if TYPE_CHECKING:
    from lab.node import Node

#: RFC 9293 3.8.3 (RFC 1122 4.2.3.5): R2 for a SYN MUST provide retransmission for at least 3 minutes.
R2_SYN_S = 180.0
#: How long past the 3 minutes the connection must still be alive when the wire is asked.
MARGIN_S = 2.0
#: How often the application's connect() is asked for its outcome (the give-up time's resolution).
POLL_S = 0.25


class SynR2Params(ScenarioParams):
    syn_retries: int = Field(0, ge=0, le=12, description="the target's SYN retransmission limit (the kernel's "
                             "net.ipv4.tcp_syn_retries, the engine's syn_retries); 0: as shipped")


@scenario("syn_r2", purpose="R2 for a SYN: a connect() to a peer that never answers keeps retransmitting its SYN for "
          "at least 3 minutes (a long scenario, about 2-3 minutes: `run all` takes it with --long).",
          topology="syn_retries", params=SynR2Params, topology_params=lambda p: {"syn_retries": p.syn_retries},
          covers=("MUST-23",), claims=("TOE-5",), long=True)
def run(ctx: RunContext) -> Iterator[Check]:
    ctx.progress("a connect() to a silent peer (about 3 minutes)")
    agent = agent_for(ctx.target, ctx.lab, ctx.server)()
    try:
        yield _syn_r2(ctx, agent)
    finally:
        agent.close()


@dataclass
class SynWatch:
    """What one unanswered active open did: its SYNs' times after the first, and when its connect() failed."""

    syn_times: list[float] = field(default_factory=list)
    #: From the connect() call to the first SYN on the wire (a SYN lost before the wire shows here).
    first_syn_s: float | None = None
    local_port: int | None = None
    isn: int | None = None
    gave_up_s: float | None = None
    error: str | None = None
    watched_s: float = 0.0

    @property
    def retransmissions(self) -> int:
        return max(0, len(self.syn_times) - 1)


def judge(watch: SynWatch, probe: str, required_s: float = R2_SYN_S) -> tuple[bool, str]:
    """Whether the open was still alive past `required_s` after its first SYN, and what was seen, in words.

    `probe` is what a SYN-ACK for the SYN drew at the end: "ack" (alive), "rst" (gone) or "nothing".
    """
    if not watch.syn_times:
        return False, "the target sent no SYN to the silent peer"
    times = ", ".join(f"{t:.1f}" for t in watch.syn_times)
    sent = f"the target sent its SYN {len(watch.syn_times)} times, at {times} s"
    drew = {"ack": "the handshake's ACK", "rst": "a RST", "nothing": "nothing"}[probe]
    if watch.gave_up_s is not None:
        return False, (f"{sent}, and its connect() failed with {watch.error} {watch.gave_up_s:.1f} s after the first "
                       f"SYN, short of the {required_s:.0f} s R2 for a SYN must last; a SYN-ACK for it then drew "
                       f"{drew}")
    alive = probe == "ack" and watch.retransmissions >= 1 and watch.watched_s >= required_s
    if not watch.retransmissions:
        return False, f"{sent} and never again, so the peer's silence was never put to the test"
    return alive, (f"{sent}; {watch.watched_s:.1f} s after the first its connect() had not failed and a SYN-ACK for it "
                   f"drew {drew}" + ("" if alive else f", so it had given up before {required_s:.0f} s"))


@contextmanager
def silent(node: Node, port: int) -> Iterator[None]:
    """The node drops every TCP segment to `port` on input: its kernel neither answers nor resets."""
    table = f"toelab_silent_{port}"
    node.run(["nft", "-f", "-"], check=True, input=(
        f"table ip {table} {{\n chain in {{\n  type filter hook input priority 0; policy accept;\n"
        f"  tcp dport {port} drop\n }}\n}}\n"))
    try:
        yield
    finally:
        node.run(["nft", "delete", "table", "ip", table])


def _syn_r2(ctx: RunContext, agent: Agent) -> Check:
    server, peer_address = ctx.address(ctx.server), ctx.address(ctx.client)
    peer_port = ctx.rng.randrange(20000, 60000)
    capture = ctx.capture(ctx.client, ctx.iface(ctx.client), f"tcp and host {server} and port {peer_port}",
                          name="syn-r2.pcap")
    try:
        with silent(ctx.lab.node(ctx.client), peer_port):
            watcher = Peer(ctx.lab, ctx.client, server, 0, rng=ctx.rng, sport=peer_port)  # its socket factory only
            sock = watcher.open_socket(f"tcp and src host {server} and dst port {peer_port} "
                                       "and tcp[tcpflags] & tcp-syn != 0")
            try:
                handle = _connect(agent, peer_address, peer_port)
                watch = watch_open(sock, agent, handle, R2_SYN_S + MARGIN_S)
            finally:
                sock.close()
            probe = _probe(ctx, watch, peer_port)  # still silent: a SYN retransmitted meanwhile draws no RST
    finally:
        pcap = capture.stop()
    ok, sentence = judge(watch, probe)
    return ctx.check("syn-r2-at-least-3-minutes", "MUST-23", ok, sentence, pcaps=[pcap],
                     numbers={"syns": len(watch.syn_times), "retransmissions": watch.retransmissions,
                              "last_syn_s": watch.syn_times[-1] if watch.syn_times else None,
                              "first_syn_s": watch.first_syn_s, "gave_up_s": watch.gave_up_s,
                              "watched_s": round(watch.watched_s, 1),
                              "probe": probe, "syn_retries": ctx.params.syn_retries or "as shipped"})


def _connect(agent: Agent, ip: str, port: int) -> int:
    """A non-blocking connect() by the target's application; its socket handle."""
    handle = int(agent.call({"op": "socket"})["ret"])
    agent.call({"op": "fcntl", "h": handle, "command": "F_SETFL", "flags": ["O_RDWR", "O_NONBLOCK"]})
    answer = agent.call({"op": "connect", "h": handle, "ip": ip, "port": port})
    if answer.get("errno") != "EINPROGRESS":
        raise RuntimeError(f"the target's non-blocking connect() to {ip}:{port} answered {answer}, not EINPROGRESS")
    return handle


def watch_open(sock: socket.socket, agent: Agent, handle: int, limit_s: float) -> SynWatch:
    """SYNs as they arrive on `sock` and the connect()'s outcome, until it fails or `limit_s` after the first SYN.

    Waiting is on the socket (select, with the next poll of the application as deadline), never a sleep.
    """
    watch = SynWatch()
    started = time.monotonic()
    first: float | None = None
    while True:
        now = time.monotonic()
        end = (first if first is not None else started) + limit_s
        if now >= end:
            break
        ready, _, _ = select.select([sock], [], [], min(POLL_S, end - now))
        if ready:
            frame = Ether(sock.recv(1 << 16))
            if flag_set(frame[TCP]) == "S" and (watch.isn is None or frame[TCP].seq == watch.isn):
                stamp = time.monotonic()
                if first is None:
                    first, watch.first_syn_s = stamp, round(stamp - started, 3)
                watch.local_port, watch.isn = frame[TCP].sport, frame[TCP].seq
                watch.syn_times.append(round(stamp - first, 3))
        polled = agent.call({"op": "poll", "fds": [{"h": handle, "events": ["POLLOUT"]}], "timeout_ms": 0})
        if polled.get("ret"):
            code = agent.call({"op": "getsockopt", "h": handle, "level": "SOL_SOCKET", "name": "SO_ERROR"})
            watch.error = errno.errorcode.get(int(code.get("value") or 0), str(code.get("value")))
            watch.gave_up_s = round(time.monotonic() - (first or started), 1)
            break
    watch.watched_s = time.monotonic() - (first if first is not None else started)
    return watch


def _probe(ctx: RunContext, watch: SynWatch, peer_port: int) -> str:
    """A SYN-ACK for the watched SYN: "ack" from a TCP still in SYN-SENT, "rst" from one that gave up, or "nothing"."""
    if watch.local_port is None or watch.isn is None:
        return "nothing"
    with Peer(ctx.lab, ctx.client, ctx.address(ctx.server), watch.local_port, rng=ctx.rng, sport=peer_port) as peer:
        peer.rcv_nxt = seq_add(watch.isn, 1)
        peer.send(peer.segment("SA", seq=peer.isn, options=[("MSS", 1460)]))
        try:
            answer = peer.expect(where=lambda t: "R" in str(t.flags) or t.ack == seq_add(peer.isn, 1))
        except PeerTimeout:
            return "nothing"
        if "R" in str(answer[TCP].flags):
            return "rst"
        peer.snd_nxt = seq_add(peer.isn, 1)
        peer.abort()
        return "ack"
