"""The sans-IO TCP core: segments, time and application calls in; segments and events out."""
from __future__ import annotations

from toe_engine.tcp.admission import AcceptAll, Admission, AdmissionHook, CookieParams, SynCookieHook
from toe_engine.tcp.config import TcpConfig
from toe_engine.tcp.connection import Connection, State, TcpError
from toe_engine.tcp.events import Accepted, Closed, Connected, DataReceived, Error, Event, PeerClosed, Reset, Writable
from toe_engine.tcp.icmp import IcmpError
from toe_engine.tcp.isn import IsnGenerator
from toe_engine.tcp.stack import TcpStack

__all__ = [
    "AcceptAll", "Accepted", "Admission", "AdmissionHook", "Closed", "Connected", "Connection", "CookieParams",
    "DataReceived", "Error", "Event", "IcmpError", "IsnGenerator", "PeerClosed", "Reset", "State",
    "SynCookieHook", "TcpConfig", "TcpError", "TcpStack", "Writable",
]
