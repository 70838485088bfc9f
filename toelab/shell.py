"""The lab shell: Mininet's CLI conventions on a toelab lab.

`<node> <command>` runs inside that node with other node names replaced by their first
IPv4 address (so `h1 ping -c1 h2` works); `nodes`, `net`, `links`, `intfs`, `dump`,
`pingall`, `iperf a b`, `capture start|stop`, `features`, history and tab completion.
It is a `cmd.Cmd`, so tests drive it through `onecmd()` with a captured stdout.
"""
from __future__ import annotations

import cmd
import os
import re
import shlex
from pathlib import Path
from typing import IO, Callable

from lab.errors import LabError
from lab.lab import Lab
from lab.spec import ETHTOOL_FEATURES
from lab.tools import iperf, ping

from .shell_engine import toe

HISTORY = Path(os.environ.get("TOELAB_HISTORY", str(Path.home() / ".toelab_history")))
ShellCommand = Callable[["LabShell", list[str]], None]
#: Shell commands implemented in other modules, name -> handler.
EXTENSIONS: dict[str, ShellCommand] = {"toe": toe}


class LabShell(cmd.Cmd):
    """An interactive shell over one running lab."""

    intro = "toelab shell: type help for commands, exit to tear the lab down."

    def __init__(self, lab: Lab, stdout: IO[str] | None = None) -> None:
        super().__init__(stdout=stdout)
        self.lab = lab
        self.prompt = f"toelab({lab.spec.name})> "
        self.captures: dict[str, object] = {}

    # --- output -----------------------------------------------------------------------
    def say(self, text: str = "") -> None:
        self.stdout.write(text + "\n")

    def run_guarded(self, action: Callable[[], None]) -> None:
        try:
            action()
        except (LabError, RuntimeError, ValueError, KeyError) as exc:
            self.say(f"*** {exc}")

    # --- the Mininet-style commands ---------------------------------------------------
    def do_nodes(self, _: str) -> None:
        """nodes: list the nodes and their kinds."""
        self.say("available nodes are:")
        self.say(" ".join(f"{name}({spec.kind})" for name, spec in self.lab.spec.nodes.items()))

    def do_links(self, _: str) -> None:
        """links: list the links with their MTUs."""
        for link in self.lab.spec.links:
            a, b = link.endpoints
            self.say(f"{a}<->{b} mtu {link.mtu or 1500}")

    def do_net(self, _: str) -> None:
        """net: each node with what its interfaces connect to."""
        peers: dict[str, list[str]] = {name: [] for name in self.lab.spec.nodes}
        for link in self.lab.spec.links:
            a, b = link.endpoints
            peers[a.split(":")[0]].append(f"{a.split(':')[1]}:{b}")
            peers[b.split(":")[0]].append(f"{b.split(':')[1]}:{a}")
        for name, items in peers.items():
            self.say(f"{name} " + " ".join(items))

    def do_intfs(self, _: str) -> None:
        """intfs: each node's interfaces."""
        for name in self.lab.spec.nodes:
            self.say(f"{name}: " + ",".join(self.lab.spec.interfaces_of(name)))

    def do_dump(self, _: str) -> None:
        """dump: every node with kind, namespace and addresses."""
        for name, spec in self.lab.spec.nodes.items():
            addrs = ", ".join(f"{iface}={'/'.join(str(a) for a in addrs)}"
                              for iface, addrs in self.lab.spec.addresses(name).items() if addrs)
            self.say(f"<{spec.kind} {name}: netns={self.lab.node(name).netns} {addrs}>")

    def do_pingall(self, _: str) -> None:
        """pingall: every addressed node pings every other one (IPv4)."""
        names = [n for n in self.lab.spec.nodes if self.lab.spec.first_address(n)]
        lost = total = 0
        for src in names:
            line = []
            for dst in names:
                if dst == src:
                    continue
                result = ping(self.lab, src, self.lab.spec.first_address(dst) or "", count=1)
                total += 1
                lost += 0 if result.ok else 1
                line.append(dst if result.ok else "X")
            self.say(f"{src} -> " + " ".join(line))
        self.say(f"*** Results: {100 * lost // max(total, 1)}% dropped ({total - lost}/{total} received)")

    def do_iperf(self, line: str) -> None:
        """iperf CLIENT SERVER [SECONDS]: iperf3 throughput from CLIENT to SERVER."""
        args = line.split()
        if len(args) not in (2, 3):
            self.say("*** usage: iperf CLIENT SERVER [SECONDS]")
            return

        def act() -> None:
            result = iperf(self.lab, args[0], args[1], float(args[2]) if len(args) == 3 else 2.0)
            self.say(f"*** iperf3 {args[0]} -> {args[1]}: {result.gbit_per_s:.2f} Gbit/s, "
                     f"{result.retransmits} retransmits")
        self.run_guarded(act)

    def do_capture(self, line: str) -> None:
        """capture start NODE IFACE [FILTER] | capture stop NODE IFACE | capture list"""
        args = line.split()
        if args[:1] == ["list"]:
            for key in self.captures:
                self.say(key)
            return
        if len(args) < 3 or args[0] not in ("start", "stop"):
            self.say("*** usage: capture start NODE IFACE [FILTER] | capture stop NODE IFACE")
            return
        action, node, iface = args[:3]
        key = f"{node}:{iface}"

        def act() -> None:
            if action == "start":
                self.captures[key] = self.lab.capture(node, iface, filter=" ".join(args[3:]))
                self.say(f"*** capturing on {key}")
            else:
                capture = self.captures.pop(key, None)
                if capture is None:
                    raise ValueError(f"no capture running on {key}")
                self.say(f"*** wrote {capture.stop()}")  # type: ignore[attr-defined]
        self.run_guarded(act)

    def do_features(self, line: str) -> None:
        """features NODE IFACE [feature=on|off ...]: show or set offload features."""
        args = line.split()
        if len(args) < 2:
            self.say("*** usage: features NODE IFACE [feature=on|off ...]")
            return

        def act() -> None:
            changes = {}
            for item in args[2:]:
                name, _, value = item.partition("=")
                if name not in ETHTOOL_FEATURES or value not in ("on", "off"):
                    raise ValueError(f"{item!r}: expected one of {', '.join(ETHTOOL_FEATURES)} =on|off")
                changes[name] = value == "on"
            state = (self.lab.set_features(args[0], args[1], **changes) if changes
                     else self.lab.features(args[0], args[1]))
            self.say(" ".join(f"{k}={'on' if v else 'off'}" for k, v in state.items()))
        self.run_guarded(act)

    def do_exit(self, _: str) -> bool:
        """exit: leave the shell and tear the lab down."""
        return True

    do_quit = do_exit
    do_EOF = do_exit

    def emptyline(self) -> bool:
        return False

    # --- `<node> <command>` and extensions -------------------------------------------
    def default(self, line: str) -> bool | None:
        first, _, rest = line.strip().partition(" ")
        if first in EXTENSIONS:
            self.run_guarded(lambda: EXTENSIONS[first](self, shlex.split(rest)))
            return None
        if first in self.lab.spec.nodes and rest:
            result = self.lab.node(first).run(self.substitute(rest), timeout=120)
            self.stdout.write(result.stdout + result.stderr)
            return None
        self.say(f"*** unknown command or node: {first}")
        return None

    def substitute(self, command: str) -> str:
        """Replace whole-word node names with their first IPv4 address, as Mininet does."""
        def swap(match: re.Match[str]) -> str:
            return self.lab.spec.first_address(match.group(0)) or match.group(0)
        names = sorted(self.lab.spec.nodes, key=len, reverse=True)
        return re.sub(r"\b(" + "|".join(map(re.escape, names)) + r")\b", swap, command)

    def completenames(self, text: str, *ignored: object) -> list[str]:
        return super().completenames(text, *ignored) + [
            n for n in list(self.lab.spec.nodes) + list(EXTENSIONS) if n.startswith(text)]

    def completedefault(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        return [n for n in self.lab.spec.nodes if n.startswith(text)]

    # --- history ----------------------------------------------------------------------
    def preloop(self) -> None:
        try:
            import readline
            readline.set_completer_delims(" \t\n")
            if HISTORY.exists():
                readline.read_history_file(str(HISTORY))
        except (ImportError, OSError):
            pass

    def postloop(self) -> None:
        try:
            import readline
            readline.set_history_length(1000)
            readline.write_history_file(str(HISTORY))
        except (ImportError, OSError):
            pass

    def do_help(self, arg: str) -> None:
        """help [COMMAND]: list commands or describe one."""
        if arg:
            super().do_help(arg)
            return
        for name in sorted(n[3:] for n in self.get_names() if n.startswith("do_") and n not in ("do_EOF",)):
            doc = getattr(self, f"do_{name}").__doc__ or ""
            self.say(f"  {doc.strip().splitlines()[0] if doc else name}")
        for name, handler in sorted(EXTENSIONS.items()):
            self.say(f"  {(handler.__doc__ or name).strip().splitlines()[0]}")
        self.say("  <node> <command>: run a command inside a node; node names become addresses")
