"""tcptrace-style time-sequence plots from a capture, drawn with matplotlib (Agg, no display).

Data segments are vertical bars from their first to last sequence number at their send
time; retransmissions (segments that do not advance the highest sequence sent) are red;
the receiver's cumulative ACK is a step line and its SACK blocks are green bars.
Sequence numbers are relative to the first one seen, with 32-bit wrap handled.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .wire import TcpFrame, tcp_frames  # noqa: E402

SEQ_MOD = 1 << 32


def busiest_flow(frames: list[TcpFrame]) -> tuple[str, int, str, int] | None:
    """The (src, sport, dst, dport) direction that carried the most payload."""
    volume: Counter[tuple[str, int, str, int]] = Counter()
    for f in frames:
        volume[f.flow] += f.payload_len
    if not volume or volume.most_common(1)[0][1] == 0:
        return None
    return volume.most_common(1)[0][0]


def _unwrap(value: int, base: int) -> int:
    """`value - base` in the sequence space, as a signed offset (handles wrap)."""
    diff = (value - base) % SEQ_MOD
    return diff - SEQ_MOD if diff >= SEQ_MOD // 2 else diff


def time_sequence(pcap: Path | str, out: Path | str, flow: tuple[str, int, str, int] | None = None,
                  title: str | None = None) -> dict[str, int | float]:
    """Draw the time-sequence plot of `flow` (default: the busiest direction) to `out` (PNG).

    Returns figures about the flow: segments, bytes, retransmissions, SACKed ACKs, duration.
    """
    frames = tcp_frames(pcap)
    flow = flow or busiest_flow(frames)
    if flow is None:
        raise ValueError(f"{pcap} holds no TCP payload to plot")
    src, sport, dst, dport = flow
    data = [f for f in frames if f.flow == flow and f.payload_len > 0]
    acks = [f for f in frames if f.flow == (dst, dport, src, sport) and "A" in f.flags]
    t0 = min(f.ts for f in frames)
    base = data[0].seq if data else 0
    fig, ax = plt.subplots(figsize=(9, 5), dpi=100)
    highest = None
    retransmits = 0
    sent: list[tuple[float, int, int]] = []
    resent: list[tuple[float, int, int]] = []
    for f in data:
        lo = _unwrap(f.seq, base)
        hi = lo + f.payload_len
        is_retransmit = highest is not None and hi <= highest
        retransmits += is_retransmit
        (resent if is_retransmit else sent).append((f.ts - t0, lo, hi))
        highest = hi if highest is None else max(highest, hi)
    if sent:
        ax.vlines(*zip(*sent), colors="black", linewidth=1.2, label="data")
    if resent:
        ax.vlines(*zip(*resent), colors="red", linewidth=2.0, label="retransmission")
        ax.plot([t for t, _, _ in resent], [hi for _, _, hi in resent], "r+", markersize=6)
    sacked = 0
    if acks:
        ack_t = [f.ts - t0 for f in acks]
        ack_v = [_unwrap(f.ack, base) for f in acks]
        ax.step(ack_t, ack_v, where="post", color="tab:blue", linewidth=1.0, label="ACK")
        blocks = [(f.ts - t0, _unwrap(left, base), _unwrap(right, base)) for f in acks for left, right in f.sack]
        sacked = sum(bool(f.sack) for f in acks)
        if blocks:
            ax.vlines(*zip(*blocks), colors="tab:green", linewidth=2.0, label="SACK")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("relative sequence number (bytes)")
    ax.set_title(title or f"{src}:{sport} -> {dst}:{dport}")
    ax.legend(loc="upper left")
    ax.grid(True, alpha=0.3)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    duration = (data[-1].ts - data[0].ts) if data else 0.0
    return {"segments": len(data), "bytes": sum(f.payload_len for f in data), "retransmissions": retransmits,
            "acks": len(acks), "acks_with_sack": sacked, "duration_s": round(duration, 6)}
