"""Network create and remove for the native driver (a part of
:class:`~._driver.NativeDriver`).

A spec is validated into a :class:`~._network.Network` (the default network against the
settings, any other one against every recorded network and the host's routes and links),
recorded before its bridge exists, then brought up; remove refuses a network with
containers attached. See docs/native.md, "Networks".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from loguru import logger

from nyx_core import LeaseStore, NetworkInfo, NetworkSpec, NyxSettings, check_subnet_on_host
from nyx_core.errors import BackendError, ConfigError, TeardownError

from . import _netlink as nl
from ._kernel import ipv6_available
from ._network import (
    MTU_MIN6,
    Network,
    bridge_name,
    cursor6,
    networks_of,
    overlap6,
    owner,
    parse_options,
)

__all__ = ["Lifecycle"]


class Lifecycle:
    """``network_create`` / ``network_remove`` behind the gate."""

    if TYPE_CHECKING:

        @property
        def store(self) -> LeaseStore: ...

        @property
        def settings(self) -> NyxSettings: ...

        def _bring_up(self, net: Network) -> None: ...

        def _take_down(self, net: Network) -> list[BaseException]: ...

    def _default_spec(self, spec: NetworkSpec) -> Network:
        s = self.settings
        what = f"default network {spec.name!r}"
        if spec.name != s.network:
            raise ConfigError(f"{what}: the default network of this nyxd is {s.network!r}")
        gw = spec.gateway_interface
        if gw is not None and gw != s.gateway_interface:
            raise ConfigError(
                f"{what}: subnet {spec.subnet} gateway {gw.ip} differ from the settings' "
                f"{s.gateway_interface} (NYXD_CONTAINER_SUBNET, NYXD_GATEWAY_IP)"
            )
        gw6 = spec.gateway_interface6
        if gw6 is not None and gw6 != s.gateway_interface6:
            raise ConfigError(
                f"{what}: subnet6 {spec.subnet6} gateway6 {gw6.ip} differ from the settings' "
                f"{s.gateway_interface6} (NYXD_CONTAINER_SUBNET6, NYXD_GATEWAY_IP6)"
            )
        if spec.internal:
            raise ConfigError(f"{what}: the default network cannot be internal")
        if spec.options:
            raise ConfigError(
                f"{what}: options {', '.join(sorted(spec.options))}: the default network's "
                "driver options are nyxd's (--driver-opt key=value)"
            )
        with self.store.locked(write=False) as st:
            rec = st.meta.get(s.network)
        if rec is None:
            raise BackendError(f"native driver: {what} was not ensured (ensure_network)")
        return Network.from_record(s.network, rec)

    def _spec_network(self, spec: NetworkSpec) -> Network:
        """Validate a non-default spec into the network it asks for (nothing changes)."""
        what = f"network {spec.name!r}"
        if spec.name in (self.settings.network, "nyx"):
            raise ConfigError(f"{what}: that is the default network's name")
        if spec.subnet is None:
            raise ConfigError(f"{what}: subnet is required (nyxd picks one from its pool)")
        if spec.subnet.prefixlen > 30:
            raise ConfigError(f"{what}: subnet {spec.subnet} is too small (need /30 or larger)")
        gw = spec.gateway_interface
        assert gw is not None
        if gw.ip in (spec.subnet.network_address, spec.subnet.broadcast_address):
            raise ConfigError(
                f"{what}: gateway {gw.ip} is the network or broadcast address of {spec.subnet}"
            )
        bridge, mtu = parse_options(what, spec.options)
        gw6 = spec.gateway_interface6
        if gw6 is not None:
            if not ipv6_available():
                raise ConfigError(f"{what}: subnet6 {spec.subnet6}: this kernel has no IPv6")
            if gw6.network.prefixlen > 64:
                raise ConfigError(
                    f"{what}: subnet6 {gw6.network} is too small (need /64 or larger)"
                )
            if gw6.ip == gw6.network.network_address:
                raise ConfigError(
                    f"{what}: gateway6 {gw6.ip} is the subnet-router anycast address of "
                    f"{gw6.network}"
                )
            if mtu is not None and mtu < MTU_MIN6:
                raise ConfigError(
                    f"{what}: mtu {mtu} is below IPv6's minimum {MTU_MIN6} (the network has "
                    f"subnet6 {gw6.network})"
                )
        return Network(
            spec.name,
            bridge or bridge_name(spec.name),
            gw,
            False,
            spec.internal,
            mtu,
            dict(spec.options),
            dict(spec.labels),
            gw6,
        )

    def _network_create(self, spec: NetworkSpec) -> NetworkInfo:
        """Create (or complete, for an identical spec) the network ``spec`` asks for."""
        if spec.default:
            net = self._default_spec(spec)
            self._bring_up(net)
            return net.info().model_copy(update={"labels": dict(spec.labels)})
        net = self._spec_network(spec)
        what = f"network {net.name!r}"
        with self.store.locked() as st:
            networks = networks_of(st.meta)
            old = networks.pop(net.name, None)
            if old is not None:
                legacy = "options" not in st.meta[net.name]  # recorded by an older driver
                diff = old.differences(net)
                if legacy:
                    diff = [d for d in diff if d.split(" ", 1)[0] in ("gateway", "bridge")]
                if diff:
                    raise ConfigError(
                        f"{what} exists with another spec: {'; '.join(diff)}; "
                        "remove it first (nyx network rm)"
                    )
            for name, other in networks.items():
                if other.subnet.overlaps(net.subnet):
                    raise ConfigError(
                        f"{what}: subnet {net.subnet} overlaps network {name!r} ({other.subnet})"
                    )
                if overlap6(net, other):
                    raise ConfigError(
                        f"{what}: subnet6 {net.subnet6} overlaps network {name!r} ({other.subnet6})"
                    )
                if other.bridge == net.bridge:
                    raise ConfigError(f"{what}: bridge name {net.bridge!r} is taken by {name!r}")
            # nor any route or address of the host (nyx's own bridges are no host's)
            own = {o.bridge for o in networks.values()} | ({old.bridge} if old else set())
            check_subnet_on_host(net.subnet, what, ignore_devs=own)
            if net.subnet6 is not None:
                check_subnet_on_host(net.subnet6, what, ignore_devs=own)
            if old is None:
                with nl.host_rtnl() as rt:
                    taken = nl.get_link(rt, net.bridge)
                if taken is not None:
                    raise ConfigError(
                        f"{what}: bridge name {net.bridge!r}: an interface of that name exists "
                        "on the host and is no nyx network's; pick another one "
                        "(-o com.docker.network.bridge.name=NAME) or remove it"
                    )
            # recorded before the bridge exists: a nyxd killed in between leaves a record
            # that network_remove (or the same network_create) completes, never a bridge
            # nothing records
            st.meta[net.name] = net.record()
        try:
            with self.store.locked(write=False):  # made under the lock setups take too
                self._bring_up(net)
        except BaseException:
            if old is None:
                failures = self._take_down(net)
                if failures:
                    logger.warning("network rollback incomplete", errors=failures)
                with self.store.locked() as st:
                    st.meta.pop(net.name, None)
            raise
        logger.debug("network created", network=net.name, bridge=net.bridge)
        return net.info()

    def _network_remove(self, name: str) -> None:
        """Remove a network without attachments: elements, bridge, record. Idempotent."""
        if name == self.settings.network:
            raise ConfigError(f"network {name!r} is the default network: it cannot be removed")
        with self.store.locked() as st:
            rec = st.meta.get(name)
            if rec is None:
                return
            users = sorted({owner(a) for a in st.records.values() if a.get("network") == name})
            if users:
                raise ConfigError(
                    f"network {name!r} has containers attached ({', '.join(users)}): "
                    "tear them down first"
                )
            net = Network.from_record(name, rec)
            errors = self._take_down(net)
            if errors:
                raise TeardownError(f"network {name!r}", errors)
            del st.meta[name]
            st.cursor.pop(name, None)
            st.cursor.pop(cursor6(name), None)
        logger.debug("network removed", network=name, bridge=net.bridge)
