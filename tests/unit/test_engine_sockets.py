"""The engine's socket API (toe_engine.runtime.sockets) on crafted frames and a fake clock:
what a script's system calls get back, and what goes on the wire."""
from __future__ import annotations

from toe_engine.codec import build_tcp_frame, parse_frame
from toe_engine.endpoint import EndpointConfig, EndpointCore
from toe_engine.runtime.sockets import SocketApi
from toe_engine.segment import ACK, PSH, RST, SYN, URG, Segment, TcpOptions
from toe_engine.testing import IP_A, IP_B, MAC_A, MAC_B, device_transmit

PORT, PEER_PORT, PEER_ISN = 8080, 40000, 1000


class Peer:
    """The script's side: frames in, the engine's segments out, time moved by hand."""

    def __init__(self) -> None:
        self.core = EndpointCore(EndpointConfig(MAC_B, (IP_B,), services={}, secret=b"t"))
        self.api = SocketApi(self.core)
        self.now = 1.0
        self.isn = 0

    def call(self, op: str, **fields: object) -> dict:
        return self.api.handle({"op": op, **fields}, self.now)

    def send(self, flags: int, seq: int, ack: int = 0, payload: bytes = b"", urg: int = 0) -> None:
        seg = Segment(PEER_PORT, PORT, seq, ack, flags, 65535, payload, TcpOptions(mss=1460) if flags & SYN else TcpOptions(),
                      urg)
        self.core.from_wire(bytes(build_tcp_frame(MAC_A, MAC_B, IP_A, IP_B, seg)), self.now)

    def out(self) -> list[Segment]:
        segments = []
        for tx in self.core.poll_wire():
            for frame in device_transmit(tx):
                seg = parse_frame(frame, verify_csum=False).tcp
                if seg is not None:
                    segments.append(seg)
        return segments

    def wait(self, seconds: float) -> None:
        self.now += seconds
        self.core.on_timer(self.now)

    def established(self) -> int:
        """listen, the handshake, accept: the accepted socket's handle."""
        listener = self.call("socket")["ret"]
        assert self.call("bind", h=listener, port=PORT) == {"ret": 0}
        assert self.call("listen", h=listener, backlog=1) == {"ret": 0}
        assert self.call("fcntl", h=listener, command="F_SETFL", flags=["O_NONBLOCK"]) == {"ret": 0}
        assert self.call("accept", h=listener) == {"ret": -1, "errno": "EAGAIN"}
        self.send(SYN, PEER_ISN)
        (synack,) = self.out()
        assert synack.flags == SYN | ACK and synack.ack == PEER_ISN + 1
        self.isn = synack.seq
        self.send(ACK, PEER_ISN + 1, self.isn + 1)
        conn = self.call("accept", h=listener)["ret"]
        assert conn > listener
        return conn


def test_data_in_and_out_through_the_calls() -> None:
    peer = Peer()
    fd = peer.established()
    assert peer.call("fcntl", h=fd, command="F_SETFL", flags=["O_NONBLOCK"]) == {"ret": 0}
    assert peer.call("read", h=fd, n=100) == {"ret": -1, "errno": "EAGAIN"}
    peer.send(ACK | PSH, PEER_ISN + 1, peer.isn + 1, b"x" * 10)
    assert peer.call("poll", fds=[{"h": fd, "events": ["POLLIN"]}]) == {"ret": 1, "revents": [["POLLIN"]]}
    assert peer.call("read", h=fd, n=4, flags=["MSG_PEEK"]) == {"ret": 4}
    assert peer.call("read", h=fd, n=100, flags=["MSG_PEEK"]) == {"ret": 10}
    assert peer.call("read", h=fd, n=100) == {"ret": 10}
    assert peer.call("write", h=fd, n=20) == {"ret": 20}
    data = [s for s in peer.out() if s.payload]
    assert [len(s.payload) for s in data] == [20] and data[0].seq == peer.isn + 1


