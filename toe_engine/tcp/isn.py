"""Initial sequence numbers per RFC 6528: ISN = M + F(4-tuple, secret).

M is a 4 microsecond clock (MUST-8) taken from the `now` handed in, F a keyed BLAKE2s of the
connection's addresses (SHLD-1); the key never leaves the host (MUST-9).
"""
from __future__ import annotations

import hashlib
import os
from typing import Final

from mypy_extensions import mypyc_attr

from toe_engine.segment import FourTuple
from toe_engine.tcp.seqnum import MASK

TICKS_PER_SECOND: Final = 250_000  # one tick every 4 microseconds


@mypyc_attr(allow_interpreted_subclasses=True)  # tests wrap it to see the ISNs handed out
class IsnGenerator:
    """Produces ISNs; give a fixed `secret` for reproducible tests."""

    __slots__ = ("_secret", "_keyed")

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret if secret is not None else os.urandom(16)
        self._keyed = hashlib.blake2s(key=self._secret, digest_size=4)  # copied per ISN: the key's block hashed once

    def isn(self, four_tuple: FourTuple, now: float) -> int:
        local_ip, local_port, remote_ip, remote_port = four_tuple
        h = self._keyed.copy()
        h.update(b"".join((local_ip, local_port.to_bytes(2, "big"), remote_ip, remote_port.to_bytes(2, "big"))))
        clock = int(now * TICKS_PER_SECOND)
        return (clock + int.from_bytes(h.digest(), "big")) & MASK
