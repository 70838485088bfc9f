"""`rfc9293`: crafted-segment checks of a TCP's behaviour in synchronized states, from a Scapy peer.

Groups, each on fresh connections to the target's discard, echo and chargen services:

- RST and SYN handling (RFC 5961) in every synchronized state the peer can drive the target
  into: ESTABLISHED (echo), CLOSE-WAIT (chargen after the peer's FIN: chargen keeps its side
  open and sends) and LAST-ACK (echo after the peer's FIN: echo closes, and the peer never
  acknowledges its FIN). An exact RST is accepted, an in-window RST and any SYN draw a
  challenge ACK <SEQ=SND.NXT><ACK=RCV.NXT>, an out-of-window RST is ignored; the RST of a
  half-open connection in SYN-RECEIVED returns the listener to LISTEN. FIN-WAIT, CLOSING and
  TIME-WAIT need a target that closes first, which none of the three services does (the
  `rfc9293_more` scenario reaches TIME-WAIT through the http service).
- Acceptability: out-of-window data, data acknowledging unsent data, and data with an ACK older
  than the maximum window are answered with an ACK and dropped.
- Windows: a 16-bit window above 32767 is honoured in full; a shrinking window is survived
  without new data beyond the new edge; a zero window is probed with exponential backoff and
  kept open for as long as the probes are answered.
- ACK generation: the ACK delay bound, delayed ACKs, and an ACK for every second full segment.
- ISNs: clock-driven for one 4-tuple and unpredictable across 4-tuples (a statistical test).
- Urgent data, half-close, PSH on replies, and no MSS option outside SYNs.

Each retry of a challenge ACK uses a fresh connection: RFC 5961 section 7 lets a TCP rate-limit
challenge ACKs per connection (Linux allows one per 500 ms), so one connection answers one probe.
Whatever must not be answered is judged against a fence: a later segment whose distinguishable
answer proves the earlier one had its chance. The link runs with TSO off and a 9000-byte MTU,
so a 10-segment initial window can fill a 64 KiB window and the peer reads real segment sizes.
"""
from __future__ import annotations

import select
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from pydantic import Field
from scapy.layers.inet import TCP
from scapy.layers.l2 import Ether

from .framework import Check, RunContext, ScenarioParams, scenario
from .peer import SEQ_MOD, Peer, PeerTimeout, flag_set, option_value, seq_add, tcp_payload
from .transfer import wait_for_capture
from .wire import TcpFrame, tcp_frames

HALF_SPACE = 1 << 31
FAR_OUT_OF_WINDOW = 1 << 30  # beyond any receive window (the largest scaled window is 2^30 - 2^14)
#: Chi-square critical value for 15 degrees of freedom at p = 0.001.
CHI2_15DF_P001 = 37.70
#: A TCP may wait this long before sending a runt into a small window (RFC 9293 3.8.6.2.1 override timeout).
SWS_OVERRIDE_MIN_S = 0.1
FENCE_TOKEN = b"toelab-fence"
#: An ACK this late was delayed: an immediate one comes back from the peer's wire within about a
#: millisecond here, and delayed-ACK timers run from a few ms (toelab's engine: 5 ms) to 40 ms (Linux) and more.
DELAYED_ACK_MIN_S = 0.004
#: Delayed ACKs are the rule, not an accident: at least this share of the isolated segments must be
#: acknowledged late (Linux's quick-ACK mode answers the first few of a connection at once).
DELAYED_ACK_SHARE = 0.25


class Rfc9293Params(ScenarioParams):
    mtu: int = Field(9000, ge=1280, le=9000, description="MTU of the link (9000 lets the initial window exceed 32 KiB)")
    isn_samples: int = Field(200, ge=50, le=2000, description="SYN-ACKs from distinct 4-tuples for the ISN test")
    isn_same_tuple: int = Field(20, ge=5, le=200, description="SYN-ACKs from one 4-tuple for the clock test")
    zero_window_probes: int = Field(4, ge=3, le=6, description="zero-window probes awaited (each waits twice as long)")
    isolated_segments: int = Field(24, ge=4, le=100, description="lone full-sized segments sent one at a time for ACK delays")
    stream_segments: int = Field(24, ge=4, le=200, description="full-sized segments streamed to discard")


def _seq_diff(a: int, b: int) -> int:
    """a - b in sequence space, as a signed number (RFC 9293 serial arithmetic)."""
    d = (a - b) % SEQ_MOD
    return d - SEQ_MOD if d >= HALF_SPACE else d


def _end(frame: Ether) -> int:
    """The sequence number just after everything the segment occupies (data, SYN, FIN)."""
    tcp = frame[TCP]
    return seq_add(tcp.seq, len(tcp_payload(frame)) + ("S" in str(tcp.flags)) + ("F" in str(tcp.flags)))


def _target_snd_nxt(peer: Peer) -> int:
    """The target's SND.NXT as the peer saw it: the furthest end of anything it sent."""
    assert peer.peer_isn is not None
    best = seq_add(peer.peer_isn, 1)
    for frame in peer.received:
        if _seq_diff(_end(frame), best) > 0:
            best = _end(frame)
    return best


def _pure_ack(tcp: TCP, ack: int) -> bool:
    return flag_set(tcp) == "A" and tcp.ack == ack