def test_urgent_data_is_reported_and_read_out_of_band() -> None:
    """MUST-32/33: POLLPRI, recv(MSG_OOB) gives the urgent octet, the in-band read stops before it."""
    peer = Peer()
    fd = peer.established()
    assert peer.call("read", h=fd, n=100, flags=["MSG_OOB"]) == {"ret": -1, "errno": "EINVAL"}
    peer.send(ACK | PSH | URG, PEER_ISN + 1, peer.isn + 1, b"0123456789", urg=10)
    assert peer.call("poll", fds=[{"h": fd, "events": ["POLLPRI"]}])["revents"] == [["POLLPRI"]]
    assert peer.call("read", h=fd, n=100, flags=["MSG_OOB"]) == {"ret": 1}
    assert peer.call("read", h=fd, n=100, flags=["MSG_OOB"]) == {"ret": -1, "errno": "EINVAL"}
    assert peer.call("read", h=fd, n=100) == {"ret": 9}
    peer.send(ACK | PSH, PEER_ISN + 11, peer.isn + 1, b"abc")
    assert peer.call("read", h=fd, n=100) == {"ret": 3}  # the urgent octet is not in-band


def test_a_reset_is_reported_once_then_writes_say_epipe() -> None:
    peer = Peer()
    fd = peer.established()
    peer.send(RST, PEER_ISN + 1)
    assert peer.call("write", h=fd, n=10) == {"ret": -1, "errno": "ECONNRESET"}
    assert peer.call("write", h=fd, n=10) == {"ret": -1, "errno": "EPIPE"}


def test_the_user_timeout_aborts_with_etimedout() -> None:
    """MUST-21: TCP_USER_TIMEOUT set by the application ends the connection, which the next call reports."""
    peer = Peer()
    fd = peer.established()
    assert peer.call("setsockopt", h=fd, level="IPPROTO_TCP", name="TCP_USER_TIMEOUT", value=1500) == {"ret": 0}
    assert peer.call("fcntl", h=fd, command="F_SETFL", flags=["O_NONBLOCK"]) == {"ret": 0}
    assert peer.call("write", h=fd, n=10) == {"ret": 10}
    sent = peer.now
    while peer.call("read", h=fd, n=10) == {"ret": -1, "errno": "EAGAIN"} and peer.now - sent < 5:
        peer.wait(0.01)
    assert peer.call("read", h=fd, n=10) == {"ret": -1, "errno": "ETIMEDOUT"}
    assert 1.5 <= peer.now - sent <= 1.52  # at the limit, not at the next backed-off RTO (3 s)


def test_options_reach_the_connection_and_unknown_ones_are_refused() -> None:
    peer = Peer()
    fd = peer.established()
    assert peer.call("setsockopt", h=fd, level="IPPROTO_IP", name="IP_TTL", value=7) == {"ret": 0}
    assert peer.core.ip_fields[peer.api.socks[fd].key] == (7, 0)
    assert peer.call("setsockopt", h=fd, level="IPPROTO_TCP", name="TCP_KEEPIDLE", value=5) == {"ret": 0}
    assert peer.core.stack.connection(peer.api.socks[fd].key).cfg.keepalive_idle == 5.0
    assert peer.core.config.tcp.keepalive_idle == 7200.0  # the listener's config is untouched
    assert peer.call("getsockopt", h=fd, level="SOL_SOCKET", name="SO_KEEPALIVE") == {"ret": 0, "value": 0}
    assert peer.call("setsockopt", h=fd, level="SOL_SOCKET", name="SO_SNDBUF", value=100) == {"ret": 0}
    assert peer.call("write", h=fd, n=1000) == {"ret": 100}  # the send buffer took what it holds
    assert peer.call("setsockopt", h=fd, level="SOL_TCP", name="TCP_FASTOPEN", value=1) == {
        "ret": -1, "errno": "ENOPROTOOPT"}
    assert peer.call("frobnicate") == {"ret": -1, "errno": "ENOSYS"}
    assert peer.call("close", h=99) == {"ret": -1, "errno": "EBADF"}


def test_reset_closes_every_socket_and_frees_the_port() -> None:
    peer = Peer()
    peer.established()
    assert peer.call("reset") == {"ret": 0}
    assert PORT not in peer.core.socket_ports and peer.api.socks == {}
