"""Hook implementations of the native driver (entry point ``native`` in ``nyx.net_drivers``).

nyxd instantiates :class:`NativePlugin` once when it loads the driver; the work lives in
:mod:`nyx_plugins_native._driver`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from nyx_core import (
    BackendCapabilities,
    NetworkInfo,
    NetworkSpec,
    NyxSettings,
    PortMapping,
    SetupOptions,
    SetupResult,
    hookimpl,
)

from ._driver import NativeDriver
from ._settings import NativeSettings

CAPABILITIES = BackendCapabilities(
    publishes_ports=True,
    multiple_networks=True,
    enforces_internal=True,
    external_dns=False,
    ipv6=True,
    network_lifecycle=True,
    static_addresses=True,  # IPAM honours or refuses static_ip(6); the veth takes the mac
)


class NativePlugin:
    """The native driver: bridge, veth, IPAM and nftables, in-process."""

    settings_class = NativeSettings

    def __init__(self) -> None:
        self.driver = NativeDriver()

    @hookimpl
    def nyx_backend_capabilities(self) -> BackendCapabilities:
        return CAPABILITIES

    @hookimpl
    def nyx_backend_ensure_network(
        self, settings: NyxSettings, options: Mapping[str, str]
    ) -> object:
        return self.driver.ensure_network(settings, options)

    @hookimpl
    def nyx_backend_network_create(self, network: NetworkSpec) -> NetworkInfo:
        return self.driver.network_create(network)

    @hookimpl
    def nyx_backend_network_remove(self, name: str) -> object:
        self.driver.network_remove(name)
        return True

    @hookimpl
    def nyx_backend_setup(
        self,
        container_id: str,
        netns_path: str,
        ports: Sequence[PortMapping],
        opts: SetupOptions,
    ) -> SetupResult:
        return self.driver.setup(container_id, netns_path, ports, opts)

    @hookimpl
    def nyx_backend_teardown(self, container_id: str, netns_path: str) -> object:
        self.driver.teardown(container_id, netns_path)
        return True

    @hookimpl
    def nyx_backend_gc(self, container_ids: Sequence[str]) -> object:
        return self.driver.gc(container_ids)

    @hookimpl
    def nyx_backend_reload(self) -> object:
        return self.driver.reload()