class _Session:
    """Opens peers to the target's services and keeps every frame they received (MSS sweep, PSH)."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.frames: list[Ether] = []
        self.echo_replies: list[Ether] = []

    @contextmanager
    def peer(self, service: str, sport: int | None = None) -> Iterator[Peer]:
        ctx = self.ctx
        with Peer(ctx.lab, ctx.client, ctx.address(ctx.server), ctx.port(service), rng=ctx.rng, sport=sport,
                  timeout_s=1.0) as peer:
            try:
                yield peer
            finally:
                if peer.peer_isn is not None:
                    peer.abort()
                self.frames += peer.received

    def echo_fence(self, peer: Peer) -> Ether:
        """Send a token to echo and wait for it to come back: proof the connection is alive."""
        expected = seq_add(peer.snd_nxt, len(FENCE_TOKEN))
        peer.send_data(FENCE_TOKEN)
        reply = peer.expect(payload=True, seq=peer.rcv_nxt)
        if tcp_payload(reply) != FENCE_TOKEN or reply[TCP].ack != expected:
            raise PeerTimeout(f"the echo of the fence came back as {tcp_payload(reply)[:20]!r}")
        self.echo_replies.append(reply)
        peer.rcv_nxt = seq_add(peer.rcv_nxt, len(FENCE_TOKEN))
        peer.send(peer.segment("A"))
        return reply


# --- synchronized states the peer can drive the target into ---------------------------------------
@dataclass
class _State:
    """How to bring a fresh connection into one state, and a fence proving the connection is still there."""

    name: str
    service: str
    enter: Callable[[_Session, Peer], None]
    fence: Callable[[_Session, Peer], Ether]
    #: Frames the target sends on its own in this state (retransmissions) that are not answers.
    background: Callable[[Ether], bool] = field(default=lambda frame: False)


CLOSE_WAIT_WINDOW = 2000


def _enter_established(session: _Session, peer: Peer) -> None:
    peer.handshake()


def _enter_close_wait(session: _Session, peer: Peer) -> None:
    """chargen fills a small window; the peer sends FIN without acknowledging data; the target ACKs the FIN."""
    peer.handshake(window=CLOSE_WAIT_WINDOW)
    peer.expect(payload=True)
    peer.send(peer.segment("FA", window=CLOSE_WAIT_WINDOW))
    peer.snd_nxt = seq_add(peer.snd_nxt, 1)
    peer.expect(ack=peer.snd_nxt)


def _close_wait_fence(session: _Session, peer: Peer) -> Ether:
    """Acknowledge all data seen: chargen must send the next bytes."""
    peer.rcv_nxt = _target_snd_nxt(peer)
    peer.send(peer.segment("A", window=CLOSE_WAIT_WINDOW))
    return peer.expect(payload=True, seq=peer.rcv_nxt)


def _enter_last_ack(session: _Session, peer: Peer) -> None:
    """echo closes after the peer's FIN; the peer never acknowledges the target's FIN."""
    peer.handshake()
    peer.send(peer.segment("FA"))
    peer.snd_nxt = seq_add(peer.snd_nxt, 1)
    fin = peer.expect(where=lambda t: "F" in str(t.flags), ack=peer.snd_nxt)
    peer.rcv_nxt = fin[TCP].seq  # the FIN stays unacknowledged


def _last_ack_fence(session: _Session, peer: Peer) -> Ether:
    """The target retransmits its unacknowledged FIN only while the connection exists."""
    fin_seq = peer.rcv_nxt
    return peer.expect(where=lambda t: "F" in str(t.flags) and t.seq == fin_seq, timeout_s=3.0)


STATES = (
    _State("established", "echo", _enter_established, lambda s, p: s.echo_fence(p)),
    _State("close-wait", "chargen", _enter_close_wait, _close_wait_fence,
           background=lambda f: bool(tcp_payload(f))),
    _State("last-ack", "echo", _enter_last_ack, _last_ack_fence,
           background=lambda f: "F" in str(f[TCP].flags)),
)


@scenario("rfc9293", purpose="RFC 9293 / RFC 5961 crafted-segment checks: RST and SYN in synchronized states, "
          "acceptability, windows and zero-window probing, ACK timing, ISN unpredictability, urgent data, half-close.",
          topology="two_hosts", params=Rfc9293Params, topology_params=lambda p: {"mtu": p.mtu, "tso": "false"},
          covers=("RFC5961 3.2", "RFC5961 4.2", "RFC9293 3.10.7.4", "RFC9293 3.6",
                  "MUST-1", "MUST-8", "MUST-9", "MUST-10", "MUST-11", "MUST-30", "MUST-31", "MUST-34",
                  "MUST-35", "MUST-36", "MUST-37", "MUST-38", "MUST-40", "MUST-61", "MUST-62", "MUST-65",
                  "SHLD-1", "SHLD-2", "SHLD-14", "SHLD-15", "SHLD-16", "SHLD-18", "SHLD-19", "SHLD-28",
                  "SHLD-29", "SHLD-30", "MAY-12"), claims=("TOE-5",))
def run(ctx: RunContext) -> Iterator[Check]:
    session = _Session(ctx)
    for state in STATES:
        ctx.progress(f"RST and SYN in {state.name.upper()}")
        yield from _rst_and_syn(ctx, session, state)
    ctx.progress("RST in SYN-RECEIVED")
    yield _rst_in_syn_received(ctx, session)
    ctx.progress("segment acceptability")
    yield from _acceptability(ctx, session)
    ctx.progress("window above 32767")
    yield from _unsigned_window(ctx, session)
    ctx.progress("shrinking window")
    yield from _shrinking_window(ctx, session)
    ctx.progress("zero-window probing")
    yield from _zero_window(ctx, session)
    ctx.progress("ACK timing")
    yield from _ack_delays(ctx, session)
    yield from _ack_stream(ctx, session)
    ctx.progress("ISNs")
    yield from _isns(ctx, session)
    ctx.progress("urgent data")
    yield from _urgent(ctx, session)
    ctx.progress("half-close")
    yield _half_close(ctx, session)
    yield from _unreachable(ctx)
    yield from _session_sweeps(ctx, session)


# --- RST and SYN (RFC 5961) ------------------------------------------------------------------------
def _answers(peer: Peer, since: int, until: Ether | None, state: _State, rcv_nxt: int) -> list[Ether]:
    """Frames received after index `since` and before `until` that answer a segment: RSTs and ACKs of RCV.NXT."""
    frames = peer.received[since:]
    if until is not None:
        frames = frames[:next(i for i, f in enumerate(frames) if f is until)]
    return [f for f in frames if "R" in str(f[TCP].flags)
            or (f[TCP].ack == rcv_nxt and not state.background(f) and not tcp_payload(f))]


def _rst_and_syn(ctx: RunContext, session: _Session, state: _State) -> Iterator[Check]:
    name = state.name
    with session.peer(state.service) as peer:
        state.enter(session, peer)
        rcv_nxt, mark = peer.snd_nxt, len(peer.received)
        peer.send(peer.segment("R", seq=seq_add(rcv_nxt, FAR_OUT_OF_WINDOW)))
        try:
            fence = state.fence(session, peer)
            answers = _answers(peer, mark, fence, state, rcv_nxt)
            ok, seen = not answers, f"drew {len(answers)} answers and the connection survived (its fence came back)"
        except PeerTimeout as exc:
            ok, seen = False, f"left a connection that no longer answered its fence: {exc}"
    yield ctx.check(f"rst-out-of-window-ignored[{name}]", "RFC5961 3.2", ok,
                    f"in {name.upper()}, a RST 2^30 beyond RCV.NXT {seen}")

    with session.peer(state.service) as peer:
        state.enter(session, peer)
        rcv_nxt, snd_nxt = peer.snd_nxt, _target_snd_nxt(peer)
        peer.send(peer.segment("R", seq=seq_add(rcv_nxt, 1)))
        yield _challenge_check(ctx, session, state, peer, f"rst-in-window-challenge-ack[{name}]", "RFC5961 3.2",
                               "a RST at RCV.NXT+1", rcv_nxt, snd_nxt)

    with session.peer(state.service) as peer:
        state.enter(session, peer)
        rcv_nxt, snd_nxt = peer.snd_nxt, _target_snd_nxt(peer)
        peer.send(peer.segment("S", seq=rcv_nxt, options=[("MSS", 1460)]))
        yield _challenge_check(ctx, session, state, peer, f"syn-challenge-ack[{name}]", "RFC5961 4.2",
                               "a SYN at RCV.NXT", rcv_nxt, snd_nxt)

    variants = [("", "RFC5961 3.2")] + ([("-with-data", "SHLD-2")] if name == "established" else [])
    for suffix, requirement in variants:
        with session.peer(state.service) as peer:
            state.enter(session, peer)
            payload = b"reset by toelab" if suffix else b""
            peer.send(peer.segment("R", payload, seq=peer.snd_nxt))
            yield _gone_check(ctx, peer, f"rst-exact-accepted{suffix}[{name}]", requirement,
                              f"in {name.upper()}, a RST exactly at RCV.NXT" + (" carrying 15 bytes" if suffix else ""))


def _challenge_check(ctx: RunContext, session: _Session, state: _State, peer: Peer, id: str, requirement: str,
                     what: str, rcv_nxt: int, snd_nxt: int) -> Check:
    """The next answer must be <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>, and the connection must survive it."""
    try:
        reply = peer.expect(where=lambda t: _pure_ack(t, rcv_nxt) or "R" in str(t.flags) or "S" in str(t.flags),
                            payload=False)
    except PeerTimeout:
        return ctx.check(id, requirement, False, f"in {state.name.upper()}, {what} drew no challenge ACK within 1 s")
    tcp = reply[TCP]
    exact = flag_set(tcp) == "A" and tcp.seq == snd_nxt and tcp.ack == rcv_nxt
    try:
        state.fence(session, peer)
        alive = True
    except PeerTimeout:
        alive = False
    return ctx.check(id, requirement, exact and alive,
                     f"in {state.name.upper()}, {what} drew {flag_set(tcp)} with seq SND.NXT{_seq_diff(tcp.seq, snd_nxt):+d} "
                     f"ack RCV.NXT{_seq_diff(tcp.ack, rcv_nxt):+d}, and the connection "
                     f"{'survived' if alive else 'did not survive'}",
                     numbers={"seq_offset": _seq_diff(tcp.seq, snd_nxt), "ack_offset": _seq_diff(tcp.ack, rcv_nxt)})


def _gone_check(ctx: RunContext, peer: Peer, id: str, requirement: str, what: str) -> Check:
    """After an accepted RST the connection is gone: an ACK for it draws <SEQ=SEG.ACK><CTL=RST>."""
    probe = peer.segment("A")
    peer.send(probe)
    try:
        reset = peer.expect("R", seq=probe[TCP].ack)
        ok, seen = True, f"was accepted: a later ACK drew RST seq={reset[TCP].seq}"
    except PeerTimeout as exc:
        ok, seen = False, f"was not accepted: a later ACK drew no RST ({exc})"
    return ctx.check(id, requirement, ok, f"{what} {seen}")


def _rst_in_syn_received(ctx: RunContext, session: _Session) -> Check:
    """RST on a passive half-open connection: the target forgets it and returns to LISTEN (MUST-11)."""
    with session.peer("echo") as peer:
        peer.send(peer.segment("S", seq=peer.isn, options=[("MSS", 1460)]))
        synack = peer.expect("SA", ack=seq_add(peer.isn, 1))
        peer.send(peer.segment("R", seq=seq_add(peer.isn, 1), ack=0))
        completing = peer.segment("A", seq=seq_add(peer.isn, 1), ack=seq_add(synack[TCP].seq, 1))
        peer.send(completing)
        try:
            peer.expect("R", seq=completing[TCP].ack)
            forgotten = True
        except PeerTimeout:
            forgotten = False
    try:
        with session.peer("echo") as fresh:
            fresh.handshake()
            session.echo_fence(fresh)
        listening = True
    except PeerTimeout:
        listening = False
    return ctx.check("rst-in-syn-received", "MUST-11", forgotten and listening,
                     f"after a RST in SYN-RECEIVED the ACK completing that handshake "
                     f"{'drew a RST' if forgotten else 'drew no RST'} and a new connection "
                     f"{'was served' if listening else 'failed'}")


# --- acceptability -----------------------------------------------------------------------------
def _acceptability(ctx: RunContext, session: _Session) -> Iterator[Check]:
    """Bad segments carry data that must not reach echo; the fence's echo shows what was delivered."""
    cases = (
        ("out-of-window-data-acked-dropped", "RFC9293 3.10.7.4", "data 2^30 beyond RCV.NXT",
         lambda p: {"seq": seq_add(p.snd_nxt, FAR_OUT_OF_WINDOW)}),
        ("unsent-ack-acked-dropped", "RFC9293 3.10.7.4", "data acknowledging 100000 bytes never sent",
         lambda p: {"ack": seq_add(p.rcv_nxt, 100000)}),
        ("old-ack-data-dropped", "MAY-12", "data with an ACK 2^20 below SND.UNA (beyond MAX.SND.WND)",
         lambda p: {"ack": seq_add(p.rcv_nxt, -(1 << 20))}),
    )
    for id, requirement, what, fields in cases:
        with session.peer("echo") as peer:
            peer.handshake()
            rcv_nxt, mark = peer.snd_nxt, len(peer.received)
            junk = b"injected-" * 4
            peer.send(peer.segment("PA", junk, **fields(peer)))
            try:
                ack = peer.expect("A", ack=rcv_nxt, payload=False)
                acked = True
            except PeerTimeout:
                acked = False
            try:
                session.echo_fence(peer)
                delivered = [tcp_payload(f) for f in peer.received[mark:] if tcp_payload(f)]
                clean = delivered == [FENCE_TOKEN]
            except PeerTimeout:
                clean, delivered = False, []
        sentence = (f"{what} {'drew an ACK of RCV.NXT' if acked else 'drew no ACK'} and echo then returned "
                    f"{b''.join(delivered)[:40]!r}")
        yield ctx.check(id, requirement, acked and clean, sentence, integrity=True,
                        numbers={"acked": acked, "only_fence_echoed": clean,
                                 "ack_seq_offset": _seq_diff(ack[TCP].seq, _target_snd_nxt(peer)) if acked else None})


