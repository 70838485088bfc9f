"""The Mininet backend: the same TopologySpec built with Mininet's API.

For users who already run Mininet. Switches are Mininet `LinuxBridge`s placed in their own
namespace (no controller, no Open vSwitch), hosts and routers are Mininet `Host`s; veths are
created inside the nodes (Mininet's makeIntfPair runs `ip link add` in node1's namespace), so
nothing is made in the root namespace. Mininet nodes are not named namespaces: they are shell
processes, and commands run in them with `mnexec -a PID`.

What this backend cannot honour is refused before anything is built: link impairments
(Mininet would silently drop a delay or loss on a kernel without netem) and engine node
kinds (`toe`, `middlebox`), which need the netns backend.
"""
from __future__ import annotations

import os
import subprocess
from typing import Any

from .errors import BackendError, LabError
from .features import FeatureControl
from .netem import netem_available
from .netns import entered
from .node import RunResult
from .spec import TopologySpec
from .state import LabRecord, ProcessRecord, create_record, process_start_time, remove_record


def unsupported(spec: TopologySpec) -> list[str]:
    """Every part of `spec` this backend cannot build, one sentence each."""
    problems = []
    for name, node in spec.nodes.items():
        if node.kind in ("toe", "middlebox"):
            problems.append(f"node {name!r} is of kind {node.kind!r}, which only the netns backend runs")
    if not netem_available():
        for link in spec.links:
            if link.impairments is not None:
                a, b = link.endpoints
                problems.append(f"link {a} - {b} asks for impairments, but this kernel has no netem qdisc "
                                "and Mininet would silently ignore them; use a middlebox node instead")
    return problems


class MininetNode:
    """A Mininet node seen through toelab's Node interface."""

    def __init__(self, name: str, kind: str, mn_node: Any) -> None:
        self.name, self.kind, self._mn = name, kind, mn_node
        self.netns = f"mininet:{mn_node.pid}"
        self._children: list[subprocess.Popen] = []

    def _argv(self, cmd: str | list[str]) -> list[str]:
        inner = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        return ["mnexec", "-a", str(self._mn.pid)] + inner

    def run(self, cmd: str | list[str], timeout: float = 30, check: bool = False,
            input: str | None = None) -> RunResult:
        done = subprocess.run(self._argv(cmd), capture_output=True, text=True, timeout=timeout, input=input)
        result = RunResult(done.returncode, done.stdout, done.stderr)
        if check and done.returncode != 0:
            raise BackendError(f"{self.name}: {cmd!r} failed with {done.returncode}: {done.stderr.strip()}")
        return result

    def popen(self, cmd: str | list[str], **kwargs: Any) -> subprocess.Popen:
        proc = subprocess.Popen(self._argv(cmd), **kwargs)
        self._children.append(proc)
        return proc

    def stop_children(self) -> None:
        for proc in self._children:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)


