"""Firewall reloads and deleted bridges under a running native driver (issue 15).

A host's firewall is reloaded under nyx (``nft flush ruleset``, firewalld or ufw restarting, a
configuration management run loading a whole ruleset with ``nft -f``) and administrators
delete bridges. The driver's host watch sees it through netlink and re-applies its whole
state from its records; ``nyx_backend_reload`` does the same by hand. Everything runs in the
kit's real-host topology: the LAN neighbour reaches a published port, the container reaches
the "internet" through the masquerade.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest
from native_helpers import INTERNET_SERVER_IP, LAN_HOST_IP, LAN_IP, UPLINK_HOST_IP, Servers, ask

from nyx_core import NetworkBackend, NyxSettings, PortMapping, SetupOptions
from nyx_core.testing import Neighbour, Netns
from nyx_plugins_native import NativeSettings

pytestmark = pytest.mark.kernel

PORT = 18140


def wait_for(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """Poll ``check`` (a functional wait: how fast is the benchmark's business)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


def _driver(backend: NetworkBackend) -> object:
    (plugin,) = [p for p in backend.pm.get_plugins() if hasattr(p, "driver")]
    return plugin.driver


@pytest.fixture
def watched(nyx_settings: NyxSettings, nyx_in_host: Netns) -> Iterator[NetworkBackend]:
    """The native driver with its host watch on (the default outside these tests)."""
    backend = NetworkBackend.load("native")
    backend.ensure_network(nyx_settings.with_plugins(NativeSettings(bridge="nyxt0", watch=True)))
    try:
        yield backend
    finally:
        _driver(backend).close()  # type: ignore[attr-defined]


def _table(ns: Netns, family: str = "ip") -> dict[str, object]:
    """Chains with their rules' comments, and each set's or map's elements."""
    listing = json.loads(ns.run(["nft", "-j", "list", "table", family, "nyx"]).stdout)
    out: dict[str, object] = {}
    for item in listing["nftables"]:
        if "chain" in item:
            out.setdefault(f"chain {item['chain']['name']}", [])
        elif "rule" in item:
            out.setdefault(f"chain {item['rule']['chain']}", []).append(  # type: ignore[union-attr]
                item["rule"].get("comment", "")
            )
        elif "set" in item or "map" in item:
            obj = item.get("set") or item["map"]
            out[f"set {obj['name']}"] = sorted(json.dumps(e) for e in obj.get("elem", []))
    return out


def _addr(ns: Netns) -> str:
    (addr,) = [
        a["local"]
        for link in ns.ipj("addr", "show", "eth0")
        for a in link.get("addr_info", [])
        if a.get("family") == "inet"
    ]
    return str(addr)


def _has_table(ns: Netns) -> bool:
    return ns.run(["nft", "list", "table", "ip", "nyx"], check=False).returncode == 0


class World:
    """A published web container and a plain one, with servers on both sides."""

    def __init__(
        self,
        backend: NetworkBackend,
        host: Netns,
        lan: Neighbour,
        internet: Netns,
        make_ns: Callable[[], Netns],
        servers: Servers,
    ) -> None:
        self.backend, self.host, self.lan, self.internet = backend, host, lan, internet
        self.web, self.client = make_ns(), make_ns()
        backend.setup("rl-web", self.web.path, [PortMapping.parse(f"{PORT}:80")], SetupOptions())
        backend.setup("rl-client", self.client.path, [], SetupOptions())
        servers(self.web, "0.0.0.0", 80, "web")
        servers(internet, INTERNET_SERVER_IP, 9410, "inet")

    def works(self) -> bool:
        """Published port from the LAN, egress masqueraded through the uplink."""
        return (
            ask(self.lan, LAN_HOST_IP, PORT, timeout=0.5) == f"web {LAN_IP}"
            and ask(self.client, INTERNET_SERVER_IP, 9410, timeout=0.5) == f"inet {UPLINK_HOST_IP}"
        )

    def close(self) -> None:
        for cid, ns in (("rl-web", self.web), ("rl-client", self.client)):
            self.backend.teardown(cid, ns.path)


@pytest.fixture
def world(
    watched: NetworkBackend,
    nyx_host_ns: Netns,
    nyx_lan_ns: Neighbour,
    nyx_internet_ns: Netns,
    nyx_container_ns: Callable[[], Netns],
    servers: Servers,
) -> Iterator[World]:
    w = World(watched, nyx_host_ns, nyx_lan_ns, nyx_internet_ns, nyx_container_ns, servers)
    try:
        wait_for(w.works, "the world working before the reload")
        yield w
    finally:
        w.close()


@pytest.mark.parametrize(
    "reload",
    [
        pytest.param("flush ruleset", id="flush-ruleset"),
        pytest.param("delete table ip nyx", id="delete-table"),
        pytest.param("delete element ip nyx ports_any { tcp . 18140 }", id="delete-element"),
        pytest.param("flush chain ip nyx guard", id="flush-guard"),
    ],
)
def test_the_watch_repairs_a_firewall_reload(world: World, reload: str) -> None:
    before = _table(world.host)
    world.host.run(["nft", reload])
    wait_for(lambda: _has_table(world.host) and _table(world.host) == before, "table re-applied")
    assert world.works()
    assert _driver(world.backend).watching.reapplied == 1  # type: ignore[attr-defined]


def test_a_foreign_ruleset_replacing_everything_is_left_alone_and_nyx_comes_back(
    world: World,
) -> None:
    before = _table(world.host)
    foreign = (
        "flush ruleset\n"
        "table inet site {\n"
        "  chain input { type filter hook input priority 0; policy accept; }\n"
        "  set admins { type ipv4_addr; elements = { 192.0.2.7 } }\n"
        "}\n"
    )
    subprocess.run(
        ["ip", "netns", "exec", world.host.name, "nft", "-f", "-"],
        input=foreign,
        text=True,
        check=True,
    )
    wait_for(lambda: _has_table(world.host) and _table(world.host) == before, "table re-applied")
    assert world.works()
    site = world.host.run(["nft", "list", "table", "inet", "site"]).stdout
    assert "192.0.2.7" in site and "hook input" in site  # never touched


def test_unrelated_changes_and_own_setups_do_not_make_it_reapply(
    world: World, nyx_container_ns: Callable[[], Netns]
) -> None:
    watch = _driver(world.backend).watching  # type: ignore[attr-defined]
    script = "add table ip busy\n" + "".join(
        f"add chain ip busy c{i}\ndelete chain ip busy c{i}\n" for i in range(200)
    )
    for i in range(20):  # a configuration management run busy with its own tables
        subprocess.run(
            ["ip", "netns", "exec", world.host.name, "nft", "-f", "-"],
            input=script if i == 0 else script.replace("add table ip busy\n", ""),
            text=True,
            check=True,
        )
    extra = nyx_container_ns()  # nyx's own changes to its table
    world.backend.setup("rl-extra", extra.path, [PortMapping.parse("18141:80")], SetupOptions())
    world.backend.teardown("rl-extra", extra.path)
    # the marker: one foreign change to nyx's table, the first the watch may act on
    world.host.run(["nft", "delete element ip nyx ports_any { tcp . 18140 }"])
    wait_for(world.works, "the port back")
    assert watch.reapplied == 1


def test_a_deleted_bridge_is_recreated_with_its_veths(world: World) -> None:
    world.host.run(["ip", "link", "del", "nyxt0"])
    wait_for(world.works, "bridge recreated, veths attached")
    ports = json.loads(world.host.run(["ip", "-j", "link", "show", "master", "nyxt0"]).stdout)
    assert len(ports) == 2  # both containers' veths
    assert all(p.get("operstate") != "DOWN" for p in ports)
    # the containers reach their gateway, and each other through the bridge
    assert world.web.run(["ping", "-c1", "-W2", "10.231.0.1"], check=False).returncode == 0
    assert ask(world.client, _addr(world.web), 80) == f"web {_addr(world.client)}"


def test_reload_by_hand_restores_and_is_idempotent(
    native: NetworkBackend,
    nyx_host_ns: Netns,
    nyx_lan_ns: Neighbour,
    nyx_internet_ns: Netns,
    nyx_container_ns: Callable[[], Netns],
    servers: Servers,
) -> None:
    w = World(native, nyx_host_ns, nyx_lan_ns, nyx_internet_ns, nyx_container_ns, servers)
    try:
        wait_for(w.works, "the world working before the reload")
        before = _table(nyx_host_ns)
        nyx_host_ns.run(["nft", "flush ruleset"])
        assert not w.works()  # no watch here: broken until the reload
        report = native.reload()
        assert isinstance(report, dict)
        assert report["networks"] == ["nyx"] and report["attachments"] == 2
        assert report["ports"] >= 1 and report["bridges_recreated"] == []
        assert _table(nyx_host_ns) == before and w.works()
        native.reload()
        assert _table(nyx_host_ns) == before and w.works()
    finally:
        w.close()
