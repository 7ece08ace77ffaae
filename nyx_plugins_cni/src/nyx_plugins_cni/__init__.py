"""nyx-plugins-cni: the nyx network driver that execs standard CNI plugins (spec 1.0/1.1).

nyxd selects it with ``--net-driver=cni`` (entry point class
:class:`nyx_plugins_cni.plugin.CniPlugin`); the names here are for tests and tools.
"""

from __future__ import annotations

from loguru import logger

from ._cache import CacheEntry, ResultCache
from ._conf import NetworkConfig, default_conflist, find_network, parse_network
from ._driver import CniDriver, GcReport
from ._exec import PluginExec, PluginRequest
from ._settings import CniSettings

logger.disable(__name__)

__all__ = [
    "CacheEntry",
    "CniDriver",
    "CniSettings",
    "GcReport",
    "NetworkConfig",
    "PluginExec",
    "PluginRequest",
    "ResultCache",
    "default_conflist",
    "find_network",
    "parse_network",
]
