"""The lab shell's `toe rss NODE`: an engine node's RSS indirection table, key and per-queue
frames, laid out as `ethtool -x` lays out a NIC's (set them with `toe set NODE rss_table=[...]`,
`rss_weights=[1,3]`, `rss_key=...` or `queues=N`)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .shell import LabShell

PER_LINE = 8


def rss_text(node: str, config: dict[str, Any], counters: dict[str, int]) -> str:
    """`ethtool -x`'s layout: eight entries per line, each line led by its first index."""
    rss = config.get("rss")
    if rss is None:
        return (f"{node}: one queue in the engine's own process, no RSS (start the node with `queues: N` in its "
                "engine settings)")
    table: list[int] = rss["table"]
    lines = [f"RX flow hash indirection table for {config.get('wire', 'eth0')} of {node} with "
             f"{config['queues']} RX ring(s):"]
    for start in range(0, len(table), PER_LINE):
        lines.append(f"{start:5}:" + "".join(f"{queue:6}" for queue in table[start:start + PER_LINE]))
    lines += ["RSS hash key:", rss["key"], f"RSS hash function: {rss['hfunc']}", "frames per queue:"]
    lines += [f"    rx_queue_{q}_frames: {counters.get(f'rx_queue_{q}_frames', 0)}" for q in range(config["queues"])]
    return "\n".join(lines)


def toe_rss(shell: LabShell, args: list[str]) -> None:
    if len(args) != 1:
        raise ValueError("usage: toe rss NODE")
    handle = shell.lab.engine(args[0])
    shell.say(rss_text(args[0], handle.config(), handle.stats().get("counters", {})))
