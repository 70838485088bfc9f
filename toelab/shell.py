"""The lab shell: Mininet's CLI conventions on a toelab lab.

`<node> <command>` runs inside that node on a pty (output as it comes, keys passed
through, Ctrl-C stops the command and not the shell), with whole words that name a node
replaced by its first IPv4 address (`h1 ping -c1 h2`; never inside `h1-eth0` or after
`dev`); `sh`, `py`, `source FILE`, `time`, `nodes`, `net`, `links`, `intfs`, `dump`,
`link A B up|down`, `pingall`, `pingpair`, `iperf a b`, `capture start|stop`, `features`,
`toe`, `scenario NAME` (a scenario run on this lab, its checks printed), history and tab
completion. It is a `cmd.Cmd`, so tests drive it through `onecmd()` with a captured stdout.
"""
from __future__ import annotations

import cmd
import os
import shlex
import subprocess
import time
from pathlib import Path
from typing import IO, Any, Callable

from lab.errors import LabError, require_tools
from lab.interrupts import note, rearm
from lab.lab import Lab
from lab.spec import ETHTOOL_FEATURES
from lab.tools import iperf, ping, set_link_state

from .shell_engine import toe
from .shell_scenario import scenario, scenario_names
from .terminal import run_on_pty

HISTORY = Path(os.environ.get("TOELAB_HISTORY", str(Path.home() / ".toelab_history")))
#: Words after which a name is an interface or a namespace, never an address to substitute.
NOT_AN_ADDRESS_AFTER = frozenset({"dev", "-i", "-I", "--interface", "iif", "oif", "master", "name", "netns",
                                  "peer", "link"})
MAX_SOURCE_DEPTH = 10
ShellCommand = Callable[["LabShell", list[str]], None]
#: Shell commands implemented in other modules, name -> handler.
EXTENSIONS: dict[str, ShellCommand] = {"toe": toe, "scenario": scenario}


