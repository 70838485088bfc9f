"""Engine against engine with the wire mutating live frames: echo transfers through the
in-memory FrameHarness (toe_engine.testing) whose wires rewrite some frames on the way.

Mutations are of headers only, checksums recomputed so they get past the parser: flags
flipped, acknowledgment numbers and windows moved, timestamps and SACK blocks rewritten,
sequence numbers moved on segments stripped of their data (moving data would make TCP
accept wrong bytes, which no checksum can catch), frames duplicated, dropped, or damaged
with their checksum left wrong. What must hold: nothing raises, the echo comes back whole
or, when a mutation broke the connection, as a prefix of what was sent; and once the
clocks have run on, neither engine holds a connection, a table entry or buffer memory.
"""
from __future__ import annotations

import hashlib
import random
import traceback
from collections import Counter
from dataclasses import dataclass, field

from toe_engine.codec import build_tcp_frame, parse_frame
from toe_engine.fuzz.peer import MASK
from toe_engine.impair import Impairer, ImpairmentSpec
from toe_engine.segment import ACK, CWR, ECE, FIN, PSH, RST, SYN, URG
from toe_engine.testing import BulkEchoClient, FrameHarness

SETTLE_S = 3000.0  # past R2 (15 retries, backoff capped at 60 s), TIME-WAIT and every other timer
INF = float("inf")
MUTATIONS = ("flags", "ack", "window", "timestamp", "sack", "seq_without_data", "duplicate", "drop", "damage")


class MutatingWire:
    """An Impairer whose delivered frames are rewritten at `rate` by a seeded mutator."""

    def __init__(self, inner: Impairer, rng: random.Random, rate: float, tally: Counter[str]) -> None:
        self.inner, self.rng, self.rate, self.tally = inner, rng, rate, tally

    def submit(self, frame: bytes, now: float) -> None:
        self.inner.submit(frame, now)

    def next_deadline(self) -> float | None:
        return self.inner.next_deadline()

    def poll(self, now: float) -> list[bytes]:
        out: list[bytes] = []
        for frame in self.inner.poll(now):
            if self.rng.random() >= self.rate:
                out.append(frame)
                continue
            kind = self.rng.choice(MUTATIONS)
            self.tally[kind] += 1
            out.extend(self._mutate(frame, kind))
        return out

    def _mutate(self, frame: bytes, kind: str) -> list[bytes]:
        rng = self.rng
        if kind == "duplicate":
            return [frame, frame]
        if kind == "drop":
            return []
        if kind == "damage":
            damaged = bytearray(frame)
            damaged[rng.randrange(14, len(damaged))] ^= 1 << rng.randrange(8)
            return [bytes(damaged)]
        parsed = parse_frame(frame, verify_csum=False)
        seg = parsed.tcp
        if seg is None:
            return [frame]
        if kind == "flags":
            seg.flags ^= rng.choice((RST, SYN, FIN, URG, PSH, ECE | CWR, ACK))
        elif kind == "ack":
            seg.ack = (seg.ack + rng.choice((1, -1, 1 << 31, 65536, rng.getrandbits(32)))) & MASK
        elif kind == "window":
            seg.window = rng.choice((0, 1, 2, 65535))
        elif kind == "timestamp":
            old = seg.options.timestamp or (0, 0)
            seg.options.timestamp = ((old[0] + rng.choice((-1, 1 << 31, -(1 << 20)))) & MASK, rng.getrandbits(32))
        elif kind == "sack":
            base = seg.ack
            seg.options.sack_blocks = tuple(((base + a) & MASK, (base + b) & MASK)
                                            for a, b in ((rng.randrange(-5000, 90000), rng.randrange(-5000, 90000))
                                                         for _ in range(rng.randrange(1, 4))))
        else:  # seq_without_data
            seg.payload = b""
            seg.flags &= ~FIN
            seg.seq = (seg.seq + rng.choice((1, -1, 1 << 31, rng.getrandbits(32)))) & MASK
        try:
            return [bytes(build_tcp_frame(parsed.eth_src, parsed.eth_dst, parsed.ip_src, parsed.ip_dst, seg))]
        except ValueError:  # the rewritten options no longer fit a TCP header: leave the frame be
            return [frame]


@dataclass
class MutationResult:
    intact: bool
    prefix: bool  # what came back is a prefix of what was sent
    echoed: int
    exceptions: Counter[str] = field(default_factory=Counter)
    leftovers: list[str] = field(default_factory=list)
    mutations: Counter[str] = field(default_factory=Counter)


def mutated_echo(seed: int, size: int = 100_000, rate: float = 0.02) -> MutationResult:
    """One echo transfer of `size` bytes through wires that mutate `rate` of the frames."""
    rng = random.Random(seed)
    tally: Counter[str] = Counter()
    harness = FrameHarness(a_to_b=ImpairmentSpec(delay_ms=1), b_to_a=ImpairmentSpec(delay_ms=1), seed=seed)
    harness.wire_ab = MutatingWire(harness.wire_ab, rng, rate, tally)  # type: ignore[assignment]
    harness.wire_ba = MutatingWire(harness.wire_ba, rng, rate, tally)  # type: ignore[assignment]
    payload = random.Random(seed).randbytes(size)
    result = MutationResult(False, False, 0, mutations=tally)
    app = BulkEchoClient(None)  # type: ignore[arg-type]
    try:
        intact, app = harness.echo_transfer(size)
        result.intact = intact
        harness.run_until(lambda: False, limit_s=harness.now + SETTLE_S)  # let every timer run out
    except Exception as exc:  # noqa: BLE001 - counting every escape is the point
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        result.exceptions[f"{frame.filename}:{frame.lineno} {type(exc).__name__}: {exc}"[:300]] += 1
    echoed = bytes(app.echoed)
    result.echoed = len(echoed)
    result.prefix = payload.startswith(echoed)
    result.intact = result.intact and hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
    for name, core in (("client", harness.a), ("server", harness.b)):
        keys = core.stack.connections()
        # With no host stack behind the harness nobody answers a dead peer's segments with a RST,
        # so an idle connection may stay; one still timing after SETTLE_S, or state without a
        # connection, is a leak.
        timing = [core.stack.state(k).name for k in keys if core.stack.connection(k).deadline() != INF]
        if timing:
            result.leftovers.append(f"{name} still has timers running on {dict(Counter(timing))}")
        admitted = sum(1 for k in keys if core.stack.connection(k).admitted)
        if core.resources.table.occupancy != admitted or len(core.buffer_memory) > len(keys):
            result.leftovers.append(f"{name} table {core.resources.table.occupancy} entries and buffer memory for "
                                    f"{len(core.buffer_memory)} with {len(keys)} connections")
    return result
