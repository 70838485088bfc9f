"""Node kinds: what each `kind:` of a topology node adds to a plain namespace.

One explicit table. A kind may validate its node's `engine:` settings while the spec is
parsed (so a bad setting is a SpecError with its line, before anything is built) and may
start something in the node once the whole lab is built (the engine of `toe` and
`middlebox` nodes); a start function that raises makes `Lab.up` fail and tear down.
Functions are named as "module:function" and imported on first use, so parsing a spec
that has no engine node never imports the engine.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from .lab import Lab
    from .node import Node
    from .spec import NodeSpec

EngineValidator = Callable[["NodeSpec", list[str]], None]
Starter = Callable[["Lab", "Node"], None]


@dataclass(frozen=True)
class NodeKind:
    """`validate(node_spec, interfaces)` raises ValueError (EngineSettingsError names the field);
    `start(lab, node)` runs once the lab is built."""

    name: str
    validate: str | None = None
    start: str | None = None

    def validator(self) -> EngineValidator | None:
        return _resolve(self.validate)

    def starter(self) -> Starter | None:
        return _resolve(self.start)


def _resolve(target: str | None) -> Any:
    if target is None:
        return None
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


#: Every node kind. Add one with one line here (and its name in spec.NodeKind).
NODE_KINDS: dict[str, NodeKind] = {kind.name: kind for kind in (
    NodeKind("host"),
    NodeKind("router"),
    NodeKind("switch"),
    NodeKind("toe", validate="lab.endpoint_nodes:validate_endpoint", start="lab.endpoint_nodes:start_toe"),
    NodeKind("middlebox", validate="lab.engine_nodes:validate_middlebox", start="lab.engine_nodes:start_middlebox"),
)}
