"""Write the state x event matrix: scenarios/pkt/scripts/states/<state>/<event>-<position>.pkt.

    python scenarios/pkt/scripts/generate_states.py      (from the repository root)

Every synchronised state of RFC 9293 (reached from a passive open of the target, the script
being the peer), every kind of segment (RST, SYN, FIN, ACK, data), at four places of the
target's receive window:

    left-edge      SEG.SEQ = RCV.NXT (for FIN in states that already took the peer's FIN:
                   the retransmission of that FIN, ending at RCV.NXT)
    in-window      RCV.NXT + 30000: inside the window, towards its right end. Both targets
                   offer at least 42340 bytes unscaled here; the exact right edge differs
                   between stacks, so it is not written as one number
    outside-left   RCV.NXT - 2000: old, already acknowledged sequence space
    outside-right  RCV.NXT + 70000: beyond any window an unscaled connection can offer

What each must draw is RFC 9293 3.10.7.4 with RFC 5961: an unacceptable segment is answered
with an ACK (unless it is a RST, which is dropped); a RST inside the window but not at RCV.NXT
and any SYN draw a challenge ACK; a RST at RCV.NXT closes the connection. Where no answer is
due, the script sends a probe (an old, zero-length ACK at RCV.NXT - 1, unacceptable, so it
draws an ACK carrying RCV.NXT): the first segment after the event must be that ACK (the
connection is alive and RCV.NXT did not move) or, once the connection is gone, a RST.

The .pkt files are committed; rerun this after changing it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ISN = 100000  # the script's own ISN: large enough that RCV.NXT - 2000 is a plain number
R0 = ISN + 1
OUT = Path(__file__).parent / "states"
POSITIONS = {"left-edge": 0, "in-window": 30000, "outside-left": -2000, "outside-right": 70000}
PRELUDE = f"""0     socket(..., SOCK_STREAM, IPPROTO_TCP) = 3
+0    setsockopt(3, SOL_SOCKET, SO_REUSEADDR, [1], 4) = 0
+0    bind(3, ..., ...) = 0
+0    listen(3, 1) = 0
+0    < S {ISN}:{ISN}(0) win 65535 <mss 1460>
+0    > S. 0:0(0) ack {R0} <mss 1460>
+0    < . {R0}:{R0}(0) ack 1 win 65535
+0    accept(3, ..., ...) = 4
"""


@dataclass(frozen=True)
class State:
    name: str
    steps: str  # from ESTABLISHED to this state
    rcv_nxt: int  # the target's RCV.NXT, in the script's numbers
    snd_nxt: int  # the target's SND.NXT, relative to its ISN
    keep_ack: int  # an ack the script can send without moving the state
    peer_fin: bool  # the peer's FIN is in: no more data or FIN from the script is new


SHUT = "+0    shutdown(4, SHUT_WR) = 0\n+0    > F. 1:1(0) ack {r}\n"
STATES = [
    State("established", "", R0, 1, 1, False),
    State("close-wait", f"+0    < F. {R0}:{R0}(0) ack 1 win 65535\n+0    > . 1:1(0) ack {R0 + 1}\n", R0 + 1, 1, 1, True),
    State("fin-wait-1", SHUT.format(r=R0), R0, 2, 1, False),
    State("fin-wait-2", SHUT.format(r=R0) + f"+0    < . {R0}:{R0}(0) ack 2 win 65535\n", R0, 2, 2, False),
    State("closing", SHUT.format(r=R0) + f"+0    < F. {R0}:{R0}(0) ack 1 win 65535\n+0    > . 2:2(0) ack {R0 + 1}\n",
          R0 + 1, 2, 1, True),
    State("last-ack", f"+0    < F. {R0}:{R0}(0) ack 1 win 65535\n+0    > . 1:1(0) ack {R0 + 1}\n"
          f"+0    shutdown(4, SHUT_WR) = 0\n+0    > F. 1:1(0) ack {R0 + 1}\n", R0 + 1, 2, 1, True),
    State("time-wait", SHUT.format(r=R0) + f"+0    < F. {R0}:{R0}(0) ack 2 win 65535\n+0    > . 2:2(0) ack {R0 + 1}\n",
          R0 + 1, 2, 2, True),
]
#: What the ACK event at the left edge does to each state (it acknowledges everything the target sent).
ACK_MOVES = {"fin-wait-1": "fin-wait-2", "closing": "time-wait", "last-ack": "closed"}


def ack_of(state: State, rcv: int) -> str:
    return f"> . {state.snd_nxt}:{state.snd_nxt}(0) ack {rcv}"


def probe(state: State, closed: bool = False) -> str:
    """The probe and what it must draw: an ACK with RCV.NXT, or (connection gone) a RST."""
    r, k = state.rcv_nxt, state.keep_ack
    answer = f"> R {k}:{k}(0)" if closed else ack_of(state, r)
    return f"+0    < . {r - 1}:{r - 1}(0) ack {k} win 65535   // probe\n+0    {answer}\n"


def event(state: State, kind: str, position: str) -> tuple[str, str, str]:
    """(requirement, what is expected in words, the script lines after the prelude)."""
    r, s, k = state.rcv_nxt, state.snd_nxt, state.keep_ack
    q = r + POSITIONS[position]
    outside = position.startswith("outside")
    if kind == "rst":
        segment = f"+0    < R. {q}:{q}(0) ack {k} win 65535\n"
        if position == "left-edge":
            lines = segment + probe(state, closed=True)
            if state.name == "established":
                lines += "+0    read(4, ..., 1000) = -1 ECONNRESET (Connection reset by peer)\n"
                return "MUST-12", "a RST at RCV.NXT resets the connection and the application is told", lines
            return "RFC9293 3.10.7.4", "a RST at RCV.NXT closes the connection", lines
        if position == "in-window":
            return ("RFC5961 3.2", "a RST inside the window but not at RCV.NXT draws a challenge ACK",
                    segment + f"+0    {ack_of(state, r)}\n")
        return "RFC5961 3.2", "a RST outside the window is dropped silently", segment + probe(state)
    if kind == "syn":
        segment = f"+0    < S {q}:{q}(0) win 65535 <mss 1460>\n"
        if state.name == "time-wait" and POSITIONS[position] > 0:
            return ("MAY-2", "a SYN above RCV.NXT may open a new incarnation from TIME-WAIT (RFC 6191)",
                    segment + f"+0    > S. ack {q + 1} <...>\n")
        return ("RFC5961 4.2", "a SYN in a synchronised state draws a challenge ACK, never a reset",
                segment + f"+0    {ack_of(state, r)}\n")
    if kind == "fin":
        if position == "left-edge" and not state.peer_fin:
            moves = {"established": "CLOSE-WAIT", "fin-wait-1": "CLOSING", "fin-wait-2": "TIME-WAIT"}[state.name]
            lines = f"+0    < F. {q}:{q}(0) ack {k} win 65535\n+0    {ack_of(state, r + 1)}\n"
            if state.name == "established":
                lines += "+0    read(4, ..., 1000) = 0\n"
            return "RFC9293 3.10.7.4", f"a FIN at RCV.NXT is acknowledged and the connection goes to {moves}", lines
        if position == "left-edge":
            return ("RFC9293 3.10.7.4", "a retransmission of the peer's FIN is acknowledged again",
                    f"+0    < F. {r - 1}:{r - 1}(0) ack {k} win 65535\n+0    {ack_of(state, r)}\n")
        segment = f"+0    < F. {q}:{q}(0) ack {k} win 65535\n"
        if outside:
            return "RFC9293 3.10.7.4", "an unacceptable FIN is answered with an ACK", segment + f"+0    {ack_of(state, r)}\n"
        return ("RFC9293 3.10.7.4", "a FIN beyond RCV.NXT does not move RCV.NXT (queued or ignored)",
                segment + probe(state))
    if kind == "ack":
        if position == "left-edge":
            moved = ACK_MOVES.get(state.name)
            segment = f"+0    < . {q}:{q}(0) ack {s} win 65535\n"
            if moved == "closed":
                return ("RFC9293 3.10.7.4", "the ACK of its FIN closes a connection in LAST-ACK",
                        segment + f"+0    < . {r - 1}:{r - 1}(0) ack {s} win 65535   // probe\n+0    > R {s}:{s}(0)\n")
            said = f" and moves the connection to {moved.upper()}" if moved else ""
            after = State(state.name, "", r, s, s, state.peer_fin)
            return "RFC9293 3.10.7.4", f"an acceptable ACK is taken without an answer{said}", segment + probe(after)
        segment = f"+0    < . {q}:{q}(0) ack {k} win 65535\n"
        if outside:
            return "RFC9293 3.10.7.4", "an unacceptable ACK is answered with an ACK", segment + f"+0    {ack_of(state, r)}\n"
        return "RFC9293 3.10.7.4", "an acceptable ACK inside the window draws no answer", segment + probe(state)
    segment = f"+0    < P. {q}:{q + 10}(10) ack {k} win 65535\n"
    if outside:
        return "RFC9293 3.10.7.4", "unacceptable data is answered with an ACK", segment + f"+0    {ack_of(state, r)}\n"
    if position == "left-edge" and not state.peer_fin:
        return ("RFC9293 3.10.7.4", "in-order data is acknowledged and delivered",
                segment + f"+0~+0.2 {ack_of(state, r + 10)}\n+0    read(4, ..., 1000) = 10\n")
    if position == "left-edge":
        return "RFC9293 3.10.7.4", "data after the peer's FIN is not taken (RCV.NXT stays)", segment + probe(state)
    return "RFC9293 3.10.7.4", "out-of-order data inside the window does not move RCV.NXT", segment + probe(state)


def script(state: State, kind: str, position: str) -> str:
    requirement, expected, lines = event(state, kind, position)
    title = state.name.upper()
    return (f"// {title}: {kind.upper()} at {position}: {expected}.\n"
            f"// requirement: {requirement}\n"
            f"// generated by scenarios/pkt/scripts/generate_states.py\n"
            f"{PRELUDE}// now in {title}\n{state.steps.format()}{lines}")


def main() -> int:
    count = 0
    for state in STATES:
        folder = OUT / state.name
        folder.mkdir(parents=True, exist_ok=True)
        for kind in ("rst", "syn", "fin", "ack", "data"):
            for position in POSITIONS:
                (folder / f"{kind}-{position}.pkt").write_text(script(state, kind, position))
                count += 1
    print(f"wrote {count} scripts under {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