# --- windows -------------------------------------------------------------------------------------------
def _collect_until_retransmission(peer: Peer, timeout_s: float) -> tuple[list[tuple[float, Ether]], Ether | None]:
    """Data segments with their arrival times until the first one that repeats data (the RTO fired)."""
    highest: int | None = None
    burst: list[tuple[float, Ether]] = []
    deadline = time.monotonic() + timeout_s
    while (frame := peer.next_frame(deadline)) is not None:
        if not tcp_payload(frame):
            continue
        if highest is not None and _seq_diff(frame[TCP].seq, highest) < 0:
            return burst, frame
        burst.append((time.monotonic(), frame))
        highest = _end(frame) if highest is None or _seq_diff(_end(frame), highest) > 0 else highest
    return burst, None


def _unsigned_window(ctx: RunContext, session: _Session) -> Iterator[Check]:
    """A window field of 65535 (top bit set) with an initial window of 10 jumbo segments: > 32767 bytes must fly."""
    mss = ctx.params.mtu - 40
    with session.peer("chargen") as peer:
        peer.handshake([("MSS", mss)], window=65535)
        burst, retransmission = _collect_until_retransmission(peer, 3.0)
    start = seq_add(peer.peer_isn or 0, 1)
    in_flight = max((_seq_diff(_end(f), start) for _, f in burst), default=0)
    sizes = [len(tcp_payload(f)) for _, f in burst]
    eff_mss = mss
    yield ctx.check("window-field-unsigned", "MUST-1", 32767 < in_flight <= 65535,
                    f"with an unacknowledged window field of 65535 the target had {in_flight} bytes in flight before "
                    f"its first retransmission{'' if retransmission is not None else ' (none came within 3 s)'}",
                    numbers={"in_flight": in_flight, "segments": len(sizes)})
    yield ctx.check("full-sized-segments", "SHLD-28", full_sized(sizes, eff_mss),
                    f"the window-limited burst was {len(sizes)} segments of sizes {sorted(set(sizes))} "
                    f"(effective MSS {eff_mss})", numbers={"segments": len(sizes), "mss": eff_mss})
    t0 = burst[0][0] if burst else 0.0
    left = 65535 % eff_mss
    runts = [len(tcp_payload(f)) for t, f in burst if len(tcp_payload(f)) < eff_mss and t - t0 < SWS_OVERRIDE_MIN_S]
    filled = window_filled(in_flight, 65535, eff_mss)
    yield ctx.check("sender-sws-avoidance", "MUST-38", filled and not runts,
                    f"with {left} bytes of usable window left after its full segments (less than one MSS, under half "
                    f"the window; window filled with full segments: {filled}) and more data queued, the target "
                    f"sent {len(runts)} smaller segments "
                    f"{sorted(runts)} within {SWS_OVERRIDE_MIN_S * 1000:.0f} ms instead of waiting for the override timeout",
                    numbers={"runts": len(runts), "window_left": left})


