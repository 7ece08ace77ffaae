"""nyx-dns-embedded: container names served on the bridge gateway.

The entry point ``embedded`` (group ``nyx.dns_providers``) is the class
:class:`nyx_dns_embedded.plugin.EmbeddedDnsPlugin`; nyxd makes one, whose hooks drive its
:class:`EmbeddedDns`. See ``docs/dns.md``.
"""

from __future__ import annotations

from loguru import logger

from ._provider import EmbeddedDns, EmbeddedDnsSettings
from ._records import DOMAIN, Container
from ._upstream import HostResolvConf, parse_resolv_conf

logger.disable(__name__)

__all__ = [
    "DOMAIN",
    "Container",
    "EmbeddedDns",
    "EmbeddedDnsSettings",
    "HostResolvConf",
    "parse_resolv_conf",
]
