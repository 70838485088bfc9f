"""Linux TCP_REPAIR: read a live connection's state out of the kernel and restore it into a new socket.

This is how CRIU moves a connection between processes or machines, and what a TCP Chimney
style offload needs from the host stack: freeze the socket (TCP_REPAIR on: nothing is sent
any more, and closing it sends neither FIN nor RST), read its sequence numbers, queued bytes,
windows, negotiated options and timestamp clock, then build a socket from that state and
unfreeze it. While neither socket exists the peer's segments must not meet an RST, so the
caller holds them back (an nftables drop on the connection) for the moment it takes.
"""
from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

TCP_REPAIR = 19
TCP_REPAIR_QUEUE = 20
TCP_QUEUE_SEQ = 21
TCP_REPAIR_OPTIONS = 22
TCP_TIMESTAMP = 24
TCP_REPAIR_WINDOW = 29
TCP_RECV_QUEUE, TCP_SEND_QUEUE = 1, 2
TCPOPT_MSS, TCPOPT_WINDOW, TCPOPT_SACK_PERM, TCPOPT_TIMESTAMP = 2, 3, 4, 8
TCPI_OPT_TIMESTAMPS, TCPI_OPT_SACK, TCPI_OPT_WSCALE = 1, 2, 4
MAX_QUEUE = 32 << 20  # larger than any socket buffer the lab sets
_WINDOW = struct.Struct("=5I")  # struct tcp_repair_window: snd_wl1 snd_wnd max_window rcv_wnd rcv_wup
#: struct tcp_info up to tcpi_snd_mss: state ca_state retransmits probes backoff options wscale(4|4) flags, 5 u32 (rto ato snd_mss ...)
_INFO = struct.Struct("=8B5I")


@dataclass(frozen=True)
class RepairState:
    """What a frozen connection is made of, as TCP_REPAIR reads it."""

    local: tuple[str, int]
    remote: tuple[str, int]
    send_seq: int
    recv_seq: int
    send_queue: bytes
    recv_queue: bytes
    window: tuple[int, int, int, int, int]
    mss: int
    snd_wscale: int
    rcv_wscale: int
    options: int
    timestamp: int


def _queue(sock: socket.socket, queue: int) -> tuple[int, bytes]:
    """A frozen socket's sequence number and bytes for one queue (send: unacknowledged; receive: unread)."""
    sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, queue)
    seq = struct.unpack("=I", sock.getsockopt(socket.IPPROTO_TCP, TCP_QUEUE_SEQ, 4))[0]
    try:
        data = sock.recv(MAX_QUEUE, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        data = b""
    return seq, data


def freeze(sock: socket.socket) -> RepairState:
    """Put a connected socket in repair mode and read its state (it stays frozen until closed)."""
    sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 1)
    info = _INFO.unpack(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _INFO.size))
    send_seq, send_queue = _queue(sock, TCP_SEND_QUEUE)
    recv_seq, recv_queue = _queue(sock, TCP_RECV_QUEUE)
    window = _WINDOW.unpack(sock.getsockopt(socket.IPPROTO_TCP, TCP_REPAIR_WINDOW, _WINDOW.size))
    timestamp = struct.unpack("=I", sock.getsockopt(socket.IPPROTO_TCP, TCP_TIMESTAMP, 4))[0]
    wscale = info[6]
    return RepairState(local=sock.getsockname()[:2], remote=sock.getpeername()[:2], send_seq=send_seq,
                       recv_seq=recv_seq, send_queue=send_queue, recv_queue=recv_queue, window=window,
                       mss=info[10], snd_wscale=wscale & 0x0F, rcv_wscale=wscale >> 4, options=info[5],
                       timestamp=timestamp)


