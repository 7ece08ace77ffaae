"""The driver conformance suite's fixtures and helpers (:class:`BackendKit`).

:class:`~nyx_core.testing.BackendConformance` is built on it; its checks live in
:mod:`._conformance` (host side, container side, ports) and :mod:`._conformance_networks`
(network lifecycle, several networks, IPv6).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .._models import (
    NetworkSpec,
    PortMapping,
    SetupOptions,
    SetupResult,
)
from .._plugins import NetworkBackend
from .._settings import NyxSettings
from ..errors import NyxError
from ._netns import Netns, snapshot

__all__ = [
    "GATEWAY_PORT",
    "INTERNAL_NETWORK",
    "INTERNET_PORT",
    "KIT_SUBNET6",
    "LIFECYCLE_NETWORK",
    "PEER_PORT",
    "SECOND_NETWORK",
    "SHORT_TIMEOUT",
    "TINY_SUBNET",
    "BackendKit",
    "container_state",
    "default_network_spec",
    "dual_stack",
    "in_subnet",
    "in_subnet6",
    "same",
    "snapshot_diff",
]

LIFECYCLE_NETWORK = ("kit-net1", "10.231.1.1/24")
"""Name and gateway/prefix of the network the lifecycle checks create and remove."""
SECOND_NETWORK = ("kit-net2", "10.231.2.1/24")
"""The second network of the ``multiple_networks`` check (``eth1``)."""
INTERNAL_NETWORK = ("kit-int", "10.231.3.1/24")
"""The internal network of the ``enforces_internal`` check."""
TINY_SUBNET = "10.231.0.0/29"
"""The default network's subnet in the lease check: 5 addresses for containers."""
KIT_SUBNET6 = "fd00:231::/64"
"""The default network's IPv6 subnet in the ``ipv6`` checks (gateway ``fd00:231::1``)."""
PEER_PORT, GATEWAY_PORT, INTERNET_PORT = 18090, 18091, 18092
"""TCP ports of the servers the packet checks connect to."""

SHORT_TIMEOUT = 3.0
"""Seconds a connection that must *not* get through is given (a dropped SYN)."""


def default_network_spec(settings: NyxSettings) -> NetworkSpec:
    """The default network as nyxd creates it at start (``network_lifecycle`` drivers)."""
    return NetworkSpec(
        name=settings.network,
        subnet=settings.container_subnet,
        gateway=settings.gateway_ip,
        subnet6=settings.container_subnet6,
        gateway6=settings.gateway6,
        default=True,
    )


def dual_stack(settings: NyxSettings) -> NyxSettings:
    """``settings`` with :data:`KIT_SUBNET6` as the default network's IPv6 subnet."""
    return settings.model_copy(
        update={"container_subnet6": ipaddress.IPv6Network(KIT_SUBNET6), "gateway_ip6": None}
    )


def _show(items: list[Any]) -> str:
    text = ", ".join(
        json.dumps(x, sort_keys=True) if isinstance(x, dict) else str(x) for x in items
    )
    return text if len(text) < 600 else text[:600] + "..."


def snapshot_diff(before: dict[str, Any], after: dict[str, Any]) -> str:
    """What differs between two :func:`~nyx_core.testing.snapshot` results, for messages."""
    parts = []
    for key in sorted(before.keys() | after.keys()):
        b, a = before.get(key, []), after.get(key, [])
        if b == a:
            continue
        extra = [x for x in a if x not in b]
        gone = [x for x in b if x not in a]
        text = key + ":"
        if extra:
            text += f" left behind [{_show(extra)}]"
        if gone:
            text += f" removed [{_show(gone)}]"
        parts.append(text if extra or gone else f"{key}: reordered")
    return "; ".join(parts) or "no difference"


def same(before: dict[str, Any], after: dict[str, Any], what: str) -> None:
    assert after == before, f"{what}: {snapshot_diff(before, after)}"


_KERNEL_LO = frozenset({("lo", "127.0.0.1/8"), ("lo", "::1/128")})


def container_state(ns: Netns) -> dict[str, Any]:
    """:func:`snapshot` of a container, minus the addresses the kernel itself puts on
    ``lo`` (``::1`` comes and goes with lo's state, which is the runtime's business: the
    CNI loopback plugin brings lo down on DEL)."""
    snap = snapshot(ns)
    snap["addresses"] = [a for a in snap["addresses"] if tuple(a) not in _KERNEL_LO]
    return snap


