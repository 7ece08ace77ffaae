"""The CNI driver with Debian's real plugins (bridge, host-local, portmap, loopback).

Everything runs in throwaway namespaces: the driver and its plugins in the kit's "host"
namespace (the test thread is switched into it), containers in their own.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nyx_core import CniPluginError, NyxSettings, PortMapping
from nyx_core.testing import LAN_HOST_IP, Netns, entered, snapshot
from nyx_plugins_cni import CniDriver, CniSettings, ResultCache

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(not Path("/usr/lib/cni/bridge").exists(), reason="needs CNI plugins"),
]

NsFactory = Callable[[], Netns]


def cni_settings(settings: NyxSettings) -> CniSettings:
    return settings.plugin(CniSettings)


@pytest.fixture
def driver(nyx_settings: NyxSettings, nyx_in_host: Netns) -> Iterator[CniDriver]:
    d = CniDriver(nyx_settings)
    d.ensure_network()
    try:
        yield d
    finally:
        d.close()


def _leases(settings: NyxSettings) -> list[str]:
    d = settings.state_dir / "cni" / "networks" / settings.network
    if not d.is_dir():
        return []
    return sorted(p.name for p in d.iterdir() if p.name[0].isdigit())


def test_add_gives_an_address_in_the_subnet(
    driver: CniDriver, nyx_settings: NyxSettings, nyx_container_ns: NsFactory
) -> None:
    ctr = nyx_container_ns()
    ctr.ip("link", "set", "lo", "down")
    r = driver.setup("real-a", ctr.path)
    (ip,) = r.ips
    assert ip in nyx_settings.container_subnet and ip != nyx_settings.gateway_ip
    assert r.gateway == nyx_settings.gateway_ip
    assert [i.name for i in r.interfaces] == ["eth0"]
    eth0 = {a["ifname"]: a for a in ctr.ipj("addr", "show")}["eth0"]
    assert f"{ip}/24" in [f"{i['local']}/{i['prefixlen']}" for i in eth0["addr_info"]]
    assert "UP" in {a["ifname"]: a for a in ctr.ipj("link", "show")}["lo"]["flags"]  # loopback
    routes = ctr.ipj("route", "show", "default")
    assert routes and routes[0]["gateway"] == str(nyx_settings.gateway_ip)
    assert _leases(nyx_settings) == [str(ip)]
    driver.teardown("real-a", ctr.path)
    assert _leases(nyx_settings) == []


def _serve(
    ns: Netns, port: int, payload: bytes, times: int = 1
) -> tuple[socket.socket, threading.Thread]:
    with entered(ns):
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(1)
    srv.settimeout(10)

    def serve() -> None:
        for _ in range(times):
            try:
                conn, _ = srv.accept()
                with conn:
                    conn.sendall(payload)
            except OSError:
                return

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return srv, t


def test_port_map_answers_from_an_external_namespace(
    driver: CniDriver, nyx_in_host: Netns, nyx_lan_ns: Netns, nyx_container_ns: NsFactory
) -> None:
    ctr, ext = nyx_container_ns(), nyx_lan_ns  # the kit's LAN neighbour (198.51.100.2)
    driver.setup("real-p", ctr.path, [PortMapping.parse("18080:80")])
    srv, t = _serve(ctr, 80, b"hello from the container", times=2)
    try:
        with entered(ext):
            cli = socket.create_connection((LAN_HOST_IP, 18080), timeout=10)
        with cli:
            assert cli.recv(100) == b"hello from the container"
        # and from the host itself, on 127.0.0.1 (portmap's SNAT + route_localnet)
        with socket.create_connection(("127.0.0.1", 18080), timeout=10) as local:
            assert local.recv(100) == b"hello from the container"
    finally:
        srv.close()
        t.join(5)
        driver.teardown("real-p", ctr.path)
    with entered(ext), pytest.raises(OSError):  # the mapping is gone
        socket.create_connection((LAN_HOST_IP, 18080), timeout=2).close()


def test_del_cleans_up(
    driver: CniDriver, nyx_settings: NyxSettings, nyx_in_host: Netns, nyx_container_ns: NsFactory
) -> None:
    ctr = nyx_container_ns()
    before = snapshot(nyx_in_host)
    driver.setup("real-d", ctr.path, [PortMapping.parse("18081:80")])
    during = snapshot(nyx_in_host)
    assert during != before
    assert any("CNI-DN-" in json.dumps(c) for c in during["nftables"])
    driver.teardown("real-d", ctr.path)
    assert snapshot(nyx_in_host) == before
    assert _leases(nyx_settings) == []
    assert ResultCache(nyx_settings.state_dir).entries() == []
    assert [a["ifname"] for a in ctr.ipj("link", "show")] == ["lo"]


def test_del_after_a_restart_uses_the_cache(
    driver: CniDriver, nyx_settings: NyxSettings, nyx_in_host: Netns, nyx_container_ns: NsFactory
) -> None:
    ctr = nyx_container_ns()
    before = snapshot(nyx_in_host)
    driver.setup("real-r", ctr.path, [PortMapping.parse("18082:80")])
    driver.close()  # "nyxd exits"
    restarted = CniDriver(nyx_settings)
    restarted.ensure_network()
    assert restarted.attached() == ["real-r"]
    restarted.teardown("real-r", ctr.path)
    assert snapshot(nyx_in_host) == before
    assert _leases(nyx_settings) == []


def test_gc_removes_a_stale_attachment(
    driver: CniDriver, nyx_settings: NyxSettings, nyx_in_host: Netns, nyx_container_ns: NsFactory
) -> None:
    keep, stale = nyx_container_ns(), nyx_container_ns()
    before = snapshot(nyx_in_host)
    kept = driver.setup("real-keep", keep.path)
    driver.setup("real-stale", stale.path, [PortMapping.parse("18083:80")])
    driver.close()
    restarted = CniDriver(nyx_settings)
    restarted.ensure_network()
    report = restarted.gc(["real-keep"])
    assert report.removed == ["real-stale"]
    assert _leases(nyx_settings) == [str(kept.ips[0])]
    assert [a["ifname"] for a in stale.ipj("link", "show")] == ["lo"]
    restarted.teardown("real-keep", keep.path)
    assert snapshot(nyx_in_host) == before


@pytest.mark.parametrize("mode", ["error", "crash", "hang"])
def test_broken_plugin_in_the_middle_leaves_nothing(
    driver: CniDriver,
    nyx_settings: NyxSettings,
    nyx_in_host: Netns,
    nyx_container_ns: NsFactory,
    fake_bin: Any,
    mode: str,
) -> None:
    # the fixture primed the network with the default conflist; now break the chain
    fake_bin.link_debian()
    fake_bin.make("broken", mode=mode)
    conf_path = cni_settings(nyx_settings).conf_dir / "nyx.conflist"
    obj = json.loads(conf_path.read_text())
    obj["plugins"].insert(1, {"type": "broken"})
    conf_path.write_text(json.dumps(obj))
    opts = cni_settings(nyx_settings).model_copy(
        update={"bin_dir": fake_bin.dir, "prime": False, "timeout": 2}
    )
    broken = CniDriver(nyx_settings, opts)
    broken.ensure_network()
    ctr = nyx_container_ns()
    before = snapshot(nyx_in_host)
    with pytest.raises(CniPluginError) as info:
        broken.setup("real-b", ctr.path, [PortMapping.parse("18084:80")])
    assert info.value.plugin == "broken"
    assert snapshot(nyx_in_host) == before
    assert _leases(nyx_settings) == []
    assert ResultCache(nyx_settings.state_dir).entries() == []
    assert [a["ifname"] for a in ctr.ipj("link", "show")] == ["lo"]


def test_check_finds_a_missing_interface(driver: CniDriver, nyx_container_ns: NsFactory) -> None:
    ctr = nyx_container_ns()
    driver.setup("real-c", ctr.path)
    try:
        driver.check("real-c")
        ctr.ip("link", "del", "eth0")
        with pytest.raises(CniPluginError) as info:
            driver.check("real-c")
        assert info.value.plugin == "bridge"
    finally:
        driver.teardown("real-c", ctr.path)


def test_ensure_network_primes_the_bridge(
    driver: CniDriver, nyx_settings: NyxSettings, nyx_in_host: Netns
) -> None:
    """Before any container: the bridge plugin's bridge exists (up, with the settings'
    gateway and prefix, the route to the subnet on it) because ensure_network ran one scratch
    ADD and DEL, and nothing of that attachment is left (no veth, lease, cached result)."""
    name = cni_settings(nyx_settings).bridge
    links = {a["ifname"]: a for a in nyx_in_host.ipj("-4", "addr", "show")}
    assert name in links, f"no bridge {name!r} after ensure_network: {sorted(links)}"
    bridge = links[name]
    subnet = nyx_settings.container_subnet
    assert [f"{i['local']}/{i['prefixlen']}" for i in bridge["addr_info"]] == [
        f"{nyx_settings.gateway_ip}/{subnet.prefixlen}"
    ]
    assert "UP" in bridge["flags"]
    routes = nyx_in_host.ipj("route", "show", "dev", name)
    assert [r["dst"] for r in routes] == [str(subnet)]
    assert nyx_in_host.ipj("link", "show", "master", name) == []  # the scratch veth is gone
    assert _leases(nyx_settings) == []
    assert ResultCache(nyx_settings.state_dir).entries() == []


def test_own_conflist_with_more_plugins_and_capabilities(
    nyx_settings: NyxSettings, nyx_in_host: Netns, nyx_container_ns: NsFactory
) -> None:
    """A user's chain: bridge, tuning (mac), bandwidth, firewall, portmap at 0.4.0."""
    conf = {
        "cniVersion": "0.4.0",
        "name": "mine",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "nyxt1",
                "isGateway": True,
                "ipMasq": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": "10.231.1.0/24"}]],
                    "dataDir": str(nyx_settings.state_dir / "leases"),
                },
            },
            {"type": "tuning", "capabilities": {"mac": True}},
            {"type": "bandwidth", "capabilities": {"bandwidth": True}},
            {"type": "firewall"},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    conf_dir = cni_settings(nyx_settings).conf_dir
    conf_dir.mkdir(parents=True, exist_ok=True)
    (conf_dir / "10-mine.conflist").write_text(json.dumps(conf))
    settings = nyx_settings.model_copy(update={"network": "mine"})
    d = CniDriver(settings)
    d.ensure_network()
    try:
        assert d.version == "0.4.0"
        ctr = nyx_container_ns()
        before = snapshot(nyx_in_host)
        r = d.setup(
            "real-own",
            ctr.path,
            [PortMapping.parse("18085:80")],
            capability_args={
                "mac": "c2:11:22:33:44:55",
                "bandwidth": {
                    "ingressRate": 8_000_000,
                    "ingressBurst": 80_000,
                    "egressRate": 8_000_000,
                    "egressBurst": 80_000,
                },
            },
        )
        assert r.ips[0] in ipaddress.ip_network("10.231.1.0/24")
        assert r.interfaces[0].mac == "c2:11:22:33:44:55"
        link = {a["ifname"]: a for a in ctr.ipj("link", "show")}["eth0"]
        assert link["address"] == "c2:11:22:33:44:55"
        during = snapshot(nyx_in_host)
        assert any(kind == "ifb" for _, kind in during["links"])  # bandwidth's egress shaper
        d.teardown("real-own", ctr.path)
        assert snapshot(nyx_in_host) == before
    finally:
        d.close()
