"""Load from a lab node for benchmarks: bulk sends and connection setups, bounded in time.

    python -m toelab.benches.loadgen bulk ADDR PORT SECONDS      -> {"bytes": ..., "seconds": ...}
    python -m toelab.benches.loadgen http ADDR PORT SECONDS      -> {"connections": ..., "failures": ...,
                                                                     "bad_responses": ..., "seconds": ...,
                                                                     "cpu_seconds": ...}
    python -m toelab.benches.loadgen http-fin ADDR PORT SECONDS  -> the same, each connection closed with a
                                                                     FIN instead of a RST (the server keeps TIME-WAIT)

Both stop by themselves and print one JSON line; the same client measures every target.
"""
from __future__ import annotations

import json
import socket
import struct
import sys
import time

from scenarios.flow_clients import bulk  # the same bulk sender the queue scenarios use

BODY = 64
REQUEST = b"GET /%d HTTP/1.1\r\nHost: toelab\r\nConnection: close\r\n\r\n" % BODY
LINGER_ABORT = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a RST


def complete_response(response: bytes, body: int = BODY) -> bool:
    """Whether `response` is a whole 200 answer whose body is `body` bytes, as Content-Length says."""
    head, sep, rest = response.partition(b"\r\n\r\n")
    if not sep or not head.startswith(b"HTTP/1.1 200 "):
        return False
    lengths = [line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")[1:]
               if line.lower().startswith(b"content-length:")]
    return lengths == [str(body).encode()] and len(rest) == body


def http(addr: str, port: int, seconds: float, abort: bool = True) -> dict[str, float]:
    """Sequential connect, GET, read to close: connection setups per second.

    The server closes first; the client then aborts (SO_LINGER 0), and the RST frees the
    server's TIME-WAIT entry at once (RFC 9293), so the rate is of setups, not of how fast
    TIME-WAIT entries pile up; `abort` False closes with a FIN and leaves the server its
    TIME-WAIT, as most clients do. A connection counts only if its response is
    whole and the same as every other one (`bad_responses` counts the rest); `cpu_seconds`
    is this client's own CPU, to tell whether the client is what limits the rate.
    """
    done = failures = bad = 0
    expected: bytes | None = None
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    cpu0 = time.process_time()
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(2)
            if abort:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ABORT)
            sock.connect((addr, port))
            sock.sendall(REQUEST)
            chunks = []
            while chunk := sock.recv(4096):
                chunks.append(chunk)
        except OSError:
            failures += 1
            continue
        finally:
            sock.close()
        response = b"".join(chunks)
        if expected is None and complete_response(response):
            expected = response
        if response == expected:
            done += 1
        else:
            bad += 1
    return {"connections": done, "failures": failures, "bad_responses": bad,
            "seconds": time.monotonic() - start, "cpu_seconds": time.process_time() - cpu0}


MODES = ("bulk", "http", "http-fin")


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[0] not in MODES:
        print(f"usage: python -m toelab.benches.loadgen {'|'.join(MODES)} ADDR PORT SECONDS", file=sys.stderr)
        return 2
    mode, addr = argv[0], argv[1]
    try:
        port, seconds = int(argv[2]), float(argv[3])
    except ValueError:
        print(f"loadgen: PORT must be a whole number and SECONDS a number, not {argv[2]!r} and {argv[3]!r}",
              file=sys.stderr)
        return 2
    print(json.dumps(bulk(addr, port, seconds) if mode == "bulk" else http(addr, port, seconds, abort=mode == "http")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
