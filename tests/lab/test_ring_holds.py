"""A TPACKET_V3 ring nobody reads holds `RingSettings.frames_held` flood SYNs once its blocks are full, and the
kernel counts the rest as dropped: what bounds the queueing delay a SYN meets when the engine falls behind. While a
block is handed over, `held_deadline` says so, since a read stopped at its budget cannot count on poll()."""
from __future__ import annotations

import json
import sys

import pytest

from lab.lab import Lab
from lab.pytest_plugin import MakeLab
from scenarios import flood
from toe_engine.io.ring import PacketRingDriver, RingSettings

pytestmark = pytest.mark.root
BACKGROUND = 8  # frames other than the flood's that may reach h2 meanwhile


def _mac(lab: Lab, node: str) -> str:
    return str(json.loads(lab.node(node).run(["ip", "-j", "link", "show", "eth0"], check=True).stdout)[0]["address"])


@pytest.mark.parametrize("frames", [64, 256])
def test_a_full_ring_holds_what_frames_held_says_and_the_kernel_drops_the_rest(make_lab: MakeLab, frames: int) -> None:
    lab = make_lab("two_hosts")
    # Blocks retire only when full here (a 1 s timer): the unpaced flood fills the ring in milliseconds.
    settings = RingSettings(frames=frames, block_frames=64, block_usecs=1_000_000)
    held = settings.frames_held(flood.SYN_FRAME_LEN)
    sent = 3 * held
    with PacketRingDriver("eth0", lab.node("h2").netns, ring=settings) as ring:
        argv = flood.argv(iface="eth0", src_mac=_mac(lab, "h1"), dst_mac=_mac(lab, "h2"), dst=lab.address("h2"),
                          dport=7, spoof="10.99.0.0/16", rate=0, duration_s=10, max_count=sent, pool=sent)
        done = lab.node("h1").run(argv, timeout=60, check=True)
        assert flood.parse_result(done.stdout).sent == sent
        packets, drops = ring.kernel_statistics()  # before the ring is drained: the drops of a full ring
        assert ring.held_deadline() == 0.0  # blocks handed over: due at once, whatever poll() says
        first = [bytes(view[10:]) for view in ring.frames(1)]  # one block, as a read that stops at its budget
        assert 0 < len(first) < held and ring.held_deadline() == 0.0  # the next block is ours already
        got = first + [bytes(view[10:]) for view in ring.frames(10 * sent)]  # every block the kernel filled
        assert ring.held_deadline() is None  # all handed back: the kernel's readiness says when there is more
    syns = [f for f in got if len(f) == flood.SYN_FRAME_LEN and f[47] == 0x02]
    print(f"\nring of {frames} frames ({settings.blocks} blocks): holds {held} SYNs, got {len(syns)} of {len(got)} "
          f"frames, kernel: {packets} received, {drops} dropped")
    # Background frames (IPv6 neighbour discovery) are larger than a SYN, so they only take room from it.
    assert len(got) <= held and len(syns) >= held - BACKGROUND
    assert drops >= sent - held and packets >= sent
