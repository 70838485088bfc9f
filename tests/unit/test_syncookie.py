"""SYN cookies: what a cookie carries survives the round trip; anything else is refused."""
from __future__ import annotations

import pytest

from toe_engine.counters import Counters
from toe_engine.resources.syncookie import (
    COOKIE_BITS,
    MSS_TABLE,
    TS_SACK,
    TS_WSCALE_MASK,
    SynCookies,
    encoded_mss,
)
from toe_engine.segment import ACK, RST, SYN, FourTuple, Segment, TcpOptions

FLOW = FourTuple(bytes([10, 0, 0, 1]), 80, bytes([10, 0, 0, 2]), 40000)
SECRET = b"toelab-test-secret"
PEER_ISN = 0xFFFFFFF0  # wraps when the handshake adds one
NOW = 1000.0


def third_ack(isn: int, tsval_echo: int | None = None, *, flags: int = ACK, peer_isn: int = PEER_ISN) -> Segment:
    options = TcpOptions(timestamp=None if tsval_echo is None else (777, tsval_echo))
    return Segment(40000, 80, (peer_isn + 1) & 0xFFFFFFFF, (isn + 1) & 0xFFFFFFFF, flags, 512, options=options)


@pytest.fixture
def counters() -> Counters:
    return Counters()


@pytest.fixture
def cookies(counters: Counters) -> SynCookies:
    return SynCookies(SECRET, counters)


@pytest.mark.parametrize("mss", [100, 536, 1299, 1300, 1452, 1460, 9000])
def test_mss_round_trips_rounded_down_to_the_table(cookies: SynCookies, mss: int) -> None:
    isn, tsval = cookies.make_cookie(FLOW, PEER_ISN, mss, None, False, False, NOW)
    assert tsval is None
    decoded = cookies.check_cookie(FLOW, third_ack(isn), NOW + 1)
    assert decoded is not None
    assert decoded.mss == encoded_mss(mss) == max([m for m in MSS_TABLE if m <= mss] or [536])
    assert decoded.iss == isn and decoded.irs == PEER_ISN
    assert decoded.wscale is None and not decoded.sack_permitted and not decoded.timestamps


@pytest.mark.parametrize(
    ("wscale", "sack", "ecn"),
    [(None, False, False), (0, True, False), (7, False, True), (14, True, True)],
)
def test_options_round_trip_through_the_timestamp(
    cookies: SynCookies, wscale: int | None, sack: bool, ecn: bool
) -> None:
    isn, tsval = cookies.make_cookie(FLOW, PEER_ISN, 1460, wscale, sack, True, NOW, ecn=ecn)
    assert tsval is not None
    decoded = cookies.check_cookie(FLOW, third_ack(isn, tsval), NOW + 0.2)
    assert decoded is not None
    assert (decoded.mss, decoded.wscale, decoded.sack_permitted, decoded.ecn) == (1460, wscale, sack, ecn)
    assert decoded.timestamps and decoded.ts_recent == 777


def test_timestamp_low_bits_hold_the_options_and_never_run_ahead(cookies: SynCookies) -> None:
    for clock in (0x1000, 0x1003, 0x103F, 0xFFFFFFFF, 5):
        _, tsval = cookies.make_cookie(FLOW, PEER_ISN, 1460, 3, True, True, NOW, ts_clock=clock)
        assert tsval is not None
        assert tsval & 0x3F == 3 | TS_SACK
        assert (clock - tsval) & 0xFFFFFFFF < 64
    _, tsval = cookies.make_cookie(FLOW, PEER_ISN, 1460, None, False, True, NOW, ts_clock=0x5000)
    assert tsval == 0x5000 - 64 + TS_WSCALE_MASK
    _, tsval = cookies.make_cookie(FLOW, PEER_ISN, 1460, None, False, True, 12.3456)
    assert tsval is not None and tsval >> 6 == (12345 - TS_WSCALE_MASK) >> 6