class LabShell(cmd.Cmd):
    """An interactive shell over one running lab."""

    def __init__(self, lab: Lab, stdout: IO[str] | None = None) -> None:
        super().__init__(stdout=stdout)
        self.lab = lab
        self.prompt = f"toelab({lab.spec.name})> "
        self.captures: dict[str, object] = {}
        self.py_scope: dict[str, Any] = {"lab": lab, "spec": lab.spec, **lab.nodes}  # `py` names persist
        self.sourcing = 0  # depth of nested `source` commands
        self.intro = (f"toelab shell on lab {lab.id} ({lab.spec.name}): type help for commands, exit to "
                      + ("leave; the lab stays up." if lab.attached else "tear the lab down."))

    def onecmd(self, line: str) -> bool:
        """One command; Ctrl-C stops that command (`*** interrupted`), an error is one line, the shell carries on."""
        try:
            return bool(super().onecmd(line))
        except KeyboardInterrupt:
            self.say("*** interrupted")
            rearm()
            return False
        except Exception as exc:  # a command this lab cannot do (a Mininet lab has no `link`): say it, carry on
            self.say(f"*** {line.split()[0] if line.split() else 'command'}: {type(exc).__name__}: {exc}")
            return False

    def run(self, lines: list[str] | None = None) -> int:
        """Run `lines` (as `toelab shell -c`), or read commands from the terminal until exit."""
        note(f"in the shell on lab {self.lab.id}")
        if not lines:
            self.cmdloop()
            return 0
        for line in lines:
            if self.onecmd(line):
                break
        return 0

    # --- output -----------------------------------------------------------------------
    def say(self, text: str = "") -> None:
        self.stdout.write(text + "\n")

    def run_guarded(self, action: Callable[[], None]) -> None:
        """Run a command; what goes wrong is one line, and the shell (and the lab) carry on."""
        try:
            action()
        except (LabError, RuntimeError, ValueError, KeyError, OSError, subprocess.TimeoutExpired) as exc:
            self.say(f"*** {exc.strerror + ': ' + str(exc.filename) if isinstance(exc, OSError) and exc.filename else exc}")

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
            require_tools({"iperf3": "iperf in the shell measures with iperf3"})
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
                require_tools({"tcpdump": "capture in the shell records with tcpdump"})
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

    def do_pingpair(self, _: str) -> None:
        """pingpair: the first two hosts (or other addressed nodes) ping each other (IPv4)."""
        addressed = [n for n in self.lab.spec.nodes if self.lab.spec.first_address(n)]
        hosts = [n for n in addressed if self.lab.spec.nodes[n].kind in ("host", "toe")]
        names = (hosts + [n for n in addressed if n not in hosts])[:2]
        if len(names) < 2:
            self.say("*** pingpair needs two nodes with IPv4 addresses")
            return
        lost = 0
        for src, dst in (names, names[::-1]):
            result = ping(self.lab, src, self.lab.spec.first_address(dst) or "", count=1)
            lost += 0 if result.ok else 1
            self.say(f"{src} -> {dst if result.ok else 'X'}")
        self.say(f"*** Results: {50 * lost}% dropped ({2 - lost}/2 received)")

    def do_link(self, line: str) -> None:
        """link A B up|down: bring the link(s) between nodes A and B up or down, both ends."""
        args = line.split()
        if len(args) != 3 or args[2] not in ("up", "down"):
            self.say("*** usage: link NODE NODE up|down")
            return

        def act() -> None:
            ends = set_link_state(self.lab, args[0], args[1], up=args[2] == "up")
            self.say(f"*** {' and '.join(ends)} {args[2]}")
        self.run_guarded(act)

    def do_sh(self, line: str) -> None:
        """sh COMMAND: run a command on this machine, outside the lab."""
        if not line.strip():
            self.say("*** usage: sh COMMAND")
            return
        self.run_guarded(lambda: self._report_status(run_on_pty(["/bin/sh", "-c", line], self.stdout)))

    def do_py(self, line: str) -> None:
        """py EXPRESSION|STATEMENT: evaluate Python with `lab`, `spec` and every node by name in scope."""
        scope = self.py_scope
        try:
            try:
                code = compile(line, "<py>", "eval")
            except SyntaxError:
                exec(compile(line, "<py>", "exec"), scope)  # noqa: S102 - the user's own lab shell
                return
            result = eval(code, scope)  # noqa: S307
            if result is not None:
                self.say(repr(result))
        except Exception as exc:  # the user's code: report, never end the shell
            self.say(f"*** {type(exc).__name__}: {exc}")

    def do_source(self, line: str) -> bool:
        """source FILE: run the shell commands in FILE, one per line (# starts a comment)."""
        if self.sourcing >= MAX_SOURCE_DEPTH:
            self.say(f"*** source: files nested more than {MAX_SOURCE_DEPTH} deep (does one source itself?)")
            return False
        try:
            lines = Path(line.strip()).expanduser().read_text().splitlines()
        except OSError as exc:
            self.say(f"*** cannot read {line.strip()!r}: {exc.strerror}")
            return False
        self.sourcing += 1
        try:
            for text in lines:
                if text.strip() and not text.lstrip().startswith("#"):
                    self.say(f"{self.prompt}{text}")
                    if self.onecmd(text):
                        return True
        finally:
            self.sourcing -= 1
        return False

    def do_time(self, line: str) -> bool | None:
        """time COMMAND: run a shell command and print how long it took."""
        start = time.perf_counter()
        stop = self.onecmd(line)
        self.say(f"*** {line.strip()!r} took {time.perf_counter() - start:.3f} s")
        return stop

    def do_exit(self, _: str) -> bool:
        """exit: leave the shell (a lab it built is torn down; an attached one stays up)."""
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
            node = self.lab.node(first)
            self.run_guarded(lambda: self._report_status(
                run_on_pty(["/bin/sh", "-c", self.substitute(rest)], self.stdout, spawn=node.popen)))
            return None
        self.say(f"*** unknown command or node: {first}")
        return None

    def _report_status(self, code: int) -> None:
        if code > 128:
            self.say(f"*** stopped by signal {code - 128}")
        elif code:
            self.say(f"*** exit status {code}")

    def substitute(self, command: str) -> str:
        """Replace node names with their first IPv4 address where a word is exactly a node name.

        Words are split on whitespace with the spacing kept; a word right after `dev`, `-i`
        and the like names an interface or namespace and stays, and so does any word that
        only contains a node name (`h1-eth0`, `/tmp/h1.pcap`).
        """
        out, previous = [], ""
        for word in _split_keeping_spaces(command):
            if word.strip() and word in self.lab.spec.nodes and previous not in NOT_AN_ADDRESS_AFTER:
                word = self.lab.spec.first_address(word) or word
            if word.strip():
                previous = word
            out.append(word)
        return "".join(out)

    def completenames(self, text: str, *ignored: object) -> list[str]:
        return super().completenames(text, *ignored) + [
            n for n in list(self.lab.spec.nodes) + list(EXTENSIONS) if n.startswith(text)]

    def completedefault(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        if line.split()[:1] == ["scenario"] and len(line[:begidx].split()) == 1:
            return [name for name in scenario_names() if name.startswith(text)]
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


def _split_keeping_spaces(text: str) -> list[str]:
    """`"a  b"` -> `["a", "  ", "b"]`: words and the whitespace between them, joined back unchanged."""
    out: list[str] = []
    for char in text:
        if out and out[-1][-1].isspace() == char.isspace():
            out[-1] += char
        else:
            out.append(char)
    return out
