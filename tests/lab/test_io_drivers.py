"""The I/O layer on real interfaces: AF_PACKET and TAP with vnet headers, forwarder, event loop.

Root tests build their own namespaces (prefix `tldrv<4 hex>-`) with veths made directly inside
them and remove them in a finalizer. Kernel TCP traffic comes from separate processes started
with `ip netns exec`, so the forwarder in this process competes with them for CPU but not for
the interpreter lock. Figures (super-frames, Gbit/s) are printed and recorded as JUnit
properties.
"""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from lab.cleanup import remove_lab
from lab.state import create_record

from toe_engine.io import (
    AfPacketDriver,
    FrameDriver,
    InterfaceNotFoundError,
    IoSetupError,
    NamespaceNotFoundError,
    TapDriver,
    VnetHeader,
)
from toe_engine.io.tap import TAP_OFFLOADS_NONE, TUN_F_CSUM, TUN_F_TSO4
from toe_engine.io.vnet import (
    VNET_F_DATA_VALID,
    VNET_F_NEEDS_CSUM,
    VNET_GSO_ECN,
    VNET_GSO_TCPV4,
    VNET_GSO_TCPV6,
    VNET_HDR_LEN,
)
from toe_engine.runtime import EventLoop, Forwarder

ETH_MTU_FRAME = 1514
MSS_RANGE = range(1400, 1461)
PORT = 5201
TRANSFER_TIMEOUT = 120.0

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces")

RECEIVER = r"""
import hashlib, json, socket, sys, time
addr, port = sys.argv[1], int(sys.argv[2])
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((addr, port))
ls.listen(1)
print("ready", flush=True)
conn, _ = ls.accept()
digest, total, buf = hashlib.sha256(), 0, bytearray(1 << 20)
start = time.monotonic()
while True:
    n = conn.recv_into(buf)
    if n == 0:
        break
    digest.update(memoryview(buf)[:n])
    total += n
seconds = time.monotonic() - start
print(json.dumps({"bytes": total, "sha256": digest.hexdigest(), "seconds": seconds}), flush=True)
"""

SENDER = r"""
import hashlib, random, socket, sys
addr, port, size, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
data = random.Random(seed).randbytes(size)
sock = socket.create_connection((addr, port), timeout=60)
sock.sendall(data)
sock.close()
print(hashlib.sha256(data).hexdigest(), flush=True)
"""


# ---------------------------------------------------------------- namespaces and transfers


class Lab:
    """Namespaces made for one test, recorded like any lab's (so parallel workers and
    `toelab clean` know whose they are), removed at the end."""

    def __init__(self) -> None:
        self.record = create_record("io_drivers", "netns", [])
        self.prefix = self.record.lab_id
        self.namespaces: list[str] = self.record.namespaces

    def netns(self, suffix: str) -> str:
        name = f"{self.prefix}-{suffix}"
        self.namespaces.append(name)
        self.record.save()
        ip("netns", "add", name)
        ip("-n", name, "link", "set", "lo", "up")
        ns_sysctl(name, "net.ipv6.conf.all.disable_ipv6", "1")
        return name

    def veth(self, ns_a: str, name_a: str, ns_b: str, name_b: str) -> None:
        ip("-n", ns_a, "link", "add", name_a, "type", "veth", "peer", "name", name_b, "netns", ns_b)
        ip("-n", ns_a, "link", "set", name_a, "up")
        ip("-n", ns_b, "link", "set", name_b, "up")

    def cleanup(self) -> None:
        remove_lab(self.record)


def ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def ns_sysctl(ns: str, key: str, value: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", f"{key}={value}"], check=True)


def link_mac(ns: str, ifname: str) -> str:
    return json.loads(ip("-n", ns, "-j", "link", "show", ifname))[0]["address"]


@pytest.fixture
def lab() -> Iterator[Lab]:
    made = Lab()
    try:
        yield made
    finally:
        made.cleanup()


@dataclass
class Transfer:
    """One kernel TCP transfer as both ends saw it; the receiver times it from accept to EOF."""

    size: int
    sent_sha256: str
    received_bytes: int
    received_sha256: str
    seconds: float

    @property
    def byte_exact(self) -> bool:
        return self.received_bytes == self.size and self.received_sha256 == self.sent_sha256

    @property
    def gbit_per_s(self) -> float:
        return self.received_bytes * 8 / self.seconds / 1e9


def kernel_transfer(
    sender_ns: str, receiver_ns: str, addr: str, size: int, seed: int = 7
) -> Transfer:
    """Send `size` seeded random bytes over kernel TCP between two namespaces; hash both ends."""
    receiver = _ns_python(receiver_ns, RECEIVER, addr, str(PORT))
    sender: subprocess.Popen[str] | None = None
    try:
        assert receiver.stdout is not None
        assert receiver.stdout.readline().strip() == "ready"
        sender = _ns_python(sender_ns, SENDER, addr, str(PORT), str(size), str(seed))
        sent_out, sent_err = sender.communicate(timeout=TRANSFER_TIMEOUT)
        assert sender.returncode == 0, sent_err
        received_out, received_err = receiver.communicate(timeout=TRANSFER_TIMEOUT)
        assert receiver.returncode == 0, received_err
    finally:
        for proc in (sender, receiver):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    received = json.loads(received_out)
    return Transfer(
        size, sent_out.strip(), received["bytes"], received["sha256"], received["seconds"]
    )


def _ns_python(ns: str, script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


class LoopThread:
    """Runs an EventLoop in a thread for the length of a `with` block."""

    def __init__(self, loop: EventLoop) -> None:
        self.loop = loop
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.loop.run()
        except BaseException as exc:
            self.error = exc

    def __enter__(self) -> LoopThread:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.loop.stop()
        self._thread.join(timeout=10)
        assert not self._thread.is_alive(), "event loop did not stop"
        if self.error is not None:
            raise self.error


def is_super_frame(header: VnetHeader, frame_len: int) -> bool:
    return frame_len > ETH_MTU_FRAME and header.gso_kind in (VNET_GSO_TCPV4, VNET_GSO_TCPV6)


# ---------------------------------------------------------------- virtio-net header codec


def test_vnet_header_round_trips_little_endian_layout() -> None:
    header = VnetHeader(VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4 | VNET_GSO_ECN, 66, 1448, 34, 16)
    packed = header.pack()
    assert packed == bytes([1, 0x81, 66, 0, 0xA8, 0x05, 34, 0, 16, 0])
    assert len(packed) == VNET_HDR_LEN
    assert VnetHeader.unpack(b"xx" + packed, 2) == header
    assert header.needs_csum and not header.data_valid and header.is_gso
    assert header.gso_kind == VNET_GSO_TCPV4
    assert not VnetHeader(VNET_F_DATA_VALID).is_gso
    buffer = bytearray(12)
    header.pack_into(buffer, 2)
    assert bytes(buffer[2:]) == packed


# ---------------------------------------------------------------- 1. AF_PACKET sees super-frames


@needs_root
@pytest.mark.root
def test_afpacket_sees_tso_super_frames(lab: Lab, record_property: Callable) -> None:
    sender_ns, receiver_ns = lab.netns("snd"), lab.netns("rcv")
    lab.veth(sender_ns, "s0", receiver_ns, "r0")
    ip("-n", sender_ns, "addr", "add", "10.77.0.1/24", "dev", "s0")
    ip("-n", receiver_ns, "addr", "add", "10.77.0.2/24", "dev", "r0")

    with AfPacketDriver("r0", receiver_ns) as reader:
        transfer = kernel_transfer(sender_ns, receiver_ns, "10.77.0.2", 1 << 20)
        assert transfer.byte_exact
        super_frames, tcp_payload_in_super_frames = 0, 0
        while (received := reader.recv()) is not None:
            header, frame = received
            if is_super_frame(header, len(frame)):
                super_frames += 1
                assert header.gso_kind == VNET_GSO_TCPV4
                assert header.gso_size in MSS_RANGE
                assert header.needs_csum
                assert header.csum_start == 14 + 20 and header.csum_offset == 16
                tcp_payload_in_super_frames += len(frame) - 66
        packets_queued, drops = reader.kernel_statistics()

    print(f"\nAF_PACKET: {super_frames} super-frames of {reader.counters.rx_frames} frames "
          f"for 1 MiB; kernel drops {drops}")
    record_property("afpacket_super_frames", super_frames)
    assert super_frames >= 1
    assert drops == 0 and packets_queued == reader.counters.rx_frames
    assert tcp_payload_in_super_frames > (1 << 20) // 2


@needs_root
@pytest.mark.root
def test_afpacket_batches_take_every_waiting_frame_in_order_one_recvmmsg_each(lab: Lab) -> None:
    """`AfPacketDriver.batches`: one list per recvmmsg of at most RECV_SLOTS frames, the budget kept,
    every frame byte-exact and in order; one longer than the receive buffer counted and handed over cut."""
    from toe_engine.io.afpacket import RECV_SLOTS

    tx_ns, rx_ns = lab.netns("tx"), lab.netns("rx")
    lab.veth(tx_ns, "t0", rx_ns, "r0")
    room = VNET_HDR_LEN + 1000
    ours = b"\x88\xb5"  # IEEE local experimental EtherType: nothing else on the link carries it
    frames = [b"\xff" * 6 + b"\x02" * 6 + ours + bytes([i]) * (46 + 7 * i) for i in range(150)]
    with AfPacketDriver("t0", tx_ns) as sender, AfPacketDriver("r0", rx_ns, rx_buffer_size=room) as reader:
        for frame in frames:
            assert sender.write_raw(bytes(VNET_HDR_LEN) + frame)
        deadline, queued = time.monotonic() + 10, 0
        while queued < len(frames) and time.monotonic() < deadline:  # veth delivers in the writer's softirq
            select.select([reader], [], [], 0.05)
            queued += reader.kernel_statistics()[0]
        assert queued >= len(frames)
        lists: list[int] = []
        got: list[bytes] = []
        for budget in (RECV_SLOTS + 5, 1000):
            for batch in reader.batches(budget):
                lists.append(len(batch))
                got += [bytes(view[VNET_HDR_LEN:]) for view in batch if bytes(view[22:24]) == ours]
            lists.append(0)  # where one call of batches() ended
        assert not list(reader.batches(8))  # nothing left, and no error for it
    assert lists == [RECV_SLOTS, 5, 0, RECV_SLOTS, queued - 2 * RECV_SLOTS - 5, 0]
    assert got == [frame[:room - VNET_HDR_LEN] for frame in frames]
    assert reader.counters.rx_truncated == sum(len(frame) > room - VNET_HDR_LEN for frame in frames) > 0
    assert reader.counters.rx_frames == queued


# ---------------------------------------------------------------- 2. the forwarder


def _bridge_lab(lab: Lab) -> tuple[str, str, str]:
    """h1 (10.78.0.1) -- a0 [fwd] b0 -- h2 (10.78.0.2): one L2 segment across the forwarder."""
    h1, fwd, h2 = lab.netns("h1"), lab.netns("fwd"), lab.netns("h2")
    lab.veth(h1, "eth0", fwd, "a0")
    lab.veth(h2, "eth0", fwd, "b0")
    ip("-n", h1, "addr", "add", "10.78.0.1/24", "dev", "eth0")
    ip("-n", h2, "addr", "add", "10.78.0.2/24", "dev", "eth0")
    return h1, fwd, h2


FORWARD_SIZE = 20 * 1024 * 1024


def _forwarded_transfer(
    fwd: str, h1: str, h2: str, stage: Callable | None
) -> tuple[Transfer, AfPacketDriver, AfPacketDriver]:
    with AfPacketDriver("a0", fwd) as a, AfPacketDriver("b0", fwd) as b:
        loop = EventLoop()
        Forwarder(a, b, stage_a_to_b=stage, stage_b_to_a=stage).attach(loop)
        with LoopThread(loop):
            transfer = kernel_transfer(h1, h2, "10.78.0.2", FORWARD_SIZE)
        loop.close()
    return transfer, a, b


@needs_root
@pytest.mark.root
def test_forwarder_carries_kernel_tcp_byte_exact_with_gso(
    lab: Lab, record_property: Callable
) -> None:
    h1, fwd, h2 = _bridge_lab(lab)

    transfer, a, b = _forwarded_transfer(fwd, h1, h2, stage=None)

    assert transfer.byte_exact, transfer
    mss_segments = FORWARD_SIZE // 1448
    assert a.counters.rx_frames < mss_segments // 4, "super-frames were not forwarded as GSO"
    assert b.counters.tx_frames + b.counters.tx_dropped == a.counters.rx_frames
    assert a.counters.rx_truncated == b.counters.rx_truncated == 0

    ip("-n", fwd, "link", "add", "br0", "type", "bridge")
    ip("-n", fwd, "link", "set", "a0", "master", "br0")
    ip("-n", fwd, "link", "set", "b0", "master", "br0")
    ip("-n", fwd, "link", "set", "br0", "up")
    reference = kernel_transfer(h1, h2, "10.78.0.2", FORWARD_SIZE, seed=8)
    assert reference.byte_exact

    print(f"\nforwarder: {transfer.gbit_per_s:.2f} Gbit/s over {a.counters.rx_frames} frames "
          f"a->b ({b.counters.rx_frames} b->a, {b.counters.tx_dropped} tx drops); "
          f"kernel bridge: {reference.gbit_per_s:.2f} Gbit/s")
    record_property("forwarder_gbit_per_s", round(transfer.gbit_per_s, 3))
    record_property("kernel_bridge_gbit_per_s", round(reference.gbit_per_s, 3))


@needs_root
@pytest.mark.root
def test_forwarder_stage_sees_headers_and_frames(lab: Lab, record_property: Callable) -> None:
    h1, fwd, h2 = _bridge_lab(lab)
    seen: list[int] = [0, 0]

    def counting_stage(header: VnetHeader, frame: bytes, now: float) -> list:
        seen[0] += 1
        seen[1] += is_super_frame(header, len(frame))
        return [(header, frame)]

    transfer, a, b = _forwarded_transfer(fwd, h1, h2, stage=counting_stage)

    assert transfer.byte_exact, transfer
    assert seen[0] == a.counters.rx_frames + b.counters.rx_frames
    assert seen[1] >= 1
    print(f"\nforwarder with a stage: {transfer.gbit_per_s:.2f} Gbit/s, "
          f"{seen[1]} super-frames of {seen[0]}")
    record_property("forwarder_with_stage_gbit_per_s", round(transfer.gbit_per_s, 3))


class DelayStage:
    """A timed stage: holds every frame for `delay` seconds, then releases it from `poll`."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.held: list[tuple[float, VnetHeader, bytes]] = []

    def __call__(self, header: VnetHeader, frame: bytes, now: float) -> list:
        self.held.append((now + self.delay, header, frame))
        return []

    def next_deadline(self) -> float | None:
        return self.held[0][0] if self.held else None

    def poll(self, now: float) -> list:
        due = [(header, frame) for when, header, frame in self.held if when <= now]
        self.held = [entry for entry in self.held if entry[0] > now]
        return due


def test_forwarder_runs_timed_stages_from_the_loop() -> None:
    """Datagram socketpairs stand in for interfaces: they keep frame boundaries like a TAP."""
    import socket

    wire_a, port_a = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    wire_b, port_b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    for sock in (port_a, port_b, wire_b):
        sock.setblocking(False)
    a = FrameDriver(port_a.fileno(), "a", None, 2048)
    b = FrameDriver(port_b.fileno(), "b", None, 2048)
    loop = EventLoop()
    Forwarder(a, b, stage_a_to_b=DelayStage(0.010)).attach(loop)
    header = VnetHeader(VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, 54, 1448, 34, 16)

    wire_a.send(header.pack() + b"frame-1")
    loop.call_later(0.050, lambda now: loop.stop())
    loop.run()

    out = wire_b.recv(2048)
    assert VnetHeader.unpack(out) == header and out[VNET_HDR_LEN:] == b"frame-1"
    assert loop.stats.deadline_calls == 1
    assert a.counters.rx_frames == 1 and b.counters.tx_frames == 1
    assert loop.stats.iterations <= 6
    loop.close()
    for sock in (wire_a, port_a, wire_b, port_b):
        sock.close()


# ---------------------------------------------------------------- 3. TAP


def _tap_lab(lab: Lab, offloads: int) -> tuple[str, str, str, TapDriver]:
    """host (tap0 10.79.0.1) ==tap fd== [forwarder] == f0 (in wire) -- peer (eth0 10.79.0.2)."""
    host, wire, peer = lab.netns("host"), lab.netns("wire"), lab.netns("peer")
    tap = TapDriver("tap0", host, offloads=offloads)
    ip("-n", host, "addr", "add", "10.79.0.1/24", "dev", "tap0")
    ip("-n", host, "link", "set", "tap0", "up")
    lab.veth(wire, "f0", peer, "eth0")
    ip("-n", peer, "addr", "add", "10.79.0.2/24", "dev", "eth0")
    return host, wire, peer, tap


@needs_root
@pytest.mark.root
@pytest.mark.parametrize(
    "offloads", [TUN_F_CSUM | TUN_F_TSO4, TAP_OFFLOADS_NONE], ids=["tso", "off"]
)
def test_tap_gives_and_takes_super_frames(
    lab: Lab, record_property: Callable, offloads: int
) -> None:
    host, wire, peer, tap = _tap_lab(lab, offloads)
    counts = {"from_tap": 0, "from_tap_super": 0, "from_tap_partial": 0, "into_tap_super": 0}

    def from_tap(header: VnetHeader, frame: bytes, now: float) -> list:
        counts["from_tap"] += 1
        counts["from_tap_partial"] += header.needs_csum
        assert len(frame) <= ETH_MTU_FRAME or header.is_gso
        if is_super_frame(header, len(frame)):
            assert header.gso_kind == VNET_GSO_TCPV4 and header.gso_size in MSS_RANGE
            assert header.needs_csum
            counts["from_tap_super"] += 1
        return [(header, frame)]

    def into_tap(header: VnetHeader, frame: bytes, now: float) -> list:
        counts["into_tap_super"] += is_super_frame(header, len(frame))
        return [(header, frame)]

    with tap, AfPacketDriver("f0", wire) as wire_port:
        loop = EventLoop()
        Forwarder(tap, wire_port, stage_a_to_b=from_tap, stage_b_to_a=into_tap).attach(loop)
        with LoopThread(loop):
            outbound = kernel_transfer(host, peer, "10.79.0.2", 1 << 20)
            inbound = kernel_transfer(peer, host, "10.79.0.1", 1 << 20, seed=9)
        loop.close()

    assert outbound.byte_exact and inbound.byte_exact
    print(f"\nTAP offloads={offloads:#x}: {counts['from_tap_super']} super-frames read of "
          f"{counts['from_tap']}, {counts['into_tap_super']} GSO super-frames written into it")
    record_property(f"tap_{offloads:#x}_super_frames_read", counts["from_tap_super"])
    if offloads:
        assert counts["from_tap_super"] >= 1
    else:
        assert counts["from_tap_super"] == 0 and counts["from_tap_partial"] == 0
    assert counts["into_tap_super"] >= 1, "GSO writes into a TAP are accepted whatever its offloads"
    assert tap.counters.tx_dropped == 0


@needs_root
@pytest.mark.root
def test_tap_delivers_crafted_arp_and_icmp_to_the_kernel(lab: Lab) -> None:
    from scapy.layers.inet import ICMP, IP
    from scapy.layers.l2 import ARP, Ether

    host = lab.netns("host")
    with TapDriver("tap0", host) as tap:
        ip("-n", host, "addr", "add", "10.80.0.1/24", "dev", "tap0")
        ip("-n", host, "link", "set", "tap0", "up")
        tap_mac, our_mac = link_mac(host, "tap0"), "02:00:00:00:80:02"

        arp = Ether(dst="ff:ff:ff:ff:ff:ff", src=our_mac) / ARP(
            op=1, hwsrc=our_mac, psrc="10.80.0.2", pdst="10.80.0.1"
        )
        assert tap.send(VnetHeader(), bytes(arp))
        reply = _read_until(tap, lambda f: ARP in f and f[ARP].op == 2)
        assert reply[ARP].hwsrc == tap_mac and reply[ARP].psrc == "10.80.0.1"

        echo = (Ether(dst=tap_mac, src=our_mac) / IP(src="10.80.0.2", dst="10.80.0.1")
                / ICMP(type=8, id=0x7E57, seq=1) / b"toelab-tap")
        assert tap.send(VnetHeader(), bytes(echo))
        answer = _read_until(tap, lambda f: ICMP in f and f[ICMP].type == 0)
        assert answer[ICMP].id == 0x7E57 and answer[IP].dst == "10.80.0.2"
        assert bytes(answer[ICMP].payload) == b"toelab-tap"
        assert tap.counters.tx_frames == 2


def _read_until(tap: TapDriver, wanted: Callable, timeout: float = 5.0):
    """Read frames from the TAP until one matches; fail after `timeout` seconds of none."""
    from scapy.layers.l2 import Ether

    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        select.select([tap], [], [], remaining)
        while (received := tap.recv()) is not None:
            frame = Ether(bytes(received[1]))
            if wanted(frame):
                return frame
    raise AssertionError("no matching frame came out of the TAP")


# ---------------------------------------------------------------- 4. the event loop


def test_timers_fire_in_order_and_cancelled_ones_do_not() -> None:
    loop = EventLoop()
    fired: list[str] = []
    start = loop.clock()

    def note(name: str) -> Callable[[float], None]:
        return lambda now: fired.append(name)

    loop.call_at(start + 0.030, lambda now: (fired.append("last"), loop.stop()))
    loop.call_at(start + 0.010, note("first"))
    loop.call_at(start + 0.020, note("second"))
    loop.call_at(start + 0.010, note("first-again"))
    loop.call_at(start + 0.015, note("cancelled")).cancel()
    loop.run()
    loop.close()

    assert fired == ["first", "first-again", "second", "last"]
    assert loop.stats.timer_calls == 4
    assert loop.stats.iterations <= 6, "the loop spun instead of sleeping until the next timer"


def test_fd_callbacks_run_and_stop_ends_the_loop() -> None:
    import socket

    loop = EventLoop()
    left, right = socket.socketpair()
    left.setblocking(False)
    got = bytearray()

    def on_readable(now: float) -> None:
        got.extend(left.recv(4096))
        if len(got) >= 6:
            loop.stop()

    loop.add_reader(left, on_readable)
    right.sendall(b"toelab")
    loop.run()
    loop.remove_reader(left)
    loop.close()
    left.close()
    right.close()

    assert bytes(got) == b"toelab"
    assert loop.stats.reader_calls == 1
    assert loop.stats.iterations == 1


def test_stop_from_another_thread_wakes_an_idle_loop() -> None:
    loop = EventLoop()
    with LoopThread(loop):
        pass
    assert loop.stats.iterations <= 2
    loop.stop()
    loop.run()
    assert loop.stats.iterations <= 2, "a stop() before run() must make run() return at once"
    loop.close()


def test_deadline_source_is_polled_without_busy_waiting() -> None:
    loop = EventLoop()
    due_at = loop.clock() + 0.020
    calls: list[float] = []

    def next_deadline() -> float | None:
        return None if calls else due_at

    def on_due(now: float) -> None:
        calls.append(now)
        loop.stop()

    loop.add_deadline_source(next_deadline, on_due)
    loop.run()
    loop.close()

    assert len(calls) == 1 and calls[0] >= due_at
    assert loop.stats.deadline_calls == 1
    assert loop.stats.iterations <= 3


def test_run_until_returns_when_the_clock_passes() -> None:
    loop = EventLoop()
    until = loop.clock() + 0.010
    loop.run(until=until)
    loop.close()
    assert loop.clock() >= until
    assert loop.stats.iterations <= 3


# ---------------------------------------------------------------- bad input


@needs_root
@pytest.mark.root
def test_missing_interface_or_namespace_is_named_in_the_error(lab: Lab) -> None:
    ns = lab.netns("bad")
    with pytest.raises(InterfaceNotFoundError, match=rf"'nosuch0'.*'{ns}'"):
        AfPacketDriver("nosuch0", ns)
    with pytest.raises(InterfaceNotFoundError, match=rf"'nosuch0'.*'{ns}'"):
        TapDriver("nosuch0", ns, must_exist=True)
    missing_ns = f"{lab.prefix}-absent"
    with pytest.raises(NamespaceNotFoundError, match=missing_ns):
        AfPacketDriver("eth0", missing_ns)
    with pytest.raises(NamespaceNotFoundError, match=missing_ns):
        TapDriver("tap0", missing_ns)
    with pytest.raises(IoSetupError, match="1 to 15 bytes"):
        TapDriver("a-name-far-too-long", ns)
    with pytest.raises(IoSetupError, match="TUN_F_CSUM"):
        TapDriver("tap0", ns, offloads=TUN_F_TSO4)
