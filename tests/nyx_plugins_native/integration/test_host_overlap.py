"""A host with an uplink (203.0.113.2/24, default route via 203.0.113.1): nyx subnets may not
take its traffic (issue 11 item 6), and published port ranges stay bounded (item 11)."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable
from typing import Any

import pytest

from nyx_cli.daemon._networks import NetworkRegistry
from nyx_cli.daemon._state import StateStore as CoreStore
from nyx_core import (
    ConfigError,
    NetworkBackend,
    NetworkSpec,
    NyxSettings,
    PortConflictError,
    PortMapping,
    SetupOptions,
    read_host_view,
)
from nyx_core.testing import Netns, entered, snapshot
from nyx_plugins_native import lease_store

pytestmark = pytest.mark.kernel


@pytest.fixture
def uplink(nyx_internet_ns: Netns) -> Netns:
    """The kit's host namespace has an uplink (uplink0 203.0.113.2/24, default route via
    203.0.113.1) to its "internet" namespace: this is it."""
    return nyx_internet_ns


def _leases(settings: NyxSettings) -> dict[str, Any]:
    return lease_store(settings.state_dir).leases()


@pytest.mark.parametrize(
    ("gateway", "reason"),
    [
        ("203.0.113.129/25", "overlaps the host route 203.0.113.0/24 dev uplink0"),
        ("203.0.113.1/30", "contains host address 203.0.113.2 (uplink0)"),
        ("203.0.0.1/16", "contains host address 203.0.113.2 (uplink0)"),
    ],
)
def test_a_network_on_the_uplinks_subnet_is_refused_and_changes_nothing(
    uplink: Netns,
    native: NetworkBackend,
    nyx_in_host: Netns,
    nyx_settings: NyxSettings,
    nyx_container_ns: Callable[[], Netns],
    gateway: str,
    reason: str,
) -> None:
    ctr = nyx_container_ns()
    before = (snapshot(nyx_in_host), snapshot(ctr), _leases(nyx_settings))
    gw = ipaddress.ip_interface(gateway)
    with pytest.raises(ConfigError) as exc:
        native.network_create(NetworkSpec(name="evil", subnet=gw.network, gateway=gw.ip))
    assert str(exc.value) == f"network 'evil': subnet {gw.network} {reason}"
    # a container cannot join it either (it does not exist)
    with pytest.raises(ConfigError, match="network 'evil' does not exist"):
        native.setup(
            "evil-1", ctr.path, [PortMapping.parse("18080:80")], SetupOptions(network="evil")
        )
    assert (snapshot(nyx_in_host), snapshot(ctr), _leases(nyx_settings)) == before


def test_networks_clear_of_the_uplink_still_work(
    uplink: Netns,
    native: NetworkBackend,
    nyx_in_host: Netns,
    nyx_container_ns: Callable[[], Netns],
) -> None:
    before = snapshot(nyx_in_host)
    a, b = nyx_container_ns(), nyx_container_ns()
    native.setup("ok-1", a.path, [], SetupOptions())
    # a second container on a new network: nyx's own bridges are no host routes
    native.network_create(NetworkSpec(name="fine", subnet=ipaddress.ip_network("10.89.3.0/24")))
    opts = SetupOptions(network="fine", subnet=ipaddress.ip_interface("10.89.3.1/24"))
    native.setup("ok-2", b.path, [], opts)
    native.setup("ok-3", a.path, [], opts.model_copy(update={"interface": "eth1"}))
    native.teardown("ok-3", a.path)
    native.teardown("ok-2", b.path)
    native.teardown("ok-1", a.path)
    native.network_remove("fine")
    assert snapshot(nyx_in_host) == before


def test_a_default_subnet_on_the_uplink_fails_ensure_and_changes_nothing(
    uplink: Netns, nyx_in_host: Netns, nyx_settings: NyxSettings
) -> None:
    settings = nyx_settings.model_copy(
        update={
            "container_subnet": ipaddress.IPv4Network("203.0.0.0/16"),
            "gateway_ip": ipaddress.IPv4Address("203.0.0.1"),
        }
    )
    before = snapshot(nyx_in_host)
    backend = NetworkBackend.load("native")
    with pytest.raises(ConfigError) as exc:
        backend.ensure_network(settings)
    assert str(exc.value) == (
        "default network 'nyx' (NYXD_CONTAINER_SUBNET): subnet 203.0.0.0/16 contains host "
        "address 203.0.113.2 (uplink0)"
    )
    assert snapshot(nyx_in_host) == before


def test_network_create_reads_the_calling_threads_namespace(
    uplink: Netns, nyx_host_ns: Netns, nyx_settings: NyxSettings
) -> None:
    """nyxd's API thread (here a thread switched into the host namespace while the main
    thread stays where it is) refuses ``nyx network create --subnet`` at once."""
    out: dict[str, Any] = {}

    def api_thread() -> None:
        with entered(nyx_host_ns):
            out["devs"] = {r.dev for r in read_host_view().routes}
            backend = NetworkBackend.load("native")
            backend.ensure_network(nyx_settings)
            reg = NetworkRegistry(nyx_settings, CoreStore(nyx_settings.state_dir), backend)
            try:
                reg.create("evil", subnet="203.0.113.128/25")
            except ConfigError as exc:
                out["error"] = str(exc)
            made = reg.create("fine")
            out["made"] = (made["subnet"], made["interface"])

    t = threading.Thread(target=api_thread)
    t.start()
    t.join(30)
    assert "uplink0" in out["devs"]
    assert out["error"] == (
        "network 'evil': subnet 203.0.113.128/25 overlaps the host route 203.0.113.0/24 dev uplink0"
    )
    assert out["made"] == ("10.89.0.0/24", "nyx-fine")
    assert list(CoreStore(nyx_settings.state_dir).load_networks()) == ["fine"]


# ------------------------------------------------------------------ port ranges


def test_every_port_is_refused_before_anything_changes(
    native: NetworkBackend,
    nyx_in_host: Netns,
    nyx_settings: NyxSettings,
    nyx_container_ns: Callable[[], Netns],
) -> None:
    ctr = nyx_container_ns()
    before = (snapshot(nyx_in_host), _leases(nyx_settings))
    with pytest.raises(ConfigError, match=r"65535 host ports.*max_published_ports=1024"):
        native.setup("all", ctr.path, [PortMapping.parse("1-65535:1-65535")], SetupOptions())
    assert (snapshot(nyx_in_host), _leases(nyx_settings)) == before


@pytest.fixture
def wide_native(nyx_settings: NyxSettings, nyx_in_host: Netns) -> NetworkBackend:
    backend = NetworkBackend.load("native")
    backend.ensure_network(nyx_settings.model_copy(update={"max_published_ports": 10000}))
    return backend


def test_a_10000_port_range_within_the_limit_is_published_and_checked_as_one(
    wide_native: NetworkBackend,
    nyx_in_host: Netns,
    nyx_settings: NyxSettings,
    nyx_container_ns: Callable[[], Netns],
) -> None:
    a, b = nyx_container_ns(), nyx_container_ns()
    before = snapshot(nyx_in_host)
    wide_native.setup(
        "rng-a", a.path, [PortMapping.parse("20000-29999:20000-29999")], SetupOptions()
    )
    try:
        with pytest.raises(PortConflictError) as exc:
            wide_native.setup(
                "rng-b", b.path, [PortMapping.parse("29999-30001:29999-30001")], SetupOptions()
            )
        assert str(exc.value) == "host port 29999/tcp is already published by container 'rng-a'"
        wide_native.setup("rng-b", b.path, [PortMapping.parse("30000-30009:1-10")], SetupOptions())
        wide_native.teardown("rng-b", b.path)
    finally:
        wide_native.teardown("rng-a", a.path)
    assert snapshot(nyx_in_host) == before
