"""`rfc9293_more`: RFC 9293 checks needing a full receive buffer, a target that closes first, or a silent peer.

- RST with a zero receive window (MUST-66): the peer advertises a zero window, so echo's
  replies back up and echo stops reading; the peer then fills the target's receive buffer
  until the target advertises a zero window for everything it acknowledged. A RST at RCV.NXT
  must still be accepted: a later ACK draws a RST.
- TIME-WAIT (MUST-13, MAY-2): the http service answers `Connection: close` and closes first;
  the peer acknowledges the response and the FIN and closes too, so the target enters
  TIME-WAIT. A retransmission of the peer's FIN a while later must be acknowledged again
  (a TCP that dropped the connection would answer with a RST), and a new SYN for the same
  4-tuple with a higher sequence number may open a new connection (Linux does, as a SYN-ACK).
- R2 (MUST-20): with the target's R2 lowered, chargen sends to a peer that never acknowledges.
  The target must retransmit, at least once and at most R2 + 1 times (Linux reads R2 as the
  time R2 backed-off retransmissions take, which its timer rounding can stretch by one), then
  give up: the peer probes with a duplicate byte, which a live connection answers with an ACK
  and a closed one with a RST. It runs last, since the lowered R2 stays in force.
- Informing the application of an abort (MUST-12) shows only through the application's
  interface, so it is reported as a skip.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from pydantic import Field
from scapy.layers.inet import TCP
from scapy.layers.l2 import Ether

from .framework import Check, RunContext, ScenarioParams, scenario
from .peer import SEQ_MOD, Peer, PeerTimeout, flag_set, seq_add, tcp_payload

HALF_SPACE = 1 << 31
SEGMENT = 1400


class MoreParams(ScenarioParams):
    fill_limit: int = Field(16 << 20, ge=1 << 20, le=64 << 20, description="most bytes sent to fill the target's "
                            "receive buffer before giving up")
    time_wait_probe_s: float = Field(1.0, ge=0.6, le=30.0, description="seconds in TIME-WAIT before the peer "
                                     "retransmits its FIN (more than Linux's 0.5 s limit on TIME-WAIT ACKs)")
    http_body: int = Field(3000, ge=1, le=100000, description="bytes of the http response")
    r2: int = Field(3, ge=1, le=8, description="the target's R2 for the retransmission-limit check")
    give_up_limit_s: float = Field(15.0, ge=2.0, le=120.0, description="how long the target may keep retransmitting "
                                   "after R2 is set low")
    probe_interval_s: float = Field(0.6, ge=0.1, le=5.0, description="spacing of the liveness probes while the "
                                    "target retransmits")


@scenario("rfc9293_more", purpose="RFC 9293 checks with a full receive buffer, a target that closes first (TIME-WAIT) "
          "and an unresponsive peer (R2).",
          topology="two_hosts", params=MoreParams, topology_params={"mtu": 1500, "tso": "false"},
          covers=("MUST-12", "MUST-13", "MUST-20", "MUST-66", "MAY-2"), claims=("TOE-5",))
def run(ctx: RunContext) -> Iterator[Check]:
    ctx.progress("RST with a zero receive window")
    yield _rst_with_zero_window(ctx)
    ctx.progress("TIME-WAIT")
    yield from _time_wait(ctx)
    yield ctx.skip("abort-reported-to-application", "MUST-12", "whether the application learns of an abort shows "
                   "only through the application's interface, not on the wire")
    ctx.progress("R2 retransmission limit")
    yield _retries_limit(ctx)


def _seq_diff(a: int, b: int) -> int:
    """a - b in sequence space, as a signed number."""
    d = (a - b) % SEQ_MOD
    return d - SEQ_MOD if d >= HALF_SPACE else d


@contextmanager
def open_peer(ctx: RunContext, service: str) -> Iterator[Peer]:
    with Peer(ctx.lab, ctx.client, ctx.address(ctx.server), ctx.port(service), rng=ctx.rng, timeout_s=2.0) as peer:
        try:
            yield peer
        finally:
            if peer.peer_isn is not None:
                peer.abort()


def gone(peer: Peer) -> tuple[bool, str]:
    """Whether the connection is gone: an ACK for it draws <SEQ=SEG.ACK><CTL=RST>; and what was seen."""
    probe = peer.segment("A")
    peer.send(probe)
    try:
        reset = peer.expect("R", seq=probe[TCP].ack)
        return True, f"a later ACK drew RST seq={reset[TCP].seq}"
    except PeerTimeout as exc:
        return False, f"a later ACK drew no RST ({exc})"


# --- RST with a zero receive window -------------------------------------------------------------------
def _rst_with_zero_window(ctx: RunContext) -> Check:
    with open_peer(ctx, "echo") as peer:
        peer.handshake(ack_window=0)
        sent, window, acked = _fill_receive_buffer(peer, ctx.params.fill_limit)
        if window != 0 or acked != peer.snd_nxt:
            return ctx.check("rst-accepted-zero-window", "MUST-66", False,
                             f"the target never acknowledged everything with a zero window: after {sent} bytes its "
                             f"last ACK left {_seq_diff(peer.snd_nxt, acked)} bytes unacknowledged with window "
                             f"{window}, so no RST was sent", numbers={"bytes_sent": sent, "last_window": window})
        peer.send(peer.segment("R", seq=peer.snd_nxt, window=0))
        accepted, seen = gone(peer)
    return ctx.check("rst-accepted-zero-window", "MUST-66", accepted,
                     f"after {sent} bytes the target acknowledged everything with a zero window; a RST at RCV.NXT was "
                     f"then {'accepted' if accepted else 'not accepted'}: {seen}",
                     numbers={"bytes_to_fill": sent, "accepted": accepted})


def _fill_receive_buffer(peer: Peer, limit: int) -> tuple[int, int, int]:
    """Send data within the target's window until it acknowledges everything with a zero window.

    Returns the bytes sent, the last window advertised and the last acknowledgment number.
    The peer's own window stays zero, so echo can return nothing and stops reading.
    """
    start = peer.snd_nxt
    acked, window = start, 65535
    chunk = bytes(range(256)) * (SEGMENT // 256 + 1)
    while _seq_diff(peer.snd_nxt, start) < limit:
        usable = _seq_diff(seq_add(acked, window), peer.snd_nxt)
        while usable > 0:
            size = min(SEGMENT, usable)
            peer.send(peer.segment("A", chunk[:size], window=0))
            peer.snd_nxt = seq_add(peer.snd_nxt, size)
            usable -= size
        try:
            frame = peer.expect(where=lambda t: "A" in str(t.flags) and _seq_diff(t.ack, acked) >= 0, payload=False)
        except PeerTimeout:
            break
        acked, window = frame[TCP].ack, frame[TCP].window
        if window == 0 and acked == peer.snd_nxt:
            break
    return _seq_diff(peer.snd_nxt, start), window, acked


# --- TIME-WAIT ------------------------------------------------------------------------------------------
def _read_to_fin(peer: Peer) -> tuple[bytes, Ether | None]:
    """The target's data up to its FIN, acknowledged as it comes; the FIN itself (None if it never came)."""
    data = bytearray()
    while True:
        try:
            frame = peer.expect(seq=peer.rcv_nxt)
        except PeerTimeout:
            return bytes(data), None
        chunk = tcp_payload(frame)
        fin = "F" in str(frame[TCP].flags)
        if not chunk and not fin:
            continue
        data += chunk
        peer.rcv_nxt = seq_add(peer.rcv_nxt, len(chunk) + fin)
        if fin:
            return bytes(data), frame
        peer.send(peer.segment("A"))


