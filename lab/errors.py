"""One error type for everything a user can get wrong: it carries where and what, in one sentence."""
from __future__ import annotations


class LabError(Exception):
    """A user-facing error: the message is one sentence saying what is wrong and where.

    The CLI prints it without a traceback and exits with status 2.
    """

    exit_code = 2


class SpecError(LabError):
    """A topology template or its parameters are wrong."""

    def __init__(self, source: str, where: str, what: str) -> None:
        self.source, self.where, self.what = source, where, what
        super().__init__(f"{source}: {where}: {what}" if where else f"{source}: {what}")


class BackendError(LabError):
    """The backend cannot build what the spec asks for (a refused feature, a missing tool or privilege)."""


def require_root(what: str) -> None:
    """LabError unless this process is root: namespaces can only be built by root."""
    import os

    if os.geteuid() != 0:
        raise LabError(f"{what} needs root (it builds network namespaces): run it as root.")


def require_tools(needed: dict[str, str]) -> None:
    """BackendError naming the first missing program: `{"tcpdump": "toelab run captures every scenario"}`."""
    import shutil

    for tool, why in needed.items():
        if shutil.which(tool) is None:
            raise BackendError(f"{why}, which needs {tool}, and {tool} is not installed "
                               f"(apt-get install {TOOL_PACKAGES.get(tool, tool)}, or ./run demo, which installs it)")


#: program -> the Debian package that has it.
TOOL_PACKAGES = {"nft": "nftables", "ip": "iproute2", "tc": "iproute2", "ping": "iputils-ping"}
