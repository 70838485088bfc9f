"""The least a Python TCP endpoint can do for the loadgen's `http` client: a benchmark reference.

    python -m toelab.benches.bare_responder IFACE ADDRESS [PORT]    (prints "ready", exits on SIGTERM)

It reads the node's veth port with AF_PACKET, as the engine endpoint does in the toe_pair lab
(toe_engine.io.afpacket, toe_engine.codec), and keeps no connection table: what it sends follows
from the frame in hand. A SYN to PORT draws a SYN-ACK (MSS option only; the ISN a CRC of the
4-tuple, so a retransmitted SYN gets the same one); a segment carrying a request draws one frame
with the engine's HTTP answer to it (toe_engine.apps.http: the same bytes) and the FIN its
`Connection: close` asks for; a FIN alone draws its ACK; ACKs and RSTs draw nothing; ARP
requests for ADDRESS are answered. Each turn is one epoll wake-up, one recvmmsg, one write: what
any user-space endpoint on this wire pays per turn, without TCP, plus the interpreter's share of
each turn. Its rate over the engine's says what the engine's own code costs; bare_responder.c, the
same protocol in C (`build_c_responder`), is the floor of any user-space endpoint: its rate over
the kernel's says how far one can get at all.
The predictable ISN (no secret, RFC 6528) is fine for a reference that serves a lab's own client.

On exit it prints one JSON line of its counters.
"""
from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toe_engine.apps.http import _answer as http_answer
from toe_engine.codec import build_tcp_frame_partial, parse_frame
from toe_engine.codec.arp import ARP_REPLY, ARP_REQUEST, ArpPacket, build_arp
from toe_engine.codec.ethernet import ETHERTYPE_ARP, build_ethernet
from toe_engine.io.afpacket import RECV_SLOTS, AfPacketDriver
from toe_engine.io.vnet import PLAIN_VNET_BYTES, VNET_F_NEEDS_CSUM, VNET_HDR_LEN, VnetHeader
from toe_engine.segment import ACK, FIN, PSH, RST, SYN, Segment, TcpOptions

if TYPE_CHECKING:
    from lab.lab import Lab

MODULE = "toelab.benches.bare_responder"
C_SOURCE = Path(__file__).with_suffix(".c")
HTTP_PORT = 80
WINDOW = 65535  # no window scaling: every answer fits in one segment
MASK = 0xFFFFFFFF
BROADCAST = b"\xff" * 6
IPV4_TCP_OVERHEAD = 40
_SIOCGIFHWADDR, _SIOCGIFMTU = 0x8927, 0x8921
_IFREQ = struct.Struct("16s16s")
_ANSWERS_KEPT = 64  # distinct requests whose answers are kept (the loadgen sends one)

Reply = tuple[bytes, bytes | bytearray]  # (virtio-net header, frame)


@dataclass
class ResponderCounters:
    """What the responder did with each frame it read (the JSON line it prints on exit)."""

    syn_acks: int = 0
    responses: int = 0
    fin_acks: int = 0
    arp_replies: int = 0
    ignored: int = 0  # ACKs, RSTs, frames for another address or port, other protocols
    unanswerable: int = 0  # a request whose answer does not fit one segment, or no whole request head
    malformed: int = 0  # frames the codec refused


