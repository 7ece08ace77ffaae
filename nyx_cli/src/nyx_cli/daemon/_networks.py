"""Networks (``nyx network create``, compose networks): names, subnets, the driver's word.

The default network is the one of the settings (``container_subnet``, ``gateway_ip``, and
for dual stack ``container_subnet6``, ``gateway_ip6``), also reachable as ``nyx``; every
other network gets the user's subnet or a /24 of :data:`USER_NETWORK_POOL` that overlaps
nothing else, and, when asked for IPv6, the user's IPv6 subnet or a /64 of
:data:`USER_NETWORK_POOL6` (a ULA /48 nyx picked once: ``fd6e:7978:1::/48``, "nyx" in
ASCII). A subnet that overlaps another nyx network, a host route or a host address
(:func:`nyx_core.check_subnet_on_host`) is refused, in either family.

Networks have a lifecycle in the driver (``network_lifecycle``): a network is recorded
only once the driver created it (``nyx_backend_network_create``), and removed from the
driver before it is forgotten. At start, :meth:`NetworkRegistry.bring_up` creates the
default network and every recorded one again (bridges do not survive a reboot); one the
driver now refuses stays recorded, marked with the driver's error, and no container can
join it until it is removed and created again.

Crash safety: a network is recorded ``pending`` before the driver is asked to create or
remove it, and the record is completed (or dropped) after. A record still pending at start
belongs to a nyxd killed in between: :meth:`NetworkRegistry.bring_up` removes that network
from the driver (``nyx_backend_network_remove`` is idempotent) and forgets it, so neither a
bridge nobody records nor a record of a half-removed network survives the crash.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from loguru import logger
from pydantic import ValidationError

from nyx_core import (
    HostView,
    NetworkBackend,
    NetworkInfo,
    NetworkSpec,
    NyxSettings,
    read_host_view,
    subnet_host_conflict,
)
from nyx_core.errors import ConfigError, NyxError

from .._faults import checkpoint
from ..errors import ConflictError, NotFoundError
from ._state import NetworkRecord, StateStore

__all__ = ["USER_NETWORK_POOL", "USER_NETWORK_POOL6", "NetworkRegistry"]

_NET_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")
USER_NETWORK_POOL = ipaddress.IPv4Network("10.89.0.0/16")
USER_NETWORK_POOL6 = ipaddress.IPv6Network("fd6e:7978:1::/48")
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _validation(name: str, exc: ValidationError) -> ConfigError:
    parts = [
        f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']} (got {e.get('input')!r})"
        for e in exc.errors()
    ]
    return ConfigError(f"network {name!r}: " + "; ".join(parts))


class NetworkRegistry:
    """The networks nyxd knows, persisted through ``store``; thread-safe.

    :param backend: the driver's facade; networks are created and removed through it.
    """

    def __init__(
        self,
        settings: NyxSettings,
        store: StateStore,
        backend: NetworkBackend,
        host_view: Callable[[], HostView] = read_host_view,
    ) -> None:
        self.settings = settings
        self.store = store
        self.backend = backend
        self.host_view = host_view
        self._lock = threading.RLock()
        self._records: dict[str, NetworkRecord] = store.load_networks()
        self._default: NetworkInfo | None = None
        self._refused: dict[str, str] = {}

    def default_names(self) -> set[str]:
        return {"nyx", self.settings.network}

    def canonical(self, name: str) -> str:
        """The name the driver and DNS see (the default network under its settings name)."""
        return self.settings.network if name in self.default_names() else name

    def default_spec(self) -> NetworkSpec:
        """The default network as the driver is asked for it at start."""
        s = self.settings
        return NetworkSpec(
            name=s.network,
            subnet=s.container_subnet,
            gateway=s.gateway_ip,
            subnet6=s.container_subnet6,
            gateway6=s.gateway6,
            default=True,
        )

    @staticmethod
    def _spec_of(rec: NetworkRecord) -> NetworkSpec:
        return NetworkSpec(
            name=rec.name,
            subnet=ipaddress.IPv4Network(rec.subnet),
            gateway=ipaddress.IPv4Interface(rec.gateway).ip,
            subnet6=None if rec.subnet6 is None else ipaddress.IPv6Network(rec.subnet6),
            gateway6=None if rec.gateway6 is None else ipaddress.IPv6Interface(rec.gateway6).ip,
            internal=rec.internal,
            options=dict(rec.options),
            labels=dict(rec.labels),
        )

    @staticmethod
    def _record_of(info: NetworkInfo, spec: NetworkSpec, created: str | None) -> NetworkRecord:
        """What nyxd records: the driver's answer (it may report the subnet it really uses)."""
        subnet = info.subnet or spec.subnet
        gw = info.gateway or (spec.gateway_interface.ip if spec.gateway_interface else None)
        if subnet is None or gw is None:
            raise ConfigError(f"network {spec.name!r}: the driver reported no IPv4 subnet")
        fields: dict[str, Any] = {} if created is None else {"created": created}
        subnet6 = info.subnet6 or spec.subnet6
        gw6 = info.gateway6 or (spec.gateway_interface6.ip if spec.gateway_interface6 else None)
        if subnet6 is not None and gw6 is not None:
            fields |= {"subnet6": str(subnet6), "gateway6": f"{gw6}/{subnet6.prefixlen}"}
        return NetworkRecord(
            name=spec.name,
            subnet=str(subnet),
            gateway=f"{gw}/{subnet.prefixlen}",
            internal=info.internal,
            options=dict(info.options),
            labels=dict(info.labels),
            interface=info.interface,
            extra=dict(info.extra),
            **fields,
        )

    def bring_up(self) -> dict[str, str]:
        """At nyxd start, after ``ensure_network``: the default network and every recorded one
        through the driver (drivers with ``network_lifecycle``; idempotent there).

        The default network's failure stops nyxd (it cannot serve without it). A recorded
        network the driver refuses now (a host route appeared on its subnet...) is logged
        and marked: ``nyx network ls|inspect`` show the error, containers cannot join it.

        :returns: the refused networks, name -> the driver's error.
        """
        self._finish_pending()
        if not self.backend.capabilities().network_lifecycle:
            return {}
        self._default = self.backend.network_create(self.default_spec())
        with self._lock:
            for name, rec in sorted(self._records.items()):
                try:
                    if name in self.default_names():
                        raise ConflictError(f"network {name!r} is the default network's name")
                    spec = self._spec_of(rec)
                    self._records[name] = self._record_of(
                        self.backend.network_create(spec), spec, rec.created
                    )
                    self._refused.pop(name, None)
                except (NyxError, ValidationError, ValueError) as exc:
                    self._refused[name] = str(exc)
                    logger.bind(network=name, error=str(exc)).warning(
                        "recorded network refused by the net driver; remove it or fix the host"
                    )
            self.store.save_networks(self._records)
            return dict(self._refused)

    def _finish_pending(self) -> None:
        """Networks a killed nyxd was creating or removing: removed from the driver, forgotten."""
        with self._lock:
            pending = {n: r.pending for n, r in self._records.items() if r.pending}
            for name, what in sorted(pending.items()):
                try:
                    if self.backend.capabilities().network_lifecycle:
                        self.backend.network_remove(name)
                except NyxError as exc:  # stays pending: tried again at the next start
                    logger.bind(network=name, error=str(exc)).warning(
                        f"network {what} interrupted by a crash; its removal failed"
                    )
                    continue
                del self._records[name]
                logger.bind(network=name).warning(f"network {what} interrupted by a crash; removed")
            if pending:
                self.store.save_networks(self._records)

    def gateway(self, name: str) -> ipaddress.IPv4Interface | None:
        """Gateway/prefix of ``name`` for ``SetupOptions.subnet``; None for the default.

        :raises NotFoundError: no such network.
        :raises ConflictError: the driver refused it at start.
        """
        if name in self.default_names():
            return None
        with self._lock:
            rec = self._records.get(name)
            refused = self._refused.get(name)
        if rec is None:
            raise NotFoundError(f"no such network: {name}")
        if refused is not None:
            raise ConflictError(
                f"network {name!r} is not available: the net driver refused it at start "
                f"({refused}); remove it (nyx network rm) and create it again"
            )
        return ipaddress.IPv4Interface(rec.gateway)

    def gateway6(self, name: str) -> ipaddress.IPv6Interface | None:
        """IPv6 gateway/prefix of ``name`` (the default network's too); None when the
        network is IPv4 only.

        :raises NotFoundError: no such network.
        :raises ConflictError: the driver refused it at start.
        """
        if name in self.default_names():
            return self.settings.gateway_interface6
        self.gateway(name)
        with self._lock:
            rec = self._records.get(name)
        if rec is None or rec.gateway6 is None:
            return None
        return ipaddress.IPv6Interface(rec.gateway6)

    def check_ipv6_address(self, name: str, address: str, where: str) -> None:
        """Refuse a static IPv6 address (``ipv6_address``, shown as ``where``) that network
        ``name`` cannot give: the network has no IPv6 subnet, or the address is outside
        it, its subnet-router anycast address or its gateway. Taken addresses are the
        supervisor's to check (it knows the containers).

        :raises ConfigError: naming ``where``, the address and the network.
        """
        gw6 = self.gateway6(name)
        ip = ipaddress.IPv6Address(address)
        if gw6 is None:
            raise ConfigError(
                f"{where} {address}: network {name!r} has no IPv6 subnet (create it with "
                "nyx network create --ipv6, compose enable_ipv6; the default network with "
                "--container-subnet6)"
            )
        net6 = gw6.network
        why = None
        if ip not in net6:
            why = f"is outside the subnet6 {net6} of network {name!r}"
        elif ip == net6.network_address:
            why = f"is the subnet-router anycast address of the subnet6 {net6} of network {name!r}"
        elif ip == gw6.ip:
            why = f"is the gateway of network {name!r}"
        if why is not None:
            raise ConfigError(f"{where} {address} {why}")

    def is_internal(self, name: str) -> bool:
        """True for a network created ``internal`` (never the default network).

        Whether a *container* is internal on a network is decided once, by
        :meth:`Supervisor._internal_networks`, from this and its spec, and recorded.
        """
        rec = self._records.get(name)
        return bool(rec and rec.internal)

    def _default_public(self) -> dict[str, Any]:
        info = self._default
        s = self.settings
        return {
            "name": s.network,
            "subnet": str(s.container_subnet),
            "gateway": str(s.gateway_interface),
            "subnet6": None if s.container_subnet6 is None else str(s.container_subnet6),
            "gateway6": None if s.gateway_interface6 is None else str(s.gateway_interface6),
            "internal": False,
            "default": True,
            "driver": self.backend.name,
            "interface": info.interface if info else None,
            "options": dict(info.options) if info else {},
            "labels": dict(info.labels) if info else {},
            "extra": dict(info.extra) if info else {},
        }

    def _public(self, rec: NetworkRecord) -> dict[str, Any]:
        out = {**rec.model_dump(exclude={"pending"}), "default": False}
        out["driver"] = self.backend.name
        if rec.name in self._refused:
            out["error"] = self._refused[rec.name]
        return out

    def list(self) -> list[dict[str, Any]]:
        out = [self._default_public()]
        with self._lock:
            out.extend(self._public(rec) for rec in self._records.values())
        return out

    def get(self, name: str) -> dict[str, Any]:
        """One network as ``nyx network inspect`` shows it."""
        if name in self.default_names():
            return self._default_public()
        with self._lock:
            rec = self._records.get(name)
            if rec is None:
                raise NotFoundError(f"no such network: {name}")
            return self._public(rec)

    def create(
        self,
        name: str,
        internal: bool = False,
        subnet: str | None = None,
        gateway: str | None = None,
        options: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        ipv6: bool = False,
        subnet6: str | None = None,
        gateway6: str | None = None,
    ) -> dict[str, Any]:
        """Create a network through the driver and record what it answers.

        ``subnet`` None takes the first free /24 of the pool; ``gateway`` None the subnet's
        first address. With ``ipv6`` (or a ``subnet6``) the network is dual stack:
        ``subnet6`` None takes the first free /64 of :data:`USER_NETWORK_POOL6`,
        ``gateway6`` None the IPv6 subnet's first address. Refused (before the driver is
        asked, and nothing is recorded) when a subnet overlaps another nyx network
        (:class:`ConflictError`), a host route, a host address or a reserved range such as
        127.0.0.0/8 or fe80::/10 (:class:`ConfigError`); the pools skip what the host uses.
        A driver without ``network_lifecycle`` (or ``ipv6``, for a dual-stack network), or
        one that refuses the spec, records nothing either.
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
                if gateway is not None:
                    raise ConfigError(
                        f"network {name!r}: gateway {gateway!r} needs its subnet (--subnet)"
                    )
                net = self._free_subnet(used, view)
            else:
                net = self._given_subnet(subnet, used)
                reason = subnet_host_conflict(net, view)
                if reason is not None:
                    raise ConfigError(f"network {name!r}: subnet {net} {reason}")
            gw = self._given_gateway(name, net, gateway)
            net6, gw6 = self._v6(name, ipv6, subnet6, gateway6, view)
            try:
                spec = NetworkSpec(
                    name=name,
                    subnet=net,
                    gateway=gw,
                    subnet6=net6,
                    gateway6=gw6,
                    internal=internal,
                    options=dict(options or {}),
                    labels=dict(labels or {}),
                )
            except ValidationError as exc:
                raise _validation(name, exc) from exc
            self._records[name] = NetworkRecord(
                name=name,
                subnet=str(net),
                gateway=f"{gw}/{net.prefixlen}",
                internal=internal,
                pending="create",
            )
            self.store.save_networks(self._records)
            try:
                checkpoint("network:create")
                info = self.backend.network_create(spec)
                checkpoint("network:created")
            except BaseException:
                self._records.pop(name, None)
                self.store.save_networks(self._records)
                raise
            try:
                rec = self._record_of(info, spec, None)
                self._records[name] = rec
                self.store.save_networks(self._records)
            except BaseException:
                self._records.pop(name, None)
                with contextlib.suppress(Exception):
                    self.backend.network_remove(name)
                with contextlib.suppress(Exception):
                    self.store.save_networks(self._records)
                raise
        logger.bind(network=name, subnet=rec.subnet, internal=rec.internal).info("network created")
        return self._public(rec)

    def _v6(
        self,
        name: str,
        ipv6: bool,
        subnet6: str | None,
        gateway6: str | None,
        view: HostView,
    ) -> tuple[ipaddress.IPv6Network | None, ipaddress.IPv6Address | None]:
        """The IPv6 subnet and gateway of a new network (None, None: IPv4 only)."""
        if subnet6 is None and gateway6 is not None:
            raise ConfigError(f"network {name!r}: gateway6 {gateway6!r} needs its subnet6")
        if subnet6 is None and not ipv6:
            return None, None
        used6: list[IPNetwork] = [
            ipaddress.IPv6Network(n.subnet6) for n in self._records.values() if n.subnet6
        ]
        if self.settings.container_subnet6 is not None:
            used6.append(self.settings.container_subnet6)
        if subnet6 is None:
            return self._free_subnet6(used6, view), None
        try:
            net6 = ipaddress.IPv6Network(subnet6, strict=False)
        except ValueError as exc:
            raise ConfigError(
                f"network {name!r}: subnet6 {subnet6!r} is not an IPv6 subnet"
            ) from exc
        if net6.prefixlen > 64:
            raise ConfigError(f"network {name!r}: subnet6 {net6} is too small (need /64 or larger)")
        clash = [u for u in used6 if u.overlaps(net6)]
        if clash:
            raise ConflictError(f"network subnet6 {net6} overlaps {clash[0]}")
        reason = subnet_host_conflict(net6, view)
        if reason is not None:
            raise ConfigError(f"network {name!r}: subnet6 {net6} {reason}")
        if gateway6 is None:
            return net6, None
        try:
            gw6 = ipaddress.IPv6Address(gateway6)
        except ValueError as exc:
            raise ConfigError(
                f"network {name!r}: gateway6 {gateway6!r} is not an IPv6 address"
            ) from exc
        if gw6 not in net6 or gw6 == net6.network_address:
            raise ConfigError(
                f"network {name!r}: gateway6 {gw6} is not a host address of subnet6 {net6}"
            )
        return net6, gw6

    @staticmethod
    def _free_subnet6(used: Sequence[IPNetwork], view: HostView) -> ipaddress.IPv6Network:
        for candidate in USER_NETWORK_POOL6.subnets(new_prefix=64):
            if any(u.overlaps(candidate) for u in used):
                continue
            if subnet_host_conflict(candidate, view) is None:
                return candidate
        raise ConflictError(
            f"no free /64 left in {USER_NETWORK_POOL6} (nyx networks and host routes use them)"
        )

    @staticmethod
    def _given_gateway(
        name: str, net: ipaddress.IPv4Network, gateway: str | None
    ) -> ipaddress.IPv4Address:
        if gateway is None:
            return net.network_address + 1
        try:
            gw = ipaddress.IPv4Address(gateway)
        except ValueError as exc:
            raise ConfigError(
                f"network {name!r}: gateway {gateway!r} is not an IPv4 address"
            ) from exc
        if gw not in net or gw in (net.network_address, net.broadcast_address):
            raise ConfigError(
                f"network {name!r}: gateway {gw} is not a host address of subnet {net}"
            )
        return gw

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
        """Remove ``name`` from the driver, then forget it.

        Refused for the default network and while ``users`` use it; a driver failure
        keeps the record (``nyx network rm`` again retries: the driver's remove is
        idempotent).
        """
        with self._lock:
            if name in self.default_names():
                raise ConflictError(f"network {name!r} is the default network")
            if name not in self._records:
                raise NotFoundError(f"no such network: {name}")
            if users:
                raise ConflictError(f"network {name!r} is in use by {', '.join(sorted(users))}")
            rec = self._records[name]
            self._records[name] = rec.model_copy(update={"pending": "remove"})
            self.store.save_networks(self._records)
            try:
                checkpoint("network:remove")
                self.backend.network_remove(name)
            except BaseException:
                self._records[name] = rec
                self.store.save_networks(self._records)
                raise
            checkpoint("network:removed")
            del self._records[name]
            self._refused.pop(name, None)
            self.store.save_networks(self._records)
        logger.bind(network=name).info("network removed")
