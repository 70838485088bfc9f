"""Per-connection TCP tunables, with defaults close to Linux's."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Final

MAX_WSCALE: Final = 14
MAX_DELAYED_ACK: Final = 0.5
#: How loss is detected: RACK-TLP (RFC 8985) as modern stacks do, or duplicate ACKs only, as a simple TOE.
LOSS_DETECTION = ("rack-tlp", "dupack")


@dataclass(slots=True)
class TcpConfig:
    """Everything a connection is configured with; validated on construction."""

    mss: int = 1460  # our MTU-derived MSS: advertised in SYNs and the cap on what we send
    rcv_buf: int = 256 * 1024
    snd_buf: int = 256 * 1024
    wscale: int | None = 7  # shift we offer in our SYN; None: do not offer window scaling
    sack: bool = True
    timestamps: bool = True
    nodelay: bool = False  # True disables Nagle (MUST-17)
    delayed_ack: float = 0.04  # MUST-40: below 0.5 s; 0 means ACK every segment
    rto_initial: float = 1.0
    rto_min: float = 1.0
    rto_max: float = 60.0
    time_wait: float = 60.0  # 2*MSL
    fin_wait2_timeout: float = 60.0  # only for connections the application has closed
    syn_retries: int = 6  # R2 for a SYN, as Linux's: 1+2+4+8+16+32+60 s (rto_max) = 123 s, short of MUST-23's 3 minutes; 8 gives 243 s
    synack_retries: int = 3  # embryonic (SYN-RECEIVED) entries die after this many
    retries2: int = 15  # R2 for data (MUST-20)
    keepalive: bool = False  # MUST-25: off by default
    keepalive_idle: float = 7200.0  # MUST-28: at least two hours by default
    keepalive_interval: float = 75.0
    keepalive_probes: int = 9
    user_timeout: float = 0.0  # TCP_USER_TIMEOUT in seconds: abort once data waits this long unacknowledged; 0: off
    congestion: str = "newreno"
    loss_detection: str = "rack-tlp"  # "rack-tlp" (RFC 8985, with SACK) or "dupack" (RFC 5681/6675 only)
    frto: bool = True  # RFC 5682 (SACK-enhanced, with SACK only): tell a spurious retransmission timeout from a real one
    initial_cwnd_segments: int = 10
    dupthresh: int = 3
    challenge_ack_limit: int = 1000  # per second, for the whole stack (RFC 5961 section 7)
    persist_max: float = 60.0
    tso_segments: int = 1  # new data may leave in segments of up to this many MSS (for TSO)
    tso_defer: bool = True  # with TSO, a window opened by a little waits for the next ACK (output._tso_defer)
    min_pmtu: int = 552  # IPv4 path MTU floor, as Linux's net.ipv4.route.min_pmtu
    invalid_ratelimit: float = 0.5  # s between SYN-ACKs repeated for duplicate SYNs (tcp_invalid_ratelimit)
    drop_synfin: bool = True  # a SYN with FIN is no connection request (Linux; FreeBSD's drop_synfin)
    header_prediction: bool = True  # in-order segments take the short path (tcp/input.py); False: all the full one

    def __post_init__(self) -> None:
        if not 88 <= self.mss <= 65495:
            raise ValueError(f"mss {self.mss} out of range 88..65495")
        if self.wscale is not None and not 0 <= self.wscale <= MAX_WSCALE:
            raise ValueError(f"wscale {self.wscale} out of range 0..{MAX_WSCALE}")
        if not 0 <= self.delayed_ack < MAX_DELAYED_ACK:
            raise ValueError(f"delayed_ack {self.delayed_ack} must be below {MAX_DELAYED_ACK} s (MUST-40)")
        if self.rcv_buf < self.mss or self.snd_buf < 1:
            raise ValueError("buffers must hold at least one segment")
        if self.wscale is None and self.rcv_buf > 65535:
            raise ValueError("rcv_buf above 65535 needs window scaling")
        if self.wscale is not None and self.rcv_buf > (65535 << self.wscale):
            raise ValueError(f"rcv_buf {self.rcv_buf} does not fit a window with shift {self.wscale}")
        if not 1 <= self.tso_segments or self.tso_segments * self.mss > 65535 - 120:
            raise ValueError(f"tso_segments {self.tso_segments} x mss {self.mss} does not fit a 64 KiB frame")
        if not 0 < self.rto_min <= self.rto_initial <= self.rto_max:
            raise ValueError("need 0 < rto_min <= rto_initial <= rto_max")
        if self.loss_detection not in LOSS_DETECTION:
            raise ValueError(f"loss_detection {self.loss_detection!r} is not one of {', '.join(LOSS_DETECTION)}")
        if not 68 <= self.min_pmtu <= 65535:
            raise ValueError(f"min_pmtu {self.min_pmtu} out of range 68..65535")
        if self.invalid_ratelimit < 0:
            raise ValueError("invalid_ratelimit must be zero or more")
        if self.time_wait < 0 or self.keepalive_idle <= 0 or self.keepalive_interval <= 0:
            raise ValueError("timeouts must be positive")
