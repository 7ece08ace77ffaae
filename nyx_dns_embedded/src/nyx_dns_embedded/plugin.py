"""Hook implementations of the embedded DNS provider (entry point ``embedded``).

nyxd instantiates :class:`EmbeddedDnsPlugin` once when it loads the provider; every hook
delegates to its :class:`~nyx_dns_embedded.EmbeddedDns`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from nyx_core import NyxSettings, hookimpl

from ._provider import EmbeddedDns, EmbeddedDnsSettings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class EmbeddedDnsPlugin:
    """The embedded DNS provider: container names on the bridge gateway (dnslib)."""

    settings_class = EmbeddedDnsSettings

    def __init__(self) -> None:
        self.provider = EmbeddedDns()

    @hookimpl
    def nyx_dns_start(self, settings: NyxSettings) -> object:
        return self.provider.start(settings)

    @hookimpl
    def nyx_dns_stop(self) -> object:
        self.provider.stop()
        return True

    @hookimpl
    def nyx_dns_register(
        self,
        container_id: str,
        hostname: str,
        ips: Sequence[IPAddress],
        aliases: Sequence[str],
        networks: Sequence[str],
        internal_networks: Sequence[str],
    ) -> object:
        return self.provider.register(
            container_id, hostname, ips, aliases, networks, internal_networks
        )

    @hookimpl
    def nyx_dns_deregister(self, container_id: str) -> object:
        self.provider.deregister(container_id)
        return True

    @hookimpl
    def nyx_dns_resolv_conf(self, container_id: str) -> str:
        return self.provider.resolv_conf(container_id)
