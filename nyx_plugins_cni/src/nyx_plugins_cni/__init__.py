"""nyx-plugins-cni: the nyx network driver that execs standard CNI plugins (spec 1.0/1.1).

nyxd selects it with ``--net-driver=cni``; after ``nyx_backend_ensure_network`` it calls
:func:`gc_network` once with the ids of the containers that still exist.
"""

from __future__ import annotations

from collections.abc import Iterable

from loguru import logger

from ._cache import CacheEntry, ResultCache
from ._conf import NetworkConfig, default_conflist, find_network, parse_network
from ._driver import CniDriver, CniOptions, GcReport, active
from ._exec import PluginExec, PluginRequest

logger.disable(__name__)

__all__ = [
    "CacheEntry",
    "CniDriver",
    "CniOptions",
    "GcReport",
    "NetworkConfig",
    "PluginExec",
    "PluginRequest",
    "ResultCache",
    "active_driver",
    "check_container",
    "default_conflist",
    "find_network",
    "gc_network",
    "parse_network",
    "status_network",
]


def active_driver() -> CniDriver:
    """The driver instance ``nyx_backend_ensure_network`` configured."""
    return active()


def gc_network(valid_container_ids: Iterable[str]) -> GcReport:
    """Garbage-collect the CNI network; nyxd calls it at start, before any setup.

    Deletes (CNI DEL with the cached result) every cached attachment whose container is
    not in ``valid_container_ids``, then sends spec 1.1 ``GC`` to the plugins that support
    it. Raises :class:`~nyx_core.TeardownError` listing every failure after doing the rest.
    """
    return active().gc(valid_container_ids)


def check_container(container_id: str) -> None:
    """CNI CHECK of one container's attachments (raises CniPluginError on a problem)."""
    active().check(container_id)


def status_network() -> dict[str, str]:
    """CNI STATUS of the network's plugins (those that support spec 1.1.0)."""
    return active().status()
