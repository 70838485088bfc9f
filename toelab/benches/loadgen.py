"""Load from a lab node for benchmarks: bulk sends and connection setups, bounded in time.

    python -m toelab.benches.loadgen bulk ADDR PORT SECONDS      -> {"bytes": ..., "seconds": ...}
    python -m toelab.benches.loadgen http ADDR PORT SECONDS      -> {"connections": ..., "failures": ..., "seconds": ...}

Both stop by themselves and print one JSON line; the same client measures every target.
"""
from __future__ import annotations

import json
import socket
import sys
import time

from scenarios.flow_clients import bulk  # the same bulk sender the queue scenarios use

REQUEST = b"GET /64 HTTP/1.1\r\nHost: toelab\r\nConnection: close\r\n\r\n"


def http(addr: str, port: int, seconds: float) -> dict[str, float]:
    """Sequential connect, GET, read to close: connection setups per second.

    The server closes first; the client then aborts (SO_LINGER 0), and the RST frees the
    server's TIME-WAIT entry at once (RFC 9293), so a table of fixed size measures setups,
    not how many TIME-WAIT entries it can hold.
    """
    done = failures = 0
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        try:
            with socket.create_connection((addr, port), timeout=2) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                sock.sendall(REQUEST)
                while sock.recv(4096):
                    pass
            done += 1
        except OSError:
            failures += 1
    return {"connections": done, "failures": failures, "seconds": time.monotonic() - start}


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[0] not in ("bulk", "http"):
        print("usage: python -m toelab.benches.loadgen bulk|http ADDR PORT SECONDS", file=sys.stderr)
        return 2
    mode, addr, port, seconds = argv[0], argv[1], int(argv[2]), float(argv[3])
    print(json.dumps((bulk if mode == "bulk" else http)(addr, port, seconds)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
