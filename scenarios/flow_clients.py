"""Clients the queue scenarios, benches and tests run inside a lab node (kernel sockets there).

    python -m scenarios.flow_clients echo ADDR PORT SIZE SPORT[,SPORT...] [hold]
        one connection per source port, all at once; each sends SIZE random bytes and reads
        them back; prints a JSON list of {"sport", "ok", "seconds"} (ok: byte-exact; a refused
        or timed-out connect gives {"sport", "ok": false, "error"}), then,
        with `hold`, keeps the connections open until a line arrives on stdin
    python -m scenarios.flow_clients rr ADDR PORT COUNT SIZE
        COUNT request-response exchanges of SIZE bytes on one connection (TCP_NODELAY);
        prints {"rtt_us": [...], "seconds": ...}
    python -m scenarios.flow_clients bulk ADDR PORT SECONDS [SPORT]
        zeros to a discard service for SECONDS (from source port SPORT if given); prints
        {"bytes": N, "seconds": ...}
    python -m scenarios.flow_clients burst IFACE DST_MAC COUNT
        COUNT UDP frames to DST_MAC as fast as a raw socket sends them (pre-built, one
        sendto each); prints {"sent": N, "seconds": ...}

Source ports are the caller's choice so that it can say beforehand which RSS queue each
flow must land on.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
import sys
import threading
import time
from typing import Any


def echo(addr: str, port: int, size: int, sports: list[int], hold: bool) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = [{} for _ in sports]
    sockets: list[socket.socket] = []
    for i, sport in enumerate(sports):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", sport))
        sock.settimeout(10)
        try:
            sock.connect((addr, port))
        except OSError as exc:
            results[i] = {"sport": sport, "ok": False, "error": type(exc).__name__}
            sock.close()
            continue
        sock.settimeout(60)
        sockets.append(sock)
    connected = [i for i, r in enumerate(results) if not r]

    def one(i: int) -> None:
        sock, data = sockets[connected.index(i)], os.urandom(size)
        start = time.monotonic()
        got = hashlib.sha256()
        received = 0
        writer = threading.Thread(target=sock.sendall, args=(data,))
        writer.start()
        buf = bytearray(1 << 20)
        while received < size:
            n = sock.recv_into(buf)
            if not n:
                break
            got.update(memoryview(buf)[:n])
            received += n
        writer.join()
        results[i] = {"sport": sports[i], "ok": received == size and got.digest() == hashlib.sha256(data).digest(),
                      "seconds": time.monotonic() - start}

    threads = [threading.Thread(target=one, args=(i,)) for i in connected]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps(results), flush=True)
    if hold:
        sys.stdin.readline()
    for sock in sockets:
        sock.close()
    return results


def request_response(addr: str, port: int, count: int, size: int) -> dict[str, Any]:
    message = os.urandom(size)
    rtts: list[float] = []
    with socket.create_connection((addr, port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray(max(size, 1 << 16))
        start = time.monotonic()
        for _ in range(count):
            sent = time.perf_counter()
            sock.sendall(message)
            received = 0
            while received < size:
                n = sock.recv_into(buf)
                if not n:
                    raise ConnectionError("the server closed during the exchange")
                received += n
            rtts.append((time.perf_counter() - sent) * 1e6)
        seconds = time.monotonic() - start
    return {"rtt_us": rtts, "seconds": seconds}


def bulk(addr: str, port: int, seconds: float, sport: int = 0) -> dict[str, Any]:
    chunk = memoryview(bytes(1 << 20))
    with socket.create_connection((addr, port), timeout=10, source_address=("0.0.0.0", sport)) as sock:
        sent, start = 0, time.monotonic()
        while time.monotonic() - start < seconds:
            sock.sendall(chunk)
            sent += len(chunk)
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1)  # the server's FIN: everything sent has been taken
        return {"bytes": sent, "seconds": time.monotonic() - start}


def burst(iface: str, dst_mac: str, count: int) -> dict[str, Any]:
    dst = bytes.fromhex(dst_mac.replace(":", ""))
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
        sock.bind((iface, 0))
        src = sock.getsockname()[4][:6]
        payload = bytes(64)
        udp = struct.pack("!HHHH", 40000, 9, 8 + len(payload), 0) + payload
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
                         socket.inet_aton("198.18.0.1"), socket.inet_aton("198.18.0.2"))
        frame = dst + src + b"\x08\x00" + ip + udp
        start = time.monotonic()
        sent = 0
        for _ in range(count):
            try:
                sock.send(frame)
                sent += 1
            except BlockingIOError:
                pass
        return {"sent": sent, "seconds": time.monotonic() - start}


def main(argv: list[str]) -> int:
    if len(argv) >= 5 and argv[0] == "echo":
        results = echo(argv[1], int(argv[2]), int(argv[3]), [int(p) for p in argv[4].split(",")],
                       len(argv) > 5 and argv[5] == "hold")
        return 0 if all(r.get("ok") for r in results) else 1
    if len(argv) == 5 and argv[0] == "rr":
        print(json.dumps(request_response(argv[1], int(argv[2]), int(argv[3]), int(argv[4]))))
        return 0
    if len(argv) in (4, 5) and argv[0] == "bulk":
        print(json.dumps(bulk(argv[1], int(argv[2]), float(argv[3]), int(argv[4]) if len(argv) == 5 else 0)))
        return 0
    if len(argv) == 4 and argv[0] == "burst":
        print(json.dumps(burst(argv[1], argv[2], int(argv[3]))))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
