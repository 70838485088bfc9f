"""pyroute2 netlink, spoken to one namespace without forking.

A netlink socket belongs to the network namespace it was created in, whatever thread uses it
later. `NamespaceLink` therefore opens its IPRoute (and an ethtool ioctl socket) while the
thread is inside the namespace, steps back out, and from then on configures that namespace
from the caller's own namespace.
"""
from __future__ import annotations

import ipaddress
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from . import netns
from .errors import BackendError
from .features import FeatureControl

IFA_F_NODAD = 0x02


class NamespaceLink:
    """Netlink and ethtool sockets bound to one named namespace."""

    def __init__(self, name: str) -> None:
        self.name = name
        with netns.entered(name):
            self.ipr = IPRoute(groups=0)
            self.features = FeatureControl()
        self._index: dict[str, int] = {}

    def close(self) -> None:
        self.ipr.close()
        self.features.close()

    def index(self, ifname: str) -> int:
        if ifname not in self._index:
            found = self.ipr.link_lookup(ifname=ifname)
            if not found:
                raise BackendError(f"namespace {self.name}: no interface {ifname!r}")
            self._index[ifname] = found[0]
        return self._index[ifname]

    def add_veth(self, ifname: str, index: int, peer: str, peer_ns_fd: int, mtu: int | None,
                 peer_mtu: int | None, mac: str | None, peer_mac: str | None) -> None:
        """A veth pair: `ifname` here, `peer` created directly in the namespace open on `peer_ns_fd`.

        `ifname` gets the explicit ifindex `index`, chosen above the small indexes the kernel
        hands out itself, so the two ends never share an ifindex. If they did (both would
        be 2 in fresh namespaces) the kernel would take the veth for a non-stacked device
        and delay its carrier-up event by up to a second, leaving the link without a qdisc
        and IPv6 "not ready" meanwhile.
        """
        peer_attrs: dict[str, object] = {"ifname": peer, "net_ns_fd": peer_ns_fd}
        if peer_mtu is not None:
            peer_attrs["mtu"] = peer_mtu
        if peer_mac is not None:
            peer_attrs["address"] = peer_mac
        attrs: dict[str, object] = {"ifname": ifname, "index": index, "kind": "veth", "peer": peer_attrs}
        if mtu is not None:
            attrs["mtu"] = mtu
        if mac is not None:
            attrs["address"] = mac
        self.ipr.link("add", **attrs)

    def add_bridge(self, ifname: str, stp: bool = False) -> None:
        self.ipr.link("add", ifname=ifname, kind="bridge", br_stp_state=1 if stp else 0)

    def enslave(self, port: str, bridge: str) -> None:
        self.ipr.link("set", index=self.index(port), master=self.index(bridge))

    def up(self, ifname: str) -> None:
        self.ipr.link("set", index=self.index(ifname), state="up")

    def add_address(self, ifname: str, address: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> None:
        """An address usable at once: IPv6 ones skip duplicate address detection."""
        extra = {"flags": IFA_F_NODAD} if address.version == 6 else {}
        self.ipr.addr("add", index=self.index(ifname), address=str(address.ip),
                      prefixlen=address.network.prefixlen, **extra)

    def add_route(self, dst: str, family: int, via: str | None, dev: str | None,
                  mtu: int | None, advmss: int | None) -> None:
        attrs: dict[str, object] = {"dst": dst, "family": 2 if family == 4 else 10}
        if via is not None:
            attrs["gateway"] = via
        if dev is not None:
            attrs["oif"] = self.index(dev)
        metrics = {k: v for k, v in (("mtu", mtu), ("advmss", advmss)) if v is not None}
        if metrics:
            attrs["metrics"] = metrics
        self.ipr.route("add", **attrs)


def write_sysctls(name: str, settings: dict[str, str | int]) -> None:
    """Write net.* sysctls of a namespace: /proc/sys/net resolves to the opening thread's namespace."""
    if not settings:
        return
    with netns.entered(name):
        for key, value in settings.items():
            path = Path("/proc/sys") / key.replace(".", "/")
            try:
                path.write_text(f"{value}\n")
            except FileNotFoundError:
                raise BackendError(f"sysctl {key} does not exist in namespace {name}") from None
            except OSError as exc:
                raise BackendError(f"sysctl {key}={value} was refused in namespace {name}: {exc.strerror}") from None


def describe_netlink_error(exc: NetlinkError) -> str:
    return exc.args[1] if len(exc.args) > 1 else str(exc)
