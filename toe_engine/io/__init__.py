"""Drivers that put the sans-IO engine on real interfaces: TAP and AF_PACKET, with vnet headers."""
from __future__ import annotations

from toe_engine.io.afpacket import AfPacketDriver
from toe_engine.io.driver import DriverCounters, FrameDriver
from toe_engine.io.errors import InterfaceNotFoundError, IoSetupError, NamespaceNotFoundError
from toe_engine.io.netns_enter import in_netns
from toe_engine.io.tap import TAP_OFFLOADS_ALL, TAP_OFFLOADS_NONE, TapDriver
from toe_engine.io.vnet import VNET_HDR_LEN, VnetHeader

__all__ = [
    "AfPacketDriver",
    "DriverCounters",
    "FrameDriver",
    "InterfaceNotFoundError",
    "IoSetupError",
    "NamespaceNotFoundError",
    "TAP_OFFLOADS_ALL",
    "TAP_OFFLOADS_NONE",
    "TapDriver",
    "VNET_HDR_LEN",
    "VnetHeader",
    "in_netns",
]
