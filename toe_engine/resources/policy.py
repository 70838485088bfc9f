"""What the engine does with a new flow: the admission decision, the exhaustion policy,
the port filter, and the memory of flows handed to the host stack.

`fallback` is the "parallel stack" model of TOE NICs: a flow the card cannot hold goes to the
host kernel, and must keep going there for its whole life, so the engine remembers it in a
bounded set until its FIN/RST or until it has been idle too long.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum

from ..segment import FIN, RST, FourTuple
from ..tcp.admission import Admission


class PolicyKind(str, Enum):
    FALLBACK = "fallback"
    DENY = "deny"
    SYNCOOKIE = "syncookie"


class DenyAction(str, Enum):
    DROP = "drop"
    RST = "rst"


@dataclass(frozen=True, slots=True)
class ExhaustionPolicy:
    """What to answer when the table, its embryonic share or the buffer pool is full."""

    kind: PolicyKind = PolicyKind.FALLBACK
    deny_action: DenyAction = DenyAction.DROP

    @classmethod
    def parse(cls, text: str) -> ExhaustionPolicy:
        """From configuration text: 'fallback', 'deny', 'deny:drop', 'deny:rst' or 'syncookie'."""
        kind, _, action = text.strip().lower().partition(":")
        try:
            policy_kind = PolicyKind(kind)
            deny_action = DenyAction(action or "drop")
        except ValueError:
            raise ValueError(
                f"unknown exhaustion policy {text!r}: use fallback, deny, deny:drop, deny:rst or syncookie"
            ) from None
        if action and policy_kind is not PolicyKind.DENY:
            raise ValueError(f"exhaustion policy {text!r}: only 'deny' takes an action")
        return cls(policy_kind, deny_action)

    def on_exhaustion(self) -> Admission:
        """The admission decision this policy gives when there is no room."""
        if self.kind is PolicyKind.FALLBACK:
            return Admission.PASS
        if self.kind is PolicyKind.SYNCOOKIE:
            return Admission.COOKIE
        return Admission.RESET if self.deny_action is DenyAction.RST else Admission.DROP


class PortFilter:
    """The local ports the engine terminates; every other flow always passes to the host."""

    __slots__ = ("_ports",)

    def __init__(self, ports: Iterable[int] | None = None) -> None:
        self._ports: frozenset[int] | None = None
        self.set_ports(ports)

    def set_ports(self, ports: Iterable[int] | None) -> None:
        """None means every port; an empty collection means none."""
        if ports is None:
            self._ports = None
            return
        chosen = frozenset(ports)
        bad = sorted(p for p in chosen if not 0 <= p <= 65535)
        if bad:
            raise ValueError(f"offload port {bad[0]} is outside 0..65535")
        self._ports = chosen

    @property
    def ports(self) -> frozenset[int] | None:
        return self._ports

    def offloads(self, local_port: int) -> bool:
        return self._ports is None or local_port in self._ports


class PassedFlows:
    """A bounded, idle-expiring set of flows handed to the host stack.

    A flow is forgotten on RST at once, `fin_linger` seconds after a FIN (so the closing
    handshake and a retransmitted FIN still pass), after `idle_timeout` seconds without a
    frame, or, when the set is full, least recently seen first (counted in `evicted`).
    """

    def __init__(self, limit: int = 65536, idle_timeout: float = 300.0, fin_linger: float = 30.0) -> None:
        if limit <= 0:
            raise ValueError(f"passed-flow limit must be positive, got {limit}")
        if idle_timeout <= 0 or fin_linger <= 0:
            raise ValueError("passed-flow idle_timeout and fin_linger must be positive seconds")
        self.limit = limit
        self.idle_timeout = idle_timeout
        self.fin_linger = fin_linger
        self.evicted = 0
        # four_tuple -> (deadline, closing); least recently seen first.
        self._flows: OrderedDict[FourTuple, tuple[float, bool]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._flows)

    def __contains__(self, four_tuple: object) -> bool:
        return four_tuple in self._flows

    def __iter__(self) -> Iterator[FourTuple]:
        """The remembered flows, least recently seen first (for connection listings)."""
        return iter(list(self._flows))

    def add(self, four_tuple: FourTuple, now: float) -> None:
        """Remember a flow just handed to the host."""
        flows = self._flows
        if four_tuple not in flows and len(flows) >= self.limit:
            flows.popitem(last=False)
            self.evicted += 1
        flows[four_tuple] = (now + self.idle_timeout, False)
        flows.move_to_end(four_tuple)

    def see(self, four_tuple: FourTuple, flags: int, now: float) -> bool:
        """Whether a frame with `flags` belongs to a passed flow; refreshes or ends its memory."""
        flows = self._flows
        record = flows.get(four_tuple)
        if record is None:
            return False
        deadline, closing = record
        if now >= deadline:
            del flows[four_tuple]
            return False
        if flags & RST:
            del flows[four_tuple]
            return True
        if flags & FIN:
            flows[four_tuple] = (min(deadline, now + self.fin_linger), True)
        elif not closing:
            flows[four_tuple] = (now + self.idle_timeout, False)
        flows.move_to_end(four_tuple)
        return True

    def forget(self, four_tuple: FourTuple) -> bool:
        return self._flows.pop(four_tuple, None) is not None

    def expire(self, now: float) -> int:
        """Drop flows past their deadline, scanning from the least recently seen; returns how many.

        A closing flow seen recently may sit behind a live one; `see` drops it lazily.
        """
        flows = self._flows
        removed = 0
        while flows:
            four_tuple, (deadline, _) = next(iter(flows.items()))
            if now < deadline:
                break
            del flows[four_tuple]
            removed += 1
        return removed
