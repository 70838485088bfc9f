"""`reordering`: out-of-order, overlapping and duplicate segments, and reordering during a bulk transfer.

A Scapy peer sends a train of segments of one byte stream to the target's echo service in a
seeded order (a shuffle; odd pieces before even ones, which leaves more holes than SACK can
name; overlapping pieces; every piece twice), with SACK negotiated and without timestamps,
so four SACK blocks fit. After each piece it waits for the target's ACK of the cumulative
point the pieces sent so far make, and checks:

- an out-of-order piece draws an ACK at once (RFC 5681 4.2), well before any delayed-ACK timer;
- that ACK's SACK blocks (RFC 2018 section 4) are exactly ranges the target holds above the
  cumulative ACK, the first one the range containing the piece that triggered it, and as many
  distinct ranges as fit (at most four); a piece overlapping held data may first get a D-SACK
  block naming the duplicated part (RFC 2883 section 4);
- a piece that fills a hole is acknowledged together with everything queued beyond it (the
  out-of-order data was queued, SHLD-31), and a duplicate is acknowledged;
- echo returns the stream once, in order, byte-exact: overlaps and duplicates are delivered once.

Reordering by a middlebox during a bulk transfer needs the engine middlebox (topology
`middlebox_chain`); that check skips when the middlebox cannot be loaded.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from pydantic import Field
from scapy.layers.inet import TCP

from .framework import Check, RunContext, ScenarioParams, scenario
from .peer import SEQ_MOD, Peer, PeerTimeout, option_value, seq_add, tcp_payload
from .targets import TargetUnavailable, delta, make
from .transfer import echo_bytes

MAX_SACK_BLOCKS = 4  # 40 option bytes without timestamps: 2 + 4 * 8 = 34
Piece = tuple[int, int]  # [start, end) offsets in the stream


class ReorderingParams(ScenarioParams):
    segments: int = Field(10, ge=5, le=40, description="pieces per train")
    segment_bytes: int = Field(400, ge=16, le=1400, description="bytes per piece")
    # Both targets' delayed-ACK timers wait at least 40 ms (Linux's TCP_DELACK_MIN, the engine's
    # tcp.delayed_ack), so an ACK within 30 ms was not delayed; 20 ms left too little room for
    # a Python engine's scheduling on a loaded 2-core machine (22-24 ms seen once in five runs).
    immediate_ms: float = Field(30.0, gt=0, le=200, description="an ACK within this is immediate (delayed ACKs wait 40-500 ms)")
    bulk_kib: int = Field(2048, ge=64, le=65536, description="KiB echoed through the reordering middlebox")
    reorder_percent: float = Field(25.0, gt=0, le=100, description="middlebox reorder probability")


@dataclass
class Reply:
    """What the target answered to one piece."""

    piece: Piece
    kind: str  # "advance" (fills the cumulative point), "ooo" (above it, new), "duplicate" (already held)
    expected_ack: int
    ranges_after: list[Piece]
    #: Parts of the piece the target already held: a D-SACK block (RFC 2883) may name them first.
    already_held: list[Piece] = field(default_factory=list)
    ack: int | None = None
    delay_s: float | None = None
    sack: list[Piece] = field(default_factory=list)


@dataclass
class TrainResult:
    stream: bytes
    replies: list[Reply]
    echoed: bytes


def _merge(ranges: list[Piece]) -> list[Piece]:
    merged: list[Piece] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _holds(ranges: list[Piece], piece: Piece) -> bool:
    return any(a <= piece[0] and piece[1] <= b for a, b in ranges)


def _run_train(ctx: RunContext, stream: bytes, order: list[Piece]) -> TrainResult:
    """Send the pieces in `order`, wait for each one's ACK, then read the echo back."""
    replies: list[Reply] = []
    with Peer(ctx.lab, ctx.client, ctx.address(ctx.server), ctx.port("echo"), rng=ctx.rng, timeout_s=1.0) as peer:
        peer.handshake([("MSS", 1460), ("SAckOK", b"")])
        base = peer.snd_nxt
        held: list[Piece] = []
        echoed = bytearray()
        for piece in order:
            before = _merge(held)
            cumulative = before[0][1] if before and before[0][0] == 0 else 0
            kind = ("duplicate" if _holds(before, piece) else "advance" if piece[0] <= cumulative else "ooo")
            held.append(piece)
            after = _merge(held)
            new_cumulative = after[0][1] if after[0][0] == 0 else 0
            reply = Reply(piece, kind, new_cumulative, [r for r in after if r[0] > new_cumulative],
                          [(max(a, piece[0]), min(b, piece[1])) for a, b in before if a < piece[1] and piece[0] < b])
            peer.drain()
            sent = time.monotonic()
            peer.send(peer.segment("PA", stream[piece[0]:piece[1]], seq=seq_add(base, piece[0])))
            want = seq_add(base, new_cumulative)
            try:
                frame = peer.expect(where=lambda t: t.ack == want)
                reply.ack, reply.delay_s = new_cumulative, time.monotonic() - sent
                reply.sack = [((a - base) % SEQ_MOD, (b - base) % SEQ_MOD)
                              for a, b in _sack_pairs(option_value(frame, "SAck"))]
            except PeerTimeout:
                pass
            replies.append(reply)
            if new_cumulative > len(echoed):
                echoed += _read_echo(peer, new_cumulative - len(echoed), base=seq_add(base, new_cumulative))
        peer.abort()
    return TrainResult(stream, replies, bytes(echoed))


