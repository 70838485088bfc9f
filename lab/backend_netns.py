"""The netns backend: a TopologySpec built as named namespaces, veths and bridges with pyroute2.

Nothing is made in the root namespace: each veth is created inside its first node's
namespace with its peer created directly in the second node's (IFLA_NET_NS_FD). The build
runs in phases across all nodes so that, by the time routes are added, every interface on
both ends of every link is up and addressed:

1. namespaces (loopback up, IPv6 DAD and router solicitations off),
2. veth pairs (names, MTUs and MACs set at creation) and switch bridges,
3. per interface: offload features (read back), addresses, link up,
4. per node: routes, forwarding for routers, sysctls, nftables rules.

`check_buildable` refuses, before anything exists, what this machine cannot build. If a phase
fails, the caller removes the namespaces named in the lab record (see `lab.Lab.up`).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from pyroute2.netlink.exceptions import NetlinkError

from . import netns
from .errors import BackendError, require_tools
from .netem import netem_available
from .netlink import NamespaceLink, describe_netlink_error, write_sysctls
from .spec import ImpairmentSpec, TopologySpec

BRIDGE = "br0"
FIRST_EXPLICIT_IFINDEX = 1000  # see NamespaceLink.add_veth
NAMESPACE_DEFAULTS: dict[str, str | int] = {
    "net.ipv6.conf.all.accept_dad": 0,
    "net.ipv6.conf.default.accept_dad": 0,
    "net.ipv6.conf.default.router_solicitations": 0,
    "net.ipv6.conf.default.accept_ra": 0,
}
ROUTER_SYSCTLS: dict[str, str | int] = {"net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 1}


@contextmanager
def doing(what: str) -> Iterator[None]:
    """Turn a kernel's refusal into one BackendError sentence saying what was being done."""
    try:
        yield
    except NetlinkError as exc:
        raise BackendError(f"{what}: {describe_netlink_error(exc)}") from None
    except OSError as exc:
        raise BackendError(f"{what}: {exc.strerror or exc}") from None


def check_buildable(spec: TopologySpec) -> None:
    """Everything this backend can know is wrong before building: privileges, tools, netem."""
    if os.geteuid() != 0:
        raise BackendError(f"building topology {spec.name} needs root (it creates network namespaces): run it as root")
    nft_users = [name for name, node in spec.nodes.items() if node.nft or node.kind == "toe"]
    if nft_users:
        require_tools({"nft": f"topology {spec.name} loads nftables rules into node {nft_users[0]}"})
    impaired = [link for link in spec.links if link.impairments is not None]
    if impaired and not netem_available():
        a, b = impaired[0].endpoints
        raise BackendError(f"link {a} - {b} asks for impairments, but this kernel has no netem qdisc; "
                           "put a middlebox node on the path to impair its traffic instead")
    if impaired and shutil.which("tc") is None:
        raise BackendError(f"link {impaired[0].endpoints[0]} - {impaired[0].endpoints[1]} asks for impairments, "
                           "but the tc tool is not installed")


def netem_argv(iface: str, impairment: ImpairmentSpec) -> list[str]:
    argv = ["tc", "qdisc", "add", "dev", iface, "root", "netem"]
    if impairment.delay_ms:
        argv += ["delay", f"{impairment.delay_ms}ms"] + ([f"{impairment.jitter_ms}ms"] if impairment.jitter_ms else [])
    if impairment.loss:
        argv += ["loss", f"{impairment.loss}%"]
    if impairment.rate_mbit:
        argv += ["rate", f"{impairment.rate_mbit}mbit"]
    return argv


def run_in_namespace(name: str, argv: list[str], input: str | None = None) -> subprocess.CompletedProcess[str]:
    with netns.entered(name):
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = proc.communicate(input, timeout=30)
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


