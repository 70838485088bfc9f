"""Errors of the I/O drivers: one sentence that names the interface and the namespace."""
from __future__ import annotations


class IoSetupError(OSError):
    """A driver could not be opened; the message says what and where."""


class NamespaceNotFoundError(IoSetupError):
    """The named network namespace does not exist under /run/netns."""

    def __init__(self, netns: str) -> None:
        self.netns = netns
        super().__init__(f"network namespace {netns!r} does not exist (no /run/netns/{netns})")


class InterfaceNotFoundError(IoSetupError):
    """The interface does not exist in the namespace the driver was asked to use."""

    def __init__(self, ifname: str, netns: str | None) -> None:
        self.ifname, self.netns = ifname, netns
        where = f"network namespace {netns!r}" if netns else "the current network namespace"
        super().__init__(f"interface {ifname!r} does not exist in {where}")


def namespace_label(netns: str | int | None) -> str | None:
    """How an error names a namespace given by name, by file descriptor or not at all."""
    if netns is None:
        return None
    return netns if isinstance(netns, str) else f"fd {netns}"
