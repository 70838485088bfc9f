"""Loss recovery measured in memory: a download between two engine cores through seeded loss.

Engine core B serves chargen; core A downloads `size` bytes from it and closes. Both
directions go through `Impairer`s with the same loss (random, or Gilbert-Elliott bursts), on
the fake clock of the frame harness, so a run is exact and repeatable. What it reports is the
sender's recovery: how many retransmission timeouts fired, how long the transfer sat idle
waiting for them (from the sender's last frame out to the timer), and the fast, RACK
and TLP retransmissions, beside the simulated time to complete, and what each data RTO found
(the sender's RTO cause counters: a lost probe or retransmission, too few segments in flight
for duplicate ACKs, a repeat, or none of these).

    python -m toe_engine.loss_study            # the standard table, seed 1, 1 MiB
    python -m toe_engine.loss_study --size 3145728 --seed 2 --loss-detection dupack
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field, replace

from toe_engine.apps.base import App
from toe_engine.endpoint import EndpointConfig, EndpointCore
from toe_engine.impair import GilbertElliott, Impairer, ImpairmentSpec
from toe_engine.tcp.config import TcpConfig
from toe_engine.testing import IP_A, IP_B, MAC_A, MAC_B, device_transmit

CHARGEN_PORT = 19
MIB = 1 << 20
#: The sender's counters that say what each data RTO found (toe_engine.tcp.timeouts.Timeouts._rto_cause).
RTO_CAUSES = ("rto_repeated", "rto_lost_retransmit", "rto_lost_probe", "rto_few_in_flight", "rto_other")
#: The lab's engine endpoint settings for bulk transfers (toe_engine.runtime.endpoint.DEFAULT_TCP).
LAB_TCP = TcpConfig(rcv_buf=4 * MIB, snd_buf=4 * MIB, wscale=8, delayed_ack=0.005, tso_segments=44,
                    rto_min=0.2, rto_initial=1.0)
#: The loss scenario's settings: random loss in percent, and its Gilbert-Elliott burst setting.
SETTINGS: dict[str, ImpairmentSpec] = {
    "loss=0%": ImpairmentSpec(delay_ms=1),
    "loss=1%": ImpairmentSpec(delay_ms=1, loss=1),
    "loss=5%": ImpairmentSpec(delay_ms=1, loss=5),
    "loss=10%": ImpairmentSpec(delay_ms=1, loss=10),
    "gemodel p=1% r=50%": ImpairmentSpec(delay_ms=1, gemodel=GilbertElliott(p=1, r=50)),
}


@dataclass(slots=True)
class StudyResult:
    """One download: whether it completed, its simulated time and the sender's recovery counters."""

    setting: str
    completed: bool
    seconds: float
    rtos: int
    rto_wait_s: float
    fast_retransmits: int
    rack_retransmits: int
    tlp_probes: int
    retransmits: int
    rto_causes: dict[str, int] = field(default_factory=dict)  # data RTOs by cause (RTO_CAUSES), the nonzero ones

    @property
    def rto_wait_share(self) -> float:
        return self.rto_wait_s / self.seconds if self.seconds else 0.0


class _Sink(App):
    """Reads until it has `want` bytes, then says so in `got_all` (on its class) and closes."""

    want = 0
    got_all = False

    def on_data(self, data: bytes | bytearray | memoryview) -> None:
        super().on_data(data)
        if self.received >= self.want and not self.got_all:
            type(self).got_all = True
            self.conn.close()


def download(spec: ImpairmentSpec, size: int = MIB, seed: int = 1, tcp: TcpConfig = LAB_TCP,
             setting: str = "", limit_s: float = 600.0, receiver: TcpConfig | None = None) -> StudyResult:
    """Download `size` bytes from B's chargen to A with `spec` applied in both directions; A runs
    `receiver` (default: `tcp`, as B does)."""
    server = EndpointCore(EndpointConfig(MAC_B, (IP_B,), services={CHARGEN_PORT: "chargen"}, tcp=tcp,
                                         secret=b"b" + seed.to_bytes(8, "big")))
    client = EndpointCore(EndpointConfig(MAC_A, (IP_A,), services={}, tcp=receiver or tcp,
                                         secret=b"a" + seed.to_bytes(8, "big")))
    client.neighbors.learn(IP_B, MAC_B)
    ab, ba = Impairer(spec, seed), Impairer(spec, seed + 1)
    sink = type("Sink", (_Sink,), {"want": size})
    now = 0.0
    last_activity = 0.0  # when the sender last put a frame on the wire
    rto_wait = 0.0
    client.connect(IP_A, IP_B, CHARGEN_PORT, sink, now)

    def move() -> None:
        nonlocal last_activity
        moved = True
        while moved:
            moved = False
            for core, wire in ((client, ab), (server, ba)):
                for tx in core.poll_wire():
                    moved = True
                    if core is server:
                        last_activity = now
                    for frame in device_transmit(tx):
                        wire.submit(frame, now)
            for wire, core in ((ab, server), (ba, client)):
                for frame in wire.poll(now):
                    moved = True
                    core.from_wire(frame, now)

    move()
    finished_at = None
    while True:
        if sink.got_all:
            finished_at = now
            break
        deadlines = [d for d in (ab.next_deadline(), ba.next_deadline(), client.next_deadline(),
                                 server.next_deadline()) if d is not None]
        if not deadlines or min(deadlines) > limit_s:
            break
        now = max(now, min(deadlines))
        client.on_timer(now)
        before = server.counters["rto_expired"]
        server.on_timer(now)
        if server.counters["rto_expired"] > before:
            rto_wait += now - last_activity
        move()
    c = server.counters
    return StudyResult(setting, finished_at is not None, finished_at if finished_at is not None else now,
                       c["rto_expired"], rto_wait, c["fast_retransmits"], c["rack_retransmits"],
                       c["tlp_probes"], c["retransmits"], {name: c[name] for name in RTO_CAUSES if c[name]})


def study(size: int = MIB, seed: int = 1, tcp: TcpConfig = LAB_TCP) -> list[StudyResult]:
    """Every standard setting, in order."""
    return [download(spec, size, seed, tcp, name) for name, spec in SETTINGS.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=MIB, help="bytes to download (default 1 MiB)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--loss-detection", choices=("rack-tlp", "dupack"), default=None,
                        help="the engine's loss detection (default: TcpConfig's)")
    args = parser.parse_args(argv)
    tcp = LAB_TCP
    if args.loss_detection is not None:
        tcp = replace(tcp, loss_detection=args.loss_detection)
    mib = args.size / MIB
    print(f"{'setting':<20} {'done':>5} {'time s':>8} {'RTOs':>5} {'RTO/MiB':>8} {'RTO wait s':>10} {'wait %':>7}"
          f" {'fast':>5} {'rack':>5} {'tlp':>5} {'rtx':>5}  data RTOs by cause")
    for r in study(args.size, args.seed, tcp):
        print(f"{r.setting:<20} {str(r.completed):>5} {r.seconds:8.3f} {r.rtos:5d} {r.rtos / mib:8.2f}"
              f" {r.rto_wait_s:10.3f} {100 * r.rto_wait_share:6.1f}% {r.fast_retransmits:5d}"
              f" {r.rack_retransmits:5d} {r.tlp_probes:5d} {r.retransmits:5d}  "
              + ", ".join(f"{k} {v}" for k, v in sorted(r.rto_causes.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