def in_subnet6(result: SetupResult, subnet: ipaddress.IPv6Network) -> ipaddress.IPv6Address:
    v6 = [ip for ip in result.ips if ip.version == 6]
    assert v6, (
        f"setup of {result.container_id!r} on a dual-stack network reported no IPv6 address "
        f"(it has {[str(ip) for ip in result.ips]})"
    )
    ip = v6[0]
    assert isinstance(ip, ipaddress.IPv6Address)
    assert ip in subnet, f"{result.container_id!r} got {ip}, outside its network's {subnet}"
    return ip


def in_subnet(result: SetupResult, subnet: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    v4 = [ip for ip in result.ips if ip.version == 4]
    assert v4, f"setup of {result.container_id!r} reported no IPv4 address"
    ip = v4[0]
    assert isinstance(ip, ipaddress.IPv4Address)
    assert ip in subnet, f"{result.container_id!r} got {ip}, outside its network's {subnet}"
    return ip


class BackendKit:
    """The fixtures and helpers every group of backend checks uses."""

    # ------------------------------------------------------------------ fixtures

    @pytest.fixture
    def nyx_driver_name(self) -> str:
        raise NotImplementedError("provide a nyx_driver_name fixture")

    @pytest.fixture
    def nyx_make_backend(
        self, nyx_driver_name: str, nyx_in_host: Netns
    ) -> Callable[[NyxSettings], NetworkBackend]:
        """Factory: a freshly loaded driver, host-wide setup done for ``settings``, as nyxd
        does at start (``ensure_network``, then ``network_create`` of the default network
        when the driver declares ``network_lifecycle``). Runs in the host namespace."""

        def make(settings: NyxSettings) -> NetworkBackend:
            backend = NetworkBackend.load(nyx_driver_name)
            backend.ensure_network(settings)
            if backend.capabilities().network_lifecycle:
                backend.network_create(default_network_spec(settings))
            return backend

        return make

    @pytest.fixture
    def nyx_backend(
        self, nyx_make_backend: Callable[[NyxSettings], NetworkBackend], nyx_settings: NyxSettings
    ) -> NetworkBackend:
        """The driver, ready for containers on ``nyx_settings``' default network."""
        return nyx_make_backend(nyx_settings)

    @pytest.fixture
    def nyx_backend6(
        self,
        nyx_driver_name: str,
        nyx_make_backend: Callable[[NyxSettings], NetworkBackend],
        nyx_settings: NyxSettings,
    ) -> NetworkBackend:
        """The driver on a dual-stack default network (:func:`dual_stack`: IPv6 subnet
        :data:`KIT_SUBNET6`); the checks using it skip for a driver without ``ipv6``."""
        if not NetworkBackend.load(nyx_driver_name).capabilities().ipv6:
            pytest.skip("driver does not declare ipv6")
        return nyx_make_backend(dual_stack(nyx_settings))

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _require(backend: NetworkBackend, capability: str) -> None:
        if not getattr(backend.capabilities(), capability):
            pytest.skip(f"driver does not declare {capability}")

    @staticmethod
    def _ports(backend: NetworkBackend, *specs: str) -> list[PortMapping]:
        """The ports to publish in a check: none for a driver without ``publishes_ports``."""
        if not backend.capabilities().publishes_ports:
            return []
        return [PortMapping.parse(s) for s in specs]

    @staticmethod
    @contextlib.contextmanager
    def _network(
        backend: NetworkBackend, name: str, gateway: str, *, internal: bool = False
    ) -> Iterator[SetupOptions]:
        """A non-default network for the ``with`` block, as nyxd makes one: created and
        removed through the driver when it declares ``network_lifecycle``, else left to
        the driver's setup (``SetupOptions.subnet``). Yields the options of a container
        on it."""
        iface = ipaddress.IPv4Interface(gateway)
        lifecycle = backend.capabilities().network_lifecycle
        if lifecycle:
            backend.network_create(
                NetworkSpec(name=name, subnet=iface.network, gateway=iface.ip, internal=internal)
            )
        ok = False
        try:
            yield SetupOptions(network=name, subnet=iface, internal=internal)
            ok = True
        finally:
            if lifecycle:
                if ok:
                    backend.network_remove(name)
                else:
                    with contextlib.suppress(NyxError):
                        backend.network_remove(name)
