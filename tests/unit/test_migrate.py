"""Connection migration into and out of the engine (TCP Chimney's offload and upload), sans-IO."""
from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from toe_engine.endpoint import EndpointConfig, EndpointCore
from toe_engine.runtime.migrate import MigratedState, adopt, export, migration_request

PEER_MAC = bytes.fromhex("020000000001")
STATE = MigratedState(local="10.0.0.2:5101", remote="10.0.0.1:40000", snd_nxt=0xFFFFFF00, rcv_nxt=5000,
                      send_queue=b"", recv_queue=b"unread by the host", snd_wnd=65535, rcv_wnd=65535, mss=1448,
                      snd_wscale=7, rcv_wscale=7, sack=True, timestamps=True, tsval=3_324_024_725)


def _core() -> EndpointCore:
    return EndpointCore(EndpointConfig(mac=bytes.fromhex("020000000002"), addresses=(bytes([10, 0, 0, 2]),)))


def test_an_adopted_connection_carries_on_where_the_host_left_it() -> None:
    core = _core()
    key = adopt(core, STATE, "echo", 100.0, PEER_MAC)
    assert core.stack.connection(key).state.name == "ESTABLISHED" and core.counters["conn_adopted"] == 1
    frames = [Ether(bytes(tx.frame)) for tx in core.poll_wire()]
    data = [f for f in frames if TCP in f and bytes(f[TCP].payload)]
    assert data, "the engine's echo answered the bytes the host had not read"
    first = data[0]
    assert first[Ether].dst == "02:00:00:00:00:01" and first[IP].dst == "10.0.0.1" and first[TCP].dport == 40000
    assert first[TCP].seq == STATE.snd_nxt and first[TCP].ack == STATE.rcv_nxt
    assert bytes(first[TCP].payload) == STATE.recv_queue
    tsval = dict((k, v) for k, v in first[TCP].options if isinstance(k, str))["Timestamp"][0]
    assert 0 <= tsval - STATE.tsval < 1000  # its clock goes on from the host's: the peer's PAWS keeps it


def test_export_hands_back_a_state_the_host_can_restore_and_forgets_the_connection() -> None:
    core = _core()
    key = adopt(core, STATE, "echo", 100.0, PEER_MAC)
    core.poll_wire()
    state = export(core, STATE.local, STATE.remote, 100.5)
    assert core.stack.connection(key) is None and core.counters["conn_exported"] == 1
    assert not core.poll_wire(), "no FIN and no RST on the way out"
    assert state.rcv_nxt == STATE.rcv_nxt and state.recv_queue == b""
    assert state.send_queue == STATE.recv_queue  # the echo, not yet acknowledged, goes with it
    assert state.snd_nxt == (STATE.snd_nxt + len(STATE.recv_queue)) & 0xFFFFFFFF  # wrapped past 2**32
    assert state.tsval - STATE.tsval >= 500 and (state.snd_wscale, state.rcv_wscale) == (7, 7)
    assert MigratedState.from_json(state.to_json()) == state


@pytest.mark.parametrize("request_, says", [
    ({"cmd": "adopt", "state": {"local": "10.0.0.2:1"}}, "missing field"),
    ({"cmd": "adopt", "state": {**STATE.to_json(), "local": "10.9.9.9:5101"}}, "not one of the engine's addresses"),
    ({"cmd": "adopt", "state": STATE.to_json(), "app": "nope"}, "unknown application"),
    ({"cmd": "export", "local": "10.0.0.2:5101", "remote": "10.0.0.1:1"}, "no established connection"),
    ({"cmd": "export", "local": 5}, "must be"),
])
def test_bad_migration_requests_are_one_sentence(request_: dict, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        migration_request(_core(), request_, 1.0)
