"""User networks (``nyx network create``, compose networks): names, subnets, ``internal``.

The default network is the one of the settings (``container_subnet``, ``gateway_ip``),
also reachable as ``nyx``; every other network gets a /24 of :data:`USER_NETWORK_POOL`
that overlaps nothing else, persisted in the state dir. A subnet that overlaps another
nyx network, a host route or a host address (:func:`nyx_core.check_subnet_on_host`) is refused.
"""

from __future__ import annotations

import ipaddress
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any

from loguru import logger

from nyx_core import HostView, NyxSettings, read_host_view, subnet_host_conflict
from nyx_core.errors import ConfigError

from ..errors import ConflictError, NotFoundError
from ._state import NetworkRecord, StateStore

__all__ = ["USER_NETWORK_POOL", "NetworkRegistry"]

_NET_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")
USER_NETWORK_POOL = ipaddress.IPv4Network("10.89.0.0/16")


class NetworkRegistry:
    """The networks nyxd knows, persisted through ``store``; thread-safe."""

    def __init__(
        self,
        settings: NyxSettings,
        store: StateStore,
        host_view: Callable[[], HostView] = read_host_view,
    ) -> None:
        self.settings = settings
        self.store = store
        self.host_view = host_view
        self._lock = threading.RLock()
        self._records: dict[str, NetworkRecord] = store.load_networks()

    def default_names(self) -> set[str]:
        return {"nyx", self.settings.network}

    def canonical(self, name: str) -> str:
        """The name the driver and DNS see (the default network under its settings name)."""
        return self.settings.network if name in self.default_names() else name

    def gateway(self, name: str) -> ipaddress.IPv4Interface | None:
        """Gateway/prefix of ``name`` for ``SetupOptions.subnet``; None for the default."""
        if name in self.default_names():
            return None
        rec = self._records.get(name)
        if rec is None:
            raise NotFoundError(f"no such network: {name}")
        return ipaddress.IPv4Interface(rec.gateway)

    def is_internal(self, name: str) -> bool:
        """True for a network created ``internal`` (never the default network).

        Whether a *container* is internal on a network is decided once, by
        :meth:`Supervisor._internal_networks`, from this and its spec, and recorded.
        """
        rec = self._records.get(name)
        return bool(rec and rec.internal)

    def list(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [
            {
                "name": self.settings.network,
                "subnet": str(self.settings.container_subnet),
                "gateway": str(self.settings.gateway_interface),
                "internal": False,
                "default": True,
            }
        ]
        with self._lock:
            out.extend({**rec.model_dump(), "default": False} for rec in self._records.values())
        return out

    def create(
        self, name: str, internal: bool = False, subnet: str | None = None
    ) -> dict[str, Any]:
        """Record a new network; ``subnet`` None takes the first free /24 of the pool.

        Refused (before anything is recorded) when the subnet overlaps another nyx network
        (:class:`ConflictError`), a host route, a host address or a reserved range such as
        127.0.0.0/8 (:class:`ConfigError`); the pool skips what the host uses.
        """
        if not isinstance(name, str) or not _NET_NAME_RE.match(name):
            raise ConfigError(f"network name {name!r} is not valid ([a-zA-Z0-9][a-zA-Z0-9_.-]*)")
        with self._lock:
            if name in self.default_names() or name in self._records:
                raise ConflictError(f"network {name!r} already exists")
            used = [self.settings.container_subnet] + [
                ipaddress.ip_network(n.subnet) for n in self._records.values()
            ]
            view = self.host_view()
            if subnet is None:
                net = self._free_subnet(used, view)
            else:
                net = self._given_subnet(subnet, used)
                reason = subnet_host_conflict(net, view)
                if reason is not None:
                    raise ConfigError(f"network {name!r}: subnet {net} {reason}")
            gateway = ipaddress.IPv4Interface(f"{net.network_address + 1}/{net.prefixlen}")
            rec = NetworkRecord(name=name, subnet=str(net), gateway=str(gateway), internal=internal)
            self._records[name] = rec
            self.store.save_networks(self._records)
        logger.bind(network=name, subnet=str(net), internal=internal).info("network created")
        return {**rec.model_dump(), "default": False}

    @staticmethod
    def _given_subnet(
        subnet: str, used: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]
    ) -> ipaddress.IPv4Network:
        try:
            net = ipaddress.IPv4Network(subnet, strict=False)
        except ValueError as exc:
            raise ConfigError(f"network subnet {subnet!r} is not an IPv4 subnet") from exc
        if net.prefixlen > 30:
            raise ConfigError(f"network subnet {subnet!r} is too small (need /30)")
        clash = [u for u in used if u.overlaps(net)]
        if clash:
            raise ConflictError(f"network subnet {net} overlaps {clash[0]}")
        return net

    @staticmethod
    def _free_subnet(
        used: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network], view: HostView
    ) -> ipaddress.IPv4Network:
        for candidate in USER_NETWORK_POOL.subnets(new_prefix=24):
            if any(u.overlaps(candidate) for u in used):
                continue
            if subnet_host_conflict(candidate, view) is None:
                return candidate
        raise ConflictError(
            f"no free /24 left in {USER_NETWORK_POOL} (nyx networks and host routes use them)"
        )

    def remove(self, name: str, users: Sequence[str] = ()) -> None:
        """Forget ``name``; refused for the default network and while ``users`` use it."""
        with self._lock:
            if name in self.default_names():
                raise ConflictError(f"network {name!r} is the default network")
            if name not in self._records:
                raise NotFoundError(f"no such network: {name}")
            if users:
                raise ConflictError(f"network {name!r} is in use by {', '.join(sorted(users))}")
            del self._records[name]
            self.store.save_networks(self._records)
        logger.bind(network=name).info("network removed")
