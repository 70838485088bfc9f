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

On `toe` a second connection then goes the whole way of TCP Chimney: the host stack serves
it, its socket is frozen with a chunk unread and handed to the engine (`adopt`, toe_engine.
runtime.migrate), whose echo serves it from there, the unread chunk included; then the engine
`export`s it and forgets it without a FIN or RST, and the host restores it with TCP_REPAIR and
serves the rest. Every byte must come back in order.
"""
from __future__ import annotations

import hashlib
import json
import select
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

from pydantic import Field


from .framework import Check, RunContext, ScenarioParams, scenario
from .tcp_repair import RepairState, freeze, migration_state, repair_state, restore

PORT = 5100
NFT_TABLE = "toelab_chimney"
#: Bytes left unread when the engine adopts: the queues travel hex-encoded in one control request,
#: which the control socket caps at 64 KiB.
ADOPT_UNREAD = 16 * 1024



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
    server_node = ctx.lab.node(ctx.server)
    chunk = p.chunk_kib * 1024
    data = ctx.rng.randbytes(chunk * (2 * p.chunks + 1))
    sent_digest, got_digest = hashlib.sha256(data).hexdigest(), hashlib.sha256()
    received = 0
    state: RepairState | None = None
    stalled_s = None
    capture = ctx.capture(ctx.client, ctx.iface(ctx.client), f"tcp port {PORT}", name="chimney.pcap")
    try:
        with _connection(ctx, PORT, p.limit_s) as (client, server):
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
        yield from _engine_round_trip(ctx)
    else:
        yield ctx.skip("engine-hand-over-and-back", "RFC9293 3.3.2",
                       "the kernel target has no offload engine to hand a connection to")


@contextmanager
def _connection(ctx: RunContext, port: int, limit_s: float) -> Iterator[tuple[socket.socket, socket.socket]]:
    """A host-stack connection from the client node to the server node's `port`: (client, accepted server)."""
    addr = ctx.address(ctx.server)
    with ctx.lab.node(ctx.server).inside():
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with ctx.lab.node(ctx.client).inside():
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with listener, client:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((addr, port))
        listener.listen(1)
        client.settimeout(limit_s)
        client.connect((addr, port))
        server, _ = listener.accept()
        server.settimeout(limit_s)
        yield client, server


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


def _hold(ctx: RunContext, on: bool, port: int = PORT) -> None:
    """Hold the client's segments back (or let them through): no socket answers them while the state moves."""
    node = ctx.lab.node(ctx.server)
    if on:
        node.run(["nft", "-f", "-"], check=True, input=(
            f"table inet {NFT_TABLE} {{\n  chain input {{\n    type filter hook input priority -10; policy accept;\n"
            f"    tcp dport {port} drop\n  }}\n}}\n"))
    else:
        node.run(["nft", "delete", "table", "inet", NFT_TABLE])


def _engine_round_trip(ctx: RunContext) -> Iterator[Check]:
    """Host stack -> engine -> host stack, mid-stream: TCP_REPAIR out of the kernel, `adopt`, `export`, restore."""
    p = ctx.params
    port = PORT + 1
    engine = ctx.target.engine  # type: ignore[attr-defined]
    server_node, addr = ctx.lab.node(ctx.server), ctx.address(ctx.server)
    chunk = p.chunk_kib * 1024
    pieces = [ctx.rng.randbytes(chunk) for _ in range(3 * p.chunks)]
    pieces[p.chunks - 1] = pieces[p.chunks - 1][:ADOPT_UNREAD]
    data = b"".join(pieces)
    digest, received = hashlib.sha256(), 0
    moves: dict[str, float] = {}
    in_engine = engine_counted = 0
    error = ""
    capture = ctx.capture(ctx.client, ctx.iface(ctx.client), f"tcp port {port}", name="chimney-engine.pcap")
    try:
        with _connection(ctx, port, p.limit_s) as (client, server):
            for piece in pieces[:p.chunks - 1]:  # the host stack serves
                received += _echo(client, server, piece, digest)
            unread = pieces[p.chunks - 1][:ADOPT_UNREAD]
            client.sendall(unread)
            _await_readable(server, len(unread), p.limit_s)
            _hold(ctx, True, port)  # hand-over: the kernel's socket frozen, the engine adopts it
            began = time.monotonic()
            state = freeze(server)
            server.close()
            engine.request({"cmd": "adopt", "state": migration_state(state), "app": "echo",
                            "peer_mac": _mac(ctx, ctx.client)})
            _hold(ctx, False, port)
            for piece in [None, *pieces[p.chunks:2 * p.chunks]]:  # the engine's echo serves
                if piece is not None:
                    client.sendall(piece)
                back = _read(client, len(piece if piece is not None else unread))
                moves.setdefault("hand_over_ms", (time.monotonic() - began) * 1000)
                digest.update(back)
                received += len(back)
            in_engine = sum(1 for row in engine.request({"cmd": "conns"})["connections"]
                            if row.get("offloaded") and row["local"] == f"{addr}:{port}")
            engine_counted = engine.stats()["counters"].get("conn_adopted", 0)
            _hold(ctx, True, port)  # hand-back: the engine exports and forgets it, the kernel restores it
            began = time.monotonic()
            local = client.getsockname()
            exported = engine.request({"cmd": "export", "local": f"{addr}:{port}",
                                       "remote": f"{local[0]}:{local[1]}"})["state"]
            with server_node.inside():
                server = restore(repair_state(exported))
            _hold(ctx, False, port)
            server.settimeout(p.limit_s)
            with server:
                for piece in pieces[2 * p.chunks:]:  # the host stack serves again
                    received += _echo(client, server, piece, digest)
                    moves.setdefault("hand_back_ms", (time.monotonic() - began) * 1000)
    except (OSError, RuntimeError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        _hold(ctx, False, port)
        pcap = capture.stop()
    exact = received == len(data) and digest.digest() == hashlib.sha256(data).digest()
    numbers = {"bytes": received, "size": len(data), "engine_held_it": in_engine, "conn_adopted": engine_counted,
               **{k: round(v, 2) for k, v in moves.items()}}
    yield ctx.check("engine-hand-over-and-back", "RFC9293 3.3.2",
                    exact and in_engine == 1 and engine_counted >= 1 and "hand_back_ms" in moves and not error,
                    f"the host stack's connection, frozen mid-stream with {len(unread)} unread bytes, was adopted by "
                    f"the engine ({'in' if in_engine else 'not in'} its table), served by its echo, exported and "
                    f"restored into the host stack: {received} of {len(data)} bytes came back "
                    f"{'identical (SHA-256)' if exact else 'short or different'}"
                    + (f", {moves['hand_over_ms']:.0f} ms to the first echo after the hand-over" if moves else "")
                    + (f" and {moves['hand_back_ms']:.0f} ms after the hand-back" if "hand_back_ms" in moves else "")
                    + (f"; {error}" if error else ""), pcaps=[pcap], numbers=numbers, integrity=True)


def _mac(ctx: RunContext, node: str) -> str:
    """The MAC of a node's first interface (the engine answers the adopted flow's peer there)."""
    out = ctx.lab.node(node).run(["ip", "-j", "link", "show", ctx.iface(node)], check=True).stdout
    return str(json.loads(out)[0]["address"])