def _sack_pairs(value: object) -> list[tuple[int, int]]:
    """Scapy gives SACK as a flat tuple (left1, right1, left2, right2, ...)."""
    edges = list(value) if isinstance(value, tuple) else []
    return list(zip(edges[::2], edges[1::2]))


def _read_echo(peer: Peer, nbytes: int, *, base: int) -> bytes:
    """The next `nbytes` of echo in order, acknowledged with `base` (the target's RCV.NXT) as our sequence number.

    Echo data may already have been read while waiting for an ACK, so every frame received so
    far counts, not only new ones.
    """
    data = bytearray()
    deadline = time.monotonic() + peer.timeout_s
    while len(data) < nbytes:
        ahead = [f for f in peer.received if tcp_payload(f) and f[TCP].seq == peer.rcv_nxt]
        if ahead:
            chunk = tcp_payload(ahead[0])
            data += chunk
            peer.rcv_nxt = seq_add(peer.rcv_nxt, len(chunk))
        elif peer.next_frame(deadline) is None:
            break
    peer.send(peer.segment("A", seq=base))
    return bytes(data)


def _trains(ctx: RunContext) -> dict[str, tuple[bytes, list[Piece]]]:
    """The seeded segment trains: name -> (stream, pieces in sending order)."""
    p = ctx.params
    n, size = p.segments, p.segment_bytes
    stream = bytes(ctx.rng.randrange(256) for _ in range(n * size))
    pieces = [(i * size, (i + 1) * size) for i in range(n)]
    shuffled = pieces[:]
    while shuffled[0] == pieces[0]:
        ctx.rng.shuffle(shuffled)
    alternate = pieces[1::2] + pieces[0::2]
    step = size * 3 // 4
    overlapping = [(s, min(s + size, n * size)) for s in range(0, n * size - size // 4, step)]
    overlapping = [overlapping[-1]] + overlapping[1:-1][::-1] + [overlapping[0]]
    doubled = [piece for piece in shuffled for _ in range(2)]
    return {"shuffle": (stream, shuffled), "alternate": (stream, alternate),
            "overlap": (stream, overlapping), "duplicate": (stream, doubled)}


@scenario("reordering", purpose="Out-of-order, overlapping and duplicate segments: immediate ACKs, SACK blocks, "
          "in-order byte-exact delivery; reordering by a middlebox during a bulk transfer.",
          topology="two_hosts", params=ReorderingParams, topology_params={"mtu": 1500, "tso": "false"},
          covers=("RFC5681 4.2", "RFC2018 4", "MAY-13", "SHLD-31", "RFC9293 3.10.7.4"), claims=("TOE-5",))
def run(ctx: RunContext) -> Iterator[Check]:
    bound = ctx.params.immediate_ms / 1000
    all_ooo: list[Reply] = []
    for name, (stream, order) in _trains(ctx).items():
        ctx.progress(f"train: {name}")
        result = _run_train(ctx, stream, order)
        ooo = [r for r in result.replies if r.kind == "ooo"]
        all_ooo += ooo
        yield _immediate_check(ctx, name, ooo, bound)
        yield _sack_check(ctx, name, ooo)
        yield _queued_check(ctx, name, [r for r in result.replies if r.kind == "advance"])
        if name == "duplicate":
            yield _duplicate_check(ctx, [r for r in result.replies if r.kind == "duplicate"], bound)
        yield _delivery_check(ctx, name, result)
    answered = [r for r in all_ooo if r.ack is not None]
    yield ctx.check("ooo-segments-acked", "MAY-13", bool(all_ooo) and len(answered) == len(all_ooo),
                    f"{len(answered)} of {len(all_ooo)} out-of-order pieces over all trains drew an ACK")
    ctx.progress("bulk transfer through a reordering middlebox")
    yield _middlebox_reordering(ctx)


def _immediate_check(ctx: RunContext, name: str, ooo: list[Reply], bound: float) -> Check:
    late = [r for r in ooo if r.delay_s is None or r.delay_s > bound]
    worst = max((r.delay_s for r in ooo if r.delay_s is not None), default=0.0)
    return ctx.check(f"ooo-immediate-ack[{name}]", "RFC5681 4.2", bool(ooo) and not late,
                     f"{len(ooo) - len(late)} of {len(ooo)} out-of-order pieces drew an ACK of the cumulative point "
                     f"within {bound * 1000:.0f} ms (slowest {worst * 1000:.1f} ms)",
                     numbers={"ooo": len(ooo), "late": len(late), "max_delay_ms": round(worst * 1000, 2)})


def _sack_fault(reply: Reply) -> str:
    """Why an out-of-order piece's SACK blocks break RFC 2018 section 4 (with RFC 2883 D-SACK), or "" if right."""
    if reply.ack is None:
        return "no ACK"
    blocks = reply.sack
    if blocks and any(a <= blocks[0][0] and blocks[0][1] <= b for a, b in reply.already_held):
        blocks = blocks[1:]  # a D-SACK block naming the duplicated part; the SACK blocks follow it
    room = MAX_SACK_BLOCKS - (len(reply.sack) - len(blocks))
    if not blocks:
        return "no SACK block"
    containing = next(r for r in reply.ranges_after if r[0] <= reply.piece[0] and reply.piece[1] <= r[1])
    if blocks[0] != containing:
        return f"first block {blocks[0]} is not {containing}, the range holding the piece"
    if any(b not in reply.ranges_after for b in blocks):
        return f"blocks {blocks} are not all ranges held above the ACK {reply.ranges_after}"
    if len(set(blocks)) != len(blocks):
        return f"blocks {blocks} repeat a range"
    if len(blocks) != min(len(reply.ranges_after), room):
        return f"{len(blocks)} blocks for {len(reply.ranges_after)} held ranges (room for {room})"
    return ""


def _sack_check(ctx: RunContext, name: str, ooo: list[Reply]) -> Check:
    faults = [(r.piece, f) for r in ooo if (f := _sack_fault(r))]
    most = max((len(r.sack) for r in ooo), default=0)
    sentence = (f"{len(ooo) - len(faults)} of {len(ooo)} out-of-order pieces drew SACK blocks naming exactly the held "
                f"ranges, the triggering one first (up to {most} blocks)")
    if faults:
        sentence += f"; first fault, piece {faults[0][0]}: {faults[0][1]}"
    return ctx.check(f"sack-blocks[{name}]", "RFC2018 4", bool(ooo) and not faults, sentence,
                     numbers={"faults": len(faults), "max_blocks": most})


def _queued_check(ctx: RunContext, name: str, advancing: list[Reply]) -> Check:
    jumps = [r for r in advancing if r.expected_ack > r.piece[1]]
    missed = [r for r in advancing if r.ack is None]
    return ctx.check(f"ooo-queued[{name}]", "SHLD-31", bool(jumps) and not missed,
                     f"{len(advancing) - len(missed)} of {len(advancing)} hole-filling pieces were acknowledged together "
                     f"with the queued data beyond them ({len(jumps)} jumped past their own end)",
                     numbers={"advancing": len(advancing), "jumps": len(jumps), "missed": len(missed)})


def _duplicate_check(ctx: RunContext, duplicates: list[Reply], bound: float) -> Check:
    answered = [r for r in duplicates if r.delay_s is not None and r.delay_s <= bound]
    return ctx.check("duplicate-acked", "RFC9293 3.10.7.4", bool(duplicates) and len(answered) == len(duplicates),
                     f"{len(answered)} of {len(duplicates)} duplicate pieces drew an ACK of the cumulative point "
                     f"within {bound * 1000:.0f} ms", numbers={"duplicates": len(duplicates)})


def _delivery_check(ctx: RunContext, name: str, result: TrainResult) -> Check:
    ok = result.echoed == result.stream
    first_bad = next((i for i, (a, b) in enumerate(zip(result.echoed, result.stream)) if a != b), None)
    return ctx.check(f"delivered-in-order[{name}]", "RFC9293 3.10.7.4", ok,
                     f"echo returned {len(result.echoed)} of {len(result.stream)} bytes, "
                     + ("byte-exact and in order" if ok else f"first difference at offset {first_bad}"),
                     numbers={"echoed": len(result.echoed), "sent": len(result.stream)}, integrity=True)


# --- reordering by a middlebox ------------------------------------------------------------------------
def _middlebox_available() -> str | None:
    """None when the engine middlebox and its lab hook load, else the reason it cannot run."""
    try:
        import lab.engine_nodes  # noqa: F401 - registers the `middlebox` node kind's start hook
        import toe_engine.runtime.middlebox  # noqa: F401
    except ImportError as exc:
        return f"middlebox not available ({exc})"
    return None


def _middlebox_reordering(ctx: RunContext) -> Check:
    """Echo `bulk_kib` through the engine middlebox reordering `reorder_percent` of frames: byte-exact both ways."""
    id, requirement = "middlebox-reordered-bulk", "RFC9293 3.10.7.4"
    reason = _middlebox_available()
    if reason is not None:
        return ctx.skip(id, requirement, reason)
    from lab.lab import Lab
    from lab.render import load_topology

    p = ctx.params
    spec = load_topology("middlebox_chain", {"reorder": str(p.reorder_percent), "delay_ms": "1", "seed": str(ctx.seed)})
    size = p.bulk_kib * 1024
    with Lab.up(spec) as lab:
        target = make(ctx.target.name)
        try:
            services = target.start(lab, "h2")
        except TargetUnavailable as exc:
            return ctx.skip(id, requirement, str(exc))
        try:
            before = target.counters()
            echo = echo_bytes(lab, "h1", lab.address("h2"), services["echo"], size, ctx.seed, 120.0)
            counters = delta(before, target.counters(), *(target.standard_counters[n] for n in ("retransmits", "in_segments")))
            impair = lab.engine("mb").stats()["counters"]
        finally:
            target.stop()
    reordered = sum(v for k, v in _flatten(impair).items() if k.endswith("impair_reordered"))
    return ctx.check(id, requirement, echo.exact and reordered > 0,
                     f"{echo.bytes} of {size} bytes came back {'byte-exact' if echo.exact else 'short or corrupted'} "
                     f"through a middlebox that reordered {reordered} frames",
                     counters={**counters, "middlebox_reordered": reordered},
                     numbers={"sha256_match": echo.exact, "echoed": echo.bytes}, integrity=True)


def _flatten(tree: object, prefix: str = "") -> dict[str, int]:
    """Nested counter dicts to {"a_to_b.impair_reordered": n, ...}."""
    if isinstance(tree, dict):
        out: dict[str, int] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): tree} if isinstance(tree, int) else {}
