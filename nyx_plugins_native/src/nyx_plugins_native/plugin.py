"""Hook implementations of the native driver (entry point ``native`` in ``nyx.net_drivers``)."""

from __future__ import annotations

from collections.abc import Sequence

from nyx_core import NyxSettings, PortMapping, SetupOptions, SetupResult, hookimpl

from ._driver import NativeDriver

driver = NativeDriver()


@hookimpl
def nyx_backend_ensure_network(settings: NyxSettings) -> object:
    return driver.ensure_network(settings)


@hookimpl
def nyx_backend_setup(
    container_id: str, netns_path: str, ports: Sequence[PortMapping], opts: SetupOptions
) -> SetupResult:
    return driver.setup(container_id, netns_path, ports, opts)


@hookimpl
def nyx_backend_teardown(container_id: str, netns_path: str) -> object:
    driver.teardown(container_id, netns_path)
    return True
