"""The `toe` node kind: the engine as an endpoint in front of the node's own kernel stack.

In a toe node the kernel never touches the wire. The engine process reads and writes the
node's veth with AF_PACKET and creates a TAP towards the kernel; this module then moves the
node's identity onto that TAP (the veth's MAC and MTU, the spec's addresses, its routes, with
`dev <veth>` turned into the TAP) and shuts the kernel out of the veth: no addresses, IPv6
off, and an nftables netdev ingress hook that drops every frame. AF_PACKET taps run before
that hook, so the engine still sees everything; the kernel sees only what the engine passes
through the TAP. Kernel-side servers on the engine's ports (lab.services, the same applications) serve the flows
the engine falls back on, so a client sees one host with two stacks.

    with Lab.up(load_topology("toe_pair", {"capacity": 8})) as lab:
        lab.engine("t1").stats()["counters"]["conn_fallback"]
        lab.engine("t1").set(policy="deny:rst")

`start_endpoint` does the same on a node of any kind (a scenario's server host, say).
"""
from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from .backend_netns import doing, run_in_namespace
from .engine_nodes import EngineHandle, await_ready, runtime_dir, start_engine_process
from .errors import BackendError
from .netlink import NamespaceLink, write_sysctls
from .node import Node
from .spec import IFNAMSIZ, EngineSettingsError, NodeSpec, RouteSpec

if TYPE_CHECKING:
    import ipaddress

    from .lab import Lab

    from toe_engine.runtime.endpoint import EndpointSettings

ENDPOINT_MODULE = "toe_engine.runtime.endpoint_main"
HOST_SERVICES_MODULE = "lab.services"
#: Fields a lab fills in from the topology itself; an `engine:` block may not set them.
FROM_TOPOLOGY = ("addresses", "mac")
WIRE_NFT_TABLE = "toelab"


def wire_ruleset(wire: str, *standby: str) -> str:
    """Drop (and count) everything the kernel would receive on the wire ports; AF_PACKET has seen it by then."""
    chains = "".join(f"  chain {name} {{\n    type filter hook ingress device {json.dumps(port)} priority 0; "
                     "policy drop;\n    counter\n  }\n"
                     for name, port in zip(["in", *(f"in_standby{i}" for i in range(len(standby)))], [wire, *standby]))
    return f"table netdev {WIRE_NFT_TABLE} {{\n{chains}}}\n"


def validate_endpoint(node: NodeSpec, interfaces: list[str]) -> None:
    """Spec-time check of a toe node's `engine:` settings (its kind's validator in lab.kinds)."""
    from toe_engine.runtime.endpoint import EndpointSettings

    for field in FROM_TOPOLOGY:
        if field in node.engine:
            raise EngineSettingsError(f"{field}: set it on the wire interface; the engine takes the node's own",
                                      (field,))
    try:
        settings = EndpointSettings.model_validate(node.engine)
    except ValidationError as exc:
        error = exc.errors()[0]
        path = tuple(error["loc"])
        message = "unknown field" if error["type"] == "extra_forbidden" else error["msg"].removeprefix("Value error, ")
        where = ".".join(str(part) for part in path)
        raise EngineSettingsError(f"{where}: {message}" if where else message, path) from None
    if settings.wire not in interfaces:
        raise EngineSettingsError(f"wire: interface {settings.wire!r} is not one of the node's "
                                  f"({', '.join(interfaces) or 'none'})", ("wire",))
    for port in settings.standby:
        if port not in interfaces or port == settings.wire:
            raise EngineSettingsError(f"standby: {port!r} is not another of the node's interfaces "
                                      f"({', '.join(interfaces) or 'none'})", ("standby",))
    if settings.tap in interfaces or len(settings.tap) > IFNAMSIZ or not settings.tap:
        raise EngineSettingsError(f"tap: {settings.tap!r} must be a new interface name of 1 to {IFNAMSIZ} "
                                  "characters", ("tap",))
    ispec = node.interfaces.get(settings.wire)
    if ispec is None or not ispec.addresses:
        raise EngineSettingsError(f"wire: an endpoint answers for the addresses of {settings.wire!r}, "
                                  "which has none", ("wire",))


