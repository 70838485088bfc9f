"""`fingerprint`: what scanners conclude about the target, against the host stack of the same node.

The server gets host-stack services on ports the engine does not serve
(`scenarios.host_side.HOST_PORTS`), so one node answers with two stacks on `toe` and with one on
`kernel`. From the client, three readings compare a service port (9: the engine's on `toe`)
with a host port (5009):

- nmap's OS detection (`nmap -O`) run twice, each time with one of the two open ports and
  the same closed port: its conclusions and the test fields of its fingerprints (SEQ: ISN
  and IP ID generation; OPS/WIN: options and windows; ECN; T1-T7: replies to odd probes);
- p0f reading the handshakes of one connection to each port from a capture: its SYN-ACK
  signatures (TTL, options layout, window and scale, quirks);
- toelab's own reading of the same two SYN-ACKs: TTL, DF, IP ID, window, options in order.

On `kernel` both ports are one stack, so the two readings must agree (fields that vary from
scan to scan, like nmap's ISN rate estimates, are left out of the comparison and reported);
on `toe` the claim (TOE-1) is borne out when they differ, and the differing fields are named.
"""
from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from pathlib import Path

from .framework import Check, RunContext, scenario
from .host_side import HOST_PORTS, connects, host_services
from .wire import tcp_frames

SERVICE_PORT = 9
CLOSED_PORT = 1
#: nmap fingerprint fields that change from scan to scan on one stack, or name the scan itself.
VOLATILE = frozenset({"SCAN", "SEQ.SP", "SEQ.ISR", "SEQ.GCD", "SEQ.TS"})
_OSMATCH = re.compile(r'<osmatch name="([^"]+)" accuracy="(\d+)"')
_FINGERPRINT = re.compile(r'<osfingerprint fingerprint="([^"]+)"')
_TEST = re.compile(r"([A-Z0-9]+)\(([^)]*)\)")


def nmap_fingerprint(text: str) -> dict[str, str]:
    """nmap's OS fingerprint (`SEQ(SP=104%GCD=1...)OPS(...)`, wrapped in `OS:` lines) as `TEST.FIELD` -> value."""
    body = "".join(line.removeprefix("OS:") for line in html.unescape(text).splitlines())
    fields: dict[str, str] = {}
    for test, values in _TEST.findall(body):
        for item in values.split("%"):
            name, _, value = item.partition("=")
            if name:
                fields[f"{test}.{name}"] = value
    return fields


def nmap_result(xml: str) -> tuple[str, dict[str, str]]:
    """nmap -oX output: its best OS match (with accuracy) or that it found none, and its fingerprint."""
    match = _OSMATCH.search(xml)
    fingerprint = _FINGERPRINT.search(xml)
    conclusion = f"{match.group(1)} ({match.group(2)} %)" if match else "no OS match"
    return conclusion, nmap_fingerprint(fingerprint.group(1)) if fingerprint else {}


def differing(a: dict[str, str], b: dict[str, str], ignore: frozenset[str] = frozenset()) -> list[str]:
    """Fields whose values differ (or that only one side has), `ignore`d ones and their tests left out."""
    out = []
    for key in sorted(set(a) | set(b)):
        if key in ignore or key.split(".")[0] in ignore:
            continue
        if a.get(key) != b.get(key):
            out.append(f"{key}: {a.get(key, '-')} vs {b.get(key, '-')}")
    return out


def p0f_signatures(log: str) -> dict[int, tuple[str, str]]:
    """p0f's SYN-ACK observations by server port: (its OS conclusion, its raw signature)."""
    out: dict[int, tuple[str, str]] = {}
    for line in log.splitlines():
        fields = dict(part.partition("=")[::2] for part in line.partition("] ")[2].split("|"))
        if fields.get("mod") != "syn+ack":
            continue
        port = int(fields.get("srv", "/0").rpartition("/")[2])
        out[port] = (fields.get("os", "?"), fields.get("raw_sig", ""))
    return out


def p0f_fields(raw_sig: str) -> dict[str, str]:
    """A p0f TCP signature `ver:ittl:olen:mss:wsize,scale:olayout:quirks:pclass` by field name."""
    names = ("ver", "ittl", "olen", "mss", "wsize,scale", "olayout", "quirks", "pclass")
    return dict(zip(names, raw_sig.split(":")))


def syn_ack_fields(pcap: Path, server: str, port: int) -> dict[str, str]:
    """toelab's reading of the server's SYN-ACK on `port`: TTL, DF, IP ID, window, options in order."""
    from scapy.layers.inet import IP, TCP
    from scapy.utils import rdpcap

    for packet in rdpcap(str(pcap)):
        if IP in packet and TCP in packet and packet[IP].src == server and packet[TCP].sport == port \
                and packet[TCP].flags & 0x12 == 0x12:
            ip, tcp = packet[IP], packet[TCP]
            options = [f"{k}={v}" if k in ("MSS", "WScale") else str(k) for k, v in tcp.options]
            return {"ttl": str(ip.ttl), "df": str(bool(ip.flags & 0x2)), "ip_id": "zero" if ip.id == 0 else "nonzero",
                    "window": str(tcp.window), "options": ",".join(options)}
    return {}


