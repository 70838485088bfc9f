"""Connection migration between the host stack and the engine: TCP Chimney's offload and upload.

The host sets a connection up and reads its state (Linux TCP_REPAIR, as CRIU does); `adopt`
builds an ESTABLISHED connection in the engine from that state and gives it an application,
so the endpoint terminates the flow from then on instead of passing it to the host. `export`
is the way back: it reads an engine connection's state in the same terms and drops the
connection silently (no FIN, no RST), so the host can restore it with TCP_REPAIR and the
endpoint passes the flow to the host again.

The state is plain data (`MigratedState`): 32-bit sequence numbers, the bytes queued for
sending (unacknowledged or not yet sent: the new owner sends them, and a peer that had them
acknowledges the duplicate), the bytes received but not yet read by the application, the
peer's window, the negotiated MSS, window scales, SACK and timestamps, and the TSval clock the
peer last saw, so the new owner's timestamps keep going up (PAWS, RFC 7323 5).

The queues travel hex-encoded inside one control request, and the control socket takes
requests of up to 64 KiB (toe_engine.runtime.control.MAX_REQUEST): a connection adopts with
up to about 30 KiB queued. The peer's last TSval is not in what TCP_REPAIR reads; without it
the adopted connection takes the peer's next one as TS.Recent (RFC 7323 5.5's stale rule).
"""
from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from toe_engine.apps import APPS
from toe_engine.segment import FourTuple
from toe_engine.tcp.connection import Connection
from toe_engine.tcp.events import Connected, DataReceived
from toe_engine.tcp.seqnum import MASK
from toe_engine.tcp.tcb import CLOSED, ESTABLISHED, INF, PAWS_IDLE_LIMIT

if TYPE_CHECKING:
    from toe_engine.endpoint import EndpointCore

TS_OPTION_LEN = 12  # the timestamps option as sent on every segment (with its two NOPs)


@dataclass(frozen=True)
class MigratedState:
    """A live connection's state, as TCP_REPAIR reads it and as the engine exports it."""

    local: str  # "ip:port"
    remote: str
    snd_nxt: int  # the sequence number after the last byte queued for sending
    rcv_nxt: int
    send_queue: bytes  # the last len(send_queue) bytes before snd_nxt: unacknowledged or unsent
    recv_queue: bytes  # received, not read by the application
    snd_wnd: int  # the peer's window, bytes
    rcv_wnd: int  # the window last advertised to the peer, bytes
    mss: int  # payload bytes per segment with the options in use
    snd_wscale: int
    rcv_wscale: int
    sack: bool
    timestamps: bool
    tsval: int  # the TSval clock the peer last saw from this end
    ts_recent: int = 0  # the peer's last TSval, if known (TCP_REPAIR does not tell; 0 then)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["send_queue"], data["recv_queue"] = self.send_queue.hex(), self.recv_queue.hex()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MigratedState:
        """From a control request; ValueError names a missing or malformed field."""
        try:
            values = {**data, "send_queue": bytes.fromhex(data["send_queue"]),
                      "recv_queue": bytes.fromhex(data["recv_queue"])}
            names = set(cls.__dataclass_fields__)
            return cls(**{k: v for k, v in values.items() if k in names})
        except KeyError as exc:
            raise ValueError(f"adopt: missing field {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise ValueError(f"adopt: {exc}") from None


def four_tuple(local: str, remote: str) -> FourTuple:
    """"ip:port" pairs (the engine's own address first) as the stack's key."""
    (lip, lport), (rip, rport) = (_endpoint(local), _endpoint(remote))
    return FourTuple(lip, lport, rip, rport)


def _endpoint(text: str) -> tuple[bytes, int]:
    host, _, port = text.rpartition(":")
    try:
        return ipaddress.ip_address(host.strip("[]")).packed, int(port)
    except ValueError:
        raise ValueError(f"{text!r} is not ip:port") from None


class _OffsetClock:
    """The stack as a connection's host, with that connection's TSval clock shifted to continue another's."""

    def __init__(self, stack: Any, offset: int) -> None:
        self._stack, self._offset = stack, offset

    def ts_clock(self, now: float) -> int:
        return (self._stack.ts_clock(now) + self._offset) & MASK

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stack, name)


