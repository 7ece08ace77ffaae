"""nyx_plugins_native: the in-process network driver (bridge, veth, IPAM, nftables).

Load it through nyx (``--net-driver=native``); the names here are for tests, tools and
driver authors who want the pieces.
"""

from __future__ import annotations

from loguru import logger

from ._driver import NativeDriver, veth_name
from ._firewall import FAMILIES, FAMILY, TABLE, Firewall, PortElement
from ._network import Network, bridge_name, lease_store
from ._nft import load_nftables
from ._settings import NativeSettings

logger.disable(__name__)

__all__ = [
    "FAMILIES",
    "FAMILY",
    "TABLE",
    "Firewall",
    "NativeDriver",
    "NativeSettings",
    "Network",
    "PortElement",
    "bridge_name",
    "lease_store",
    "load_nftables",
    "veth_name",
]
