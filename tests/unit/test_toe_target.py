"""The toe target's settings: server sysctls as engine settings, and what `set` accepts at run time."""
from __future__ import annotations

import pytest

from scenarios.targets import TARGETS, make
from scenarios.toe_target import ToeTarget, engine_settings
from toe_engine.runtime.endpoint import EndpointSettings, check_addresses, check_runtime_tcp
from toe_engine.tcp import TcpConfig


def test_toe_is_the_engine_target_with_the_engines_policies() -> None:
    assert TARGETS["toe"]() is ToeTarget
    target = make("toe")
    assert target.unavailable_reason() is None
    assert target.policies() == ("fallback", "deny", "syncookie")
    assert set(target.standard_counters) >= {"rx_csum_errors", "out_segments", "retransmits", "listen_drops"}


def test_server_sysctls_become_engine_settings() -> None:
    settings = engine_settings({"net.ipv4.tcp_synack_retries": 1, "net.ipv4.tcp_max_syn_backlog": "64",
                                "net.ipv4.tcp_syncookies": 1, "net.core.somaxconn": 64}, "eth0")
    assert settings == {"wire": "eth0", "embryonic_limit": 64, "tcp": {"synack_retries": 1}}
    EndpointSettings.parse({**settings, "addresses": ["10.0.0.2"]})  # the engine takes them as they are
    assert engine_settings({}, "eth1") == {"wire": "eth1"}


def test_runtime_tcp_changes_are_limited_and_validated() -> None:
    current = TcpConfig()
    assert check_runtime_tcp(current, {"retries2": 3}) == {"retries2": 3}
    with pytest.raises(ValueError, match="cannot change at run time"):
        check_runtime_tcp(current, {"mss": 1000})
    with pytest.raises(ValueError, match="non-negative integer"):
        check_runtime_tcp(current, {"retries2": -1})


def test_addresses_are_checked_and_packed() -> None:
    assert check_addresses(["10.0.0.2", "fd00::2"]) == (bytes([10, 0, 0, 2]), bytes.fromhex("fd00" + "00" * 13 + "02"))
    for bad in ([], "10.0.0.2", ["10.0.0.300"]):
        with pytest.raises(ValueError):
            check_addresses(bad)
