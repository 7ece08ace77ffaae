"""Hook implementations of the embedded DNS provider (entry point ``embedded``).

Every hook delegates to the process-wide :func:`~nyx_dns_embedded.get_provider` object;
nyxd reaches the extras that are not hooks (``set_network_internal``,
``resolv_conf_path``) through that same object.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from nyx_core import NyxSettings, hookimpl

from ._provider import get_provider

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@hookimpl
def nyx_dns_start(settings: NyxSettings) -> object:
    return get_provider().start(settings)


@hookimpl
def nyx_dns_stop() -> object:
    get_provider().stop()
    return True


@hookimpl
def nyx_dns_register(
    container_id: str,
    hostname: str,
    ips: Sequence[IPAddress],
    aliases: Sequence[str],
    networks: Sequence[str],
    internal_networks: Sequence[str] = (),
) -> object:
    # internal for this registration only: another container on the same network keeps
    # forwarding unless its own registration lists the network too
    return get_provider().register(
        container_id, hostname, ips, aliases, networks, internal_networks
    )


@hookimpl
def nyx_dns_deregister(container_id: str) -> object:
    get_provider().deregister(container_id)
    return True


@hookimpl
def nyx_dns_resolv_conf(container_id: str) -> str:
    return get_provider().resolv_conf(container_id)
