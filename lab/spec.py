"""The validated topology: what a rendered template must say before anything is built.

Pydantic checks each field; `TopologySpec.check_consistency` checks what spans fields
(links naming unknown nodes, duplicate addresses, routes via unknown interfaces). Every
error becomes one `SpecError` naming the template, the line and the field.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import SpecError
from .kinds import NODE_KINDS
from .yamlpos import DuplicateKey, Path, line_of, load_with_lines

IFNAMSIZ = 15  # the kernel's limit on interface names (IFNAMSIZ - 1)
NODE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,9}$")
IFACE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")

Feature = Literal["tso", "gso", "gro", "lro", "rx_csum", "tx_csum", "sg"]
NodeKind = Literal["host", "router", "switch", "toe", "middlebox"]

#: toelab feature name -> the kernel's ethtool feature string.
ETHTOOL_FEATURES: dict[str, str] = {
    "tso": "tx-tcp-segmentation",
    "gso": "tx-generic-segmentation",
    "gro": "rx-gro",
    "lro": "rx-lro",
    "rx_csum": "rx-checksum",
    "tx_csum": "tx-checksum-ip-generic",
    "sg": "tx-scatter-gather",
}


class EngineSettingsError(ValueError):
    """A node's `engine` settings are wrong; `path` is the offending field within `engine`."""

    def __init__(self, message: str, path: tuple[str | int, ...] = ()) -> None:
        super().__init__(message)
        self.path = path


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InterfaceSpec(_Strict):
    """Per-interface settings; the interface itself comes from a link."""

    addresses: list[ipaddress.IPv4Interface | ipaddress.IPv6Interface] = []
    mtu: int | None = Field(None, ge=68, le=65535)
    features: dict[Feature, bool] = {}
    mac: str | None = Field(None, pattern=r"^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$")


class RouteSpec(_Strict):
    """A static route; `dst: default` for a default gateway."""

    dst: str
    via: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    dev: str | None = None
    mtu: int | None = Field(None, ge=68, le=65535)
    advmss: int | None = Field(None, ge=1, le=65535)

    @field_validator("dst")
    @classmethod
    def _dst_is_prefix(cls, value: str) -> str:
        if value in ("default", "default6"):
            return value
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ValueError(f"{value!r} is neither 'default', 'default6' nor an address prefix") from None
        return value

    @property
    def family(self) -> int:
        """4 or 6: from the gateway if there is one, else from the prefix."""
        if self.dst == "default6":
            return 6
        if self.via is not None:
            return self.via.version
        if self.dst == "default":
            return 4
        return ipaddress.ip_network(self.dst, strict=False).version


class NodeSpec(_Strict):
    """A node: one network namespace."""

    kind: NodeKind = "host"
    description: str = ""
    interfaces: dict[str, InterfaceSpec] = {}
    routes: list[RouteSpec] = []
    sysctls: dict[str, str | int] = {}
    nft: str | None = None  # an nftables ruleset loaded into the node (MSS clamping, ICMP drops)
    engine: dict[str, Any] = {}  # settings for kinds toe and middlebox
    stp: bool = False  # a switch's bridge runs the spanning tree protocol (needed if switches form a loop)

    @field_validator("sysctls")
    @classmethod
    def _sysctls_are_net(cls, value: dict[str, str | int]) -> dict[str, str | int]:
        for key in value:
            if not re.fullmatch(r"net\.[A-Za-z0-9_./-]+", key):
                raise ValueError(f"sysctl {key!r} is not a per-namespace net.* setting")
        return value


class ImpairmentSpec(_Strict):
    """Link impairments in tc-netem's terms; a backend without netem must refuse them."""

    delay_ms: float = Field(0, ge=0)
    jitter_ms: float = Field(0, ge=0)
    loss: float = Field(0, ge=0, le=100)
    rate_mbit: float | None = Field(None, gt=0)


