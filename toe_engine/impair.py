"""Seeded link impairments in tc-netem's vocabulary, sans-IO.

The same `Impairer` runs under the in-memory test harness and in the middlebox on real
interfaces. It follows netem's enqueue pipeline (sch_netem.c): decide duplication and loss,
clone before corrupting, tail-drop at the queue limit, then either send a packet at once
(reordering) or schedule it after delay, jitter and serialisation at `rate`; the queue is
ordered by time to send (netem's tfifo), so jitter larger than packet spacing reorders,
and with a rate the delay counts from the last queued packet, so order is kept.

Two deliberate departures: correlation means "repeat the previous decision with that
probability", which keeps the configured mean rate (netem's correlated generator does not);
and every random draw comes from one `random.Random(seed)`, so a run can be replayed exactly.
"""
from __future__ import annotations

import heapq
import itertools
import random
from array import array
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

PERCENT_FIELDS = (
    "loss",
    "loss_correlation",
    "duplicate",
    "duplicate_correlation",
    "corrupt",
    "corrupt_correlation",
    "reorder",
    "reorder_correlation",
)

# Decision log codes, one byte per frame copy that entered the queue or was dropped.
LOG_QUEUED = 0
LOG_DROPPED = 1
LOG_DUPLICATE = 2  # this copy is the duplicate
LOG_CORRUPTED = 4
LOG_REORDERED = 8
LOG_RATE_DROPPED = 16

_LOSS, _DUPLICATE, _CORRUPT, _REORDER = range(4)


class ImpairmentSpecError(ValueError):
    """An impairment setting is out of range or inconsistent; the message names the field."""


def _check_percent(name: str, value: float) -> float:
    if not 0 <= value <= 100:
        raise ValueError(f"{name} must be a percentage between 0 and 100, got {value}")
    return value


