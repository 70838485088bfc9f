"""When a writer whose send was cut short is woken: once a third of its send buffer is free (as
Linux's sk_stream_is_writeable), not after every ACK that frees a segment or two, so a bulk
sender tops its buffer up in large writes rather than one small write per ACK."""
from __future__ import annotations

from toe_engine.tcp.config import TcpConfig
from toe_engine.tcp.events import Writable
from toe_engine.tcp.testing import Harness

SND_BUF = 30_000


def test_a_short_send_is_answered_by_one_writable_once_a_third_of_the_buffer_is_free() -> None:
    h = Harness(TcpConfig(mss=1000, snd_buf=SND_BUF), TcpConfig(mss=1000))
    ca, cb = h.establish()
    tcb = h.a.connection(ca)
    assert h.a.send(ca, bytes(40_000)) == SND_BUF  # cut short: the writer waits for Writable
    free_seen: list[int] = []
    h.on_step = lambda h: free_seen.append(SND_BUF - len(tcb.snd_buf))
    assert h.run(until=lambda: any(isinstance(e, Writable) and e.conn == ca for e in h.events_a), max_time=5)
    free = SND_BUF - len(tcb.snd_buf)
    assert free >= SND_BUF // 3
    assert any(0 < f < SND_BUF // 3 for f in free_seen)  # ACKs had freed some before, with no Writable
    assert sum(isinstance(e, Writable) for e in h.events_a) == 1
    h.run(duration=1)
    assert sum(isinstance(e, Writable) for e in h.events_a) == 1  # no more until the next short send
    assert h.b.recv(cb) == bytes(SND_BUF)
