"""The event loop that drives the engine: readable descriptors, timers and engine deadlines.

The engine is sans-IO, so something has to read the clock and the descriptors and hand both
to it. This loop does that on epoll: it reads `time.monotonic()` once per iteration and passes
that `now` to every callback, keeps a heap of one-shot timers, and asks each registered
deadline source (the engine's `next_deadline()`) when it next needs to run. It sleeps in epoll
until the earliest of those, so an idle lab costs no CPU.

With `busy_poll` (seconds, net.core.busy_poll's rule) it first polls without sleeping for up to
that long, or until the next deadline if sooner: a frame that comes within that time is taken
without the sleep and the cross-core wake-up (tens of µs on a VM) a sleeping engine pays before
it answers. That is a poll-mode engine (a NIC's own processor, a DPDK stack): it trades a core's
idle time for the latency of each turn-around, and stays off by default so an idle lab costs
nothing.

It wakes once per batch of frames, so what it does per wake-up is kept small: `select.epoll`
straight (no `selectors` key objects), and each source's deadline asked once per iteration,
after the iteration's callbacks, and kept for the next wait (asked again after any `on_due`).

Everything runs in the thread that calls `run`; `stop` may be called from any thread (it
wakes the loop through an eventfd).
"""
from __future__ import annotations

import heapq
import itertools
import os
import select
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

#: The longest busy poll a setting may ask for: longer than a tenth of a second is a spinning core, not a poll.
MAX_BUSY_POLL_US = 100_000

Callback = Callable[[float], object]  # what a callback returns (a reader's frame count, say) is not used


class HasFileno(Protocol):
    def fileno(self) -> int: ...


@dataclass(order=True)
class TimerHandle:
    """A scheduled call; `cancel()` keeps it from firing."""

    when: float
    seq: int
    callback: Callback = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class _DeadlineSource:
    next_deadline: Callable[[], float | None]
    on_due: Callback
    due: float | None = None  # the last answer of next_deadline(), taken after the iteration's callbacks


@dataclass
class LoopStats:
    """How often the loop woke and what it ran: tests assert on these, not on sleeps."""

    iterations: int = 0
    reader_calls: int = 0
    timer_calls: int = 0
    deadline_calls: int = 0
    busy_polled: int = 0  # iterations whose events came while busy-polling, not after a sleep