def full_sized(sizes: list[int], mss: int) -> bool:
    """A window-limited burst of several segments, all but the last carrying a full MSS (SHLD-28)."""
    return len(sizes) >= 2 and all(size == mss for size in sizes[:-1])


def window_filled(in_flight: int, window: int, mss: int) -> bool:
    """The sender put every full segment the window holds in flight, so what is left is a runt's chance."""
    return in_flight >= window // mss * mss


SHRINK_MSS = 1460
SHRINK_WINDOW = 5 * SHRINK_MSS  # a whole number of segments, so every sender fills it without a runt


def _shrinking_window(ctx: RunContext, session: _Session) -> Iterator[Check]:
    """Window of 5 segments, then an ACK of one segment that moves the right edge left, then a zero window, then reopen."""
    with session.peer("chargen") as peer:
        peer.handshake([("MSS", SHRINK_MSS)], window=SHRINK_WINDOW)
        start = peer.rcv_nxt
        deadline = time.monotonic() + 2.0
        while _seq_diff(_target_snd_nxt(peer), start) < SHRINK_WINDOW:
            if peer.next_frame(deadline) is None:
                break
        sent_before = _seq_diff(_target_snd_nxt(peer), start)
        # Phase 1: acknowledge one segment with a window that ends below what was already sent.
        una = seq_add(start, SHRINK_MSS)
        edge = seq_add(una, 2 * SHRINK_MSS)
        mark = len(peer.received)
        peer.send(peer.segment("A", ack=una, window=2 * SHRINK_MSS))
        try:
            retx = peer.expect(payload=True, where=lambda t: _seq_diff(t.seq, seq_add(start, sent_before)) < 0,
                               timeout_s=3.0)
            retx_span = (_seq_diff(retx[TCP].seq, start), _seq_diff(_end(retx), start))
        except PeerTimeout:
            retx, retx_span = None, None
        new_data = [f for f in peer.received[mark:] if tcp_payload(f)
                    and _seq_diff(_end(f), seq_add(start, sent_before)) > 0]
        # Phase 2: acknowledge up to the shrunk edge with a zero window: the rest of the flight lies beyond it.
        peer.send(peer.segment("A", ack=edge, window=0))
        probes = []
        for _ in range(2):
            try:
                probe = peer.expect(timeout_s=3.5)
                probes.append(probe)
                peer.send(peer.segment("A", ack=edge, window=0))
            except PeerTimeout:
                break
        beyond = [f for f in probes if _seq_diff(_end(f), seq_add(start, sent_before)) > 0]
        # Phase 3: acknowledge everything and reopen.
        top = seq_add(start, sent_before)
        peer.send(peer.segment("A", ack=top, window=SHRINK_WINDOW))
        try:
            peer.expect(payload=True, seq=top)
            resumed = True
        except PeerTimeout:
            resumed = False
    yield ctx.check("shrunk-window-no-new-data", "SHLD-15",
                    sent_before >= SHRINK_WINDOW and retx is not None and not new_data,
                    f"after the right edge moved from {SHRINK_WINDOW} to {_seq_diff(edge, start)} with {sent_before} bytes "
                    f"sent, the target sent {len(new_data)} segments of new data before its retransmission",
                    numbers={"sent_before": sent_before, "new_data_segments": len(new_data)})
    yield ctx.check("shrunk-window-retransmits-within", "SHLD-16",
                    retx_span is not None and retx_span[0] == SHRINK_MSS and retx_span[1] <= 3 * SHRINK_MSS,
                    f"the first retransmission after the shrink covered bytes {retx_span} "
                    f"(SND.UNA {SHRINK_MSS}, right edge {3 * SHRINK_MSS})")
    yield ctx.check("zero-window-shrink-probed", "MUST-35", len(probes) == 2 and not beyond,
                    f"with the window shrunk to zero and {sent_before - 2 * SHRINK_MSS} bytes beyond it in flight, the "
                    f"target sent {len(probes)} probes, {len(beyond)} of them past what it had sent")
    yield ctx.check("shrinking-window-survived", "MUST-34", resumed,
                    f"after a shrink, a zero window and a reopening ACK, the target {'sent' if resumed else 'did not send'} "
                    "new data from the acknowledged point")