def test_upper_bits_carry_the_minute_counter(cookies: SynCookies) -> None:
    base = cookies._digest(cookies._hash0, FLOW, 0)
    for minute in (0, 1, 2, 255, 256, 300):
        isn, _ = cookies.make_cookie(FLOW, PEER_ISN, 1460, None, False, False, minute * 60.0 + 5)
        stripped = (isn - base - PEER_ISN) & 0xFFFFFFFF
        assert stripped >> COOKIE_BITS == minute & 0xFF
        assert cookies.check_cookie(FLOW, third_ack(isn), minute * 60.0 + 65) is not None


def test_forged_cookie_is_rejected_and_counted(cookies: SynCookies, counters: Counters) -> None:
    isn, _ = cookies.make_cookie(FLOW, PEER_ISN, 1460, None, False, False, NOW)
    failures = sum(cookies.check_cookie(FLOW, third_ack(isn ^ (1 << bit)), NOW) is None for bit in range(32))
    assert failures == 32
    assert counters["syncookies_failed"] == 32 and counters["syncookies_ok"] == 0
    assert counters["syncookies_sent"] == 1


def test_cookie_from_another_secret_is_rejected(cookies: SynCookies) -> None:
    other = SynCookies(b"another secret")
    isn, _ = other.make_cookie(FLOW, PEER_ISN, 1460, None, False, False, NOW)
    assert cookies.check_cookie(FLOW, third_ack(isn), NOW) is None


@pytest.mark.parametrize(
    "wrong",
    [
        FLOW._replace(remote_port=40001),
        FLOW._replace(local_port=81),
        FLOW._replace(remote_ip=bytes([10, 0, 0, 3])),
        FLOW._replace(local_ip=bytes([10, 0, 0, 9])),
    ],
)
def test_cookie_for_another_four_tuple_is_rejected(cookies: SynCookies, wrong: FourTuple) -> None:
    isn, _ = cookies.make_cookie(FLOW, PEER_ISN, 1460, None, False, False, NOW)
    assert cookies.check_cookie(wrong, third_ack(isn), NOW) is None


def test_ack_with_another_peer_sequence_is_rejected(cookies: SynCookies) -> None:
    isn, _ = cookies.make_cookie(FLOW, PEER_ISN, 1460, None, False, False, NOW)
    assert cookies.check_cookie(FLOW, third_ack(isn, peer_isn=PEER_ISN + 1000), NOW) is None


def test_stale_cookie_is_rejected_after_two_periods(cookies: SynCookies, counters: Counters) -> None:
    made_at = 600.0  # the start of a counter period
    isn, _ = cookies.make_cookie(FLOW, PEER_ISN, 1460, None, False, False, made_at)
    assert cookies.check_cookie(FLOW, third_ack(isn), made_at + 119.0) is not None
    assert cookies.check_cookie(FLOW, third_ack(isn), made_at + 120.0) is None
    assert cookies.check_cookie(FLOW, third_ack(isn), made_at + 3600.0) is None
    assert (counters["syncookies_ok"], counters["syncookies_failed"]) == (1, 2)


def test_cookie_from_the_future_is_rejected(cookies: SynCookies) -> None:
    isn, _ = cookies.make_cookie(FLOW, PEER_ISN, 1460, None, False, False, NOW + 120)
    assert cookies.check_cookie(FLOW, third_ack(isn), NOW) is None


def test_ipv6_four_tuples_work(cookies: SynCookies) -> None:
    flow6 = FourTuple(bytes(15) + b"\x01", 443, bytes(15) + b"\x02", 50000)
    isn, _ = cookies.make_cookie(flow6, 1, 1440, None, False, False, NOW)
    ack = Segment(50000, 443, 2, (isn + 1) & 0xFFFFFFFF, ACK, 100)
    decoded = cookies.check_cookie(flow6, ack, NOW)
    assert decoded is not None and decoded.mss == 1440


@pytest.mark.parametrize("flags", [SYN | ACK, RST | ACK, 0])
def test_non_ack_segments_are_not_cookie_answers(cookies: SynCookies, counters: Counters, flags: int) -> None:
    isn, _ = cookies.make_cookie(FLOW, PEER_ISN, 1460, None, False, False, NOW)
    assert cookies.check_cookie(FLOW, third_ack(isn, flags=flags), NOW) is None
    assert counters["syncookies_failed"] == 0


def test_secret_length_is_checked() -> None:
    with pytest.raises(ValueError, match="secret"):
        SynCookies(b"")
