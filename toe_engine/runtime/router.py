"""The middlebox's router mode: IPv4/IPv6 forwarding between two ports, done in userspace.

The node's kernel keeps the ports' addresses (it answers ARP, ND and pings for them) but does
not forward; this router does, the way Linux's ip_forward/ip6_forward do:

* a frame not sent to the ingress port's MAC, or to one of the node's own addresses, is not
  forwarded (the kernel gets its own copy of everything AF_PACKET shows us);
* TTL / hop limit 1 or less: dropped, ICMP time exceeded back to the sender;
* route: longest prefix over the ports' connected subnets and static routes;
* MTU, checked before the TTL is decremented: a plain frame longer than the egress MTU, or a
  GSO frame one of whose segments (headers + gso_size) is, is dropped with DF set (always for
  IPv6) and ICMP frag-needed / packet-too-big with the egress MTU goes back to the sender.
  An LRO aggregate has no segment size, so it is a plain oversize frame and gets exactly that
  treatment, as Linux gives a non-GSO oversize DF packet: the sender is told an MTU its
  segments already respect, cannot comply, and the flow stalls. A GRO aggregate is checked per
  segment and passes. Oversize frames without DF would need fragmentation, which this router
  does not do: they are dropped and counted in `frag_unsupported`;
* TTL decremented with Linux's incremental checksum update (ip_decrease_ttl), Ethernet source
  set to the egress port's MAC and destination to the next hop's, learnt from ARP and ND seen
  on either port; while unknown, a few frames wait and a request goes out (at most one a
  second per next hop).

The common frame (unicast IPv4 or IPv6 to our MAC, TTL left, a route and a known next hop,
within the egress MTU) takes `RouterStage.forward_in_place`: the same decision from one
unpack and a cached (MTU, MACs) per destination, the frame patched where the driver read it,
no copy and no header object. Everything else takes `forward`, which does the counting and
the ICMP; both give the same bytes for a frame both accept.

Control-plane frames the router makes (ICMP errors, ARP requests, neighbour solicitations)
leave at once through `transmit(port, frame)`; data frames released by neighbour resolution
come out of the egress direction's `poll`, so they still pass the later stages.
"""
from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from toe_engine.checksum import IPPROTO_ICMP, IPPROTO_ICMPV6
from toe_engine.codec.arp import parse_arp
from toe_engine.codec.ethernet import BROADCAST, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6
from toe_engine.codec.frame import build_ip_frame
from toe_engine.codec.icmp import (
    ICMPV4_MAX_QUOTE,
    ICMPV6_MAX_QUOTE,
    ICMPV6_TIME_EXCEEDED,
    build_frag_needed,
    build_icmpv6,
    build_packet_too_big,
    build_time_exceeded,
)
from toe_engine.counters import Counters
from toe_engine.io.vnet import VNET_BYTE_ORDER, VNET_GSO_ECN, VNET_HDR_LEN, VnetHeader
from toe_engine.neighbors import arp_request, neighbor_solicitation
from toe_engine.runtime.stages import TCP_DOFF_OFFSET, Frame, Item, tcp_payload_offset

Transmit = Callable[[int, bytes], None]
IpInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ROUTER_COUNTERS = ("mtu_drops", "icmp_frag_needed_sent", "ttl_expired", "arp_requests_sent", "no_route")

ETH_HLEN = 14
NEIGHBOUR_QUEUE_LEN = 16
NEIGHBOUR_RETRY = 1.0
ICMP_TOS = 0xC0  # IPTOS_PREC_INTERNETCONTROL, as Linux's icmp_send
ND_NEIGHBOUR_SOLICIT = 135
ND_NEIGHBOUR_ADVERT = 136
ND_OPT_SOURCE_LL = 1
ND_OPT_TARGET_LL = 2

_U16 = struct.Struct("!H")
# From the Ethernet header on: destination MAC, ethertype, then for IPv4 version/IHL, total
# length, TTL, header checksum, destination; for IPv6 version, payload length, next header,
# hop limit, destination.
_FAST_V4 = struct.Struct("!6s6xHBxH4xBxH4x4s")
_FAST_V6 = struct.Struct("!6s6xHB3xHBB16x16s")
# From the virtio-net header: gso_type, gso_size, csum_start (the host's byte order).
_FAST_VNET = struct.Struct(VNET_BYTE_ORDER + "xB2xHH")
FAST_CACHE_LIMIT = 4096
_V4 = ETHERTYPE_IPV4.to_bytes(2, "big")
_V6 = ETHERTYPE_IPV6.to_bytes(2, "big")
_ARP = ETHERTYPE_ARP.to_bytes(2, "big")