def _zero_window(ctx: RunContext, session: _Session) -> Iterator[Check]:
    """chargen behind a zero window from the handshake on: probes, their spacing, reopening, then one RTO measured."""
    n = ctx.params.zero_window_probes
    with session.peer("chargen") as peer:
        peer.handshake(ack_window=0)
        closed_at = time.monotonic()
        arrivals: list[float] = []
        bad_probes = 0
        for _ in range(n):
            try:
                probe = peer.expect(timeout_s=8.0)
            except PeerTimeout:
                break
            arrivals.append(time.monotonic())
            bad_probes += len(tcp_payload(probe)) > 1 or _seq_diff(probe[TCP].seq, peer.rcv_nxt) > 0
            peer.send(peer.segment("A", window=0))
        peer.send(peer.segment("A", window=65535))
        reopened, rto = _reopen_and_time_rto(peer)
    open_s = (arrivals[-1] - closed_at) if arrivals else 0.0
    yield ctx.check("zero-window-probed", "MUST-36", len(arrivals) == n and bad_probes == 0,
                    f"behind a zero window the target sent {len(arrivals)} of {n} awaited probes "
                    f"({bad_probes} carried more than one byte or new sequence space)",
                    numbers={"probes": len(arrivals), "bad_probes": bad_probes})
    yield ctx.check("zero-window-kept-open", "MUST-37", len(arrivals) == n and reopened,
                    f"the connection stayed open through {open_s:.1f} s of answered probes and "
                    f"{'resumed' if reopened else 'did not resume'} sending when the window reopened",
                    numbers={"zero_window_s": round(open_s, 3)})
    first = arrivals[0] - closed_at if arrivals else None
    # The RTO timed after reopening may already be backed off once (x2) by the probes' own
    # timeouts, so a first probe at one RTO can read as 0.5 of it: allow [0.4, 2.5] x.
    ok = first is not None and rto is not None and 0.4 * rto <= first <= 2.5 * rto
    yield ctx.check("first-probe-after-rto", "SHLD-29", ok,
                    f"the first probe came {_ms(first)} after the window closed; the connection's RTO measured "
                    f"afterwards was {_ms(rto)}", numbers={"first_probe_s": first, "rto_s": rto})
    intervals = [b - a for a, b in zip(arrivals, arrivals[1:])]
    ratios = [b / a for a, b in zip(intervals, intervals[1:]) if a > 0]
    yield ctx.check("probe-backoff-exponential", "SHLD-30", len(ratios) >= 1 and all(r >= 1.5 for r in ratios),
                    f"probe intervals were {', '.join(_ms(i) for i in intervals)} (growth factors "
                    f"{', '.join(f'{r:.2f}' for r in ratios)})",
                    numbers={"intervals_s": ",".join(f"{i:.4f}" for i in intervals)})


def _reopen_and_time_rto(peer: Peer) -> tuple[bool, float | None]:
    """After reopening: did data resume, and how long until the unacknowledged head was sent again (one RTO)."""
    try:
        head = peer.expect(payload=True, seq=peer.rcv_nxt)
    except PeerTimeout:
        return False, None
    head_at = time.monotonic()
    try:
        peer.expect(payload=True, seq=head[TCP].seq, timeout_s=5.0)
    except PeerTimeout:
        return True, None
    return True, time.monotonic() - head_at


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.0f} ms"