class LinkSpec(_Strict):
    """A veth pair between two `node:iface` endpoints."""

    endpoints: tuple[str, str]
    mtu: int | None = Field(None, ge=68, le=65535)
    impairments: ImpairmentSpec | None = None

    @field_validator("endpoints")
    @classmethod
    def _endpoints_have_form(cls, value: tuple[str, str]) -> tuple[str, str]:
        for endpoint in value:
            node, sep, iface = endpoint.partition(":")
            if not sep or not node or not iface:
                raise ValueError(f"endpoint {endpoint!r} is not of the form 'node:iface'")
        return value

    def split(self, index: int) -> tuple[str, str]:
        node, _, iface = self.endpoints[index].partition(":")
        return node, iface


class TopologySpec(_Strict):
    """A whole topology, as rendered from a template."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    description: str = ""
    nodes: dict[str, NodeSpec]
    links: list[LinkSpec] = []

    def interfaces_of(self, node: str) -> list[str]:
        """The interfaces the links give `node`, in link order."""
        out = []
        for link in self.links:
            for index in (0, 1):
                n, iface = link.split(index)
                if n == node:
                    out.append(iface)
        return out

    def interface(self, node: str, iface: str) -> InterfaceSpec:
        return self.nodes[node].interfaces.get(iface) or InterfaceSpec()

    def link_mtu(self, node: str, iface: str) -> int | None:
        """The MTU of an interface: its own setting, else its link's."""
        own = self.interface(node, iface).mtu
        if own is not None:
            return own
        for link in self.links:
            if f"{node}:{iface}" in link.endpoints:
                return link.mtu
        return None

    def addresses(self, node: str) -> dict[str, list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]]:
        return {iface: list(self.interface(node, iface).addresses) for iface in self.interfaces_of(node)}

    def first_address(self, node: str, version: int = 4) -> str | None:
        """The node's first address of an IP version, for `h1` -> address substitution."""
        for addrs in self.addresses(node).values():
            for addr in addrs:
                if addr.version == version:
                    return str(addr.ip)
        return None


def _consistency_errors(spec: TopologySpec) -> list[tuple[Path, str]]:
    """Problems that span fields, each with the path of the field to blame."""
    errors: list[tuple[Path, str]] = []
    for name in spec.nodes:
        if not NODE_NAME.match(name):
            errors.append((("nodes", name), f"node name {name!r} must be a letter then up to 9 letters, digits or _"))
    seen_endpoints: dict[str, int] = {}
    for i, link in enumerate(spec.links):
        if link.endpoints[0] == link.endpoints[1]:
            errors.append((("links", i, "endpoints"), f"link joins {link.endpoints[0]!r} to itself"))
        for j in (0, 1):
            node, iface = link.split(j)
            path: Path = ("links", i, "endpoints", j)
            if node not in spec.nodes:
                errors.append((path, f"link endpoint {link.endpoints[j]!r} names unknown node {node!r}"))
            if len(iface) > IFNAMSIZ:
                errors.append((path, f"interface name {iface!r} is {len(iface)} characters, over the kernel's limit of {IFNAMSIZ}"))
            elif not IFACE_NAME.match(iface):
                errors.append((path, f"interface name {iface!r} may hold only letters, digits, '_', '.' and '-'"))
            if link.endpoints[j] in seen_endpoints:
                errors.append((path, f"endpoint {link.endpoints[j]!r} is already used by link {seen_endpoints[link.endpoints[j]]}"))
            seen_endpoints[link.endpoints[j]] = i
    seen_addresses: dict[str, str] = {}
    for name, node in spec.nodes.items():
        linked = set(spec.interfaces_of(name))
        for iface, ispec in node.interfaces.items():
            path = ("nodes", name, "interfaces", iface)
            if iface not in linked:
                errors.append((path, f"interface {name}:{iface} is configured but no link creates it"))
            if node.kind == "switch" and ispec.addresses:
                errors.append((path + ("addresses",), f"switch port {name}:{iface} cannot carry addresses"))
            mtu = spec.link_mtu(name, iface)
            for addr in ispec.addresses:
                where = f"{name}:{iface}"
                if str(addr.ip) in seen_addresses:
                    errors.append((path + ("addresses",), f"address {addr.ip} of {where} is already used by {seen_addresses[str(addr.ip)]}"))
                seen_addresses[str(addr.ip)] = where
                if addr.version == 6 and mtu is not None and mtu < 1280:
                    errors.append((path + ("mtu",), f"{where} has an IPv6 address but MTU {mtu} is below IPv6's minimum of 1280"))
        for r, route in enumerate(node.routes):
            if route.dev is not None and route.dev not in linked:
                errors.append((("nodes", name, "routes", r, "dev"), f"route via device {route.dev!r}, which node {name!r} does not have"))
            if route.dev is None and route.via is None:
                errors.append((("nodes", name, "routes", r), "route needs 'via' or 'dev'"))
        if node.kind == "switch" and node.routes:
            errors.append((("nodes", name, "routes"), f"switch {name!r} cannot have routes"))
        if node.stp and node.kind != "switch":
            errors.append((("nodes", name, "stp"), f"stp is a switch setting; {name!r} is a {node.kind}"))
        validate_engine = NODE_KINDS[node.kind].validator()
        if validate_engine is not None:
            try:
                validate_engine(node, spec.interfaces_of(name))
            except ValueError as exc:
                field = getattr(exc, "path", ())
                errors.append((("nodes", name, "engine", *field), f"engine settings of {node.kind} {name!r}: {exc}"))
    errors.extend(_switch_loops(spec))
    return errors