class EventLoop:
    """A single-threaded epoll loop with fd readers, timers and deadline sources.

    A control socket (a listening Unix socket, say) is just another reader: register it with
    `add_reader` and accept in the callback.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.stats = LoopStats()
        self.busy_poll = 0.0  # seconds to poll without sleeping before each wait; 0: sleep at once
        self._epoll = select.epoll()
        self._readers: dict[int, Callback] = {}
        self._reader_fds: dict[int, int] = {}  # id(source) -> fd: a closed socket's fileno() is -1
        self._timers: list[TimerHandle] = []
        self._seq = itertools.count()
        self._deadline_sources: list[_DeadlineSource] = []
        self._stop_requested = False
        self._wakeup_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._epoll.register(self._wakeup_fd, select.EPOLLIN)

    def add_reader(self, source: int | HasFileno, callback: Callback) -> None:
        """Call `callback(now)` whenever `source` is readable (level-triggered)."""
        fd = source if isinstance(source, int) else source.fileno()
        if fd in self._readers or fd == self._wakeup_fd:
            raise KeyError(f"{source!r} (fd {fd}) is already registered")
        self._epoll.register(fd, select.EPOLLIN)
        self._readers[fd] = callback
        self._reader_fds[id(source)] = fd

    def remove_reader(self, source: int | HasFileno) -> None:
        fd = self._reader_fds.pop(id(source), None)
        if fd is None:
            fd = source if isinstance(source, int) else source.fileno()
        if self._readers.pop(fd, None) is None:
            raise KeyError(f"{source!r} is not registered")
        try:
            self._epoll.unregister(fd)
        except OSError:  # already closed: the kernel dropped it from the epoll set itself
            pass

    def call_at(self, when: float, callback: Callback) -> TimerHandle:
        """Call `callback(now)` once the clock reaches `when`; equal times fire in call order."""
        handle = TimerHandle(when, next(self._seq), callback)
        heapq.heappush(self._timers, handle)
        return handle

    def call_later(self, delay: float, callback: Callback) -> TimerHandle:
        return self.call_at(self.clock() + delay, callback)

    def add_deadline_source(
        self, next_deadline: Callable[[], float | None], on_due: Callback
    ) -> None:
        """Poll `next_deadline()` after each iteration and call `on_due(now)` once it has passed.

        This is how the engine's timers (retransmission, delayed ACK, TIME-WAIT, GRO flush)
        reach the loop without the engine knowing the loop exists.
        """
        self._deadline_sources.append(_DeadlineSource(next_deadline, on_due))

    def stop(self) -> None:
        """Make `run` return after the current iteration; safe from any thread."""
        self._stop_requested = True
        os.eventfd_write(self._wakeup_fd, 1)

    def run(self, until: float | None = None) -> None:
        """Run until `stop()` is called or the clock reaches `until` (a `clock()` time).

        A `stop()` that came before `run` makes it return at once; after returning the loop
        can be run again.
        """
        try:
            self._refresh_deadlines()
            while not self._stop_requested:
                if until is not None and self.clock() >= until:
                    break
                self._iterate(until)
        finally:
            self._stop_requested = False

    def run_once(self, until: float | None = None) -> None:
        """One iteration: wait for the earliest event, then run readers, timers and deadlines.

        The deadlines are asked afresh first: the caller may have changed them since the last one.
        """
        self._refresh_deadlines()
        self._iterate(until)

    def _iterate(self, until: float | None) -> None:
        stats = self.stats
        stats.iterations += 1
        most = max(len(self._readers), 1) + 1
        events = self._busy_poll(self._timeout(until), most) if self.busy_poll else []
        if events:
            stats.busy_polled += 1
        else:  # the wait is taken afresh: a busy poll may have used some of it
            events = self._epoll.poll(self._timeout(until), most)
        now = self.clock()
        readers = self._readers
        for fd, _ in events:
            callback = readers.get(fd)
            if callback is None:  # the wake-up eventfd (or a reader an earlier callback removed)
                if fd == self._wakeup_fd:
                    os.eventfd_read(self._wakeup_fd)
                continue
            callback(now)
            stats.reader_calls += 1
        self._fire_timers(now)
        self._fire_deadlines(now)

    def _busy_poll(self, timeout: float, most: int) -> list[tuple[int, int]]:
        """Events found by polling without sleeping for `busy_poll` seconds, or up to `timeout` if sooner."""
        poll, clock = self._epoll.poll, time.monotonic  # real time, whatever clock the loop gives callbacks
        spin = self.busy_poll if timeout < 0 else min(self.busy_poll, timeout)
        events = poll(0, most)
        stop = clock() + spin
        while not events and clock() < stop:
            events = poll(0, most)
        return events

    def close(self) -> None:
        self._epoll.close()
        os.close(self._wakeup_fd)

    def _timeout(self, until: float | None) -> float:
        """Seconds epoll may sleep (-1: until an event), from the deadlines taken after the last iteration."""
        earliest = until
        timers = self._timers
        while timers and timers[0].cancelled:
            heapq.heappop(timers)
        if timers:
            earliest = timers[0].when if earliest is None else min(earliest, timers[0].when)
        for source in self._deadline_sources:
            deadline = source.due
            if deadline is not None:
                earliest = deadline if earliest is None else min(earliest, deadline)
        if earliest is None:
            return -1
        return max(0.0, earliest - self.clock())

    def _fire_timers(self, now: float) -> None:
        timers = self._timers
        while timers and timers[0].when <= now:
            handle = heapq.heappop(timers)
            if not handle.cancelled:
                handle.callback(now)
                self.stats.timer_calls += 1

    def _refresh_deadlines(self) -> None:
        for source in self._deadline_sources:
            source.due = source.next_deadline()

    def _fire_deadlines(self, now: float) -> None:
        """Run each source that is due; what every source answers afterwards is the next wait's deadline
        (asked again after an `on_due`, which may move any source's deadline: a read sets a TCP timer)."""
        fired = False
        for source in self._deadline_sources:
            deadline = source.next_deadline()
            if deadline is not None and deadline <= now:
                source.on_due(now)
                self.stats.deadline_calls += 1
                fired = True
            source.due = deadline
        if fired:
            self._refresh_deadlines()