# --- ACK generation -----------------------------------------------------------------------------------
def _ack_delays(ctx: RunContext, session: _Session) -> Iterator[Check]:
    """Isolated full-sized segments without PSH to discard, each waiting for its ACK: the bound and the delay.

    Full-sized and unpushed, because a receiver may rightly ACK a pushed or small segment as soon
    as its application reads it (Linux does); a lone full segment is the case delayed ACKs are for.
    The delays are timed from the capture on the peer's interface (both frames stamped by the
    same kernel), not around Python's send and receive calls.
    """
    n = ctx.params.isolated_segments
    port = ctx.port("discard")
    capture = ctx.capture(ctx.client, ctx.iface(ctx.client), f"tcp port {port}", name="ack-delays.pcap")
    try:
        with session.peer("discard") as peer:
            synack = peer.handshake([("MSS", ctx.params.mtu - 40)])
            payload = bytes(i % 256 for i in range(option_value(synack, "MSS") or 536))
            answered = 0
            for _ in range(n):
                peer.send_data(payload, flags="A")
                try:
                    peer.expect("A", ack=peer.snd_nxt, timeout_s=1.0)
                except PeerTimeout:
                    break
                answered += 1
            sender = (ctx.address(ctx.client), peer.sport)
        wait_for_capture(capture.path, lambda frames: len(ack_delays(frames, sender, len(payload))) >= answered, 3.0)
    finally:
        pcap = capture.stop()
    delays = ack_delays(tcp_frames(pcap), sender, len(payload))
    worst = max(delays, default=0.0)
    yield ctx.check("ack-delay-bound", "MUST-40", ack_delay_bounded(delays, n),
                    f"{len(delays)} of {n} isolated {len(payload)}-byte segments were acknowledged, the slowest after "
                    f"{_ms(worst)} by the capture's timestamps", pcaps=[pcap],
                    numbers={"max_delay_s": round(worst, 4), "acked": len(delays)})
    delayed = [d for d in delays if d >= DELAYED_ACK_MIN_S]
    yield ctx.check("delayed-acks", "SHLD-18", acks_delayed(delays, n),
                    f"{len(delayed)} of {len(delays)} acknowledged isolated segments (of {n} sent) waited at least "
                    f"{DELAYED_ACK_MIN_S * 1000:.0f} ms for their ACK by the capture's timestamps (at least "
                    f"{DELAYED_ACK_SHARE:.0%} needed; median "
                    f"{_ms(sorted(delays)[len(delays) // 2] if delays else None)})",
                    pcaps=[pcap], numbers={"delayed": len(delayed), "acked": len(delays), "sent": n})


def ack_delays(frames: list[TcpFrame], sender: tuple[str, int], payload_len: int) -> list[float]:
    """For each `payload_len`-byte segment `sender` (address, port) sent, the time until the first ACK covering it.

    Segments never acknowledged in the capture are left out, so a short list means missing ACKs.
    """
    delays: list[float] = []
    waiting: list[TcpFrame] = []
    for f in frames:
        if (f.src, f.sport) == sender and f.payload_len == payload_len:
            waiting.append(f)
        elif (f.dst, f.dport) == sender and "A" in f.flags:
            covered = [w for w in waiting if _seq_diff(f.ack, seq_add(w.seq, w.payload_len)) >= 0]
            delays += [f.ts - w.ts for w in covered]
            waiting = [w for w in waiting if w not in covered]
    return delays


def ack_delay_bounded(delays: list[float], sent: int) -> bool:
    """Every segment sent was acknowledged, none later than 0.5 s (RFC 9293 3.8.6.3)."""
    return sent > 0 and len(delays) == sent and max(delays) < 0.5


def acks_delayed(delays: list[float], sent: int) -> bool:
    """Every segment was acknowledged and a fair share of them after a delay (SHLD-18)."""
    if sent == 0 or len(delays) != sent:
        return False
    return sum(d >= DELAYED_ACK_MIN_S for d in delays) >= DELAYED_ACK_SHARE * sent


def _ack_stream(ctx: RunContext, session: _Session) -> Iterator[Check]:
    """Stream full-sized segments to discard as the window allows; every ACK must cover at most 2 new segments."""
    n = ctx.params.stream_segments
    acks: list[tuple[int, int]] = []
    with session.peer("discard") as peer:
        synack = peer.handshake([("MSS", ctx.params.mtu - 40)])
        rmss = option_value(synack, "MSS") or 536
        start = peer.snd_nxt
        acked, window, sent, peak = 0, synack[TCP].window, 0, 0
        payload = bytes(i % 256 for i in range(rmss))
        while acked < n * rmss:
            while sent < n and (sent + 1) * rmss - acked <= window:
                peer.send_data(payload)
                sent += 1
            peak = max(peak, sent * rmss - acked)
            try:
                frame = peer.expect("A", payload=False, where=lambda t: _seq_diff(t.ack, seq_add(start, acked)) > 0)
            except PeerTimeout:
                break
            acked, window = _seq_diff(frame[TCP].ack, start), frame[TCP].window
            acks.append((acked, window))
    gaps = [b - a for (a, _), (b, _) in zip([(0, 0)] + acks, acks)]
    yield ctx.check("ack-every-second-segment", "SHLD-19", acked_every_second(len(acks), acked, n, rmss, peak),
                    f"{n} segments of {rmss} bytes drew {len(acks)} ACKs (at least {n // 2} needed), the largest "
                    f"advancing {max(gaps, default=0)} bytes, final ACK at {acked}; up to {peak // rmss} segments "
                    f"were unacknowledged at once (at least 3 needed for an ACK to be able to cover more than two)",
                    numbers={"acks": len(acks), "largest_gap": max(gaps, default=0), "rmss": rmss,
                             "peak_in_flight": peak})
    edges = [a + w for a, w in acks]
    shrinks = sum(b < a for a, b in zip(edges, edges[1:]))
    yield ctx.check("receiver-window-not-shrunk", "SHLD-14", bool(edges) and shrinks == 0,
                    f"over {len(edges)} ACKs the target's right window edge moved left {shrinks} times",
                    numbers={"shrinks": shrinks})