@dataclass
class Port:
    """One router port: its interface name, MAC, MTU and the addresses the kernel holds on it."""

    name: str
    mac: bytes
    mtu: int
    addresses: list[IpInterface] = field(default_factory=list)

    def address_for(self, version: int, peer: bytes | None = None) -> bytes | None:
        """Our address to speak from: one in the peer's subnet, else the first usable one."""
        candidates = [a for a in self.addresses if a.version == version and not a.ip.is_link_local]
        if not candidates:
            candidates = [a for a in self.addresses if a.version == version]
        if peer is not None:
            target = ipaddress.ip_address(peer)
            for address in candidates:
                if target in address.network:
                    return address.ip.packed
        return candidates[0].ip.packed if candidates else None


@dataclass(frozen=True)
class Route:
    network: IpNetwork
    port: int
    via: bytes | None  # None: directly connected, the destination is the next hop


def _segment_length(header: VnetHeader, frame: Frame) -> int:
    """The IP length of each wire segment a GSO frame stands for: its headers and gso_size.

    ValueError (or IndexError for a TCP header past the end) when the header contradicts
    the frame; the forwarder drops and counts such a frame.
    """
    if not header.gso_size:
        raise ValueError("a GSO frame without a segment size")
    return tcp_payload_offset(header, frame) - ETH_HLEN + header.gso_size


def decrease_ttl(buf: bytearray, l3: int) -> None:
    """Linux's ip_decrease_ttl: TTL - 1 and the RFC 1624 update of the header checksum."""
    check = ((buf[l3 + 10] << 8) | buf[l3 + 11]) + 0x0100
    check = (check + (check >= 0xFFFF)) & 0xFFFF
    buf[l3 + 10] = check >> 8
    buf[l3 + 11] = check & 0xFF
    buf[l3 + 8] -= 1


