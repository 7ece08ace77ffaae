"""The provider object behind the hooks: :class:`EmbeddedDns`."""

from __future__ import annotations

import ipaddress
import os
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path

from loguru import logger
from pydantic import Field

from nyx_core import DnsError, NyxSettings, PluginSettings, plugin_settings_config

from ._cache import ForwardCache
from ._records import DOMAIN, Container, Registry
from ._resolver import Resolver
from ._server import DnsServer, ServerOptions
from ._upstream import MAX_SEARCH, Upstreams

__all__ = ["EmbeddedDns", "EmbeddedDnsSettings"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def listen_addresses(settings: NyxSettings) -> list[str]:
    """Where the server listens: ``gateway_ip``, then ``gateway6`` on a dual-stack host."""
    gw6 = settings.gateway6
    return [str(settings.gateway_ip)] + ([str(gw6)] if gw6 is not None else [])


def container_subnets(
    settings: NyxSettings,
) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The default network's subnets: reverse names in them are ours (never forwarded)."""
    net6 = settings.container_subnet6
    return [settings.container_subnet] + ([net6] if net6 is not None else [])


def reachable_gateways(settings: NyxSettings, ctr: Container | None) -> list[str]:
    """The server addresses a container's resolv.conf lists: ``gateway_ip``, and
    ``gateway6`` too when the server listens there and the container has an IPv6 address
    (it can route to it); only ``gateway6`` for a container with IPv6 addresses only."""
    gw6 = settings.gateway6
    if gw6 is None or ctr is None:
        return [str(settings.gateway_ip)]
    families = {ip.version for ip in ctr.ips}
    out = [str(settings.gateway_ip)] if 4 in families or not families else []
    return out + ([str(gw6)] if 6 in families else [])


class EmbeddedDnsSettings(PluginSettings):
    """Settings of the embedded DNS provider (env ``NYXD_EMBEDDED_*``, flags
    ``--embedded-*``; nyxd builds them and the provider reads
    ``settings.plugin(EmbeddedDnsSettings)``)."""

    model_config = plugin_settings_config("embedded")

    upstream_resolv_conf: Path = Field(
        default=Path("/etc/resolv.conf"),
        description="resolv.conf whose nameservers get forwarded queries (re-read on change)",
    )
    upstream_port: int = Field(default=53, ge=1, le=65535, description="port of the upstreams")
    forward_timeout: float = Field(
        default=1.5, gt=0, le=30, description="seconds to wait for one upstream before the next"
    )
    max_inflight: int = Field(
        default=1024, ge=1, le=60000, description="forwarded queries pending at once, at most"
    )
    tcp_max_connections: int = Field(
        default=64, ge=1, le=10000, description="open TCP client connections, at most"
    )
    tcp_max_connections_per_client: int = Field(
        default=8,
        ge=1,
        le=10000,
        description="open TCP connections from one client address, at most",
    )
    tcp_idle_timeout: float = Field(
        default=5.0, gt=0, le=300, description="seconds a TCP client may stay silent"
    )
    ttl: int = Field(default=60, ge=0, le=86400, description="TTL of container records")
    cache_size: int = Field(
        default=4096,
        ge=0,
        le=1_000_000,
        description="forwarded answers kept in the cache, at most (0: no cache)",
    )
    cache_max_bytes: int = Field(
        default=4 << 20,
        ge=4096,
        le=1 << 30,
        description="memory for cached answers, at most (each costs twice its size + 256 bytes)",
    )
    cache_max_ttl: int = Field(
        default=86400,
        ge=1,
        le=604800,
        description="seconds a cached answer is kept at most, whatever its TTL",
    )
    cache_max_negative_ttl: int = Field(
        default=3600,
        ge=0,
        le=86400,
        description="seconds a cached NXDOMAIN/NODATA is kept at most (0: never cached)",
    )


class EmbeddedDns:
    """The embedded DNS provider (satisfies :class:`nyx_core.DnsProvider`).

    Thread-safe: every method may be called from any nyxd thread. Each server (one per
    gateway) runs on two threads of its own (UDP; TCP) between :meth:`start` and
    :meth:`stop`; on a dual-stack host both servers share the records, the upstreams and
    the forward cache.
    """

    def __init__(self, config: EmbeddedDnsSettings | None = None) -> None:
        #: the provider's settings: given here, else nyxd's at :meth:`start`
        self.config: EmbeddedDnsSettings | None = config
        self.registry = Registry()
        self._lock = threading.RLock()
        self._server: DnsServer | None = None
        self._servers: list[DnsServer] = []
        self._settings: NyxSettings | None = None
        self._upstreams: Upstreams | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self, settings: NyxSettings) -> object:
        """Bind ``settings.gateway_ip:settings.dns_port`` (UDP+TCP) and serve; on a
        dual-stack host (``settings.gateway6``) the IPv6 gateway too, by a second server
        on the same records. Idempotent; returns the IPv4 ``(host, port)``."""
        with self._lock:
            if self._server is not None and self._server.running:
                return self._server.address
            cfg = self.config = self.config or settings.plugin(EmbeddedDnsSettings)
            gateways = listen_addresses(settings)
            self.registry.configure(
                default_network=settings.network,
                local_clients={gateways[0], "127.0.0.1", "::1"},
                subnets=container_subnets(settings),
            )
            exclude = frozenset(gateways) if settings.dns_port == cfg.upstream_port else frozenset()
            upstreams = Upstreams(cfg.upstream_resolv_conf, exclude=exclude)
            cache = None
            if cfg.cache_size > 0:  # one for both servers: the same upstreams' answers
                cache = ForwardCache(
                    max_entries=cfg.cache_size,
                    max_bytes=cfg.cache_max_bytes,
                    max_ttl=cfg.cache_max_ttl,
                    max_negative_ttl=cfg.cache_max_negative_ttl,
                    servers=upstreams.servers,
                )
            options = ServerOptions(
                forward_timeout=cfg.forward_timeout,
                max_inflight=cfg.max_inflight,
                tcp_max_connections=cfg.tcp_max_connections,
                tcp_max_connections_per_client=cfg.tcp_max_connections_per_client,
                tcp_idle_timeout=cfg.tcp_idle_timeout,
                upstream_port=cfg.upstream_port,
            )
            servers: list[DnsServer] = []
            try:
                for host in gateways:
                    server = DnsServer(
                        Resolver(self.registry, ttl=cfg.ttl, cache=cache),
                        upstreams,
                        host,
                        settings.dns_port,
                        options,
                        cache=cache,
                    )
                    server.start()
                    servers.append(server)
            except BaseException:
                for server in servers:
                    server.stop()
                raise
            self._server, self._servers = servers[0], servers
            self._settings, self._upstreams = settings, upstreams
            return servers[0].address

    def stop(self) -> None:
        """Stop serving and close the sockets. Idempotent; records are kept."""
        with self._lock:
            if self._servers:
                for server in self._servers:
                    server.stop()
                logger.info("embedded DNS stopped")
            self._server, self._servers = None, []

    @property
    def server(self) -> DnsServer | None:
        """The running server on ``gateway_ip`` (None when stopped)."""
        return self._server

    @property
    def servers(self) -> list[DnsServer]:
        """Every running server: ``gateway_ip``'s, then ``gateway_ip6``'s on a dual-stack
        host."""
        return list(self._servers)

    @property
    def address(self) -> tuple[str, int] | None:
        """``(gateway_ip, port)`` being served, or None when stopped."""
        server = self._server
        return server.address if server is not None and server.running else None

    # ------------------------------------------------------------------ records

    def register(
        self,
        container_id: str,
        hostname: str,
        ips: Sequence[IPAddress],
        aliases: Sequence[str] = (),
        networks: Sequence[str] = (),
        internal_networks: Sequence[str] = (),
    ) -> Container:
        """Publish (or replace) a container's names; visible to the next query.

        ``internal_networks``: those of ``networks`` that are internal *for this
        container*; when that is all of them, it gets container names only (no
        forwarding) and no host search domains. Other containers on those networks are
        not affected (see :meth:`set_network_internal` for a network internal for all).
        """
        ctr = self.registry.register(
            container_id, hostname, ips, aliases, networks, internal_networks
        )
        logger.debug(
            "embedded DNS register {} {} {} on {} (internal on {})",
            container_id,
            ctr.hostname,
            [str(ip) for ip in ctr.ips],
            sorted(ctr.networks),
            sorted(ctr.internal),
        )
        if self._settings is not None:
            self._write_resolv_conf(container_id)
        return ctr

    def deregister(self, container_id: str) -> None:
        """Remove a container's names and its resolv.conf. Unknown ids are ignored."""
        self.registry.deregister(container_id)
        if self._settings is not None:
            shutil.rmtree(self._dir(container_id), ignore_errors=True)

    def set_network_internal(self, name: str, internal: bool = True) -> None:
        """Mark network ``name`` internal (or not) for *every* container on it: containers
        whose networks are all internal get only container names, never forwarding. Takes
        effect immediately. (nyxd does not need it: it passes ``internal_networks`` with
        each registration, which covers networks created internal too.)"""
        self.registry.set_network_internal(name, internal)

    # ------------------------------------------------------------------ resolv.conf

    def resolv_conf(self, container_id: str) -> str:
        """The container's resolv.conf text; also (re)written at :meth:`resolv_conf_path`."""
        text = self._resolv_text(container_id)
        if self.registry.get(container_id) is not None:
            self._write_resolv_conf(container_id, text)
        return text

    def resolv_conf_path(self, container_id: str) -> Path:
        """``<run_dir>/dns/<container_id>/resolv.conf``: what nyxd bind-mounts."""
        return self._dir(container_id) / "resolv.conf"

    def _dir(self, container_id: str) -> Path:
        settings = self._settings
        if settings is None:
            raise DnsError(f"embedded DNS is not started (resolv.conf of {container_id!r})")
        if not container_id or "/" in container_id or container_id in (".", ".."):
            raise DnsError(f"embedded DNS: container_id {container_id!r} is not valid")
        return Path(settings.run_dir) / "dns" / container_id

    def _resolv_text(self, container_id: str) -> str:
        """``search`` gets the host's domains too, unless the container is internal-only."""
        settings, upstreams = self._settings, self._upstreams
        if settings is None or upstreams is None:
            raise DnsError("embedded DNS is not started: no gateway to put in resolv.conf")
        ctr = self.registry.get(container_id)
        internal_only = ctr is not None and self.registry.internal_only(ctr)
        host_search = [] if internal_only else [d for d in upstreams.conf().search if d != DOMAIN]
        search = [DOMAIN, *host_search][:MAX_SEARCH]
        lines = [f"nameserver {gw}\n" for gw in reachable_gateways(settings, ctr)]
        return f"# written by nyxd (embedded DNS)\n{''.join(lines)}search {' '.join(search)}\n"

    def _write_resolv_conf(self, container_id: str, text: str | None = None) -> Path:
        """Write in place (an existing bind mount keeps seeing the same inode); a file that
        already says ``text`` is left alone (nyxd re-registering every container it
        re-adopts after a restart, a start registering then asking for the text)."""
        path = self.resolv_conf_path(container_id)
        text = text if text is not None else self._resolv_text(container_id)
        data = text.encode()
        try:
            with open(path, "rb") as f:
                if f.read(len(data) + 1) == data:
                    return path
        except OSError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return path