class NetnsBuilder:
    """Builds one spec under one lab id; the namespace names are `<labid>-<node>`."""

    def __init__(self, spec: TopologySpec, namespaces: dict[str, str]) -> None:
        self.spec = spec
        self.namespaces = namespaces
        self._links: dict[str, NamespaceLink] = {}
        self._fds: dict[str, int] = {}

    def build(self) -> None:
        try:
            for node in self.spec.nodes:
                self._make_namespace(node)
            for number, link in enumerate(self.spec.links):
                self._make_veth(FIRST_EXPLICIT_IFINDEX + number, link.split(0), link.split(1))
            for node, node_spec in self.spec.nodes.items():
                if node_spec.kind == "switch":
                    self._make_bridge(node)
                for iface in self.spec.interfaces_of(node):
                    self._configure_interface(node, iface)
            for link in self.spec.links:
                if link.impairments is not None:
                    self._impair(link.split(0), link.impairments)
                    self._impair(link.split(1), link.impairments)
            for node in self.spec.nodes:
                self._configure_node(node)
        finally:
            for nl in self._links.values():
                nl.close()
            for fd in self._fds.values():
                os.close(fd)

    def _make_namespace(self, node: str) -> None:
        name = self.namespaces[node]
        netns.create(name)
        self._fds[node] = netns.open_fd(name)
        with doing(f"node {node}: preparing namespace {name}"):
            write_sysctls(name, NAMESPACE_DEFAULTS)
            nl = self._links[node] = NamespaceLink(name)
            nl.up("lo")

    def _make_veth(self, index: int, end_a: tuple[str, str], end_b: tuple[str, str]) -> None:
        (node_a, if_a), (node_b, if_b) = end_a, end_b
        spec = self.spec
        with doing(f"link {node_a}:{if_a} - {node_b}:{if_b}: creating the veth pair"):
            self._links[node_a].add_veth(
                if_a, index, if_b, self._fds[node_b],
                mtu=spec.link_mtu(node_a, if_a), peer_mtu=spec.link_mtu(node_b, if_b),
                mac=spec.interface(node_a, if_a).mac, peer_mac=spec.interface(node_b, if_b).mac)

    def _make_bridge(self, node: str) -> None:
        nl = self._links[node]
        with doing(f"switch {node}: creating bridge {BRIDGE}"):
            nl.add_bridge(BRIDGE, stp=self.spec.nodes[node].stp)
            for port in self.spec.interfaces_of(node):
                nl.enslave(port, BRIDGE)
            nl.up(BRIDGE)

    def _configure_interface(self, node: str, iface: str) -> None:
        nl = self._links[node]
        ispec = self.spec.interface(node, iface)
        where = f"node {node}, interface {iface}"
        if ispec.features:
            nl.features.apply(iface, dict(ispec.features), where=where)
        for address in ispec.addresses:
            with doing(f"{where}: adding address {address}"):
                nl.add_address(iface, address)
        with doing(f"{where}: setting the link up"):
            nl.up(iface)

    def _impair(self, end: tuple[str, str], impairment: ImpairmentSpec) -> None:
        node, iface = end
        done = run_in_namespace(self.namespaces[node], netem_argv(iface, impairment))
        if done.returncode != 0:
            raise BackendError(f"node {node}, interface {iface}: netem refused the impairments: {done.stderr.strip()}")

    def _configure_node(self, node: str) -> None:
        node_spec = self.spec.nodes[node]
        nl = self._links[node]
        name = self.namespaces[node]
        for i, route in enumerate(node_spec.routes):
            dst = route.dst
            if dst in ("default", "default6"):
                dst = "0.0.0.0/0" if route.family == 4 else "::/0"
            with doing(f"node {node}, route {i} ({route.dst}{f' via {route.via}' if route.via else ''})"):
                nl.add_route(dst, route.family, str(route.via) if route.via else None, route.dev,
                             route.mtu, route.advmss)
        if node_spec.kind == "router":
            write_sysctls(name, ROUTER_SYSCTLS)
        try:
            write_sysctls(name, dict(node_spec.sysctls))
        except BackendError as exc:
            raise BackendError(f"node {node}: {exc}") from None
        if node_spec.nft:
            done = run_in_namespace(name, ["nft", "-f", "-"], input=node_spec.nft)
            if done.returncode != 0:
                raise BackendError(f"node {node}: nftables refused its ruleset: {done.stderr.strip()}")

