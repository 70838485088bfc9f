"""The event loop's per-wake-up work: each deadline source is asked once per iteration (after
the callbacks that may move its deadline), and a deadline set between iterations is honoured."""
from __future__ import annotations

import socket
import threading
import time

from toe_engine.runtime.loop import EventLoop


def test_a_deadline_a_reader_sets_is_kept_and_each_source_is_asked_once_per_wake_up() -> None:
    loop = EventLoop()
    left, right = socket.socketpair()
    left.setblocking(False)
    due: list[float] = []
    asked: list[float | None] = []
    fired: list[float] = []

    def next_deadline() -> float | None:
        asked.append(due[0] if due else None)
        return asked[-1]

    def on_due(now: float) -> None:
        fired.append(now)
        due.clear()
        loop.stop()

    def on_readable(now: float) -> None:
        left.recv(1)  # one byte per wake-up: the reader fires three times
        if not due:
            due.append(now + 0.005)

    loop.add_deadline_source(next_deadline, on_due)
    loop.add_reader(left, on_readable)
    right.sendall(b"abc")
    loop.run()
    loop.close()
    left.close()
    right.close()

    assert len(fired) == 1 and fired[0] >= due_at(asked)
    assert loop.stats.reader_calls == 3 and loop.stats.deadline_calls == 1
    assert loop.stats.iterations == 4  # three reads, then the wake-up at the deadline
    # once when run() starts, once after each iteration, once more after on_due: not twice per iteration
    assert len(asked) == 1 + loop.stats.iterations + 1


def due_at(asked: list[float | None]) -> float:
    return min(d for d in asked if d is not None)


def test_a_deadline_one_source_moves_while_another_is_due_is_not_slept_past() -> None:
    loop = EventLoop()
    timer: list[float] = []
    fired: list[str] = []

    def pump(now: float) -> None:  # as a ring's held block: due at once, and its read sets a TCP timer
        fired.append("pump")
        timer.append(now + 0.005)

    def on_timer(now: float) -> None:
        fired.append("timer")
        timer.clear()
        loop.stop()

    loop.add_deadline_source(lambda: timer[0] if timer else None, on_timer)  # asked before the pump runs
    loop.add_deadline_source(lambda: None if fired else 0.0, pump)
    start = loop.clock()
    loop.run(until=start + 5.0)
    loop.close()
    assert fired == ["pump", "timer"] and loop.clock() - start < 2.0, "the loop slept past the timer the pump set"


def test_run_once_asks_the_deadlines_afresh_before_it_waits() -> None:
    loop = EventLoop()
    due: list[float] = []
    fired: list[float] = []
    loop.add_deadline_source(lambda: due[0] if due else None, lambda now: (fired.append(now), due.clear()))
    loop.run_once(until=loop.clock())  # nothing due: returns at once
    due.append(loop.clock() + 0.005)  # set between iterations, as a caller driving the loop by hand does
    start = loop.clock()
    loop.run_once(until=start + 5.0)
    loop.close()
    assert len(fired) == 1 and fired[0] - start < 2.0, "run_once slept past a deadline set before it"


def test_readers_are_registered_once_and_removed_by_the_object_given() -> None:
    loop = EventLoop()
    left, right = socket.socketpair()
    loop.add_reader(left, lambda now: None)
    try:
        loop.add_reader(left.fileno(), lambda now: None)
        raised = False
    except KeyError:
        raised = True
    assert raised, "a descriptor registered twice must be refused"
    loop.remove_reader(left)
    loop.add_reader(left, lambda now: None)  # free again
    left.close()  # fileno() is -1 now: removal still finds it
    loop.remove_reader(left)
    loop.close()
    right.close()


def _late_byte(delay: float) -> tuple[socket.socket, socket.socket, threading.Thread]:
    """A socket pair whose right end sends one byte `delay` seconds from now, from another thread."""
    left, right = socket.socketpair()
    left.setblocking(False)
    sender = threading.Thread(target=lambda: (time.sleep(delay), right.sendall(b"x")))
    sender.start()
    return left, right, sender


def test_with_busy_poll_a_frame_that_comes_while_polling_is_taken_without_a_sleep() -> None:
    for busy_poll, polled in ((5.0, 1), (0.0, 0)):
        loop = EventLoop()
        loop.busy_poll = busy_poll
        left, right, sender = _late_byte(0.002)
        read: list[bytes] = []
        loop.add_reader(left, lambda now: read.append(left.recv(1)))
        loop.run_once()
        sender.join()
        loop.close()
        left.close()
        right.close()

        assert read == [b"x"]
        assert loop.stats.busy_polled == polled, f"busy_poll {busy_poll}"


def test_busy_poll_stops_at_the_next_deadline_and_then_sleeps() -> None:
    loop = EventLoop()
    loop.busy_poll = 30.0  # far longer than the test may take: only the deadline can end the poll
    fired: list[float] = []
    due = [loop.clock() + 0.005]
    loop.add_deadline_source(lambda: due[0] if due else None, lambda now: (fired.append(now), due.clear()))
    start = time.monotonic()
    loop.run_once()  # polls until the deadline, finds nothing, waits out the rest, fires it
    loop.close()

    assert len(fired) == 1 and loop.stats.busy_polled == 0
    assert time.monotonic() - start < 10.0, "the busy poll ran past the deadline"