class GilbertElliott(BaseModel):
    """netem's `loss gemodel p [r [1-h [1-k]]]`, all in percent.

    p: good -> bad transition; r: bad -> good transition (default 100 - p, which makes the
    model Bernoulli loss of p); one_minus_h: loss probability in the bad state (default 100);
    one_minus_k: loss probability in the good state (default 0).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    p: float
    r: float | None = None
    one_minus_h: float = 100.0
    one_minus_k: float = 0.0

    @field_validator("p", "r", "one_minus_h", "one_minus_k")
    @classmethod
    def _percent(cls, value: float | None, info: Any) -> float | None:
        return None if value is None else _check_percent(f"gemodel.{info.field_name}", value)

    @property
    def r_effective(self) -> float:
        return 100.0 - self.p if self.r is None else self.r

    def stationary_loss(self) -> float:
        """Long-run loss fraction: pi_good * (1-k) + pi_bad * (1-h)."""
        p, r = self.p / 100, self.r_effective / 100
        if p + r == 0:
            return self.one_minus_k / 100
        return (r * self.one_minus_k / 100 + p * self.one_minus_h / 100) / (p + r)


class ImpairmentSpec(BaseModel):
    """What an impaired link does, field for field as `tc qdisc add ... netem` would say it.

    Percentages are 0..100; delays in milliseconds; `rate_bps` in bit/s; `limit` is the
    queue length in packets beyond which frames are tail-dropped (netem's default is 1000);
    `corrupt_offset` spares the first bytes of a frame (e.g. 34 to keep Ethernet and IPv4
    headers intact so the TCP checksum is what fails). `reorder` without `gap` behaves as
    `gap 1`, as tc sets it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    loss: float = 0.0
    loss_correlation: float = 0.0
    gemodel: GilbertElliott | None = None
    duplicate: float = 0.0
    duplicate_correlation: float = 0.0
    corrupt: float = 0.0
    corrupt_correlation: float = 0.0
    corrupt_offset: int = 0
    reorder: float = 0.0
    reorder_correlation: float = 0.0
    gap: int = 0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    distribution: Literal["uniform", "normal"] = "uniform"
    rate_bps: float | None = None
    limit: int = 1000

    @field_validator(*PERCENT_FIELDS)
    @classmethod
    def _percent(cls, value: float, info: Any) -> float:
        return _check_percent(info.field_name, value)

    @field_validator("delay_ms", "jitter_ms", "corrupt_offset", "gap")
    @classmethod
    def _not_negative(cls, value: float, info: Any) -> float:
        if value < 0:
            raise ValueError(f"{info.field_name} must not be negative, got {value}")
        return value

    @field_validator("rate_bps")
    @classmethod
    def _positive_rate(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise ValueError(f"rate_bps must be a positive bit rate, got {value}")
        return value

    @field_validator("limit")
    @classmethod
    def _positive_limit(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"limit must be at least 1 packet, got {value}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ImpairmentSpec:
        if self.gap and not self.reorder:
            raise ValueError("gap needs reorder: set reorder to a percentage above 0 or drop gap")
        if self.reorder and not self.delay_ms:
            raise ValueError("reorder needs delay_ms above 0: reordering sends some packets ahead of delayed ones")
        if self.loss and self.gemodel is not None:
            raise ValueError("loss and gemodel are two loss models: set one of them, not both")
        return self

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> ImpairmentSpec:
        """Validate configuration data, raising ImpairmentSpecError with one sentence naming the field."""
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            error = exc.errors()[0]
            field = ".".join(str(part) for part in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = f"unknown impairment field {field!r}"
            elif field and not message.startswith(field.split(".")[-1]) and not message.startswith(field):
                message = f"{field}: {message[0].lower()}{message[1:]}"
            raise ImpairmentSpecError(message) from None


class Impairer:
    """Applies an ImpairmentSpec to frames: `submit` them, `poll` what is due.

    Statistics are kept in `stats`; with `record=True` every decision is appended to
    `log_codes` (LOG_* bits) and `log_times` (scheduled send time, -1.0 when dropped), so two
    runs can be compared byte for byte. Per frame the cost is a few random draws and one
    heap entry.
    """

    def __init__(self, spec: ImpairmentSpec, seed: int, *, record: bool = False) -> None:
        self.spec = spec
        self._rng = random.Random(seed)
        self._random = self._rng.random
        self._heap: list[tuple[float, int, bytes]] = []
        self._order = itertools.count()
        self._max_scheduled = 0.0
        self._reorder_counter = 0
        self._ge_bad = False
        self._last_hit = [False, False, False, False]
        self._p = [spec.loss / 100, spec.duplicate / 100, spec.corrupt / 100, spec.reorder / 100]
        self._rho = [
            spec.loss_correlation / 100,
            spec.duplicate_correlation / 100,
            spec.corrupt_correlation / 100,
            spec.reorder_correlation / 100,
        ]
        self._gap = spec.gap or (1 if spec.reorder else 0)
        self._delay = spec.delay_ms / 1000
        self._jitter = spec.jitter_ms / 1000
        self._normal = spec.distribution == "normal"
        self._rate = spec.rate_bps
        self._limit = spec.limit
        ge = spec.gemodel
        self._ge = (
            None
            if ge is None
            else (ge.p / 100, ge.r_effective / 100, ge.one_minus_h / 100, ge.one_minus_k / 100)
        )
        self.stats: dict[str, int] = dict.fromkeys(
            ("submitted", "dropped", "duplicated", "corrupted", "reordered", "delayed", "rate_dropped", "passed"), 0
        )
        self.record = record
        self.log_codes = array("B")
        self.log_times = array("d")

    def submit(self, frame: bytes, now: float) -> None:
        """Take one frame from the wire at time `now` (seconds)."""
        self.stats["submitted"] += 1
        self._enqueue(frame, now, True)

    def poll(self, now: float) -> list[bytes]:
        """Frames whose send time has come, in send order."""
        heap = self._heap
        out: list[bytes] = []
        while heap and heap[0][0] <= now:
            out.append(heapq.heappop(heap)[2])
        self.stats["passed"] += len(out)
        return out

    def next_deadline(self) -> float | None:
        """When the next queued frame is due, or None if the queue is empty."""
        return self._heap[0][0] if self._heap else None

    def __len__(self) -> int:
        return len(self._heap)

    def _enqueue(self, frame: bytes, now: float, may_duplicate: bool) -> None:
        stats = self.stats
        code = LOG_QUEUED if may_duplicate else LOG_DUPLICATE
        copies = 1
        if may_duplicate and self._p[_DUPLICATE] and self._decide(_DUPLICATE):
            copies += 1
        if self._lost():
            copies -= 1
        if copies == 0:
            stats["dropped"] += 1
            self._log(code | LOG_DROPPED, -1.0)
            return
        original = frame
        if self._p[_CORRUPT] and self._decide(_CORRUPT):
            corrupted = self._corrupt(frame)
            if corrupted is not None:
                frame = corrupted
                code |= LOG_CORRUPTED
                stats["corrupted"] += 1
        heap = self._heap
        if len(heap) >= self._limit:
            stats["rate_dropped"] += 1
            self._log(code | LOG_RATE_DROPPED, -1.0)
        else:
            self._schedule(frame, now, code)
        if copies > 1:
            stats["duplicated"] += 1
            self._enqueue(original, now, False)

    def _schedule(self, frame: bytes, now: float, code: int) -> None:
        gap = self._gap
        if gap and self._reorder_counter >= gap - 1 and self._decide(_REORDER):
            self._reorder_counter = 0
            self.stats["reordered"] += 1
            heapq.heappush(self._heap, (now, next(self._order), frame))
            self._log(code | LOG_REORDERED, now)
            return
        delay = self._draw_delay()
        if self._rate is not None:
            if self._heap:
                last = self._max_scheduled
                delay = max(0.0, delay - (last - now))
                now = last
            delay += len(frame) * 8 / self._rate
        send_at = now + delay
        if send_at > self._max_scheduled:
            self._max_scheduled = send_at
        if delay > 0:
            self.stats["delayed"] += 1
        self._reorder_counter += 1
        heapq.heappush(self._heap, (send_at, next(self._order), frame))
        self._log(code, send_at)

    def _decide(self, which: int) -> bool:
        """A Bernoulli draw that repeats the previous outcome with the configured correlation."""
        rho = self._rho[which]
        if rho and self._random() < rho:
            return self._last_hit[which]
        hit = self._random() < self._p[which]
        self._last_hit[which] = hit
        return hit

    def _lost(self) -> bool:
        ge = self._ge
        if ge is None:
            return bool(self._p[_LOSS]) and self._decide(_LOSS)
        p, r, loss_bad, loss_good = ge
        rand = self._random
        if self._ge_bad:
            if rand() < r:
                self._ge_bad = False
            return rand() < loss_bad
        if rand() < p:
            self._ge_bad = True
        return rand() < loss_good

    def _draw_delay(self) -> float:
        jitter = self._jitter
        if not jitter:
            return self._delay
        if self._normal:
            delay = self._rng.gauss(self._delay, jitter)
        else:
            delay = self._delay + (2 * self._random() - 1) * jitter
        return delay if delay > 0 else 0.0

    def _corrupt(self, frame: bytes) -> bytes | None:
        """Flip one random bit at or beyond `corrupt_offset`; None if the frame is too short."""
        offset = self.spec.corrupt_offset
        span = len(frame) - offset
        if span <= 0:
            return None
        mangled = bytearray(frame)
        mangled[offset + int(self._random() * span)] ^= 1 << int(self._random() * 8)
        return bytes(mangled)

    def _log(self, code: int, when: float) -> None:
        if self.record:
            self.log_codes.append(code)
            self.log_times.append(when)
