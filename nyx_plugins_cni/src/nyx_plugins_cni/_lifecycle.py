"""Network create/remove for the CNI driver (a part of :class:`~._driver.CniDriver`).

Each nyx network is one conflist: the default network's (found or written by
``ensure_network``), the admin's own conflist of that name (used as is), or one nyx
generates from :func:`~._conf.network_conflist` and removes again. See docs/cni.md.
"""

from __future__ import annotations

import ipaddress
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loguru import logger

from nyx_core import (
    BackendError,
    ConfigError,
    NetworkInfo,
    NetworkSpec,
    NyxError,
    NyxSettings,
    TeardownError,
)

from ._cache import ResultCache
from ._conf import (
    NetworkConfig,
    Subnet,
    addressing,
    bridge_of,
    conflists,
    find_network,
    network_conflist,
    parse_network,
)
from ._firewall import InternalFirewall, drop_rules, net_tag
from ._networks import (
    CniNetwork,
    ConflistRecord,
    ConflistRecords,
    HostLinks,
    bridge_for,
    parse_options,
    write_conflist,
)

if TYPE_CHECKING:
    from ._settings import CniSettings

__all__ = ["NetworkLifecycle"]


def _spec_diff(old: NetworkSpec, new: NetworkSpec) -> str:
    """``subnet 10.1.0.0/24 (not 10.2.0.0/24), internal True (not False)``."""
    a, b = old.model_dump(mode="json"), new.model_dump(mode="json")
    diff = [f"{k} {a[k]} (not {b[k]})" for k in a if a[k] != b.get(k)]
    return ", ".join(diff) or "another spec"


def _info_extra(cn: CniNetwork, *, generated: bool) -> dict[str, Any]:
    return {
        "conflist": cn.config.source,
        "generated": generated,
        "cniVersion": cn.version,
        "plugins": [str(p["type"]) for p in cn.config.plugins],
    }


def _overlap(a: Subnet, b: Subnet) -> bool:
    if isinstance(a, ipaddress.IPv4Network) and isinstance(b, ipaddress.IPv4Network):
        return a.overlaps(b)
    if isinstance(a, ipaddress.IPv6Network) and isinstance(b, ipaddress.IPv6Network):
        return a.overlaps(b)
    return False