def adopt(core: EndpointCore, state: MigratedState, app: str, now: float, peer_mac: bytes | None = None) -> FourTuple:
    """Install `state` as an ESTABLISHED engine connection served by application `app`."""
    if app not in APPS:
        raise ValueError(f"adopt: unknown application {app!r}; known ones are {', '.join(APPS)}")
    key = four_tuple(state.local, state.remote)
    if key.local_ip not in core.addresses:
        raise ValueError(f"adopt: {state.local} is not one of the engine's addresses")
    stack = core.stack
    if stack.connection(key) is not None:
        raise ValueError(f"adopt: the engine already has a connection {state.local} - {state.remote}")
    stack.on_timer(now)  # the stack's clock is now: what the application sends below is stamped with it
    if core.resources.admit_cookie(key, now).name != "ACCEPT":
        raise ValueError("adopt: the engine's connection table is full")
    core.resources.established(key)
    offset = (state.tsval - stack.ts_clock(now)) & MASK
    snd_una = (state.snd_nxt - len(state.send_queue)) & MASK
    conn = Connection(key, stack.config, _OffsetClock(stack, offset), (snd_una - 1) & MASK)
    conn.state = ESTABLISHED
    conn.admitted = True
    conn.snd_una = conn.snd_nxt = conn.snd_wl2 = snd_una
    conn.snd_buf = bytearray(state.send_queue)
    conn.snd_buf_seq = snd_una
    conn.snd_wnd = conn.max_snd_wnd = state.snd_wnd
    conn.irs = (state.rcv_nxt - len(state.recv_queue) - 1) & MASK
    conn.rcv_nxt = conn.snd_wl1 = conn.last_ack_sent = state.rcv_nxt
    conn.rcv_adv = state.rcv_nxt + state.rcv_wnd
    conn.rcv_buf = bytearray(state.recv_queue)
    conn.wscale_ok = bool(state.snd_wscale or state.rcv_wscale)
    conn.snd_wscale, conn.rcv_wscale = state.snd_wscale, state.rcv_wscale
    conn.sack_ok = state.sack and stack.config.sack
    conn.rack = conn.sack_ok and stack.config.loss_detection == "rack-tlp"
    conn.ts_ok, conn.ts_recent = state.timestamps, state.ts_recent
    # TCP_REPAIR does not tell the peer's last TSval: with none known, TS.Recent counts as gone
    # stale (RFC 7323 5.5), so the peer's next segment sets it instead of failing PAWS against 0.
    conn.ts_recent_time = now if state.ts_recent else now - 2 * PAWS_IDLE_LIMIT
    conn.peer_mss = state.mss + (TS_OPTION_LEN if state.timestamps else 0)
    conn.last_rcv = now
    conn._update_snd_mss()
    stack._conns[key] = conn  # noqa: SLF001 - the stack's table; adoption is the one way in besides a handshake
    if peer_mac is not None:
        core._next_hop[key] = peer_mac  # noqa: SLF001
    core._pending_apps[key] = APPS[app]  # noqa: SLF001 - served like an active open once "connected"
    stack.events.append(Connected(key))
    if state.recv_queue:
        stack.events.append(DataReceived(key, len(state.recv_queue)))
    conn.output(now)  # what the host had queued or in flight leaves again from here
    stack._after(conn)  # noqa: SLF001 - queue its timers
    core.counters.inc("conn_adopted")
    core._drain(now)  # noqa: SLF001 - deliver the events, turn segments into frames
    return key


def export(core: EndpointCore, local: str, remote: str, now: float) -> MigratedState:
    """Read an engine connection's state and drop it without a FIN or RST: the host takes it from here."""
    key = four_tuple(local, remote)
    stack = core.stack
    conn = stack.connection(key)
    if conn is None or conn.state is not ESTABLISHED:
        raise ValueError(f"export: the engine has no established connection {local} - {remote}")
    app = core.apps.get(key)
    pending = b"".join(getattr(app, "pending", ()))  # what an application holds back for a full send buffer
    unsent_from = conn.snd_una - conn.snd_buf_seq
    send_queue = bytes(conn.snd_buf[max(0, unsent_from):]) + pending
    state = MigratedState(
        local=local, remote=remote, snd_nxt=(conn.snd_buf_seq + len(conn.snd_buf) + len(pending)) & MASK,
        rcv_nxt=conn.rcv_nxt & MASK, send_queue=send_queue, recv_queue=bytes(conn.rcv_buf),
        snd_wnd=conn.snd_wnd, rcv_wnd=max(0, conn.rcv_adv - conn.rcv_nxt), mss=conn.snd_mss,
        snd_wscale=conn.snd_wscale, rcv_wscale=conn.rcv_wscale, sack=conn.sack_ok, timestamps=conn.ts_ok,
        tsval=conn.host.ts_clock(now), ts_recent=conn.ts_recent)
    del stack._conns[key]  # noqa: SLF001 - gone without a word on the wire
    conn.state, conn.scheduled = CLOSED, INF
    core.apps.pop(key, None)
    core._forget(key)  # noqa: SLF001
    core.resources.release(key)
    core.counters.inc("conn_exported")
    return state


def migration_request(core: EndpointCore, request: dict[str, Any], now: float) -> dict[str, Any]:
    """The control socket's `adopt` and `export` verbs.

        {"cmd": "adopt", "state": {MigratedState fields, queues in hex}, "app": "echo", "peer_mac": "02:..."}
        {"cmd": "export", "local": "10.0.0.2:5100", "remote": "10.0.0.1:40000"} -> {"state": {...}}
    """
    if request["cmd"] == "adopt":
        state = request.get("state")
        if not isinstance(state, dict):
            raise ValueError("adopt: 'state' must be an object of the connection's fields")
        mac = request.get("peer_mac")
        key = adopt(core, MigratedState.from_json(state), str(request.get("app", "echo")), now,
                    bytes.fromhex(mac.replace(":", "")) if isinstance(mac, str) else None)
        return {"adopted": f"{ipaddress.ip_address(key.local_ip)}:{key.local_port}"}
    local, remote = request.get("local"), request.get("remote")
    if not isinstance(local, str) or not isinstance(remote, str):
        raise ValueError("export: 'local' and 'remote' must be \"ip:port\" strings")
    return {"state": export(core, local, remote, now).to_json()}
