"""Example third-party nyx DNS provider: container names plus a hosts-style file.

Entry point ``hosts`` in ``nyx.dns_providers``; ``nyxd --dns-provider hosts`` selects it.
Its settings are :class:`HostsDnsSettings` (env ``NYXD_HOSTS_*``, flags ``--hosts-*``).
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

from loguru import logger
from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from nyx_core import (
    DnsError,
    NyxSettings,
    PluginSettings,
    hookimpl,
    plugin_settings_config,
)

from ._names import DOMAIN, HostsFile, Names
from ._server import Answerer, Server

__all__ = ["DOMAIN", "HostsDnsPlugin", "HostsDnsSettings"]

logger.disable(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class HostsDnsSettings(PluginSettings):
    """Settings of the hosts DNS provider (env ``NYXD_HOSTS_*``, flags ``--hosts-*``)."""

    model_config = plugin_settings_config("hosts")

    file: Path | None = Field(
        default=None,
        description="hosts-style file (IP NAME [ALIAS...]) whose names every container "
        "resolves; re-read when it changes",
    )
    upstream: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="servers other names are forwarded to (IP or IP:PORT; repeatable, env "
        "comma-separated); none: no forwarding",
    )
    ttl: int = Field(default=30, ge=0, le=86400, description="TTL of the answers")
    timeout: float = Field(default=2.0, gt=0, le=30, description="seconds per upstream")

    @field_validator("upstream", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("upstream")
    @classmethod
    def _check(cls, value: list[str]) -> list[str]:
        for item in value:
            _host_port(item)
        return value

    def upstreams(self) -> list[tuple[str, int]]:
        return [_host_port(v) for v in self.upstream]


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or ":" in host:  # a bare address (IPv6 literals have no port here)
        host, port = text, "53"
    try:
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError as exc:
        raise ValueError(f"upstream {text!r} is not IP or IP:PORT") from exc
    if not 1 <= number <= 65535:
        raise ValueError(f"upstream {text!r}: port {number} is outside 1-65535")
    return host, number


class HostsDnsPlugin:
    """The ``hosts`` DNS provider. nyxd makes one instance when it loads it."""

    settings_class = HostsDnsSettings

    def __init__(self) -> None:
        self.names = Names()
        self.server: Server | None = None
        self.server6: Server | None = None
        self.gateway: str | None = None
        self.gateway6: str | None = None
        self.lock = threading.Lock()

    # ------------------------------------------------------------------ hooks

    @hookimpl
    def nyx_dns_start(self, settings: NyxSettings) -> object:
        with self.lock:
            if self.server is not None:
                return True  # idempotent
            config = settings.plugin(HostsDnsSettings)
            self.gateway = str(settings.gateway_ip)
            self.names.hosts = HostsFile(config.file)
            self.names.host_clients = frozenset({self.gateway, "127.0.0.1", "::1"})
            answerer = Answerer(
                self.names.scope, config.upstreams(), ttl=config.ttl, timeout=config.timeout
            )
            try:
                self.server = self.serve((self.gateway, settings.dns_port), answerer)
            except OSError as exc:
                raise DnsError(
                    f"hosts DNS: cannot listen on {self.gateway}:{settings.dns_port}: {exc}"
                ) from exc
            # dual stack: the IPv6 gateway too. Not a host client: IPv6 has no martian
            # check, so a container could send from it (a query from the host over IPv6
            # is refused; the host asks over IPv4)
            self.gateway6 = str(settings.gateway6) if settings.gateway6 else None
            if self.gateway6 is not None:
                try:
                    self.server6 = self.serve((self.gateway6, settings.dns_port), answerer)
                except OSError as exc:
                    self.server.close()
                    self.server = None
                    where = f"[{self.gateway6}]:{settings.dns_port}"
                    raise DnsError(f"hosts DNS: cannot listen on {where}: {exc}") from exc
            logger.info("hosts DNS serving on {}:{}", self.gateway, settings.dns_port)
            return True

    def serve(self, address: tuple[str, int], answerer: Answerer) -> Server:
        return Server(address, answerer)

    @hookimpl
    def nyx_dns_stop(self) -> object:
        with self.lock:
            for server in (self.server, self.server6):
                if server is not None:
                    server.close()
            self.server = self.server6 = None
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
        try:
            return self.names.register(
                container_id, hostname, ips, aliases, networks, internal_networks
            )
        except ValueError as exc:
            raise DnsError(f"hosts DNS: register {container_id!r}: {exc}") from exc

    @hookimpl
    def nyx_dns_deregister(self, container_id: str) -> object:
        self.names.deregister(container_id)
        return True

    @hookimpl
    def nyx_dns_resolv_conf(self, container_id: str) -> str:
        if self.gateway is None:
            raise DnsError(f"hosts DNS is not started (resolv.conf of {container_id!r})")
        servers = [self.gateway]
        if self.gateway6 is not None and self.names.has_ipv6(container_id):
            servers.append(self.gateway6)  # it can reach the IPv6 gateway
        lines = "".join(f"nameserver {s}\n" for s in servers)
        return f"# written by nyxd (hosts DNS)\n{lines}search {DOMAIN}\n"
