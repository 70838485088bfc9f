"""`chimney`: a connection the host stack set up, moved mid-stream (TCP_REPAIR) and kept byte-exact.

TCP Chimney's model is that the host stack sets a connection up, the device takes it over
mid-stream and may hand it back. The host's half of that is Linux's TCP_REPAIR, as CRIU uses
it (`scenarios.tcp_repair`): the scenario opens an echo connection from the client to a
kernel socket on the server's host stack (a port the engine does not serve, so on `toe` too
the host stack carries it), echoes seeded data, leaves a chunk unread in the server's
receive queue and its echo of the chunk before unacknowledged in its send queue (the client's
ACKs held back), freezes the server's socket, reads its state, closes it (no FIN, no RST),
builds a new socket from the state and carries on; meanwhile an nftables rule holds the
client's segments back. The transfer must come back byte-exact, and the time the client saw
no progress is reported.

Handing the live connection to the engine and back needs the engine to adopt an
established connection's state, which it cannot (see `ENGINE_CANNOT`): that check is a skip
with the reason, on `toe`, until the engine has such a verb.
"""
from __future__ import annotations

import hashlib
import select
import socket
import time
from collections.abc import Iterator

from pydantic import Field


from .framework import Check, RunContext, ScenarioParams, scenario
from .tcp_repair import RepairState, freeze, restore

PORT = 5100
NFT_TABLE = "toelab_chimney"
ENGINE_CANNOT = ("the engine cannot adopt a live connection: its connections come only from its own handshakes "
                 "(listen/accept/connect in toe_engine.tcp.stack) and its control socket has no verb to install an "
                 "established connection's state - the sequence numbers, queued bytes, windows, window scales, MSS, "
                 "timestamp clock and SACK permission that TCP_REPAIR reads here - nor to export its own for the host "
                 "to restore, so neither the hand-over nor the hand-back can be driven")


class ChimneyParams(ScenarioParams):
    chunk_kib: int = Field(64, ge=1, le=1024, description="KiB per echoed chunk")
    chunks: int = Field(16, ge=2, le=1024, description="chunks echoed before and after the move, each")
    limit_s: float = Field(10, gt=0, le=120, description="time limit of each socket operation")


@scenario("chimney", purpose="A live host-stack connection frozen mid-stream with TCP_REPAIR, its state read, "
          "restored into a new socket and carried on byte-exact; the engine hand-over and hand-back.",
          topology="host_pair", params=ChimneyParams, topology_params={"rmem_max": 6291456}, covers=("RFC9293 3.10.7.4", "RFC9293 3.3.2"),
          claims=("TOE-19",))