class Router:
    """Routing table, neighbour table and the forwarding decision for both ports."""

    def __init__(
        self,
        ports: Sequence[Port],
        transmit: Transmit,
        static_routes: Sequence[Route] = (),
        counters: Sequence[Counters] | None = None,
    ) -> None:
        """`counters[i]` counts for frames that arrived on port i (the direction leaving it)."""
        if len(ports) != 2:
            raise ValueError("the middlebox router has exactly two ports")
        self.ports = list(ports)
        self.transmit = transmit
        routes = [Route(a.network, index, None) for index, port in enumerate(ports) for a in port.addresses
                  if not a.ip.is_link_local]
        routes.extend(static_routes)
        self.routes = sorted(routes, key=lambda r: r.network.prefixlen, reverse=True)
        self.local = {a.ip.packed for port in ports for a in port.addresses}
        self.neighbours: dict[bytes, bytes] = {}
        self._route_cache: dict[bytes, tuple[int, bytes] | None] = {}
        self._pending: dict[bytes, tuple[int, list[Item]]] = {}
        self._asked: dict[bytes, float] = {}
        self.released: list[list[Item]] = [[] for _ in ports]
        # Per ingress port: destination -> (egress MTU, next hop MAC + egress MAC), or None
        # where the frame needs `forward`; emptied whenever a neighbour changes.
        self.fast_paths: list[dict[bytes, tuple[int, bytes] | None]] = [{} for _ in ports]
        self._ip_id = 0
        self.counters = list(counters) if counters is not None else [Counters(ROUTER_COUNTERS) for _ in ports]

    def fast_path(self, ingress: int, dst: bytes) -> tuple[int, bytes] | None:
        """(egress MTU, MACs to write) for a unicast frame from `ingress` to `dst` that needs
        nothing but a TTL and a MAC rewrite, or None; cached until a neighbour changes."""
        cache = self.fast_paths[ingress]
        if dst in cache:
            return cache[dst]
        found: tuple[int, bytes] | None = None
        route = None if dst in self.local or _not_unicast(dst) else self.route_for(dst)
        if route is not None and route[0] != ingress:
            mac = self.neighbours.get(route[1])
            if mac is not None:
                egress = self.ports[route[0]]
                found = (egress.mtu, mac + egress.mac)
        if len(cache) >= FAST_CACHE_LIMIT:
            cache.clear()
        cache[dst] = found
        return found

    def route_for(self, dst: bytes) -> tuple[int, bytes] | None:
        """(egress port, next-hop address) for a destination, or None."""
        cache = self._route_cache
        if dst in cache:
            return cache[dst]
        address = ipaddress.ip_address(dst)
        found: tuple[int, bytes] | None = None
        for route in self.routes:
            if address.version == route.network.version and address in route.network:
                found = (route.port, route.via or dst)
                break
        if len(cache) > 4096:
            cache.clear()
        cache[dst] = found
        return found

    # --- the data path --------------------------------------------------------------------
    def forward(self, ingress: int, header: VnetHeader, frame: Frame, now: float) -> list[Item]:
        """Forward one frame received on `ingress`; returns what leaves the other port now."""
        ethertype = frame[12:14]
        if frame[0:6] != self.ports[ingress].mac:
            if ethertype == _ARP:
                self._learn_arp(ingress, frame)
            elif ethertype == _V6:
                self._learn_nd(ingress, frame)
            return []
        if ethertype == _V4:
            return self._forward_v4(ingress, header, frame, now)
        if ethertype == _V6:
            self._learn_nd(ingress, frame)
            return self._forward_v6(ingress, header, frame, now)
        if ethertype == _ARP:
            self._learn_arp(ingress, frame)
        return []

    def _forward_v4(self, ingress: int, header: VnetHeader, frame: Frame, now: float) -> list[Item]:
        l3 = ETH_HLEN
        if len(frame) < l3 + 20 or frame[l3] >> 4 != 4:
            return []
        dst = bytes(frame[l3 + 16:l3 + 20])
        if dst in self.local or dst[0] >= 224:
            return []
        counters = self.counters[ingress]
        if frame[l3 + 8] <= 1:
            counters.inc("ttl_expired")
            self._icmp_v4(ingress, frame, build_time_exceeded(bytes(frame[l3:l3 + ICMPV4_MAX_QUOTE])))
            return []
        route = self.route_for(dst)
        if route is None or route[0] == ingress:
            counters.inc("no_route")
            return []
        egress, next_hop = route
        mtu = self.ports[egress].mtu
        if header.is_gso:
            wire_len = _segment_length(header, frame)
        else:
            wire_len = _U16.unpack_from(frame, l3 + 2)[0]
        if wire_len > mtu:
            counters.inc("mtu_drops")
            if frame[l3 + 6] & 0x40:
                counters.inc("icmp_frag_needed_sent")
                self._icmp_v4(ingress, frame, build_frag_needed(mtu, bytes(frame[l3:l3 + ICMPV4_MAX_QUOTE])))
            else:
                counters.inc("frag_unsupported")
            return []
        buf = bytearray(frame)
        decrease_ttl(buf, l3)
        return self._to_neighbour(egress, next_hop, header, buf, now)

    def _forward_v6(self, ingress: int, header: VnetHeader, frame: Frame, now: float) -> list[Item]:
        l3 = ETH_HLEN
        if len(frame) < l3 + 40 or frame[l3] >> 4 != 6:
            return []
        dst = bytes(frame[l3 + 24:l3 + 40])
        if dst in self.local or dst[0] == 0xFF or (dst[0] == 0xFE and dst[1] & 0xC0 == 0x80):
            return []
        counters = self.counters[ingress]
        if frame[l3 + 7] <= 1:
            counters.inc("ttl_expired")
            self._icmp_v6(ingress, frame, ICMPV6_TIME_EXCEEDED, 0, 0)
            return []
        route = self.route_for(dst)
        if route is None or route[0] == ingress:
            counters.inc("no_route")
            return []
        egress, next_hop = route
        mtu = self.ports[egress].mtu
        if header.is_gso:
            wire_len = _segment_length(header, frame)
        else:
            wire_len = 40 + _U16.unpack_from(frame, l3 + 4)[0]
        if wire_len > mtu:
            counters.inc("mtu_drops")
            counters.inc("icmp_frag_needed_sent")
            self._icmp_v6(ingress, frame, 0, 0, mtu)
            return []
        buf = bytearray(frame)
        buf[l3 + 7] -= 1
        return self._to_neighbour(egress, next_hop, header, buf, now)

    def _to_neighbour(self, egress: int, next_hop: bytes, header: VnetHeader, buf: bytearray, now: float) -> list[Item]:
        mac = self.neighbours.get(next_hop)
        port = self.ports[egress]
        if mac is None:
            queue = self._pending.setdefault(next_hop, (egress, []))[1]
            if len(queue) >= NEIGHBOUR_QUEUE_LEN:
                queue.pop(0)
                self.counters[1 - egress].inc("neighbour_queue_drops")
            queue.append((header, buf))
            self._solicit(egress, next_hop, now)
            return []
        buf[0:6] = mac
        buf[6:12] = port.mac
        return [(header, buf)]

    # --- neighbours -------------------------------------------------------------------------
    def learn(self, address: bytes, mac: bytes) -> None:
        """Record a neighbour; frames waiting for it move to `released` of their egress port."""
        if mac == BROADCAST or not any(mac):
            return
        if self.neighbours.get(address) != mac:
            for cache in self.fast_paths:
                cache.clear()
        self.neighbours[address] = mac
        pending = self._pending.pop(address, None)
        self._asked.pop(address, None)
        if pending is not None:
            egress, queue = pending
            port_mac = self.ports[egress].mac
            for _, buf in queue:
                buf[0:6] = mac  # type: ignore[index]
                buf[6:12] = port_mac  # type: ignore[index]
            self.released[egress].extend(queue)

    def take_released(self, egress: int) -> list[Item]:
        released = self.released[egress]
        if not released:
            return []
        self.released[egress] = []
        return released

    def _learn_arp(self, ingress: int, frame: Frame) -> None:
        arp = parse_arp(memoryview(frame), ETH_HLEN)
        if arp is not None and self._on_link(ingress, arp.sender_ip):
            self.learn(arp.sender_ip, arp.sender_mac)

    def _learn_nd(self, ingress: int, frame: Frame) -> None:
        l3 = ETH_HLEN
        icmp = l3 + 40
        if len(frame) < icmp + 24 or frame[l3 + 6] != IPPROTO_ICMPV6:
            return
        kind = frame[icmp]
        if kind == ND_NEIGHBOUR_SOLICIT:
            address, option = bytes(frame[l3 + 8:l3 + 24]), ND_OPT_SOURCE_LL
        elif kind == ND_NEIGHBOUR_ADVERT:
            address, option = bytes(frame[icmp + 8:icmp + 24]), ND_OPT_TARGET_LL
        else:
            return
        offset = icmp + 24
        while offset + 8 <= len(frame):
            length = frame[offset + 1] * 8
            if length == 0:
                return
            if frame[offset] == option and any(address):
                self.learn(address, bytes(frame[offset + 2:offset + 8]))
                return
            offset += length

    def _on_link(self, port: int, address: bytes) -> bool:
        ip = ipaddress.ip_address(address)
        return any(ip in a.network for a in self.ports[port].addresses if a.version == ip.version)

    def _solicit(self, egress: int, target: bytes, now: float) -> None:
        last = self._asked.get(target)
        if last is not None and now - last < NEIGHBOUR_RETRY:
            return
        port = self.ports[egress]
        source = port.address_for(4 if len(target) == 4 else 6, target)
        if source is None:
            return
        self._asked[target] = now
        self.counters[1 - egress].inc("arp_requests_sent")
        if len(target) == 4:
            self.transmit(egress, arp_request(port.mac, source, target))
        else:
            self.transmit(egress, neighbor_solicitation(port.mac, source, target))

    # --- ICMP errors --------------------------------------------------------------------------
    def _icmp_v4(self, ingress: int, frame: Frame, message: bytes) -> None:
        port = self.ports[ingress]
        sender = bytes(frame[ETH_HLEN + 12:ETH_HLEN + 16])
        source = port.address_for(4, sender)
        if source is None:
            return
        self._ip_id = (self._ip_id + 1) & 0xFFFF
        reply = build_ip_frame(port.mac, bytes(frame[6:12]), source, sender, IPPROTO_ICMP, message,
                               tos=ICMP_TOS, ip_id=self._ip_id, df=False)
        self.transmit(ingress, bytes(reply))

    def _icmp_v6(self, ingress: int, frame: Frame, icmp_type: int, code: int, mtu: int) -> None:
        port = self.ports[ingress]
        sender = bytes(frame[ETH_HLEN + 8:ETH_HLEN + 24])
        source = port.address_for(6, sender)
        if source is None:
            return
        quote = bytes(frame[ETH_HLEN:ETH_HLEN + ICMPV6_MAX_QUOTE])
        if mtu:
            message = build_packet_too_big(source, sender, mtu, quote)
        else:
            message = build_icmpv6(source, sender, icmp_type, code, 0, quote)
        reply = build_ip_frame(port.mac, bytes(frame[6:12]), source, sender, IPPROTO_ICMPV6, message)
        self.transmit(ingress, bytes(reply))


