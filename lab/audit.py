"""`toelab audit [LAB]`: offload features and counters of every interface and engine.

Like `ethtool -k` and `ethtool -S` for each interface of each node, plus the engines'
own counters, and a verdict on whether an advertised offload actually happened on the
traffic seen so far: TSO or GSO on but every packet sent no bigger than the MTU, or an
engine told to hand segmentation to the device that never sent a super-frame.
Works from any process: it reads the lab's state record and enters its namespaces.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .state import STATE_DIR, LabRecord

MIN_PACKETS = 50  # below this a verdict would be a guess


@dataclass
class InterfaceAudit:
    node: str
    iface: str
    mtu: int
    features: dict[str, bool]
    stats: dict[str, int]
    findings: list[str] = field(default_factory=list)


def observe(iface: InterfaceAudit) -> None:
    """Judge whether advertised transmit offloads showed in the counters.

    A veth counts a GSO packet once with all its bytes, so an average packet over the MTU
    proves super-frames left; a well-used interface whose average stays under it did not
    use TSO/GSO, whatever its features say.
    """
    packets, sent = iface.stats.get("tx_packets", 0), iface.stats.get("tx_bytes", 0)
    if packets < MIN_PACKETS:
        return
    avg = sent / packets
    if (iface.features.get("tso") or iface.features.get("gso")) and avg <= iface.mtu + 14:
        big_enough = sent > 100 * iface.mtu
        if big_enough and avg > iface.mtu * 0.5:
            iface.findings.append(f"TSO/GSO on but no super-frames left (average {avg:.0f} B per packet, MTU {iface.mtu})")
    if avg > iface.mtu + 14 and not (iface.features.get("tso") or iface.features.get("gso")):
        iface.findings.append(f"frames above the MTU left with TSO/GSO off (average {avg:.0f} B)")


def audit_interfaces(record: LabRecord) -> list[InterfaceAudit]:
    from .netlink import NamespaceLink

    out = []
    prefix = f"{record.lab_id}-"
    for namespace in record.namespaces:
        node = namespace.removeprefix(prefix)
        link = NamespaceLink(namespace)
        try:
            for msg in link.ipr.get_links():
                name = msg.get_attr("IFLA_IFNAME")
                if name == "lo":
                    continue
                stats = msg.get_attr("IFLA_STATS64") or {}
                audit = InterfaceAudit(node, name, msg.get_attr("IFLA_MTU"), link.features.read(name),
                                       {k: int(stats.get(k, 0)) for k in ("rx_packets", "tx_packets", "rx_bytes",
                                                                          "tx_bytes", "rx_dropped", "tx_dropped")})
                observe(audit)
                out.append(audit)
        finally:
            link.close()
    return out


def engine_sockets(record: LabRecord) -> dict[str, Path]:
    """node -> control socket of the engines (toe and middlebox nodes) of a lab."""
    folder = STATE_DIR / record.lab_id
    return {p.stem: p for p in sorted(folder.glob("*.sock"))} if folder.is_dir() else {}


def audit_engine(node: str, path: Path) -> tuple[dict[str, int], list[str]]:
    """An engine's counters and what they say about its offloads."""
    from toe_engine.runtime.control import control_request

    answer = control_request(str(path), {"cmd": "stats"})
    counters = {k: v for k, v in answer.get("counters", {}).items() if isinstance(v, int)}
    findings = []
    config = control_request(str(path), {"cmd": "config"}).get("config", {})
    if config.get("tx_offload") and counters.get("tx_frames", 0) >= MIN_PACKETS and not counters.get("tso_super_frames"):
        findings.append("engine hands segmentation to the device (tx_offload) but sent no super-frame")
    if counters.get("rx_missed_errors", 0):
        findings.append(f"{counters['rx_missed_errors']} frames dropped before the engine saw them (rx_missed_errors): "
                        "its receive ring or socket buffer overflowed (a larger rx_ring holds more, ethtool -G)")
    if counters.get("rx_malformed", 0) or counters.get("rx_csum_errors", 0):
        findings.append(f"{counters.get('rx_malformed', 0)} malformed and {counters.get('rx_csum_errors', 0)} "
                        "bad-checksum frames counted and dropped")
    return counters, findings


def engine_connections(path: Path) -> list[dict[str, object]] | None:
    """An endpoint engine's connection table: the flows it offloaded and those it handed to the host.

    The host's socket tools (ss, /proc/net/tcp) never see an offloaded connection; this is
    where the audit shows them. None for an engine without a table (a middlebox).
    """
    from toe_engine.runtime.control import control_request

    answer = control_request(str(path), {"cmd": "conns"})
    connections = answer.get("connections") if answer.get("ok") else None
    return list(connections) if isinstance(connections, list) else None
