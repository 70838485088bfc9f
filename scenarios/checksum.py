"""`checksum`: the target drops segments with bad TCP checksums and sends correct ones.

Receive side (MUST-3), with receive checksum offload on and off on the target's interface:
a SYN with a bad checksum draws no SYN-ACK, and a data segment with a bad checksum is not
acknowledged. Both are judged against a fence, never a quiet period: after the bad SYN
comes a good one, whose SYN-ACK arrives after any answer to the bad one would have; after
the bad data segment comes a good segment just beyond it, which draws an immediate
duplicate ACK that says whether the bad one was taken. The target's checksum-error counter
must grow by exactly the number of bad segments.

Send side (MUST-2): the target sends a bulk transfer to a kernel client, captured where it
arrives. With transmit checksum offload off (so segmentation happens in software) every
frame must carry a correct checksum and fit the MSS; with TSO and checksum offload on, veth
passes super-frames whose checksum is left partial for an offload that never runs, and no
frame may carry a checksum that is neither correct nor such a partial seed.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from pydantic import Field
from scapy.layers.inet import TCP

from .framework import Check, RunContext, ScenarioParams, scenario
from .peer import Peer, PeerTimeout, seq_add
from .plots import time_sequence
from .targets import delta, reading
from .transfer import download, wait_for_capture
from .wire import ChecksumState, tcp_frames

#: Fewer audited frames than this say too little to pass. tcpdump drops frames under load at
#: random, not by checksum state, so the audit samples the stream; its coverage is reported.
MIN_AUDITED_FRAMES = 8
DOWNLOAD_LIMIT_S = 20.0


class ChecksumParams(ScenarioParams):
    mtu: int = Field(1500, ge=576, le=9000, description="MTU of the link")
    bad_segments: int = Field(3, ge=1, le=100, description="bad-checksum segments sent per offload setting")
    transfer_kib: int = Field(512, ge=64, le=65536, description="KiB the target sends for the output audit")


@scenario("checksum", purpose="Bad TCP checksums are dropped and unacknowledged (rx offload on and off); "
          "the target's segmented output carries correct checksums.",
          topology="two_hosts", params=ChecksumParams, topology_params=lambda p: {"mtu": p.mtu},
          covers=("MUST-2", "MUST-3"), claims=("TOE-5", "TOE-12"))
def run(ctx: RunContext) -> Iterator[Check]:
    iface = ctx.iface(ctx.server)
    for rx_on in (True, False):
        ctx.lab.set_features(ctx.server, iface, rx_csum=rx_on)
        variant = f"rx_csum={'on' if rx_on else 'off'}"
        ctx.progress(f"bad checksums in, {variant}")
        yield from _bad_syn_ignored(ctx, variant)
        yield from _bad_data_dropped(ctx, variant)
    ctx.lab.set_features(ctx.server, iface, rx_csum=True)
    for offloaded in (False, True):
        ctx.progress(f"bulk output, {'tso on' if offloaded else 'tx checksum offload off'}")
        yield _output_checksums(ctx, offloaded)


def _csum_errors(ctx: RunContext) -> int:
    return reading(ctx.target.counters(), ctx.target.standard_counters["rx_csum_errors"])


def _bad_syn_ignored(ctx: RunContext, variant: str) -> Iterator[Check]:
    n = ctx.params.bad_segments
    before = _csum_errors(ctx)
    with Peer(ctx.lab, ctx.client, ctx.address(ctx.server), ctx.port("discard"), rng=ctx.rng) as peer:
        bad_isn = seq_add(peer.isn, 1 << 20)
        for _ in range(n):
            peer.send(peer.segment("S", seq=bad_isn, options=[("MSS", 1460)], bad_checksum=True))
        try:
            peer.handshake()
        except PeerTimeout as exc:
            yield ctx.check(f"bad-csum-syn-ignored[{variant}]", "MUST-3", False,
                            f"after {n} bad-checksum SYNs the good SYN got no SYN-ACK: {exc}")
            return
        answers = [f for f in peer.received if f[TCP].ack == seq_add(bad_isn, 1)]
        peer.abort()
    counted = _csum_errors(ctx) - before
    yield ctx.check(f"bad-csum-syn-ignored[{variant}]", "MUST-3", not answers,
                    f"{n} SYNs with a bad checksum drew {len(answers)} answers before the good SYN's SYN-ACK",
                    numbers={"bad_syns": n, "answers": len(answers)})
    yield ctx.check(f"bad-csum-syn-counted[{variant}]", "MUST-3", counted == n,
                    f"the checksum-error counter grew by {counted} for {n} bad SYNs",
                    counters={"rx_csum_errors_delta": counted})


def _bad_data_dropped(ctx: RunContext, variant: str) -> Iterator[Check]:
    n = ctx.params.bad_segments
    first, second = bytes(range(100)), bytes(range(100, 200))
    with Peer(ctx.lab, ctx.client, ctx.address(ctx.server), ctx.port("discard"), rng=ctx.rng) as peer:
        peer.handshake()
        start = peer.snd_nxt
        before = _csum_errors(ctx)
        for _ in range(n):
            peer.send_data(first, bad_checksum=True)
        peer.send_data(second, seq=seq_add(start, len(first)))
        try:
            fence = peer.expect("A", payload=False).getlayer(TCP).ack
            peer.send_data(first, seq=start)
            repaired = peer.expect("A", ack=seq_add(start, len(first) + len(second)))[TCP].ack
        except PeerTimeout as exc:
            yield ctx.check(f"bad-csum-data-dropped[{variant}]", "MUST-3", False, f"the target stopped answering: {exc}",
                            integrity=True)
            return
        finally:
            peer.abort()
    counted = _csum_errors(ctx) - before
    rel = (fence - start) % (1 << 32)
    yield ctx.check(f"bad-csum-data-dropped[{variant}]", "MUST-3", fence == start,
                    f"after {n} bad-checksum copies of bytes 0-99 and a good segment of bytes 100-199 the target "
                    f"acknowledged up to byte {rel} (0 means the bad copies were dropped)",
                    numbers={"ack_after_fence_rel": rel, "ack_after_repair_rel": (repaired - start) % (1 << 32)},
                    integrity=True)
    yield ctx.check(f"bad-csum-data-counted[{variant}]", "MUST-3", counted == n,
                    f"the checksum-error counter grew by {counted} for {n} bad data segments",
                    counters={"rx_csum_errors_delta": counted})


def _output_checksums(ctx: RunContext, offloaded: bool) -> Check:
    """Capture a bulk transfer from the target where it arrives and audit every frame's checksum."""
    variant = "tso=on" if offloaded else "tx_csum=off"
    iface = ctx.iface(ctx.server)
    ctx.lab.set_features(ctx.server, iface, tx_csum=offloaded, tso=offloaded)
    port, nbytes = ctx.port("chargen"), ctx.params.transfer_kib * 1024
    before = ctx.target.counters()
    capture = ctx.capture(ctx.client, ctx.iface(ctx.client), f"tcp port {port}", name=f"chargen-{variant}.pcap")
    try:
        received = download(ctx.lab, ctx.client, ctx.address(ctx.server), port, nbytes, DOWNLOAD_LIMIT_S).bytes
        # Audit what arrived, not what tcpdump had read when it was stopped.
        wait_for_capture(capture.path, lambda frames: sum(f.payload_len for f in frames if f.sport == port) >= received,
                         3.0)
    finally:
        pcap = capture.stop()
    out_segs = delta(before, ctx.target.counters(), ctx.target.standard_counters["out_segments"])
    data = [f for f in tcp_frames(pcap) if f.sport == port and f.payload_len > 0]
    states = Counter(f.checksum.value for f in data)
    mss = ctx.params.mtu - 40
    audited = sum(f.payload_len for f in data)
    span = max(((f.seq - data[0].seq) % (1 << 32) + f.payload_len for f in data), default=0)
    coverage = min(1.0, audited / span) if span else 0.0
    oversize = sum(f.payload_len > mss for f in data)
    plot = ctx.artifact(f"chargen-{variant}.png")
    figures = time_sequence(pcap, plot, title=f"{ctx.target.name}: chargen, {variant}")
    numbers = {"frames": len(data), "bytes_received": received, "bytes_audited": audited, "stream_span": span,
               "capture_coverage": round(coverage, 3), "oversize_frames": oversize,
               **{f"checksum_{s.value}": states.get(s.value, 0) for s in ChecksumState},
               "retransmissions": figures["retransmissions"]}
    wrong = states.get(ChecksumState.WRONG.value, 0)
    partial = states.get(ChecksumState.PARTIAL.value, 0)
    unverified = states.get(ChecksumState.TRUNCATED.value, 0)  # cut short in the capture: nothing audited
    if offloaded:
        ok = received >= nbytes and len(data) >= MIN_AUDITED_FRAMES and wrong == 0 and unverified == 0
        sentence = (f"with TSO on, {len(data)} frames ({oversize} larger than the {mss}-byte MSS) carried "
                    f"{states.get('correct', 0)} correct, {partial} offload-pending partial and {wrong} wrong checksums")
    else:
        ok = (received >= nbytes and len(data) >= MIN_AUDITED_FRAMES and wrong == 0 and partial == 0
              and oversize == 0 and unverified == 0)
        sentence = (f"with checksum offload off, {len(data)} segments carried {states.get('correct', 0)} correct, "
                    f"{partial} partial and {wrong} wrong checksums, {oversize} above the {mss}-byte MSS")
    return ctx.check(f"output-checksums[{variant}]", "MUST-2", ok, sentence + f"; {received} of {nbytes} bytes arrived, the capture holds {coverage:.0%} of the stream it saw",
                     pcaps=[pcap], plots=[plot], counters={**out_segs}, numbers=numbers)