def start_endpoint(lab: Lab, node: Node, engine: dict[str, Any] | None = None,
                   routes: list[RouteSpec] | None = None) -> EngineHandle:
    """Put the engine in front of `node`'s kernel stack and start the host-side servers.

    `engine` is the node's `engine:` block (its spec's by default); the addresses are those
    of its wire interface in the spec, and `routes` (the spec's by default) move to the TAP.
    """
    from toe_engine.runtime.endpoint import EndpointSettings

    node_spec = lab.spec.nodes[node.name]
    engine = dict(node_spec.engine if engine is None else engine)
    wire = engine.get("wire", "eth0")
    interface = lab.spec.interface(node.name, wire)
    settings = EndpointSettings.parse({**engine, "addresses": [str(a) for a in interface.addresses],
                                       "broadcasts": [str(a.network.broadcast_address) for a in interface.addresses
                                                      if a.version == 4 and a.network.prefixlen < 31]})
    control = start_engine_process(lab, node, ENDPOINT_MODULE, settings.model_dump(mode="json"),
                                   f"toe engine on node {node.name}")
    _wire_host(node, settings, interface.addresses, node_spec.routes if routes is None else routes)
    _start_host_services(lab, node, settings.services)
    handle = EngineHandle(node.name, "toe", control)
    lab.register_engine(handle)
    return handle


def start_toe(lab: Lab, node: Node) -> None:
    """After-build hook of the `toe` kind."""
    start_endpoint(lab, node)


def _start_host_services(lab: Lab, node: Node, services: dict[int, str]) -> None:
    argv = [sys.executable, "-m", HOST_SERVICES_MODULE] + [f"{app}={port}" for port, app in services.items()]
    await_ready(node, argv, runtime_dir(lab) / f"{node.name}-host.log", f"host services on node {node.name}")


def _wire_host(node: Node, settings: EndpointSettings,
               addresses: list[ipaddress.IPv4Interface | ipaddress.IPv6Interface], routes: list[RouteSpec]) -> None:
    """Shut the kernel out of the wire and give the TAP the node's identity and routes."""
    where = f"node {node.name}"
    write_sysctls(node.netns, {f"net.ipv6.conf.{port}.disable_ipv6": 1 for port in [settings.wire, *settings.standby]})
    done = run_in_namespace(node.netns, ["nft", "-f", "-"], input=wire_ruleset(settings.wire, *settings.standby))
    if done.returncode != 0:
        raise BackendError(f"{where}: nftables refused the wire's ingress drop: {done.stderr.strip()}")
    nl = NamespaceLink(node.netns)
    try:
        wire_index, tap_index = nl.index(settings.wire), nl.index(settings.tap)
        link = nl.ipr.get_links(wire_index)[0]
        for address in addresses:
            if address.version == 4:
                with doing(f"{where}: removing {address} from {settings.wire}"):
                    nl.ipr.addr("del", index=wire_index, address=str(address.ip), prefixlen=address.network.prefixlen)
        with doing(f"{where}: giving {settings.tap} the MAC and MTU of {settings.wire}"):
            nl.ipr.link("set", index=tap_index, address=link.get_attr("IFLA_ADDRESS"),
                        mtu=settings.mtu or link.get_attr("IFLA_MTU"))
        with doing(f"{where}: setting {settings.tap} up"):
            nl.up(settings.tap)
        for address in addresses:
            with doing(f"{where}: adding {address} to {settings.tap}"):
                nl.add_address(settings.tap, address)
        for i, route in enumerate(routes):
            dst = route.dst
            if dst in ("default", "default6"):
                dst = "0.0.0.0/0" if route.family == 4 else "::/0"
            dev = settings.tap if route.dev in (None, settings.wire) else route.dev
            with doing(f"{where}, route {i} ({route.dst}): moving it to {settings.tap}"):
                nl.add_route(dst, route.family, str(route.via) if route.via else None, dev, route.mtu, route.advmss)
    finally:
        nl.close()


def tap_exists(node: Node, tap: str = "toe0") -> bool:
    """Whether the node still has the engine's TAP (it goes when the engine process does)."""
    return node.run(["ip", "link", "show", "dev", tap]).returncode == 0
