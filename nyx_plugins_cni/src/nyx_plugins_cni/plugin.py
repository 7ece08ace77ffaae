"""Hook implementations of the CNI driver (entry point ``cni`` in ``nyx.net_drivers``).

nyxd instantiates :class:`CniPlugin` once when it loads the driver; the work is in
:mod:`nyx_plugins_cni._driver`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from nyx_core import (
    BackendCapabilities,
    BackendError,
    ConfigError,
    NetworkInfo,
    NetworkSpec,
    NyxSettings,
    PortMapping,
    SetupOptions,
    SetupResult,
    hookimpl,
)

from ._driver import CniDriver, GcReport
from ._settings import CniSettings

CAPABILITIES = BackendCapabilities(
    publishes_ports=True,  # through the portmap plugin's portMappings capability
    multiple_networks=True,  # one CNI attachment per (container, network), eth0, eth1...
    enforces_internal=True,  # nyx's own table inet nyx-cni (docs/cni.md)
    external_dns=True,  # the conflist may serve DNS itself (dnsname)
    ipv6=True,  # dual-stack generated networks: two host-local ranges (docs/cni.md)
    network_lifecycle=True,  # a conflist per network: generated, or the admin's by name
    static_addresses=False,  # a conflist's IPAM decides addresses: nyxd refuses --ip/--mac
)


class CniPlugin:
    """The CNI driver: execs the standard CNI plugins of a conflist, per the CNI spec."""

    settings_class = CniSettings

    def __init__(self) -> None:
        self._driver: CniDriver | None = None

    @property
    def driver(self) -> CniDriver:
        """The driver ``nyx_backend_ensure_network`` set up."""
        if self._driver is None:
            raise BackendError("CNI driver: nyx_backend_ensure_network was not called")
        return self._driver

    @hookimpl
    def nyx_backend_capabilities(self) -> BackendCapabilities:
        return CAPABILITIES

    @hookimpl
    def nyx_backend_ensure_network(
        self, settings: NyxSettings, options: Mapping[str, str]
    ) -> dict[str, Any]:
        if options:
            raise ConfigError(
                f"cni driver: unknown driver option(s) {', '.join(sorted(options))} "
                "(configure the CNI plugins in the conflist; see docs/cni.md)"
            )
        if (
            self._driver is None
            or self._driver.settings != settings
            or self._driver.options != settings.plugin(CniSettings)
        ):
            if self._driver is not None:
                self._driver.close()
            self._driver = CniDriver(settings)
        return self._driver.ensure_network()

    @hookimpl
    def nyx_backend_network_create(self, network: NetworkSpec) -> NetworkInfo:
        return self.driver.network_create(network)

    @hookimpl
    def nyx_backend_network_remove(self, name: str) -> bool:
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
        return self.driver.setup(
            container_id,
            netns_path,
            ports,
            network=opts.network,
            ifname=opts.interface,
            internal=opts.internal,
        )

    @hookimpl
    def nyx_backend_teardown(self, container_id: str, netns_path: str) -> bool:
        self.driver.teardown(container_id, netns_path)
        return True

    @hookimpl
    def nyx_backend_gc(self, container_ids: Sequence[str]) -> GcReport:
        return self.driver.gc(container_ids)
