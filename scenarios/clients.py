"""The kernel-socket clients scenarios and benchmarks run inside a lab node: one echo client, one chargen reader.

Run as a script (`python .../scenarios/clients.py MODE ...`, standard library only, so it starts
in a few milliseconds) in the client's node, so the sockets are that node's kernel's:

- `echo ADDRESS PORT SIZE SEED LIMIT_S`: send SIZE seeded random bytes and read them back within
  LIMIT_S; prints one JSON line {bytes, seconds, sent_sha256, got_sha256}.
- `chargen ADDRESS PORT SIZE LIMIT_S`: read SIZE bytes; prints {bytes, seconds}.
- `conversation ADDRESS PORT`: one long-lived echo connection (TCP_NODELAY); prints `connected`,
  then for each line SIZE on stdin echoes SIZE bytes and prints `echoed N`.
"""
from __future__ import annotations

import hashlib
import json
import random
import socket
import sys
import threading
import time
from collections.abc import Callable


def _read(sock: socket.socket, size: int, deadline: float, sink: Callable[[bytes], object]) -> int:
    """Read up to `size` bytes before `deadline` (monotonic), handing each chunk to `sink`; returns the count."""
    got = 0
    while got < size:
        left = deadline - time.monotonic()
        sock.settimeout(None if left == float("inf") else max(0.01, left))
        try:
            chunk = sock.recv(min(1 << 16, size - got))
        except OSError:  # socket.timeout is an OSError
            break
        if not chunk:
            break
        sink(chunk)
        got += len(chunk)
    return got


def echo(address: str, port: int, size: int, seed: int, limit_s: float) -> dict[str, object]:
    data = random.Random(seed).randbytes(size)
    sock = socket.create_connection((address, port), timeout=limit_s)
    start = time.monotonic()
    threading.Thread(target=sock.sendall, args=(data,), daemon=True).start()
    digest = hashlib.sha256()
    got = _read(sock, size, start + limit_s, digest.update)
    return {"bytes": got, "seconds": time.monotonic() - start,
            "sent_sha256": hashlib.sha256(data).hexdigest(), "got_sha256": digest.hexdigest()}


def chargen(address: str, port: int, size: int, limit_s: float) -> dict[str, object]:
    sock = socket.create_connection((address, port), timeout=limit_s)
    start = time.monotonic()
    got = _read(sock, size, start + limit_s, lambda chunk: None)
    return {"bytes": got, "seconds": time.monotonic() - start}


def conversation(address: str, port: int) -> None:
    sock = socket.create_connection((address, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    print("connected", flush=True)
    for line in sys.stdin:
        size = int(line)
        sock.sendall(bytes(size))
        got = _read(sock, size, float("inf"), lambda chunk: None)
        print(f"echoed {got}", flush=True)


def main(argv: list[str]) -> int:
    mode, address, port, *rest = argv
    if mode == "echo":
        size, seed, limit = rest
        print(json.dumps(echo(address, int(port), int(size), int(seed), float(limit))))
    elif mode == "chargen":
        size, limit = rest
        print(json.dumps(chargen(address, int(port), int(size), float(limit))))
    elif mode == "conversation":
        conversation(address, int(port))
    else:
        print(f"unknown mode {mode!r}: use echo, chargen or conversation", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