def _not_unicast(dst: bytes) -> bool:
    """Multicast or broadcast IPv4 (224/3 and up), IPv6 multicast or link-local."""
    if len(dst) == 4:
        return dst[0] >= 224
    return dst[0] == 0xFF or (dst[0] == 0xFE and dst[1] & 0xC0 == 0x80)


class RouterStage:
    """The router as one direction's pipeline stage (ingress port `ingress`)."""

    def __init__(self, router: Router, ingress: int) -> None:
        self.router = router
        self.ingress = ingress
        self.egress = 1 - ingress
        self.mac = router.ports[ingress].mac
        self.fast_paths = router.fast_paths[ingress]

    def process(self, header: VnetHeader, frame: Frame, now: float) -> list[Item]:
        return self.router.forward(self.ingress, header, frame, now)

    def forward_in_place(self, buf: bytearray, n: int) -> bool:
        """Route the common frame in `buf[:n]` (virtio-net header, then the frame) where it lies.

        True: TTL and checksum updated, MACs rewritten, ready to send as it is. False: `buf`
        is untouched and the frame needs `process` (not ours, expiring, oversize, ARP, ND,
        no route or next hop yet, too short to judge).
        """
        eth = VNET_HDR_LEN
        if n < eth + _FAST_V4.size:
            return False
        mac, ethertype, version, length, ttl, check, dst = _FAST_V4.unpack_from(buf, eth)
        if mac != self.mac:
            return False
        if ethertype == ETHERTYPE_IPV4:
            if version >> 4 != 4 or ttl <= 1:
                return False
            l3 = eth + 14
        elif ethertype == ETHERTYPE_IPV6 and n >= eth + _FAST_V6.size:
            mac, ethertype, version, length, next_header, ttl, dst = _FAST_V6.unpack_from(buf, eth)
            if version >> 4 != 6 or ttl <= 1 or next_header == IPPROTO_ICMPV6:
                return False
            l3 = eth + 14
            length += 40
        else:
            return False
        try:
            path = self.fast_paths[dst]
        except KeyError:
            path = self.router.fast_path(self.ingress, dst)
        if path is None:
            return False
        mtu, macs = path
        gso_type, gso_size, csum_start = _FAST_VNET.unpack_from(buf, 0)
        if gso_type & ~VNET_GSO_ECN:
            doff = eth + csum_start + TCP_DOFF_OFFSET
            if doff >= n or not gso_size:
                return False
            length = csum_start + ((buf[doff] >> 4) << 2) - ETH_HLEN + gso_size
        if length > mtu:
            return False
        if ethertype == ETHERTYPE_IPV4:
            check += 0x0100  # ip_decrease_ttl, as `decrease_ttl`
            check = (check + (check >= 0xFFFF)) & 0xFFFF
            buf[l3 + 10] = check >> 8
            buf[l3 + 11] = check & 0xFF
            buf[l3 + 8] = ttl - 1
        else:
            buf[l3 + 7] = ttl - 1
        buf[eth:eth + 12] = macs
        return True

    def next_deadline(self) -> float | None:
        return 0.0 if self.router.released[self.egress] else None

    def poll(self, now: float) -> list[Item]:
        return self.router.take_released(self.egress)

    def drain(self) -> list[Item]:
        return self.router.take_released(self.egress)