def run(ctx: RunContext) -> Iterator[Check]:
    p = ctx.params
    server_node, client_node = ctx.lab.node(ctx.server), ctx.lab.node(ctx.client)
    addr = ctx.address(ctx.server)
    with server_node.inside():
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with client_node.inside():
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    chunk = p.chunk_kib * 1024
    data = ctx.rng.randbytes(chunk * (2 * p.chunks + 1))
    sent_digest, got_digest = hashlib.sha256(data).hexdigest(), hashlib.sha256()
    received = 0
    state: RepairState | None = None
    stalled_s = None
    capture = ctx.capture(ctx.client, ctx.iface(ctx.client), f"tcp port {PORT}", name="chimney.pcap")
    try:
        with listener, client:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((addr, PORT))
            listener.listen(1)
            client.settimeout(p.limit_s)
            client.connect((addr, PORT))
            server, _ = listener.accept()
            server.settimeout(p.limit_s)
            pieces = [data[i:i + chunk] for i in range(0, len(data), chunk)]
            for piece in pieces[:p.chunks - 1]:
                received += _echo(client, server, piece, got_digest)
            # Mid-stream, both queues hold bytes when the socket is frozen: the server's echo of one
            # chunk is unacknowledged (the client's ACKs are held back) and the next chunk is unread.
            last, unread = pieces[p.chunks - 1], pieces[p.chunks]
            client.sendall(last)
            echo_late = _read(server, len(last))
            client.sendall(unread)
            _await_readable(server, len(unread), p.limit_s)
            _hold(ctx, True)
            frozen_at = time.monotonic()
            server.sendall(echo_late)
            state = freeze(server)
            server.close()  # in repair mode: no FIN, no RST
            with server_node.inside():
                server = restore(state)
            _hold(ctx, False)
            server.settimeout(p.limit_s)
            with server:
                back = _read(client, len(last))
                got_digest.update(back)
                received += len(back)
                server.sendall(_read(server, len(unread)))
                first = _read(client, len(unread))
                stalled_s = time.monotonic() - frozen_at
                got_digest.update(first)
                received += len(first)
                for piece in pieces[p.chunks + 1:]:
                    received += _echo(client, server, piece, got_digest)
    except OSError as exc:
        error = f"{type(exc).__name__}: {exc}"
    else:
        error = ""
    finally:
        _hold(ctx, False)
        pcap = capture.stop()
    exact = received == len(data) and got_digest.hexdigest() == sent_digest
    numbers = {"bytes": received, "size": len(data), "stalled_ms": round(stalled_s * 1000, 2) if stalled_s else None}
    if state is not None:
        numbers.update({"recv_queue_bytes": len(state.recv_queue), "send_queue_bytes": len(state.send_queue),
                        "mss": state.mss, "snd_wscale": state.snd_wscale, "rcv_wscale": state.rcv_wscale,
                        "tcpi_options": state.options})
    moved_mid_stream = state is not None and len(state.recv_queue) > 0 and len(state.send_queue) > 0
    yield ctx.check("host-connection-moved", "RFC9293 3.10.7.4", exact and moved_mid_stream and not error,
                    f"the host stack's connection was frozen with {numbers.get('recv_queue_bytes', 0)} unread and "
                    f"{numbers.get('send_queue_bytes', 0)} unacknowledged bytes, restored into a new socket and "
                    f"carried on: {received} of {len(data)} bytes came back "
                    f"{'identical (SHA-256)' if exact else 'short or different'}"
                    + (f", {numbers['stalled_ms']} ms without progress" if stalled_s else "")
                    + (f"; {error}" if error else ""), pcaps=[pcap], numbers=numbers, integrity=True)
    if ctx.target.name == "toe":
        yield ctx.skip("engine-hand-over-and-back", "RFC9293 3.3.2", ENGINE_CANNOT,
                       numbers={"host_half_done": exact})
    else:
        yield ctx.skip("engine-hand-over-and-back", "RFC9293 3.3.2",
                       "the kernel target has no offload engine to hand a connection to")


def _echo(client: socket.socket, server: socket.socket, piece: bytes, digest: hashlib._Hash) -> int:
    client.sendall(piece)
    server.sendall(_read(server, len(piece)))
    back = _read(client, len(piece))
    digest.update(back)
    return len(back)


def _read(sock: socket.socket, size: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        chunk = sock.recv(size - len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


def _await_readable(sock: socket.socket, size: int, limit_s: float) -> None:
    """Wait until `size` bytes sit in the socket's receive queue (they arrived and were acknowledged)."""
    deadline = time.monotonic() + limit_s
    while True:
        try:
            queued = len(sock.recv(size, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except BlockingIOError:
            queued = 0
        if queued >= size:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{size} bytes did not reach the server's receive queue")
        select.select([sock], [], [], 0.005)


def _hold(ctx: RunContext, on: bool) -> None:
    """Hold the client's segments back (or let them through): no socket answers them while the state moves."""
    node = ctx.lab.node(ctx.server)
    if on:
        node.run(["nft", "-f", "-"], check=True, input=(
            f"table inet {NFT_TABLE} {{\n  chain input {{\n    type filter hook input priority -10; policy accept;\n"
            f"    tcp dport {PORT} drop\n  }}\n}}\n"))
    else:
        node.run(["nft", "delete", "table", "inet", NFT_TABLE])