def acked_every_second(acks: int, acked: int, segments: int, rmss: int, peak_in_flight: int) -> bool:
    """Everything was acknowledged, with at least one ACK per two full-sized segments (SHLD-19),
    while the window let at least three segments be unacknowledged at once: with two at most, a
    receiver could not cover more than two with one ACK, and the count would prove nothing.

    Counted over the stream, not per ACK: Linux now and then covers three or four segments with
    one ACK when they queue while its application holds the socket (seen on a busy machine: 21
    ACKs for 24 segments, the largest for four), and makes up for it with quick ACKs elsewhere;
    a receiver that ACKs only every third segment, or once per burst, falls short of the count.
    """
    return (segments > 0 and acked == segments * rmss and acks >= segments // 2
            and peak_in_flight >= 3 * rmss)


# --- ISNs --------------------------------------------------------------------------------------------
def _collect_isns(session: _Session, ports: list[int]) -> list[tuple[float, int]]:
    """One SYN per entry of `ports` (repeats reuse the 4-tuple), each awaited: (arrival time, ISN) of the SYN-ACKs.

    The client node's own kernel answers each SYN-ACK with a RST (only the peer's own port is
    shielded), which removes the half-open connection before the next SYN of the same 4-tuple.
    """
    ctx = session.ctx
    isns: list[tuple[float, int]] = []
    with session.peer("echo") as peer:
        sock = peer.open_socket(f"tcp and src host {peer.dst} and src port {peer.dport} and tcp[13] & 0x12 == 0x12")
        try:
            for sport in ports:
                isn = ctx.rng.getrandbits(32)
                peer.send(peer.segment("S", seq=isn, sport=sport, options=[("MSS", 1460)]))
                deadline = time.monotonic() + 1.0
                while select.select([sock], [], [], max(0.0, deadline - time.monotonic()))[0]:
                    tcp = Ether(sock.recv(1 << 16))[TCP]
                    if tcp.dport == sport and tcp.ack == seq_add(isn, 1):
                        isns.append((time.monotonic(), tcp.seq))
                        break
        finally:
            sock.close()
    return isns


def _chi_square(values: list[int], bins: int) -> float:
    counts = Counter(values)
    expected = len(values) / bins
    return sum((counts.get(b, 0) - expected) ** 2 / expected for b in range(bins))


