"""lab.interrupts: the first SIGINT/SIGTERM raises, later ones during the unwinding are said, not raised."""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

PROGRAM = textwrap.dedent("""
    import os, signal, sys, time
    from lab import interrupts
    interrupts.install()
    interrupts.note("counting sheep")
    try:
        print("ready", flush=True)
        while True:
            time.sleep(0.01)
    except (KeyboardInterrupt, interrupts.Terminated) as exc:
        # teardown: a second signal arrives now and must not cut it short
        os.kill(os.getpid(), {second})
        for _ in range(20):
            time.sleep(0.005)
        print("teardown finished", type(exc).__name__, interrupts.activity(), interrupts.received(), flush=True)
        sys.exit(128 + interrupts.received())
""")


@pytest.mark.parametrize(("first", "name"), [(signal.SIGINT, "KeyboardInterrupt"), (signal.SIGTERM, "Terminated")])
def test_first_signal_raises_and_a_second_one_waits(first: int, name: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", PROGRAM.format(second=int(signal.SIGINT))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    proc.send_signal(first)
    out, err = proc.communicate(timeout=30)
    assert f"teardown finished {name} counting sheep {int(first)}" in out, err
    assert proc.returncode == 128 + first
    assert "still removing what it made" in err and "Traceback" not in err


def test_rearm_lets_the_next_ctrl_c_raise_again() -> None:
    code = textwrap.dedent("""
        import os, signal
        from lab import interrupts
        interrupts.install()
        raised = 0
        for _ in range(2):
            try:
                os.kill(os.getpid(), signal.SIGINT)  # delivered before kill() returns, raised right after
            except KeyboardInterrupt:
                raised += 1
                interrupts.rearm()
        print(raised)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.stdout.strip() == "2", done.stderr
