"""Lifecycle of the native driver: ensure, teardown leaving no trace, concurrency,
rollback of a failed setup, extra networks."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from native_helpers import Servers, ask

from nyx_core import (
    IpamError,
    NetworkBackend,
    NetworkSpec,
    NyxError,
    NyxSettings,
    PortMapping,
    SetupOptions,
    SetupResult,
)
from nyx_core.testing import Netns, snapshot
from nyx_plugins_native import Firewall, _driver, _netlink, bridge_name, lease_store

pytestmark = pytest.mark.kernel


def _state(settings: NyxSettings) -> dict[str, Any]:
    return lease_store(settings.state_dir).leases()


def _elements() -> dict[str, list[Any]]:
    fw = Firewall()
    return {n: fw.elements(n) for n in ("ports_any", "ports_ip", "internal", "net_bridges")}


def test_ensure_sets_up_bridge_sysctls_and_table(
    native: NetworkBackend, nyx_in_host: Netns, nyx_settings: NyxSettings
) -> None:
    link = nyx_in_host.ipj("-d", "link", "show", "nyxt0")[0]
    assert link["linkinfo"]["info_kind"] == "bridge"
    assert "UP" in link["flags"]
    addrs = nyx_in_host.ipj("addr", "show", "nyxt0")[0]["addr_info"]
    assert any(a["local"] == "10.231.0.1" and a["prefixlen"] == 24 for a in addrs)
    assert nyx_in_host.sysctl("net.ipv4.ip_forward") == "1"
    assert nyx_in_host.sysctl("net.ipv4.conf.nyxt0.route_localnet") == "1"
    tables = nyx_in_host.run(["nft", "list", "tables"]).stdout
    assert "table ip nyx" in tables


def test_ensure_completes_a_half_present_setup(
    native: NetworkBackend, nyx_in_host: Netns, nyx_settings: NyxSettings
) -> None:
    full = snapshot(nyx_in_host)
    # somebody removed a rule and the gateway address
    nyx_in_host.run(["nft", "flush", "chain", "ip", "nyx", "postrouting"])
    nyx_in_host.ip("addr", "del", "10.231.0.1/24", "dev", "nyxt0")
    assert snapshot(nyx_in_host) != full
    native.ensure_network(nyx_settings)
    assert snapshot(nyx_in_host) == full


def test_ensure_leaves_other_tables_alone(nyx_in_host: Netns, nyx_settings: NyxSettings) -> None:
    nyx_in_host.run(
        ["nft", "add table inet other; add chain inet other c; add rule inet other c accept"]
    )
    before = nyx_in_host.run(["nft", "list", "table", "inet", "other"]).stdout
    backend = NetworkBackend.load("native")
    backend.ensure_network(nyx_settings)
    backend.ensure_network(nyx_settings)
    assert nyx_in_host.run(["nft", "list", "table", "inet", "other"]).stdout == before


def test_teardown_restores_links_addresses_elements_and_leases(
    native: NetworkBackend,
    nyx_in_host: Netns,
    nyx_settings: NyxSettings,
    nyx_container_ns: Callable[[], Netns],
) -> None:
    keep = nyx_container_ns()
    native.setup("lc-keep", keep.path, [PortMapping.parse("18200:80")], SetupOptions())
    before = (snapshot(nyx_in_host), _elements(), _state(nyx_settings))
    ctrs = [nyx_container_ns() for _ in range(3)]
    native.setup("lc-0", ctrs[0].path, [PortMapping.parse("18201:80")], SetupOptions())
    native.setup(
        "lc-1", ctrs[1].path, [PortMapping.parse("18202:53/udp")], SetupOptions(internal=True)
    )
    native.setup("lc-2", ctrs[2].path, [PortMapping.parse("127.0.0.1:18203:80")], SetupOptions())
    during = _elements()
    assert len(during["ports_any"]) == 3 and len(during["ports_ip"]) == 1
    assert len(during["internal"]) == 1
    for i, c in enumerate(ctrs):
        native.teardown(f"lc-{i}", c.path)
    assert (snapshot(nyx_in_host), _elements(), _state(nyx_settings)) == before
    native.teardown("lc-keep", keep.path)


def test_fifty_concurrent_setups_get_distinct_addresses(
    native: NetworkBackend,
    nyx_in_host: Netns,
    nyx_settings: NyxSettings,
    nyx_container_ns: Callable[[], Netns],
) -> None:
    before = snapshot(nyx_in_host)
    nss = [nyx_container_ns() for _ in range(50)]
    results: dict[int, SetupResult] = {}
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            ports = [PortMapping.parse(f"{19000 + i}:80")]
            results[i] = native.setup(f"cc-{i}", nss[i].path, ports, SetupOptions())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors, errors
        ips = {str(r.ips[0]) for r in results.values()}
        assert len(ips) == 50
        leased = {a["ip"] for a in _state(nyx_settings).values()}
        assert leased == ips
        assert len(_elements()["ports_any"]) == 50
    finally:
        for i, ns in enumerate(nss):
            native.teardown(f"cc-{i}", ns.path)
    assert snapshot(nyx_in_host) == before
    assert _state(nyx_settings) == {}


def _boom(*_a: Any, **_k: Any) -> None:
    raise OSError("injected failure")


@pytest.mark.parametrize("step", ["veth", "container", "firewall"])
def test_failure_mid_setup_leaves_nothing(
    step: str,
    native: NetworkBackend,
    nyx_in_host: Netns,
    nyx_settings: NyxSettings,
    nyx_container_ns: Callable[[], Netns],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ctr = nyx_container_ns()
    before = (snapshot(nyx_in_host), _elements(), _state(nyx_settings))
    ctr_before = snapshot(ctr)
    if step == "veth":
        monkeypatch.setattr(_netlink, "create_veth", _boom)
    elif step == "container":
        monkeypatch.setattr(_netlink, "configure_container", _boom)
    else:
        monkeypatch.setattr(
            native.pm.get_plugin("nyx.net_drivers:native").driver.firewall, "run", _boom
        )
    ports = [PortMapping.parse("18300:80")]
    with pytest.raises(NyxError, match="injected failure"):
        native.setup("fi-a", ctr.path, ports, SetupOptions(internal=True))
    assert (snapshot(nyx_in_host), _elements(), _state(nyx_settings)) == before
    assert snapshot(ctr) == ctr_before
    monkeypatch.undo()
    # the port and the id are free again
    native.setup("fi-a", ctr.path, ports, SetupOptions())
    native.teardown("fi-a", ctr.path)


def test_static_ip_and_exhaustion(
    native: NetworkBackend, nyx_container_ns: Callable[[], Netns]
) -> None:
    a, b = nyx_container_ns(), nyx_container_ns()
    r = native.setup("st-a", a.path, [], SetupOptions(static_ip="10.231.0.77"))
    try:
        assert str(r.ips[0]) == "10.231.0.77"
        with pytest.raises(IpamError, match=r"10\.231\.0\.77"):
            native.setup("st-b", b.path, [], SetupOptions(static_ip="10.231.0.77"))
        with pytest.raises(IpamError, match="outside"):
            native.setup("st-b", b.path, [], SetupOptions(static_ip="10.9.9.9"))
    finally:
        native.teardown("st-a", a.path)


def test_exhausted_pool_is_a_clear_error(
    nyx_in_host: Netns, tmp_path: Any, nyx_container_ns: Callable[[], Netns]
) -> None:
    settings = NyxSettings(
        state_dir=tmp_path / "s",
        run_dir=tmp_path / "r",
        container_subnet="10.231.0.0/30",
        gateway_ip="10.231.0.1",
    )
    backend = NetworkBackend.load("native")
    backend.ensure_network(settings)
    a, b = nyx_container_ns(), nyx_container_ns()
    backend.setup("ex-a", a.path, [], SetupOptions())
    try:
        with pytest.raises(IpamError, match="exhausted"):
            backend.setup("ex-b", b.path, [], SetupOptions())
    finally:
        backend.teardown("ex-a", a.path)


def test_extra_networks_are_isolated_and_outlive_their_containers(
    native: NetworkBackend,
    nyx_in_host: Netns,
    nyx_container_ns: Callable[[], Netns],
    servers: Servers,
) -> None:
    before = snapshot(nyx_in_host)
    native.network_create(NetworkSpec(name="blue", subnet="10.232.1.0/24"))  # type: ignore[arg-type]
    blue = SetupOptions(network="blue", subnet="10.232.1.1/24")
    a, b, c = nyx_container_ns(), nyx_container_ns(), nyx_container_ns()
    ra = native.setup("xn-a", a.path, [PortMapping.parse("18600:9300")], SetupOptions())
    rb = native.setup("xn-b", b.path, [], blue)
    # c is on both networks: eth0 on the default one, eth1 on blue
    rc0 = native.setup("xn-c", c.path, [], SetupOptions())
    rc1 = native.setup("xn-c", c.path, [], SetupOptions(network="blue", interface="eth1"))
    try:
        br = bridge_name("blue")
        assert nyx_in_host.ipj("link", "show", br)
        assert str(rb.gateway) == "10.232.1.1" and str(rb.ips[0]).startswith("10.232.1.")
        assert rc1.interfaces[0].name == "eth1"
        with pytest.raises(NyxError, match="already set up"):
            native.setup("xn-b", b.path, [], blue)
        servers(a, str(ra.ips[0]), 9300, "a")
        servers(b, str(rb.ips[0]), 9301, "b")
        servers(None, "10.232.1.1", 9302, "blue-gw")
        assert ask(b, "10.232.1.1", 9302) == f"blue-gw {rb.ips[0]}"
        assert ask(c, str(rb.ips[0]), 9301) == f"b {rc1.ips[0]}"
        assert ask(c, str(ra.ips[0]), 9300) == f"a {rc0.ips[0]}"
        # different networks cannot talk to each other
        assert ask(b, str(ra.ips[0]), 9300, timeout=0.5) == ""
        # ... but a published port is reachable from everywhere
        assert ask(b, "10.232.1.1", 18600).startswith("a ")
    finally:
        native.teardown("xn-a", a.path)
        native.teardown("xn-b", b.path)
        native.teardown("xn-c", c.path)
    # the network lives on without containers, until it is removed
    assert nyx_in_host.ipj("link", "show", br)
    native.network_remove("blue")
    assert snapshot(nyx_in_host) == before


def test_bad_requests_are_refused_before_any_change(
    native: NetworkBackend, nyx_in_host: Netns, nyx_container_ns: Callable[[], Netns]
) -> None:
    ctr = nyx_container_ns()
    before = snapshot(nyx_in_host)
    bad = [
        ("bad id!", [], SetupOptions(), "container_id"),
        ("ok", [PortMapping.parse("[2001:db8::1]:8080:80")], SetupOptions(), "IPv6"),
        ("ok", [], SetupOptions(network="red"), "network 'red' does not exist"),
        ("ok", [], SetupOptions(interface="a-very-long-interface-name"), "interface"),
        ("ok", [], SetupOptions(mac="zz"), "mac"),
        (
            "ok",
            [PortMapping.parse("18400:80"), PortMapping.parse("18400:81")],
            SetupOptions(),
            "18400",
        ),
    ]
    for cid, ports, opts, word in bad:
        with pytest.raises(NyxError, match=word):
            native.setup(cid, ctr.path, ports, opts)
    assert snapshot(nyx_in_host) == before
    assert _driver.veth_name("a", "nyx") != _driver.veth_name("a", "blue")


def test_never_execs_or_forks(
    nyx_in_host: Netns,
    nyx_settings: NyxSettings,
    nyx_container_ns: Callable[[], Netns],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os
    import subprocess

    ctr = nyx_container_ns()  # made before exec is forbidden

    def forbidden(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("the native driver must not start processes")

    for name in ("fork", "posix_spawn", "posix_spawnp", "execv", "execve", "execvp", "system"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, forbidden)
    monkeypatch.setattr(subprocess.Popen, "__init__", forbidden)
    backend = NetworkBackend.load("native")
    backend.ensure_network(nyx_settings)
    backend.setup("nx-a", ctr.path, [PortMapping.parse("18500:80")], SetupOptions(internal=True))
    backend.teardown("nx-a", ctr.path)
    backend.network_create(NetworkSpec(name="green", subnet="10.232.2.0/24"))  # type: ignore[arg-type]
    backend.setup("nx-b", ctr.path, [], SetupOptions(network="green"))
    backend.teardown("nx-b", ctr.path)
    backend.gc([])
    backend.network_remove("green")


def test_a_restarted_driver_reserves_published_ports_again(
    nyx_in_host: Netns,
    nyx_settings: NyxSettings,
    nyx_container_ns: Callable[[], Netns],
    servers: Servers,
) -> None:
    ctr = nyx_container_ns()
    before = _driver.NativeDriver()
    before.ensure_network(nyx_settings)
    before.setup("rs-a", ctr.path, [PortMapping.parse("18700:80")], SetupOptions())
    for socks in before._reserved.values():  # the old nyxd process is gone
        for s in socks:
            s.close()
    servers(None, "0.0.0.0", 18701, "probe")  # sanity: binding works in general
    after = _driver.NativeDriver()
    after.ensure_network(nyx_settings)
    try:
        with pytest.raises(OSError):
            servers(None, "0.0.0.0", 18700, "thief")
    finally:
        after.teardown("rs-a", ctr.path)
    servers(None, "0.0.0.0", 18700, "free-again")


def test_failed_setup_on_a_network_leaves_the_network_as_it_was(
    native: NetworkBackend,
    nyx_in_host: Netns,
    nyx_settings: NyxSettings,
    nyx_container_ns: Callable[[], Netns],
    servers: Servers,
) -> None:
    ctr = nyx_container_ns()
    native.network_create(NetworkSpec(name="violet", subnet="10.232.3.0/24"))  # type: ignore[arg-type]
    before = (snapshot(nyx_in_host), _state(nyx_settings))
    servers(None, "0.0.0.0", 18800, "host-process")
    violet = SetupOptions(network="violet")
    with pytest.raises(NyxError, match="18800"):
        native.setup("fn-a", ctr.path, [PortMapping.parse("18800:80")], violet)
    assert (snapshot(nyx_in_host), _state(nyx_settings)) == before
    with pytest.raises(IpamError, match="outside"):
        native.setup("fn-a", ctr.path, [], SetupOptions(network="violet", static_ip="10.9.9.9"))
    assert (snapshot(nyx_in_host), _state(nyx_settings)) == before