def repair_options(state: RepairState) -> bytes:
    """The TCP_REPAIR_OPTIONS argument: struct tcp_repair_opt {u32 opt_code; u32 opt_val;} per option."""
    opts = [(TCPOPT_MSS, state.mss)]
    if state.options & TCPI_OPT_WSCALE:
        opts.append((TCPOPT_WINDOW, state.snd_wscale | (state.rcv_wscale << 16)))
    if state.options & TCPI_OPT_SACK:
        opts.append((TCPOPT_SACK_PERM, 0))
    if state.options & TCPI_OPT_TIMESTAMPS:
        opts.append((TCPOPT_TIMESTAMP, 0))
    return b"".join(struct.pack("=II", code, value) for code, value in opts)


def restore(state: RepairState, family: int = socket.AF_INET) -> socket.socket:
    """A new socket carrying `state`, out of repair mode and live (create it in the right namespace)."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # Repair mode forces address reuse (the listener still holds the port); SO_REUSEADDR after it would undo that.
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 1)
        sock.bind(state.local)
        # TCP_QUEUE_SEQ read the end of each queue; the new socket starts where the queued bytes begin,
        # and writing them back below moves it to the end again.
        for queue, seq in ((TCP_SEND_QUEUE, state.send_seq - len(state.send_queue)),
                           (TCP_RECV_QUEUE, state.recv_seq - len(state.recv_queue))):
            sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, queue)
            sock.setsockopt(socket.IPPROTO_TCP, TCP_QUEUE_SEQ, struct.pack("=I", seq % (1 << 32)))
        sock.connect(state.remote)  # in repair mode: no SYN, straight to ESTABLISHED
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_OPTIONS, repair_options(state))
        sock.setsockopt(socket.IPPROTO_TCP, TCP_TIMESTAMP, struct.pack("=I", state.timestamp))
        for queue, data in ((TCP_SEND_QUEUE, state.send_queue), (TCP_RECV_QUEUE, state.recv_queue)):
            if data:
                sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, queue)
                sock.sendall(data)
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_WINDOW, _WINDOW.pack(*state.window))
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 0)
    except BaseException:
        sock.close()
        raise
    return sock


def migration_state(state: RepairState) -> dict[str, object]:
    """A frozen connection's state as the engine's `adopt` verb takes it (toe_engine.runtime.migrate)."""
    return {"local": f"{state.local[0]}:{state.local[1]}", "remote": f"{state.remote[0]}:{state.remote[1]}",
            "snd_nxt": state.send_seq, "rcv_nxt": state.recv_seq, "send_queue": state.send_queue.hex(),
            "recv_queue": state.recv_queue.hex(), "snd_wnd": state.window[1], "rcv_wnd": state.window[3],
            "mss": state.mss, "snd_wscale": state.snd_wscale, "rcv_wscale": state.rcv_wscale,
            "sack": bool(state.options & TCPI_OPT_SACK), "timestamps": bool(state.options & TCPI_OPT_TIMESTAMPS),
            "tsval": state.timestamp}


def repair_state(exported: dict[str, object]) -> RepairState:
    """The engine's `export` answer as the state `restore` builds a host socket from."""
    def endpoint(text: object) -> tuple[str, int]:
        host, _, port = str(text).rpartition(":")
        return host, int(port)

    rcv_nxt, snd_wnd, rcv_wnd = int(exported["rcv_nxt"]), int(exported["snd_wnd"]), int(exported["rcv_wnd"])
    options = TCPI_OPT_WSCALE if exported["snd_wscale"] or exported["rcv_wscale"] else 0
    options |= (TCPI_OPT_SACK if exported["sack"] else 0) | (TCPI_OPT_TIMESTAMPS if exported["timestamps"] else 0)
    return RepairState(local=endpoint(exported["local"]), remote=endpoint(exported["remote"]),
                       send_seq=int(exported["snd_nxt"]), recv_seq=rcv_nxt,
                       send_queue=bytes.fromhex(str(exported["send_queue"])),
                       recv_queue=bytes.fromhex(str(exported["recv_queue"])),
                       window=(rcv_nxt, snd_wnd, snd_wnd, rcv_wnd, rcv_nxt), mss=int(exported["mss"]),
                       snd_wscale=int(exported["snd_wscale"]), rcv_wscale=int(exported["rcv_wscale"]),
                       options=options, timestamp=int(exported["tsval"]))