class NetworkLifecycle:
    """``network_create`` / ``network_remove``; mixed into the driver, whose state it uses."""

    settings: NyxSettings
    options: CniSettings
    cache: ResultCache
    records: ConflistRecords
    firewall: InternalFirewall
    links: HostLinks
    networks: dict[str, CniNetwork]
    _lock: threading.Lock
    _netlock: threading.RLock

    def _require(self) -> CniNetwork:
        raise NotImplementedError

    def negotiate(self, net: NetworkConfig) -> str:
        raise NotImplementedError

    def _prime(self, network: str) -> None:
        raise NotImplementedError

    def network_create(self, spec: NetworkSpec) -> NetworkInfo:
        """Create (or adopt) the network of ``spec``; see docs/cni.md.

        * the default network (``spec.default``): the conflist :meth:`ensure_network` found
          or wrote;
        * a conflist named ``spec.name`` in the conf dir that nyx did not write: used as is
          (its IPAM's subnet is reported; options are refused);
        * otherwise a conflist generated from :func:`~._conf.network_conflist`, written
          atomically into the conf dir, primed, and removed by :meth:`network_remove`.

        ``internal`` adds a rule for the subnet to ``inet nyx-cni``. Everything is validated
        before anything changes; a failure half-way undoes what this call did. Idempotent
        for an identical spec; a different spec under a known name is refused.
        """
        self._require()
        with self._netlock:
            with self._lock:
                cn = self.networks.get(spec.name)
            if cn is not None and cn.spec is not None and cn.info is not None:
                if cn.spec == spec:
                    return cn.info
                raise ConfigError(
                    f"network {spec.name!r} already exists on the cni driver with "
                    f"{_spec_diff(cn.spec, spec)}; remove it first"
                )
            if spec.default:
                if spec.name != self.settings.network:
                    raise ConfigError(
                        f"network {spec.name!r}: default, but nyxd's default network is "
                        f"{self.settings.network!r}"
                    )
                if spec.options:
                    raise ConfigError(
                        f"network {spec.name!r}: options {', '.join(sorted(spec.options))}: "
                        "the default network is configured by nyxd's flags (--bridge) or its "
                        "own conflist"
                    )
                return self._adopt(self._require(), spec)
            record = self.records.get(spec.name)
            found = find_network(self.options.conf_dir, spec.name, self.options.bin_dir)
            if found is not None and not (record and record.owns(Path(found.source))):
                if record is not None:
                    logger.warning(
                        "network {}: {} was changed since nyx wrote it: used as the admin's",
                        spec.name,
                        found.source,
                    )
                if spec.options:
                    raise ConfigError(
                        f"network {spec.name!r}: options {', '.join(sorted(spec.options))}: "
                        f"{found.source} is the admin's conflist, used as is; set them there"
                    )
                return self._adopt(CniNetwork(found, self.negotiate(found)), spec)
            return self._generate(spec, record, found)

    def _adopt(self, cn: CniNetwork, spec: NetworkSpec) -> NetworkInfo:
        """Use a conflist nyx did not write (or the default network's) as it is."""
        net = cn.config
        addr = addressing(net)
        subnets: list[Subnet] = []
        if spec.internal:
            if addr.unknown or not addr.subnets:
                ipam = ", ".join(addr.unknown) or "none"
                raise ConfigError(
                    f"network {spec.name!r}: internal: the subnet of {net.source} is not in "
                    f"the conflist (IPAM {ipam}); nyx enforces internal for host-local or "
                    "static addressing only"
                )
            subnets = list(addr.subnets)
            self.firewall.binary()
        v4, v6 = addr.one(4), addr.one(6)
        if v4 and spec.subnet and v4[0] != spec.subnet:
            logger.info(
                "network {}: {} hands out {}; nyxd proposed {}",
                spec.name,
                net.source,
                v4[0],
                spec.subnet,
            )
        info = NetworkInfo(
            name=spec.name,
            subnet=v4[0] if v4 else None,
            gateway=v4[1] if v4 else None,
            subnet6=v6[0] if v6 else None,
            gateway6=v6[1] if v6 else None,
            internal=spec.internal,
            interface=bridge_of(net),
            options={},
            labels=dict(spec.labels),
            extra=_info_extra(cn, generated=False),
        )
        self._set_net_rules(spec.name, subnets)
        cn.spec, cn.info, cn.internal_subnets = spec, info, subnets
        with self._lock:
            self.networks[spec.name] = cn
        return info

    def _set_net_rules(self, name: str, subnets: list[Subnet]) -> None:
        if subnets:
            self.firewall.set(net_tag(name), drop_rules(subnets))
        elif self.firewall.available():  # a stale rule of an earlier, internal, namesake
            self.firewall.delete(lambda t: t == net_tag(name))

    def _generate(
        self, spec: NetworkSpec, record: ConflistRecord | None, found: NetworkConfig | None
    ) -> NetworkInfo:
        name = spec.name
        opts = parse_options(name, spec.options)
        if spec.subnet is None:
            raise ConfigError(
                f"network {name!r}: subnet: the cni driver needs one to generate a conflist"
            )
        if record is not None and record.spec != spec.model_dump(mode="json"):
            raise ConfigError(
                f"network {name!r} already exists ({record.path}) with "
                f"{_spec_diff(NetworkSpec.model_validate(record.spec), spec)}; remove it first"
            )
        gateway = spec.gateway or spec.subnet.network_address + 1
        if spec.subnet.prefixlen > 30 or gateway in (
            spec.subnet.network_address,
            spec.subnet.broadcast_address,
        ):
            raise ConfigError(
                f"network {name!r}: subnet {spec.subnet} / gateway {gateway}: need a /30 or "
                "larger subnet and a gateway that is a host address of it"
            )
        gateway6 = None
        if spec.subnet6 is not None:
            gateway6 = spec.gateway6 or spec.subnet6.network_address + 1
            if spec.subnet6.prefixlen > 126 or gateway6 == spec.subnet6.network_address:
                raise ConfigError(
                    f"network {name!r}: subnet6 {spec.subnet6} / gateway6 {gateway6}: need a "
                    "/126 or larger subnet and a gateway that is not its subnet-router "
                    "anycast address"
                )
        bridge = opts.bridge or (record.bridge if record else bridge_for(name))
        self._check_free(name, spec.subnet, bridge, spec.subnet6)
        path = Path(found.source) if found else self.options.conf_dir / f"{name}.conflist"
        if found is None and path.exists():
            raise ConfigError(
                f"network {name!r}: {path} exists and defines another network; nyx does not "
                "overwrite it"
            )
        if record is None and self.links.kind(bridge) is not None:
            raise ConfigError(
                f"network {name!r}: bridge {bridge!r} already exists on the host and nyx did "
                "not make it; choose another with -o com.docker.network.bridge.name=NAME"
            )
        obj = network_conflist(
            name,
            spec.subnet,
            gateway,
            bridge,
            self.settings.state_dir / "cni" / "networks",
            internal=spec.internal,
            host_dns=self.settings.gateway_ip,
            mtu=opts.mtu,
            subnet6=spec.subnet6,
            gateway6=gateway6,
            host_dns6=self.settings.gateway6,
        )
        cfg = parse_network(obj, str(path), self.options.bin_dir)
        cn = CniNetwork(cfg, self.negotiate(cfg), spec=spec, generated=True, template=True)
        if spec.internal:
            self.firewall.binary()
        # ---- validated; from here on every change is undone on failure
        try:
            sha = write_conflist(path, obj)
        except OSError as exc:
            raise ConfigError(
                f"network {name!r}: cannot write {path}: {exc.strerror or exc}"
            ) from exc
        self.records.put(ConflistRecord(name, str(path), sha, bridge, spec.model_dump(mode="json")))
        try:
            subnets: list[Subnet] = [spec.subnet]
            if spec.subnet6 is not None:
                subnets.append(spec.subnet6)
            cn.internal_subnets = subnets if spec.internal else []
            self._set_net_rules(name, cn.internal_subnets)
            cn.info = NetworkInfo(
                name=name,
                subnet=spec.subnet,
                gateway=gateway,
                subnet6=spec.subnet6,
                gateway6=gateway6,
                internal=spec.internal,
                interface=bridge,
                options=dict(spec.options),
                labels=dict(spec.labels),
                extra=_info_extra(cn, generated=True),
            )
            with self._lock:
                self.networks[name] = cn
            # the bridge (and what the plugins share) exists before the first container;
            # after a restart it usually does already
            if self.options.prime and (record is None or self.links.kind(bridge) is None):
                self._prime(name)
        except BaseException as exc:
            if record is None:  # undo what this call made
                try:
                    self._drop(name)
                except NyxError as undo:
                    exc.add_note(f"rollback: {undo}")
            else:  # a network of an earlier nyxd: keep it, for a retry or a remove
                with self._lock:
                    self.networks.pop(name, None)
            raise
        logger.info("network {}: wrote CNI conflist {} (bridge {})", name, path, bridge)
        return cn.info

    def _check_free(
        self,
        name: str,
        subnet: ipaddress.IPv4Network,
        bridge: str,
        subnet6: ipaddress.IPv6Network | None = None,
    ) -> None:
        """The bridge and the subnets are no other known network's."""
        bridges: dict[str, str] = {}
        for net in conflists(self.options.conf_dir):
            if net.name != name and (br := bridge_of(net)):
                bridges.setdefault(br, net.name)
        for rec in self.records.all():
            if rec.name != name:
                bridges.setdefault(rec.bridge, rec.name)
        with self._lock:
            known = [cn for cn in self.networks.values() if cn.name != name]
        for cn in known:
            if br := bridge_of(cn.config):
                bridges.setdefault(br, cn.name)
        if bridge in bridges:
            raise ConfigError(
                f"network {name!r}: bridge {bridge!r} is already the bridge of network "
                f"{bridges[bridge]!r}; choose another with -o com.docker.network.bridge.name=NAME"
            )
        for cn in known:
            for other in addressing(cn.config).subnets:
                mine: Subnet | None = subnet if other.version == 4 else subnet6
                if mine is not None and _overlap(mine, other):
                    what = "subnet" if mine.version == 4 else "subnet6"
                    raise ConfigError(
                        f"network {name!r}: {what} {mine} overlaps {other} of network {cn.name!r}"
                    )

    def network_remove(self, name: str) -> None:
        """Remove network ``name``: its ``internal`` rule and, when nyx generated it, its
        conflist (only if unchanged since nyx wrote it), bridge and leases.

        A conflist the admin wrote is only forgotten. Idempotent (an unknown name is no
        error); refused while a container is still attached. Goes on after errors and raises
        one :class:`~nyx_core.TeardownError` at the end.
        """
        self._require()
        if name == self.settings.network:
            raise ConfigError(f"network {name!r} is nyxd's default network; it is never removed")
        with self._netlock:
            users = sorted({e.container_id for e in self.cache.entries(network=name)})
            if users:
                raise ConfigError(
                    f"network {name!r}: containers {', '.join(users)} are still attached"
                )
            self._drop(name)

    def _drop(self, name: str) -> None:
        errors: list[NyxError] = []
        with self._lock:
            self.networks.pop(name, None)
        if self.firewall.available():
            try:
                self.firewall.delete(lambda t: t == net_tag(name))
            except NyxError as exc:
                errors.append(exc)
        record = self.records.get(name)
        if record is not None:
            path = Path(record.path)
            owned = record.owns(path)
            if owned or not path.exists():
                try:
                    self.links.delete_bridge(record.bridge)
                except NyxError as exc:
                    errors.append(exc)
                try:
                    path.unlink(missing_ok=True)
                except OSError as exc:
                    errors.append(BackendError(f"network {name!r}: cannot delete {path}: {exc}"))
                shutil.rmtree(
                    self.settings.state_dir / "cni" / "networks" / name, ignore_errors=True
                )
            else:
                logger.warning(
                    "network {}: {} was changed since nyx wrote it: kept, with bridge {}",
                    name,
                    path,
                    record.bridge,
                )
            if not errors:
                self.records.delete(name)
        if errors:
            raise TeardownError(f"network {name!r} on the cni driver", list[BaseException](errors))
