"""Coverage-guided fuzzing of the endpoint with atheris (libFuzzer for Python), beside the
structure-aware generator: libFuzzer mutates the bytes, coverage of toe_engine steers it.

Each input is a short script run on a fresh engine that already has one established echo
connection: a sequence of frames, each either raw bytes or a segment of that connection
whose flags, sequence and acknowledgment offsets, window, options and payload come from
the input. Any exception, and any broken invariant at the end, is a crash libFuzzer saves
as a reproducer file. atheris is optional: `available()` says whether it is installed.
"""
from __future__ import annotations

import importlib.util
import sys
from typing import Any

from toe_engine.checksum import IPPROTO_TCP
from toe_engine.codec import build_ip_frame, parse_frame
from toe_engine.endpoint import EndpointConfig, EndpointCore
from toe_engine.fuzz.generator import raw_tcp_segment
from toe_engine.fuzz.invariants import DropTally, check
from toe_engine.fuzz.peer import WirePeer
from toe_engine.resources import ExhaustionPolicy, ResourceConfig
from toe_engine.segment import TcpOptions
from toe_engine.testing import IP_A, IP_B, MAC_A, MAC_B

MAX_FRAMES = 16
SERVICES = {7: "echo", 9: "discard", 19: "chargen", 80: "http"}


def available() -> bool:
    return importlib.util.find_spec("atheris") is not None


def _engine(policy: str) -> tuple[EndpointCore, WirePeer]:
    resources = ResourceConfig(capacity=4, policy=ExhaustionPolicy.parse(policy))
    core = EndpointCore(EndpointConfig(MAC_B, (IP_B,), services=dict(SERVICES), resources=resources, secret=b"guided"))
    peer = WirePeer(core, MAC_A, IP_A, MAC_B, IP_B, record=False)
    flow = peer.open(7, 40000, iss=1000, options=TcpOptions(mss=1460, wscale=7, sack_permitted=True,
                                                            timestamp=(1, 0)))
    peer.send(flow, 0x18, b"0123456789" * 10)
    return core, peer


def run_input(data: bytes, policy: str = "fallback") -> None:
    """Play one input on a fresh engine; raises on an engine exception or a broken invariant."""
    import atheris

    fdp: Any = atheris.FuzzedDataProvider(data)
    core, peer = _engine(policy)
    flow = next(iter(peer.flows.values()))
    drops = DropTally()
    for _ in range(MAX_FRAMES):
        if fdp.remaining_bytes() < 2:
            break
        if fdp.ConsumeBool():
            frame = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 1600))
        else:
            options = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 10) * 4)
            dport = 7 if fdp.ConsumeIntInRange(0, 3) else fdp.ConsumeIntInRange(0, 65535)
            tcp = raw_tcp_segment(IP_A, IP_B, flow.sport, dport,
                                  flow.snd_nxt + fdp.ConsumeIntInRange(-70000, 70000),
                                  (flow.rcv_nxt or 0) + fdp.ConsumeIntInRange(-70000, 70000),
                                  fdp.ConsumeIntInRange(0, 255), fdp.ConsumeIntInRange(0, 65535), options,
                                  b"p" * fdp.ConsumeIntInRange(0, 3000))
            frame = bytes(build_ip_frame(MAC_A, MAC_B, IP_A, IP_B, IPPROTO_TCP, tcp))
        drops.add(parse_frame(frame).drop_reason)
        peer.deliver(frame, advance=fdp.ConsumeIntInRange(0, 3000) / 1000)
        deadline = core.next_deadline()
        if deadline is not None and deadline <= peer.now:
            core.on_timer(peer.now)
            peer.collect()
    peer.mismatches = peer.wrong_mac = 0  # raw frames may carry any bytes on the flow
    broken = check(core, [peer], drops)
    if broken:
        raise AssertionError(broken[0])


def main(argv: list[str], policy: str = "fallback") -> None:
    """Run libFuzzer with `argv` (e.g. -runs=N -seed=S -artifact_prefix=DIR/); does not return."""
    import atheris

    atheris.instrument_all()
    atheris.Setup([sys.argv[0], *argv], lambda data: run_input(data, policy))
    atheris.Fuzz()