class BareResponder:
    """Answers one frame at a time (sans-IO): `answer(frame)` is the frame to send back, or None."""

    def __init__(self, mac: bytes, address: bytes, port: int = HTTP_PORT, mss: int = 1460) -> None:
        self.mac, self.address, self.port, self.mss = mac, address, port, mss
        self.counters = ResponderCounters()
        self._answers: dict[bytes, tuple[bytes, bool] | None] = {}

    def answer(self, frame: bytes | bytearray | memoryview) -> Reply | None:
        """The reply to one Ethernet frame (no virtio-net header); malformed frames are counted, never raised on."""
        parsed = parse_frame(frame, verify_csum=False)  # the sender's device (a veth) vouches for checksums
        counters = self.counters
        if parsed.drop_reason is not None:
            counters.malformed += 1
            return None
        seg = parsed.tcp
        if seg is not None:
            if parsed.ip_dst != self.address or seg.dst_port != self.port or parsed.eth_dst != self.mac:
                counters.ignored += 1
                return None
            return self._tcp(parsed.eth_src, parsed.ip_src, seg)
        arp = parsed.arp
        if arp is not None and arp.op == ARP_REQUEST and arp.target_ip == self.address:
            counters.arp_replies += 1
            body = build_arp(ArpPacket(ARP_REPLY, self.mac, self.address, arp.sender_mac, arp.sender_ip))
            return PLAIN_VNET_BYTES, build_ethernet(arp.sender_mac, self.mac, ETHERTYPE_ARP) + body
        counters.ignored += 1
        return None

    def _tcp(self, peer_mac: bytes, peer: bytes, seg: Segment) -> Reply | None:
        flags, counters = seg.flags, self.counters
        if flags & RST or (flags & (SYN | ACK)) == SYN | ACK:
            counters.ignored += 1
            return None
        if flags & SYN:
            counters.syn_acks += 1
            isn = zlib.crc32(peer + self.address + seg.src_port.to_bytes(2, "big") + self.port.to_bytes(2, "big"))
            return self._send(peer_mac, peer, Segment(self.port, seg.src_port, isn, (seg.seq + 1) & MASK, SYN | ACK,
                                                      WINDOW, options=TcpOptions(mss=self.mss)))
        fin = 1 if flags & FIN else 0
        ack = (seg.seq + len(seg.payload) + fin) & MASK
        if seg.payload:
            answer = self._answer_to(bytes(seg.payload))
            if answer is None:
                counters.unanswerable += 1
                return None
            counters.responses += 1
            response, close = answer
            return self._send(peer_mac, peer, Segment(self.port, seg.src_port, seg.ack, ack,
                                                      ACK | PSH | (FIN if close else 0), WINDOW, response))
        if fin:
            counters.fin_acks += 1
            return self._send(peer_mac, peer, Segment(self.port, seg.src_port, seg.ack, ack, ACK, WINDOW))
        counters.ignored += 1
        return None

    def _answer_to(self, request: bytes) -> tuple[bytes, bool] | None:
        """(response, close after it) as the engine's HTTP service answers `request`; None when the
        request is no whole head or its answer needs more than one segment (there is no state to stream it)."""
        if request in self._answers:
            return self._answers[request]
        head, sep, _ = request.partition(b"\r\n\r\n")
        answer: tuple[bytes, bool] | None = None
        if sep:
            response, body_left, close = http_answer(head)
            if not body_left and len(response) <= self.mss:
                answer = response, close
        if len(self._answers) < _ANSWERS_KEPT:
            self._answers[request] = answer
        return answer

    def _send(self, peer_mac: bytes, peer: bytes, seg: Segment) -> Reply:
        """The frame with its TCP checksum left to the kernel (NEEDS_CSUM), as the engine sends with tx_offload."""
        partial = build_tcp_frame_partial(self.mac, peer_mac, self.address, peer, seg)
        start = partial.csum_start
        header = VnetHeader(VNET_F_NEEDS_CSUM, hdr_len=start + ((partial.data[start + 12] >> 4) << 2),
                            csum_start=start, csum_offset=partial.csum_offset)
        return header.pack(), partial.data


