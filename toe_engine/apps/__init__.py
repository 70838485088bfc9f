"""Built-in applications the engine serves on offloaded flows: discard, echo, chargen, HTTP.

Each is sans-IO: it reacts to connection events and calls the connection's send/close.
`APPS` maps the names used in configuration to their classes.
"""
from __future__ import annotations

from .base import App, AppConnection
from .simple import Chargen, Discard, Echo
from .http import HttpResponder

APPS: dict[str, type[App]] = {"discard": Discard, "echo": Echo, "chargen": Chargen, "http": HttpResponder}

__all__ = ["APPS", "App", "AppConnection", "Chargen", "Discard", "Echo", "HttpResponder"]
