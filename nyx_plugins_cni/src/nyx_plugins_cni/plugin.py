"""Hook implementations of the CNI driver (entry point ``cni`` in ``nyx.net_drivers``).

Only hookimpls live here; the work is in :mod:`nyx_plugins_cni._driver`. ``opts`` of
``nyx_backend_setup`` is ignored: CNI has no per-container options, configure the plugins
in the conflist instead (see docs/cni.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nyx_core import NyxSettings, PortMapping, SetupOptions, SetupResult, hookimpl

from ._driver import activate, active


@hookimpl
def nyx_backend_ensure_network(settings: NyxSettings) -> dict[str, Any]:
    return activate(settings).ensure_network()


@hookimpl
def nyx_backend_setup(
    container_id: str,
    netns_path: str,
    ports: Sequence[PortMapping],
    opts: SetupOptions,
) -> SetupResult:
    del opts  # ignored by the CNI driver (documented in docs/cni.md)
    return active().setup(container_id, netns_path, ports)


@hookimpl
def nyx_backend_teardown(container_id: str, netns_path: str) -> bool:
    active().teardown(container_id, netns_path)
    return True