class MininetLab:
    """A lab built by Mininet; offers the subset of the Lab API that scenarios use."""

    attached = False  # a Mininet lab lives in the process that built it: nobody attaches to one

    def __init__(self, spec: TopologySpec) -> None:
        problems = unsupported(spec)
        if problems:
            raise BackendError(f"the mininet backend cannot build {spec.name}: " + "; ".join(problems))
        from mininet.net import Mininet
        from mininet.nodelib import LinuxBridge

        self.spec = spec
        self.record: LabRecord | None = create_record(spec.name, "mininet", [])
        self.id = self.record.lab_id
        self._net = Mininet(topo=None, controller=None, switch=LinuxBridge, build=False,
                            autoSetMacs=False, waitConnected=False)
        self.nodes: dict[str, MininetNode] = {}
        try:
            self._build()
        except BaseException:
            self.down()
            raise

    def _build(self) -> None:
        mn_nodes = {}
        for name, node in self.spec.nodes.items():
            mn_name = f"{self.id}{name}"
            if node.kind == "switch":
                mn_nodes[name] = self._net.addSwitch(mn_name, inNamespace=True, stp=node.stp)
            else:
                mn_nodes[name] = self._net.addHost(mn_name, ip=None)
        for link in self.spec.links:
            (n1, i1), (n2, i2) = link.split(0), link.split(1)
            self._net.addLink(mn_nodes[n1], mn_nodes[n2], intfName1=i1, intfName2=i2)
        self._net.build()
        # Record the node shells: killing them frees their namespaces, so `toelab clean`
        # can remove this lab if its owner dies.
        self.record.processes = [ProcessRecord(n.pid, process_start_time(n.pid), name, "mininet node shell", False)
                                 for name, n in mn_nodes.items()]
        self.record.status = "up"
        self.record.save()
        for name, node in self.spec.nodes.items():
            self.nodes[name] = MininetNode(name, node.kind, mn_nodes[name])
            if node.kind == "switch":
                mn_nodes[name].start([])
            self._configure(name)

    def _configure(self, name: str) -> None:
        node, spec = self.nodes[name], self.spec.nodes[name]
        script = ["set -e", "ip link set lo up", "sysctl -qw net.ipv6.conf.all.accept_dad=0"]
        if spec.kind == "router":
            script += ["sysctl -qw net.ipv4.ip_forward=1", "sysctl -qw net.ipv6.conf.all.forwarding=1"]
        script += [f"sysctl -qw {k}={v}" for k, v in spec.sysctls.items()]
        for iface in self.spec.interfaces_of(name):
            ispec = self.spec.interface(name, iface)
            mtu = self.spec.link_mtu(name, iface)
            script.append(f"sysctl -qw net.ipv6.conf.{iface}.accept_dad=0 || true")
            if mtu:
                script.append(f"ip link set {iface} mtu {mtu}")
            if ispec.mac:
                script.append(f"ip link set {iface} address {ispec.mac}")
            script += [f"ip addr add {addr} dev {iface} nodad" if addr.version == 6 else f"ip addr add {addr} dev {iface}"
                       for addr in ispec.addresses]
            script.append(f"ip link set {iface} up")
        for route in spec.routes:
            dst = "default" if route.dst in ("default", "default6") else route.dst
            words = [f"ip -{route.family} route add {dst}"]
            words += [f"via {route.via}"] if route.via else []
            words += [f"dev {route.dev}"] if route.dev else []
            words += [f"mtu {route.mtu}"] if route.mtu else []
            words += [f"advmss {route.advmss}"] if route.advmss else []
            script.append(" ".join(words))
        result = node.run("\n".join(script))
        if result.returncode != 0:
            raise BackendError(f"mininet backend: configuring node {name!r} failed: {result.stderr.strip()}")
        self._await_carrier(name)
        for iface in self.spec.interfaces_of(name):
            wanted = self.spec.interface(name, iface).features
            if wanted:
                self.set_features(name, iface, **wanted)
        if spec.nft:
            loaded = node.run(["nft", "-f", "-"], input=spec.nft)
            if loaded.returncode != 0:
                raise BackendError(f"mininet backend: nftables rules of node {name!r} were refused: {loaded.stderr.strip()}")

    def _await_carrier(self, name: str, timeout_s: float = 5.0) -> None:
        """Wait until every interface of the node has carrier (LOWER_UP).

        The kernel raises a veth's carrier from its linkwatch work, a moment after `ip link
        set up`; IPv6 neighbour discovery sent before that is lost. The netns backend avoids
        the delay with explicit interface indexes, which Mininet does not let us choose, so
        here the node's shell polls its links (every 20 ms, bounded) instead.
        """
        names = "|".join(self.spec.interfaces_of(name))
        if not names:
            return
        tries = int(timeout_s / 0.02)
        script = (f"for i in $(seq {tries}); do ip -o link show | grep -v LOWER_UP | grep -qE ': ({names})[@:]' "
                  "|| exit 0; sleep 0.02; done; exit 1")
        if self.nodes[name].run(script, timeout=timeout_s + 5).returncode != 0:
            raise BackendError(f"mininet backend: interfaces of node {name!r} got no carrier within {timeout_s:g} s")

    # --- the Lab API subset -----------------------------------------------------------
    def node(self, name: str) -> MininetNode:
        if name not in self.nodes:
            raise BackendError(f"lab {self.id} has no node {name!r}")
        return self.nodes[name]

    def address(self, node: str, version: int = 4) -> str:
        addr = self.spec.first_address(node, version)
        if addr is None:
            raise BackendError(f"node {node!r} has no IPv{version} address")
        return addr

    def _in_node(self, node: str) -> int:
        return os.open(f"/proc/{self.node(node)._mn.pid}/ns/net", os.O_RDONLY)

    def features(self, node: str, iface: str) -> dict[str, bool]:
        return self.set_features(node, iface)

    def set_features(self, node: str, iface: str, **wanted: bool) -> dict[str, bool]:
        fd = self._in_node(node)
        try:
            with entered(fd), FeatureControl() as control:
                return control.apply(iface, wanted, where=f"node {node}, interface {iface}")
        finally:
            os.close(fd)

    def detach(self) -> None:
        raise LabError("the mininet backend cannot leave a lab running after toelab exits "
                       "(its nodes are toelab's child processes); use `toelab shell --backend mininet`")

    def down(self) -> None:
        for node in self.nodes.values():
            node.stop_children()
        if getattr(self, "_net", None) is not None:
            self._net.stop()
            self._net = None
        if getattr(self, "record", None) is not None:
            remove_record(self.record.lab_id)
            self.record = None

    def __enter__(self) -> "MininetLab":
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()
