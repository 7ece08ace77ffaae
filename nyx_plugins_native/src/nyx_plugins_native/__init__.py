"""nyx_plugins_native: the in-process network driver (bridge, veth, IPAM, nftables).

Load it through nyx (``--net-driver=native``); the names here are for tests, tools and
driver authors who want the pieces.
"""

from __future__ import annotations

from loguru import logger

from ._driver import NativeDriver, bridge_name, veth_name
from ._firewall import FAMILY, TABLE, Firewall, PortElement
from ._ipam import StateStore, allocate
from ._nft import load_nftables
from ._settings import NativeSettings

logger.disable(__name__)

__all__ = [
    "FAMILY",
    "TABLE",
    "Firewall",
    "NativeDriver",
    "NativeSettings",
    "PortElement",
    "StateStore",
    "allocate",
    "bridge_name",
    "load_nftables",
    "veth_name",
]
