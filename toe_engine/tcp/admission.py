"""The hook through which a resource model decides whether a SYN gets a TCB.

TcpStack calls `admit()` before it creates a TCB for a SYN that reached a listener, and
`release()` when a TCB created that way is freed. A hook that answers COOKIE must also have
`cookie_isn()` (the ISN to put in a stateless SYN-ACK) and `check_cookie()` (decode a returning
ACK into CookieParams, or None if it is not a valid cookie); the stack then builds an
ESTABLISHED TCB straight from those parameters, without a SYN-RECEIVED entry.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from toe_engine.segment import FourTuple, Segment


class Admission(Enum):
    ACCEPT = "accept"  # create a TCB in SYN-RECEIVED
    PASS = "pass"  # not ours: TcpStack.on_segment returns False so the caller hands it on
    DROP = "drop"
    RESET = "reset"  # answer with RST,ACK
    COOKIE = "cookie"  # stateless SYN-ACK whose ISN comes from cookie_isn()


@dataclass(frozen=True, slots=True)
class CookieParams:
    """What a valid SYN cookie restores of the peer's SYN."""

    mss: int
    wscale: int | None  # the peer's shift; None if its SYN carried no window scale option
    sack: bool
    timestamps: bool


class AdmissionHook(Protocol):
    def admit(self, four_tuple: FourTuple, syn: Segment, now: float) -> Admission: ...

    def release(self, four_tuple: FourTuple) -> None: ...


class SynCookieHook(AdmissionHook, Protocol):
    def cookie_isn(self, four_tuple: FourTuple, syn: Segment, now: float) -> int | tuple[int, int | None]:
        """The cookie ISN, or (ISN, TSval) when the cookie also encodes options in the timestamp."""
        ...

    def check_cookie(self, four_tuple: FourTuple, ack: Segment, now: float) -> CookieParams | None: ...


class AcceptAll:
    """The default hook: every SYN gets a TCB, nothing is accounted."""

    __slots__ = ()

    def admit(self, four_tuple: FourTuple, syn: Segment, now: float) -> Admission:
        return Admission.ACCEPT

    def release(self, four_tuple: FourTuple) -> None:
        return None