def _time_wait(ctx: RunContext) -> Iterator[Check]:
    body = ctx.params.http_body
    request = f"GET /{body} HTTP/1.1\r\nHost: toelab\r\nConnection: close\r\n\r\n".encode()
    with open_peer(ctx, "http") as peer:
        peer.handshake()
        peer.send_data(request)
        response, fin = _read_to_fin(peer)
        served = response.endswith(b"\r\n\r\n" + b"x" * body) and response.startswith(b"HTTP/1.1 200")
        entered = False
        if fin is not None:
            peer.send(peer.segment("FA"))
            peer.snd_nxt = seq_add(peer.snd_nxt, 1)
            try:
                peer.expect("A", ack=peer.snd_nxt, payload=False)
                entered = True
            except PeerTimeout:
                pass
        held, seen = False, "the target never reached TIME-WAIT"
        if entered:
            deadline = time.monotonic() + ctx.params.time_wait_probe_s
            while peer.next_frame(deadline) is not None:
                pass
            held, seen = _fin_reacknowledged(peer)
        yield ctx.check("time-wait-reacks-fin", "MUST-13", served and entered and held,
                        f"the http service {'answered' if served else 'did not answer'} {body} bytes and "
                        f"{'closed first' if fin is not None else 'did not close'}; "
                        f"{ctx.params.time_wait_probe_s:.1f} s into TIME-WAIT, {seen}",
                        numbers={"served": served, "time_wait": entered, "fin_reacked": held})
        yield _syn_in_time_wait(ctx, peer, entered, request)