@scenario("fingerprint", purpose="nmap -O, p0f and toelab's own reading of SYN-ACKs from a service port and a "
          "host-stack port of one node: the conclusions and the fields that differ.",
          topology="host_pair", covers=("RFC9293 3.4.1", "RFC9293 3.1"), claims=("TOE-1",))
def run(ctx: RunContext) -> Iterator[Check]:
    client, addr = ctx.lab.node(ctx.client), ctx.address(ctx.server)
    with host_services(ctx.lab, ctx.server):
        scans = {}
        for port in (SERVICE_PORT, HOST_PORTS["discard"]):
            ctx.progress(f"nmap -O with open port {port}")
            done = client.run(["nmap", "-O", "-Pn", "-n", "-T4", "--max-os-tries", "1", "-p",
                               f"{port},{CLOSED_PORT}", "-oX", "-", addr], timeout=120)
            ctx.artifact(f"nmap-{port}.xml").write_text(done.stdout)
            scans[port] = nmap_result(done.stdout)
        capture = ctx.capture(ctx.client, ctx.iface(ctx.client), f"tcp port {SERVICE_PORT} or tcp port "
                              f"{HOST_PORTS['discard']}", name="handshakes.pcap")
        try:
            opened = [connects(client, addr, port, 3.0) for port in (SERVICE_PORT, HOST_PORTS["discard"])]
            _await_syn_acks(ctx.artifact("handshakes.pcap"), addr, (SERVICE_PORT, HOST_PORTS["discard"]))
        finally:
            pcap = capture.stop()
    yield from _judge(ctx, "nmap-os-detection", "RFC9293 3.4.1", "nmap -O",
                      {port: scan[0] for port, scan in scans.items()},
                      {port: scan[1] for port, scan in scans.items()}, VOLATILE,
                      [ctx.artifact(f"nmap-{port}.xml") for port in scans])
    log = ctx.artifact("p0f.log")
    client.run(["p0f", "-r", str(pcap), "-o", str(log)], timeout=60)
    seen = p0f_signatures(log.read_text() if log.exists() else "")
    yield from _judge(ctx, "p0f-syn-ack", "RFC9293 3.1", "p0f",
                      {port: seen.get(port, ("not seen", ""))[0] for port in (SERVICE_PORT, HOST_PORTS["discard"])},
                      {port: p0f_fields(seen[port][1]) if port in seen else {}
                       for port in (SERVICE_PORT, HOST_PORTS["discard"])}, frozenset(), [pcap, log])
    wire = {port: syn_ack_fields(pcap, addr, port) for port in (SERVICE_PORT, HOST_PORTS["discard"])}
    yield from _judge(ctx, "syn-ack-fields", "RFC9293 3.1", "toelab's capture",
                      {port: "handshake " + ("completed" if ok else "failed")
                       for port, ok in zip((SERVICE_PORT, HOST_PORTS["discard"]), opened)},
                      wire, frozenset(), [pcap])


def _await_syn_acks(pcap: Path, server: str, ports: tuple[int, ...], limit_s: float = 3.0) -> None:
    """Wait (bounded) until the capture file holds the server's SYN-ACK from every port.

    tcpdump writes each packet as it reads it, but packets still in its socket when it is
    stopped are lost; a handshake on a veth is over in microseconds, so stopping must wait
    for the file to hold it.
    """
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        seen = {f.sport for f in tcp_frames(pcap) if f.src == server and "S" in f.flags and "A" in f.flags} \
            if pcap.exists() else set()
        if seen >= set(ports):
            return
        time.sleep(0.02)


def _judge(ctx: RunContext, id: str, requirement: str, tool: str, conclusions: dict[int, str],
           fields: dict[int, dict[str, str]], ignore: frozenset[str], evidence: list[Path]) -> Iterator[Check]:
    service, host = SERVICE_PORT, HOST_PORTS["discard"]
    diff = differing(fields[service], fields[host], ignore)
    read = bool(fields[service]) and bool(fields[host])
    said = (f"{tool} concluded {conclusions[service]!r} from port {service} and {conclusions[host]!r} from host "
            f"port {host}")
    numbers = {"service_conclusion": conclusions[service], "host_conclusion": conclusions[host],
               "differing_fields": len(diff), "differences": "; ".join(diff)[:500] or "none"}
    numbers.update({f"service.{k}": v for k, v in fields[service].items() if k.startswith(("SEQ", "T1", "ttl",
                                                                                           "window", "ittl"))})
    if not read:
        yield ctx.check(id, requirement, False, f"{said}; precondition failed: {tool} read no fingerprint from "
                        f"{'port ' + str(service) if not fields[service] else 'host port ' + str(host)}",
                        pcaps=[p for p in evidence if p.suffix == ".pcap"], numbers=numbers)
        return
    if ctx.target.name == "toe":
        ok = bool(diff)
        seen = f"{len(diff)} field(s) differ: {'; '.join(diff[:6])}" if diff else "no field differs"
    else:
        ok = not diff
        seen = "one stack, same fingerprint" if not diff else f"one stack yet {len(diff)} field(s) differ: " \
            + "; ".join(diff[:6])
    yield ctx.check(id, requirement, ok, f"{said}; {seen}", pcaps=[p for p in evidence if p.suffix == ".pcap"],
                    numbers=numbers)
