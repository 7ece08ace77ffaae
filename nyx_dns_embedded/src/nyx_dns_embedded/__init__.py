"""nyx-dns-embedded: container names served on the bridge gateway.

The entry point ``embedded`` (group ``nyx.dns_providers``) is :mod:`nyx_dns_embedded.plugin`;
its hooks drive the process-wide :class:`EmbeddedDns` returned by :func:`get_provider`.
See ``docs/dns.md``.
"""

from __future__ import annotations

from loguru import logger

from ._provider import EmbeddedDns, EmbeddedDnsSettings, get_provider, set_network_internal
from ._records import DOMAIN, Container
from ._upstream import HostResolvConf, parse_resolv_conf

logger.disable(__name__)

__all__ = [
    "DOMAIN",
    "Container",
    "EmbeddedDns",
    "EmbeddedDnsSettings",
    "HostResolvConf",
    "get_provider",
    "parse_resolv_conf",
    "set_network_internal",
]
