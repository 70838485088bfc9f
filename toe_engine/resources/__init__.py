"""Fixed resources of the offload engine: connection table, buffer pool, exhaustion policy, SYN cookies."""
from __future__ import annotations

from .bufpool import BufferPool, PoolExhausted
from .manager import ResourceConfig, ResourceManager
from .memory import BufferMemory
from .policy import Admission, DenyAction, ExhaustionPolicy, PassedFlows, PolicyKind, PortFilter
from .syncookie import DecodedCookie, SynCookies
from .table import ConnectionTable, EmbryonicLimit, ResourceExhausted, TableFull

__all__ = [
    "Admission",
    "BufferMemory",
    "BufferPool",
    "ConnectionTable",
    "DecodedCookie",
    "DenyAction",
    "EmbryonicLimit",
    "ExhaustionPolicy",
    "PassedFlows",
    "PolicyKind",
    "PoolExhausted",
    "PortFilter",
    "ResourceConfig",
    "ResourceExhausted",
    "ResourceManager",
    "SynCookies",
    "TableFull",
]
