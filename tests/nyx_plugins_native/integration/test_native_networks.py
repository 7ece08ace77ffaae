"""Networks have a lifecycle on the native driver: created (validated first), used, removed;
and ``gc`` releases what forgotten containers left behind. Real kernel, the kit's host."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from typing import Any

import pytest
from native_helpers import Servers

from nyx_core import (
    ConfigError,
    NetworkBackend,
    NetworkSpec,
    NyxSettings,
    PortMapping,
    SetupOptions,
)
from nyx_core.testing import Netns, snapshot
from nyx_plugins_native import Firewall, lease_store, veth_name

pytestmark = pytest.mark.kernel

N = ipaddress.IPv4Network
A = ipaddress.IPv4Address


def spec(name: str = "blue", subnet: str = "10.232.1.0/24", **kw: Any) -> NetworkSpec:
    return NetworkSpec(name=name, subnet=N(subnet), **kw)


def spec6(
    name: str, subnet: str, subnet6: str, gateway6: str | None = None, **kw: Any
) -> NetworkSpec:
    gw6 = None if gateway6 is None else ipaddress.IPv6Address(gateway6)
    return spec(name, subnet, subnet6=ipaddress.IPv6Network(subnet6), gateway6=gw6, **kw)


def _elements() -> dict[str, list[Any]]:
    fw = Firewall()
    names = ("net_subnets", "net_bridges", "same_bridge", "ports_any", "ports_ip", "internal")
    return {n: fw.elements(n) for n in names}


def _state(settings: NyxSettings) -> tuple[dict[str, Any], dict[str, Any]]:
    store = lease_store(settings.state_dir)
    with store.locked(write=False) as st:
        meta = dict(st.meta)
    return meta, store.leases()


def _link(ns: Netns, name: str) -> dict[str, Any] | None:
    links = [x for x in ns.ipj("-d", "link", "show") if x["ifname"] == name]
    return links[0] if links else None


def test_create_then_remove_a_network(
    native: NetworkBackend, nyx_in_host: Netns, nyx_settings: NyxSettings
) -> None:
    before = (snapshot(nyx_in_host), _elements(), _state(nyx_settings))
    info = native.network_create(spec(labels={"team": "web"}))
    assert (info.name, info.subnet, info.gateway) == ("blue", N("10.232.1.0/24"), A("10.232.1.1"))
    assert info.interface == "nyx-blue" and info.labels == {"team": "web"}
    link = _link(nyx_in_host, "nyx-blue")
    assert link is not None and link["linkinfo"]["info_kind"] == "bridge"
    assert "UP" in link["flags"]
    addrs = nyx_in_host.ipj("addr", "show", "nyx-blue")[0]["addr_info"]
    assert [(a["local"], a["prefixlen"]) for a in addrs] == [("10.232.1.1", 24)]
    assert nyx_in_host.sysctl("net.ipv4.conf.nyx-blue.route_localnet") == "1"
    els = _elements()
    assert {"prefix": {"addr": "10.232.1.0", "len": 24}} in els["net_subnets"]
    assert "nyx-blue" in els["net_bridges"]
    assert {"concat": ["nyx-blue", "nyx-blue"]} in els["same_bridge"]
    assert "blue" in _state(nyx_settings)[0]
    native.network_remove("blue")
    assert (snapshot(nyx_in_host), _elements(), _state(nyx_settings)) == before
    native.network_remove("blue")  # idempotent: unknown is no error
    native.network_remove("never-made")


def test_create_is_idempotent_and_another_spec_is_refused(
    native: NetworkBackend, nyx_in_host: Netns, nyx_settings: NyxSettings
) -> None:
    first = native.network_create(spec(internal=True, options={"mtu": "1400"}))
    made = (snapshot(nyx_in_host), _elements(), _state(nyx_settings))
    again = native.network_create(spec(internal=True, options={"mtu": "1400"}))
    assert again == first
    assert (snapshot(nyx_in_host), _elements(), _state(nyx_settings)) == made
    for other, word in [
        (spec(subnet="10.232.2.0/24", internal=True, options={"mtu": "1400"}), "gateway"),
        (spec(options={"mtu": "1400"}), "internal False"),
        (spec(internal=True, options={"mtu": "1500"}), "mtu 1500"),
        (spec(internal=True, options={"mtu": "1400"}, labels={"a": "b"}), "labels"),
        (
            spec(internal=True, options={"mtu": "1400", "bridge": "br-other"}),
            "bridge br-other",
        ),
    ]:
        with pytest.raises(ConfigError, match=f"network 'blue' exists with another spec.*{word}"):
            native.network_create(other)
        assert (snapshot(nyx_in_host), _elements(), _state(nyx_settings)) == made
    native.network_remove("blue")


def test_a_recorded_network_comes_back_after_a_reboot(
    native: NetworkBackend, nyx_in_host: Netns, nyx_settings: NyxSettings
) -> None:
    """Bridges and nft elements do not survive a reboot, the state dir does: creating the
    recorded network again (nyxd does at start) brings everything back."""
    native.network_create(spec(options={"mtu": "1400"}))
    made = (snapshot(nyx_in_host), _elements())
    nyx_in_host.ip("link", "del", "nyx-blue")
    nyx_in_host.run(["nft", "flush", "set", "ip", "nyx", "net_bridges"])
    assert snapshot(nyx_in_host) != made[0]
    after = NetworkBackend.load("native")  # a new nyxd
    after.ensure_network(nyx_settings)
    after.network_create(spec(options={"mtu": "1400"}))
    assert (snapshot(nyx_in_host), _elements()) == made
    assert _link(nyx_in_host, "nyx-blue")["mtu"] == 1400  # type: ignore[index]
    after.network_remove("blue")


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        # the kit's uplink (203.0.113.2/24, the default route)
        (
            spec("evil", "203.0.113.128/25"),
            "network 'evil': subnet 203.0.113.128/25 overlaps the host route "
            "203.0.113.0/24 dev uplink0",
        ),
        # the default network (10.231.0.0/24) and another nyx network
        (
            spec("evil", "10.231.0.0/16"),
            "network 'evil': subnet 10.231.0.0/16 overlaps network 'nyx' (10.231.0.0/24)",
        ),
        (
            spec("evil", "10.232.1.128/25"),
            "network 'evil': subnet 10.232.1.128/25 overlaps network 'blue' (10.232.1.0/24)",
        ),
        (
            spec("evil", "10.232.9.0/24", options={"vlan": "7", "mtu": "1400"}),
            "network 'evil': unknown driver option(s) vlan",
        ),
        (spec("evil", "10.232.9.0/24", options={"mtu": "40"}), "mtu '40' is not a number"),
        (
            spec("evil", "10.232.9.0/24", options={"com.docker.network.bridge.name": "uplink0"}),
            "network 'evil': bridge name 'uplink0': an interface of that name exists",
        ),
        (
            spec("evil", "10.232.9.0/24", options={"bridge": "nyx-blue"}),
            "network 'evil': bridge name 'nyx-blue' is taken by 'blue'",
        ),
        (
            spec("evil", "10.232.9.0/30", gateway=A("10.232.9.3")),
            "gateway 10.232.9.3 is the network or broadcast address",
        ),
        (spec("evil", "10.232.9.0/31"), "too small"),
        # IPv6: the kit's uplink prefix (an address of the host), a too small subnet, the
        # subnet-router anycast address as gateway, an MTU IPv6 cannot use
        (
            spec6("evil", "10.232.9.0/24", "2001:db8:113::/64"),
            "network 'evil': subnet 2001:db8:113::/64 contains host address "
            "2001:db8:113::2 (uplink0)",
        ),
        (
            spec6("evil", "10.232.9.0/24", "2001:db8:113::/48"),
            "network 'evil': subnet 2001:db8:113::/48 contains host address",
        ),
        (
            spec6("evil", "10.232.9.0/24", "fd00:9::/96"),
            "subnet6 fd00:9::/96 is too small (need /64 or larger)",
        ),
        (
            spec6("evil", "10.232.9.0/24", "fd00:9::/64", gateway6="fd00:9::"),
            "gateway6 fd00:9:: is the subnet-router anycast address of fd00:9::/64",
        ),
        (
            spec6("evil", "10.232.9.0/24", "fd00:9::/64", options={"mtu": "1200"}),
            "mtu 1200 is below IPv6's minimum 1280",
        ),
        (spec6("evil", "10.232.9.0/24", "fe80::/64"), "overlaps fe80::/10 (link-local)"),
        (NetworkSpec(name="evil"), "network 'evil': subnet is required"),
        (spec("nyx", "10.232.9.0/24"), "that is the default network's name"),
    ],
)
def test_what_cannot_be_honoured_is_refused_and_changes_nothing(
    native: NetworkBackend,
    nyx_in_host: Netns,
    nyx_settings: NyxSettings,
    bad: NetworkSpec,
    message: str,
) -> None:
    native.network_create(spec())
    before = (snapshot(nyx_in_host), _elements(), _state(nyx_settings))
    with pytest.raises(ConfigError) as exc:
        native.network_create(bad)
    assert message in str(exc.value)
    assert (snapshot(nyx_in_host), _elements(), _state(nyx_settings)) == before


def test_mtu_and_bridge_name_are_honoured(
    native: NetworkBackend,
    nyx_in_host: Netns,
    nyx_container_ns: Callable[[], Netns],
) -> None:
    opts = {"com.docker.network.bridge.name": "br-jumbo", "com.docker.network.driver.mtu": "1400"}
    info = native.network_create(spec("jumbo", "10.232.4.0/24", options=opts))
    assert info.interface == "br-jumbo" and info.options == opts and info.extra["mtu"] == 1400
    assert _link(nyx_in_host, "br-jumbo")["mtu"] == 1400  # type: ignore[index]
    ctr = nyx_container_ns()
    native.setup("mtu-a", ctr.path, [], SetupOptions(network="jumbo"))
    try:
        host_side = _link(nyx_in_host, veth_name("mtu-a", "jumbo"))
        assert host_side is not None and host_side["mtu"] == 1400
        assert host_side["master"] == "br-jumbo"
        assert ctr.ipj("link", "show", "eth0")[0]["mtu"] == 1400
        assert _link(nyx_in_host, "br-jumbo")["mtu"] == 1400  # type: ignore[index]
    finally:
        native.teardown("mtu-a", ctr.path)
    # the user's MTU stays on the bridge without ports
    assert _link(nyx_in_host, "br-jumbo")["mtu"] == 1400  # type: ignore[index]
    native.network_remove("jumbo")
    assert _link(nyx_in_host, "br-jumbo") is None


def test_driver_opt_mtu_applies_to_the_default_network(
    nyx_in_host: Netns, nyx_settings: NyxSettings, nyx_container_ns: Callable[[], Netns]
) -> None:
    backend = NetworkBackend.load("native")
    with pytest.raises(ConfigError, match=r"nyxd --driver-opt: unknown driver option\(s\) color"):
        backend.ensure_network(nyx_settings, {"color": "red"})
    backend.ensure_network(nyx_settings, {"mtu": "1300"})
    assert _link(nyx_in_host, "nyxt0")["mtu"] == 1300  # type: ignore[index]
    info = backend.network_create(
        NetworkSpec(name="nyx", subnet=N("10.231.0.0/24"), gateway=A("10.231.0.1"), default=True)
    )
    assert info.interface == "nyxt0" and info.options == {"mtu": "1300"}
    ctr = nyx_container_ns()
    backend.setup("dm-a", ctr.path, [], SetupOptions())
    try:
        assert ctr.ipj("link", "show", "eth0")[0]["mtu"] == 1300
    finally:
        backend.teardown("dm-a", ctr.path)
    with pytest.raises(ConfigError, match="differ from the settings"):
        backend.network_create(NetworkSpec(name="nyx", subnet=N("10.231.0.0/16"), default=True))
    with pytest.raises(ConfigError, match="cannot be removed"):
        backend.network_remove("nyx")


def test_setup_on_a_network_never_created_is_a_clear_error(
    native: NetworkBackend,
    nyx_in_host: Netns,
    nyx_settings: NyxSettings,
    nyx_container_ns: Callable[[], Netns],
) -> None:
    ctr = nyx_container_ns()
    before = (snapshot(nyx_in_host), snapshot(ctr), _elements(), _state(nyx_settings))
    # an older nyxd gave the subnet and the driver made the network on the fly: no more
    opts = SetupOptions(network="lazy", subnet=ipaddress.ip_interface("10.232.5.1/24"))
    with pytest.raises(ConfigError) as exc:
        native.setup("lz-a", ctr.path, [PortMapping.parse("18900:80")], opts)
    assert str(exc.value) == (
        "network 'lazy' does not exist: create it first "
        "(nyx network create, nyx_backend_network_create)"
    )
    assert (snapshot(nyx_in_host), snapshot(ctr), _elements(), _state(nyx_settings)) == before


def test_an_internal_network_makes_its_containers_internal(
    native: NetworkBackend, nyx_container_ns: Callable[[], Netns]
) -> None:
    native.network_create(spec("vault", "10.232.6.0/24", internal=True))
    ctr = nyx_container_ns()
    r = native.setup("in-a", ctr.path, [], SetupOptions(network="vault"))
    try:
        assert r.internal
        assert str(r.ips[0]) in Firewall().elements("internal")
    finally:
        native.teardown("in-a", ctr.path)
    assert Firewall().elements("internal") == []


def test_remove_is_refused_while_containers_are_attached(
    native: NetworkBackend,
    nyx_in_host: Netns,
    nyx_settings: NyxSettings,
    nyx_container_ns: Callable[[], Netns],
) -> None:
    native.network_create(spec())
    ctr = nyx_container_ns()
    native.setup("rm-a", ctr.path, [], SetupOptions(network="blue"))
    before = (snapshot(nyx_in_host), _elements(), _state(nyx_settings))
    with pytest.raises(ConfigError) as exc:
        native.network_remove("blue")
    assert str(exc.value) == ("network 'blue' has containers attached (rm-a): tear them down first")
    assert (snapshot(nyx_in_host), _elements(), _state(nyx_settings)) == before
    native.teardown("rm-a", ctr.path)
    native.network_remove("blue")
    assert _link(nyx_in_host, "nyx-blue") is None


def test_gc_releases_forgotten_containers_and_keeps_the_listed_ones(
    native: NetworkBackend,
    nyx_in_host: Netns,
    nyx_settings: NyxSettings,
    nyx_container_ns: Callable[[], Netns],
    servers: Servers,
) -> None:
    native.network_create(spec())
    keep, leak = nyx_container_ns(), nyx_container_ns()
    native.setup("gc-keep", keep.path, [PortMapping.parse("18950:80")], SetupOptions())
    native.setup("gc-keep", keep.path, [], SetupOptions(network="blue", interface="eth1"))
    kept = (snapshot(nyx_in_host), _elements(), _state(nyx_settings))
    # a container nyxd will have forgotten (its record lost in a crash): never torn down
    native.setup("gc-leak", leak.path, [PortMapping.parse("18951:80")], SetupOptions(internal=True))
    native.setup("gc-leak", leak.path, [], SetupOptions(network="blue", interface="eth1"))
    # and what no lease explains: a veth on a nyx bridge, an element pointing into a subnet
    nyx_in_host.ip("link", "add", "nv00000000beef", "type", "veth", "peer", "name", "gcpeer")
    nyx_in_host.ip("link", "set", "nv00000000beef", "master", "nyxt0")
    nyx_in_host.run(["nft", "add", "element", "ip", "nyx", "internal", "{ 10.232.1.200 }"])
    nyx_in_host.run(
        ["nft", "add", "element", "ip", "nyx", "ports_any", "{ tcp . 18952 : 10.231.0.200 . 80 }"]
    )
    # not nyx's: a link on the bridge without nyx's veth name, an element elsewhere
    nyx_in_host.ip("link", "add", "other0", "type", "veth", "peer", "name", "otherpeer")
    nyx_in_host.ip("link", "set", "other0", "master", "nyxt0")
    nyx_in_host.run(["nft", "add", "element", "ip", "nyx", "internal", "{ 192.0.2.7 }"])
    with pytest.raises(OSError):  # the leaked container's published port is still held
        servers(None, "0.0.0.0", 18951, "thief")

    report = native.gc(["gc-keep", "not-set-up"])

    assert report == {"containers": ["gc-leak"], "veths": ["nv00000000beef"], "elements": 2}
    nyx_in_host.ip("link", "del", "other0")
    nyx_in_host.run(["nft", "delete", "element", "ip", "nyx", "internal", "{ 192.0.2.7 }"])
    assert (snapshot(nyx_in_host), _elements(), _state(nyx_settings)) == kept
    servers(None, "0.0.0.0", 18951, "free-again")
    with pytest.raises(OSError):  # the kept container's port is still held
        servers(None, "0.0.0.0", 18950, "thief")
    assert native.gc(["gc-keep"]) == {"containers": [], "veths": [], "elements": 0}
    native.teardown("gc-keep", keep.path)
    native.network_remove("blue")


def test_gc_sees_the_leases_of_a_previous_nyxd(
    nyx_in_host: Netns, nyx_settings: NyxSettings, nyx_container_ns: Callable[[], Netns]
) -> None:
    """After a crash the new nyxd's driver has nothing in memory: gc works from the disk."""
    ctr = nyx_container_ns()
    old = NetworkBackend.load("native")
    old.ensure_network(nyx_settings)
    before = (snapshot(nyx_in_host), _elements(), _state(nyx_settings))
    old.setup("gc-old", ctr.path, [PortMapping.parse("18960:80")], SetupOptions())
    for s in old.pm.get_plugin("nyx.net_drivers:native").driver._reserved.values():
        for sock in s:
            sock.close()  # the old process is gone
    new = NetworkBackend.load("native")
    new.ensure_network(nyx_settings)
    assert new.gc([])["containers"] == ["gc-old"]
    assert (snapshot(nyx_in_host), _elements(), _state(nyx_settings)) == before
    probe = socket.socket()
    try:
        probe.bind(("0.0.0.0", 18960))  # the port is free again
    finally:
        probe.close()
