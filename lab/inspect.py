"""What a running lab is, as data: nodes, interfaces and addresses as the kernel has them, processes, record.

`toelab inspect LAB` prints it as JSON. It reads the lab's state record and asks each
namespace over netlink, so it works from any process and changes nothing.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

from .state import LabRecord, is_alive


def interfaces_of(namespace: str) -> list[dict[str, Any]]:
    """Every interface of a namespace but lo: name, state, MTU, MAC and addresses with prefix length."""
    from .netlink import NamespaceLink

    link = NamespaceLink(namespace)
    try:
        addresses: dict[int, list[str]] = {}
        for msg in link.ipr.get_addr():
            addresses.setdefault(msg["index"], []).append(f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}")
        out = []
        for msg in link.ipr.get_links():
            name = msg.get_attr("IFLA_IFNAME")
            if name == "lo":
                continue
            out.append({"name": name, "state": str(msg.get_attr("IFLA_OPERSTATE")).lower(), "mtu": msg.get_attr("IFLA_MTU"),
                        "mac": msg.get_attr("IFLA_ADDRESS"), "addresses": addresses.get(msg["index"], [])})
        return out
    finally:
        link.close()


def describe_lab(record: LabRecord) -> dict[str, Any]:
    """The lab as one JSON-ready mapping."""
    prefix = f"{record.lab_id}-"
    kinds = {name: node.get("kind", "host") for name, node in (record.spec or {}).get("nodes", {}).items()}
    nodes = {}
    for namespace in record.namespaces:
        name = namespace.removeprefix(prefix)
        nodes[name] = {"kind": kinds.get(name), "namespace": namespace, "interfaces": interfaces_of(namespace)}
    return {
        "lab": record.lab_id, "topology": record.topology, "backend": record.backend, "status": record.status,
        "owner": record.owner_description(), "created": record.created, "nodes": nodes,
        "processes": [{**asdict(p), "alive": is_alive(p.pid, p.start_time)} for p in record.processes],
        "captures": record.captures, "record": asdict(record),
    }