def _isns(ctx: RunContext, session: _Session) -> Iterator[Check]:
    """ISN tests, on SYN-ACK sequence numbers.

    MUST-8 (clock component): `isn_same_tuple` SYNs from one 4-tuple, one after the other. RFC 6528's
    ISN = M + F(4-tuple, secret) keeps F fixed, so the ISNs must strictly increase in sequence space
    (a random or per-connection-counter-free generator passes this with probability 2^-(n-1)).

    MUST-9 and SHLD-1 (unpredictable across 4-tuples): `isn_samples` SYNs from distinct source ports.
    With a keyed PRF per 4-tuple the successive differences d_i = ISN_{i+1} - ISN_i (mod 2^32) are
    uniform over 2^32. MUST-9 passes when no difference occurs more than twice (a counter or clock
    alone repeats one step) and the top 4 bits of the differences pass a chi-square test against
    uniform (16 bins, 15 degrees of freedom, critical value 37.70 at p = 0.001). SHLD-1 passes when
    at most 10 % of the differences lie within 2^24 of their median (a clock without a PRF puts
    nearly all of them there; uniform puts 1/128) and the low 4 bits of the ISNs pass the same
    chi-square test.
    """
    p = ctx.params
    same_port = ctx.rng.randrange(20000, 60000)
    series = _collect_isns(session, [same_port] * p.isn_same_tuple)
    steps = [_seq_diff(b, a) for (_, a), (_, b) in zip(series, series[1:])]
    elapsed = series[-1][0] - series[0][0] if len(series) > 1 else 0.0
    rate = sum(steps) / elapsed if elapsed > 0 else 0.0
    yield ctx.check("isn-clock-driven", "MUST-8", len(series) == p.isn_same_tuple and all(s > 0 for s in steps),
                    f"{len(series)} SYN-ACKs for one 4-tuple over {_ms(elapsed)} had ISNs that rose "
                    f"{sum(s > 0 for s in steps)} of {len(steps)} times (about {rate:,.0f} per second)",
                    numbers={"samples": len(series), "rising_steps": sum(s > 0 for s in steps), "isn_rate_per_s": round(rate)})

    ports = ctx.rng.sample([q for q in range(20000, 60000) if q != same_port], p.isn_samples)
    isns = [isn for _, isn in _collect_isns(session, ports)]
    deltas = [(b - a) % SEQ_MOD for a, b in zip(isns, isns[1:])]
    if len(deltas) < 49:
        yield ctx.check("isn-unpredictable", "MUST-9", False, f"only {len(isns)} of {p.isn_samples} SYNs were answered")
        return
    top_chi = _chi_square([d >> 28 for d in deltas], 16)
    repeats = max(Counter(deltas).values())
    yield ctx.check("isn-unpredictable", "MUST-9", repeats <= 2 and top_chi < CHI2_15DF_P001,
                    f"{len(isns)} ISNs from distinct 4-tuples: the most frequent difference occurred {repeats} times and "
                    f"the differences' top 4 bits gave chi-square {top_chi:.1f} (uniform below {CHI2_15DF_P001})",
                    numbers={"samples": len(isns), "max_repeat": repeats, "chi2_top_bits": round(top_chi, 2)})
    median = sorted(deltas)[len(deltas) // 2]
    near = sum(abs(_seq_diff(d, median)) < (1 << 24) for d in deltas) / len(deltas)
    low_chi = _chi_square([isn & 0xF for isn in isns], 16)
    yield ctx.check("isn-prf-component", "SHLD-1", near <= 0.10 and low_chi < CHI2_15DF_P001,
                    f"{near:.1%} of ISN differences lay within 2^24 of their median (a bare clock puts nearly all "
                    f"there) and the ISNs' low 4 bits gave chi-square {low_chi:.1f}",
                    numbers={"near_median_fraction": round(near, 4), "chi2_low_bits": round(low_chi, 2)})


# --- urgent data ---------------------------------------------------------------------------------------
END_MARKER = b"\xfd\xfe\xffEND"


def _read_until(peer: Peer, marker: bytes, limit: int) -> bytes:
    """In-order data from the target up to and including `marker`, acknowledging as it comes."""
    data = bytearray()
    while not data.endswith(marker) and len(data) <= limit:
        frame = peer.expect(payload=True)
        if frame[TCP].seq == peer.rcv_nxt:
            data += tcp_payload(frame)
            peer.rcv_nxt = seq_add(peer.rcv_nxt, len(tcp_payload(frame)))
        peer.send(peer.segment("A"))
    return bytes(data)


def _urgent_echo(session: _Session, pieces: list[tuple[bytes, int | None]]) -> tuple[bytes, bool]:
    """Send (payload, urgent pointer or None) segments to echo, then a marker; returns the echo and whether all was ACKed."""
    with session.peer("echo") as peer:
        peer.handshake()
        for payload, pointer in pieces:
            frame = peer.segment("PAU" if pointer is not None else "PA", payload)
            if pointer is not None:
                frame[TCP].urgptr = pointer
                del frame[TCP].chksum
                frame = Ether(bytes(frame))
            peer.send(frame)
            peer.snd_nxt = seq_add(peer.snd_nxt, len(payload))
        try:
            peer.expect(where=lambda t: t.ack == peer.snd_nxt)
            acked = True
        except PeerTimeout:
            acked = False
        peer.send_data(END_MARKER)
        try:
            echoed = _read_until(peer, END_MARKER, sum(len(p) for p, _ in pieces) + len(END_MARKER))
        except PeerTimeout:
            echoed = b""
    return echoed.removesuffix(END_MARKER), acked


def _urgent_verdict(stream: bytes, echoed: bytes, mark: int) -> tuple[bool, str]:
    """Echo returns the stream whole (urgent data inline) or without the one byte before the mark (out of band)."""
    if echoed == stream:
        return True, "echo returned every byte (urgent data delivered inline)"
    if echoed == stream[:mark - 1] + stream[mark:]:
        return True, f"echo returned every byte but offset {mark - 1}, the last urgent octet, taken out of band"
    if echoed == stream[:mark] + stream[mark + 1:]:
        return False, f"echo lacked offset {mark}: the pointer was read as the last urgent octet, not the first non-urgent"
    return False, f"echo returned {len(echoed)} of {len(stream)} bytes in an order that is neither"


def _urgent(ctx: RunContext, session: _Session) -> Iterator[Check]:
    stream = bytes(i % 200 for i in range(200))
    echoed, acked = _urgent_echo(session, [(stream[:100], 50), (stream[100:], None)])
    ok, sentence = _urgent_verdict(stream, echoed, 50)
    yield ctx.check("urgent-pointer-handled", "MUST-30", acked and ok,
                    f"a segment with URG and pointer 50 was {'acknowledged' if acked else 'not acknowledged'} in full; "
                    f"{sentence}")
    yield ctx.check("urgent-pointer-first-non-urgent", "MUST-62", ok and echoed != b"",
                    f"with the pointer at offset 50, {sentence}")
    long_stream = bytes(i % 200 for i in range(3000))
    echoed, acked = _urgent_echo(session, [(long_stream[:1000], 2500), (long_stream[1000:2000], 1500),
                                           (long_stream[2000:], None)])
    ok, sentence = _urgent_verdict(long_stream, echoed, 2500)
    yield ctx.check("urgent-data-spans-segments", "MUST-31", acked and ok,
                    f"urgent data of 2500 bytes marked from the first of three 1000-byte segments was "
                    f"{'acknowledged' if acked else 'not acknowledged'}; {sentence}")


# --- half-close, unreachable states, sweeps ------------------------------------------------------------
def _half_close(ctx: RunContext, session: _Session) -> Check:
    """The peer closes its direction at once; chargen's direction stays open and keeps sending."""
    want = 20000
    with session.peer("chargen") as peer:
        peer.handshake()
        peer.send(peer.segment("FA"))
        peer.snd_nxt = seq_add(peer.snd_nxt, 1)
        data, closed = b"", []
        try:
            peer.expect(ack=peer.snd_nxt)
            fin_acked = True
        except PeerTimeout:
            fin_acked = False
        if fin_acked:
            try:
                data, segments = peer.receive(want)
                closed = [f for f in segments if set(str(f[TCP].flags)) & {"F", "R"}]
            except PeerTimeout:
                pass
    return ctx.check("half-close-keeps-sending", "RFC9293 3.6", fin_acked and len(data) >= want and not closed,
                     f"after the peer's FIN was {'acknowledged' if fin_acked else 'not acknowledged'}, chargen sent "
                     f"{len(data)} more bytes ({len(closed)} segments carrying FIN or RST)",
                     numbers={"bytes_after_fin": len(data)})


def _unreachable(ctx: RunContext) -> Iterator[Check]:
    yield ctx.skip("simultaneous-open", "MUST-10", "the target only serves passive opens (discard, echo, chargen, http), "
                   "so it never sends the SYN a simultaneous open needs")


def _session_sweeps(ctx: RunContext, session: _Session) -> Iterator[Check]:
    later = [f for f in session.frames if "S" not in str(f[TCP].flags)]
    with_mss = sum(option_value(f, "MSS") is not None for f in later)
    kinds = Counter(flag_set(f[TCP]) for f in later)
    yield ctx.check("mss-only-on-syn", "MUST-65", bool(later) and with_mss == 0,
                    f"{with_mss} of {len(later)} non-SYN segments (challenge ACKs, RSTs, probes, data) carried an MSS option",
                    numbers={f"flags_{k}": v for k, v in kinds.items()})
    replies = session.echo_replies
    pushed = sum("P" in str(f[TCP].flags) for f in replies)
    yield ctx.check("echo-replies-pushed", "MUST-61", bool(replies) and pushed == len(replies),
                    f"{pushed} of {len(replies)} single-segment echo replies carried PSH")