def _forwards_frames(node: NodeSpec) -> bool:
    """Switches and bridge-mode middleboxes pass frames on at layer 2, so a loop of them storms."""
    return node.kind == "switch" or (node.kind == "middlebox" and node.engine.get("mode") == "bridge")


def _switch_loops(spec: TopologySpec) -> list[tuple[Path, str]]:
    """A link closing a loop of layer-2 forwarders (broadcasts would circle forever) unless they all run STP."""
    parent = {name: name for name in spec.nodes}

    def root(name: str) -> str:
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    errors: list[tuple[Path, str]] = []
    for i, link in enumerate(spec.links):
        (a, _), (b, _) = link.split(0), link.split(1)
        if a not in spec.nodes or b not in spec.nodes:
            continue
        if not (_forwards_frames(spec.nodes[a]) and _forwards_frames(spec.nodes[b])):
            continue
        if root(a) == root(b):
            loop = sorted(n for n in spec.nodes if _forwards_frames(spec.nodes[n]) and root(n) == root(a))
            if not all(spec.nodes[n].stp for n in loop):
                errors.append((("links", i, "endpoints"), f"link {link.endpoints[0]} - {link.endpoints[1]} closes a "
                               f"loop of switches ({', '.join(loop)}) that would storm broadcasts: set `stp: true` "
                               "on those switches or remove the link"))
        parent[root(a)] = root(b)
    return errors


def _field_path(loc: tuple[str | int, ...]) -> Path:
    """Pydantic's error location with its model-type steps removed."""
    return tuple(step for step in loc if not (isinstance(step, str) and "[" in step))


def _describe(path: Path) -> str:
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else str(step))
    return out


def parse_spec(text: str, source: str) -> TopologySpec:
    """Validate rendered YAML into a TopologySpec, or raise the first SpecError found."""
    import yaml

    try:
        data, lines = load_with_lines(text, source)
    except DuplicateKey as exc:
        raise SpecError(source, f"line {exc.second_line}, {_describe(exc.path)}", str(exc)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else ""
        raise SpecError(source, where, f"YAML syntax error: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise SpecError(source, "line 1", "the topology must be a mapping with 'name', 'nodes' and 'links'")

    def located(path: Path) -> str:
        line = line_of(lines, path)
        field = _describe(path)
        return f"line {line}, {field}" if line and field else (f"line {line}" if line else field)

    try:
        spec = TopologySpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        path = _field_path(err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = f"unknown field {path[-1]!r}"
        elif err["type"] == "literal_error" and path:
            message = f"{err['input']!r} is not allowed here: {message.lower()}"
        raise SpecError(source, located(path), message) from None
    problems = _consistency_errors(spec)
    if problems:
        path, message = problems[0]
        raise SpecError(source, located(path), message)
    return spec