def _fin_reacknowledged(peer: Peer) -> tuple[bool, str]:
    """The peer's FIN again, as if the target's ACK of it was lost: the target must ACK it again, not reset."""
    fin_seq = seq_add(peer.snd_nxt, -1)
    peer.send(peer.segment("FA", seq=fin_seq))
    try:
        reply = peer.expect(where=lambda t: "R" in str(t.flags) or t.ack == peer.snd_nxt)
    except PeerTimeout:
        return False, "a retransmitted FIN drew nothing"
    tcp = reply[TCP]
    ok = flag_set(tcp) == "A" and tcp.seq == peer.rcv_nxt and tcp.ack == peer.snd_nxt
    if ok:
        return True, "a retransmitted FIN was acknowledged again (seq SND.NXT, ack FIN+1)"
    return False, (f"a retransmitted FIN drew {flag_set(tcp)} with seq SND.NXT{_seq_diff(tcp.seq, peer.rcv_nxt):+d} "
                   f"and ack FIN{_seq_diff(tcp.ack, fin_seq):+d}")


def _syn_in_time_wait(ctx: RunContext, peer: Peer, entered: bool, request: bytes) -> Check:
    """A SYN for the same 4-tuple above the old connection's final sequence number, then a request on it."""
    if not entered:
        return ctx.check("time-wait-accepts-new-syn", "MAY-2", False, "the target never reached TIME-WAIT")
    old_end = peer.snd_nxt
    peer.isn = seq_add(old_end, 1 << 20)
    try:
        synack = peer.handshake()
    except PeerTimeout as exc:
        return ctx.check("time-wait-accepts-new-syn", "MAY-2", False,
                         f"a SYN for the TIME-WAIT 4-tuple 2^20 above its last sequence number drew no SYN-ACK ({exc})")
    peer.send_data(request)
    response, fin = _read_to_fin(peer)
    served = response.startswith(b"HTTP/1.1 200") and fin is not None
    return ctx.check("time-wait-accepts-new-syn", "MAY-2", served,
                     f"a SYN for the TIME-WAIT 4-tuple 2^20 above its last sequence number drew a SYN-ACK "
                     f"(ISN {synack[TCP].seq}) and the new connection {'served' if served else 'did not serve'} "
                     "a request", numbers={"new_isn": synack[TCP].seq})


# --- R2 -------------------------------------------------------------------------------------------------
def _retries_limit(ctx: RunContext) -> Check:
    p = ctx.params
    try:
        settings = ctx.target.set_retries(p.r2)
    except NotImplementedError as exc:
        return ctx.skip("gives-up-after-r2", "MUST-20", str(exc))
    with open_peer(ctx, "chargen") as peer:
        peer.handshake(window=4 * SEGMENT)
        head = peer.expect(payload=True, seq=peer.rcv_nxt)
        first_sent = time.monotonic()
        retransmissions, closed_at, alive_at = _watch_until_gone(peer, head[TCP].seq, first_sent + p.give_up_limit_s,
                                                                 p.probe_interval_s)
    bounded = closed_at is not None
    ok = bounded and 1 <= retransmissions <= p.r2 + 1
    gave_up = (f"gave up between {alive_at - first_sent:.1f} s and {closed_at - first_sent:.1f} s after the first "
               "transmission (a probe then drew a RST)" if closed_at is not None
               else f"was still alive {p.give_up_limit_s:.0f} s after the first transmission")
    return ctx.check("gives-up-after-r2", "MUST-20", ok,
                     f"with R2={p.r2} and no ACKs, the target retransmitted its first segment {retransmissions} times "
                     f"and {gave_up}",
                     counters={k: v for k, v in settings.items() if isinstance(v, int)},
                     numbers={"retransmissions": retransmissions, "r2": p.r2,
                              "closed_after_s": None if closed_at is None else round(closed_at - first_sent, 3)})


def _watch_until_gone(peer: Peer, head_seq: int, deadline: float, interval: float) -> tuple[int, float | None, float]:
    """Count retransmissions of the head segment and probe the connection every `interval` until a probe draws a RST.

    The probe repeats the peer's last sequence number with one byte of data: a live TCP answers
    duplicate data with an ACK at once, and since it carries data it is no duplicate ACK
    (RFC 5681), so it cannot trigger a fast retransmission. Returns the count, when the RST
    came (None if not before `deadline`) and when the last probe was answered alive.
    """
    retransmissions = 0
    alive_at = time.monotonic()
    while time.monotonic() < deadline:
        probe = peer.segment("A", b"\0", seq=seq_add(peer.snd_nxt, -1))
        peer.send(probe)
        next_probe = time.monotonic() + interval
        answered = False
        while (frame := peer.next_frame(min(next_probe, deadline))) is not None:
            tcp = frame[TCP]
            if "R" in str(tcp.flags):
                return retransmissions, time.monotonic(), alive_at
            if tcp_payload(frame) and tcp.seq == head_seq:
                retransmissions += 1
            elif not tcp_payload(frame) and not answered:
                answered, alive_at = True, time.monotonic()
    return retransmissions, None, alive_at
