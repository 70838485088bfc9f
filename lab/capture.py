"""tcpdump captures inside a lab node, written as pcap files Wireshark opens."""
from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from .errors import BackendError
from .node import Node

READY_MARKER = b"listening on"


class Capture:
    """A running `tcpdump -w`; `stop()` ends it and returns the complete pcap file."""

    def __init__(self, node: Node, iface: str, path: Path, filter: str = "", timeout_s: float = 10.0) -> None:
        self.node, self.iface, self.path = node, iface, path
        path.parent.mkdir(parents=True, exist_ok=True)
        # -U and --immediate-mode: hand over and write each packet at once, so stop() loses none;
        # -Z root: keep root, so any directory is writable.
        argv = ["tcpdump", "-i", iface, "-n", "-U", "--immediate-mode", "-Z", "root", "-w", str(path)]
        argv += filter.split() if filter else []
        self._proc: subprocess.Popen[Any] = node.popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._stderr = b""
        self._wait_until_listening(timeout_s)

    def _wait_until_listening(self, timeout_s: float) -> None:
        """Block until tcpdump says it is listening: from then on every packet is captured."""
        assert self._proc.stderr is not None
        fd = self._proc.stderr.fileno()
        deadline = time.monotonic() + timeout_s
        while READY_MARKER not in self._stderr:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(fd, 4096) if ready else b""
            if not chunk:
                self._proc.kill()
                self._proc.wait()
                why = self._stderr.decode(errors="replace").strip() or "no output"
                raise BackendError(f"tcpdump on {self.node.name}:{self.iface} did not start: {why}")
            self._stderr += chunk

    @property
    def running(self) -> bool:
        return self._proc.poll() is None

    def stop(self, timeout_s: float = 10.0) -> Path:
        """Stop tcpdump and wait for it to exit, so the file is flushed and closed."""
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
            try:
                self._proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc.stderr is not None:
            self._stderr += self._proc.stderr.read()
            self._proc.stderr.close()
        return self.path

    @property
    def summary(self) -> str:
        """tcpdump's own closing words ("N packets captured ...")."""
        return self._stderr.decode(errors="replace")