def interface_mac_mtu(iface: str) -> tuple[bytes, int]:
    """The interface's MAC and MTU in this process's namespace (ioctl: /sys shows the namespace it was mounted in)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        name = iface.encode()
        mac = fcntl.ioctl(sock, _SIOCGIFHWADDR, _IFREQ.pack(name, b""))[18:24]
        mtu = struct.unpack_from("i", fcntl.ioctl(sock, _SIOCGIFMTU, _IFREQ.pack(name, b"")), 16)[0]
    return bytes(mac), mtu


def serve(iface: str, address: str, port: int = HTTP_PORT) -> ResponderCounters:
    """Answer frames on `iface` until SIGTERM; the counters. Prints "ready" once the socket is bound."""
    mac, mtu = interface_mac_mtu(iface)
    responder = BareResponder(mac, ipaddress.IPv4Address(address).packed, port, mtu - IPV4_TCP_OVERHEAD)
    wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.signal(signal.SIGTERM, lambda *_: None)  # the wake-up fd below is what ends the loop
    signal.set_wakeup_fd(wake_write)
    driver = AfPacketDriver(iface)
    poller = select.epoll()
    try:
        poller.register(driver.fd, select.EPOLLIN)
        poller.register(wake_read, select.EPOLLIN)
        print("ready", flush=True)
        answer, send = responder.answer, driver.send
        while all(fd != wake_read for fd, _ in poller.poll()):
            for batch in driver.batches(RECV_SLOTS):
                for view in batch:
                    reply = answer(view[VNET_HDR_LEN:])
                    if reply is not None:
                        send(*reply)
    finally:
        poller.close()
        driver.close()
        signal.set_wakeup_fd(-1)
        os.close(wake_read)
        os.close(wake_write)
    return responder.counters


def loadgen_response() -> bytes:
    """What the engine's HTTP service answers the loadgen's GET with: the C responder's RESPONSE."""
    from .loadgen import REQUEST

    response, body_left, _ = http_answer(REQUEST.partition(b"\r\n\r\n")[0])
    assert not body_left, "the loadgen's body rides in the response head"
    return response


def build_c_responder(directory: Path) -> Path | None:
    """Compile bare_responder.c into `directory`; its path, or None where there is no C compiler."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    program = directory / "bare_responder"
    done = subprocess.run([compiler, "-O2", "-o", str(program), str(C_SOURCE)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{compiler} could not build {C_SOURCE.name}: {done.stderr.strip()[-500:]}")
    return program


def start_in_lab(lab: "Lab", node: str, iface: str = "eth0", port: int = HTTP_PORT,
                 program: Path | None = None) -> subprocess.Popen[Any]:
    """Shut `node`'s kernel out of `iface` as a toe node's is (no addresses, IPv6 off, an nftables
    ingress hook dropping every frame after AF_PACKET has seen it), so nothing races the responder,
    and start the responder there for the node's address (this module, or the C `program` from
    `build_c_responder`); returns once it is ready."""
    from lab.endpoint_nodes import wire_ruleset
    from lab.tools import wait_for_line

    host, address = lab.node(node), lab.address(node)
    host.write_sysctls({f"net.ipv6.conf.{iface}.disable_ipv6": 1})
    host.run(["nft", "-f", "-"], input=wire_ruleset(iface), check=True)
    host.run(["ip", "-4", "address", "flush", "dev", iface], check=True)
    argv = ([str(program), iface, address, str(port), loadgen_response().decode()] if program is not None
            else [sys.executable, "-m", MODULE, iface, address, str(port)])
    proc = host.popen(argv, stdout=subprocess.PIPE)
    wait_for_line(proc, "ready", f"bare responder on node {node}")
    return proc


def stop(proc: subprocess.Popen[Any], timeout: float = 10.0) -> ResponderCounters:
    """SIGTERM a responder from `start_in_lab`; its counters once it has exited (RuntimeError if it did not
    exit cleanly)."""
    proc.send_signal(signal.SIGTERM)
    assert proc.stdout is not None
    out = proc.stdout.read()
    code = proc.wait(timeout)
    lines = out.decode(errors="replace").strip().splitlines()
    if code != 0 or not lines:
        raise RuntimeError(f"the bare responder exited with {code}: {lines[-1:] or 'no output'}")
    return ResponderCounters(**json.loads(lines[-1]))


def main(argv: list[str]) -> int:
    usage = "usage: python -m toelab.benches.bare_responder IFACE IPV4-ADDRESS [PORT]"
    if len(argv) not in (2, 3):
        print(usage, file=sys.stderr)
        return 2
    try:
        ipaddress.IPv4Address(argv[1])
        port = int(argv[2]) if len(argv) == 3 else HTTP_PORT
        if not 0 < port < 65536:
            raise ValueError
    except ValueError:
        print(f"bare_responder: {argv[1]!r} must be an IPv4 address and PORT 1-65535 ({usage})", file=sys.stderr)
        return 2
    try:
        socket.if_nametoindex(argv[0])
    except OSError:
        print(f"bare_responder: no interface {argv[0]!r} in this namespace", file=sys.stderr)
        return 2
    print(json.dumps(asdict(serve(argv[0], argv[1], port))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
