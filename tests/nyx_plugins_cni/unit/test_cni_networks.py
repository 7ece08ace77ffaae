"""Networks on the CNI driver, over fake plugins: a conflist per network (generated or the
admin's by name), several networks per container, ``internal`` rules, removal, GC."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nyx_core import (
    BackendError,
    ConfigError,
    FirewallError,
    NetworkBackend,
    NetworkSpec,
    NyxSettings,
    PortMapping,
    SetupOptions,
    TeardownError,
)
from nyx_plugins_cni import CniDriver, CniSettings, ResultCache
from nyx_plugins_cni._conf import network_conflist
from nyx_plugins_cni._firewall import InternalFirewall
from nyx_plugins_cni._networks import bridge_for

Make = Callable[..., CniDriver]


@pytest.fixture
def make_driver(fake_bin: Any, tmp_path: Path) -> Make:
    """A driver over fake ``bridge``/``host-local``/``portmap``/``loopback`` plugins (the
    types the generated conflists name); the default network ``nyx`` is written by nyx."""
    fake_bin.make("bridge", iface=True)
    fake_bin.make("host-local")
    fake_bin.make("portmap")
    fake_bin.make("loopback")

    def make(*, prime: bool = False, loopback: bool = True, ipv6: bool = False) -> CniDriver:
        s = NyxSettings(
            state_dir=tmp_path / "state",
            run_dir=tmp_path / "run",
            container_subnet="10.231.0.0/24",
            gateway_ip="10.231.0.1",
            container_subnet6="fd00:231::/64" if ipv6 else None,
        )
        opts = CniSettings(
            bin_dir=fake_bin.dir,
            conf_dir=tmp_path / "net.d",
            prime=prime,
            loopback=loopback,
            timeout=10,
        )
        d = CniDriver(s, opts)
        d.ensure_network()
        return d

    return make


@pytest.fixture
def netns(tmp_path: Path) -> str:
    p = tmp_path / "netns-ctr"
    p.touch()
    return str(p)


def _spec(name: str = "back", subnet: str = "10.232.0.0/24", **kw: Any) -> NetworkSpec:
    return NetworkSpec(name=name, subnet=ipaddress.IPv4Network(subnet), **kw)


def _user_conflist(conf_dir: Path, name: str, ipam: dict[str, Any], file: str = "") -> Path:
    path = conf_dir / (file or f"zz-{name}.conflist")
    obj = {
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [{"type": "bridge", "bridge": "admin0", "ipam": ipam}],
    }
    path.write_text(json.dumps(obj))
    return path


HOST_LOCAL = {"type": "host-local", "ranges": [[{"subnet": "10.77.0.0/16"}]]}


# ------------------------------------------------------------------ generated conflists


def test_create_generates_a_conflist_from_the_template(make_driver: Make) -> None:
    d = make_driver()
    info = d.network_create(_spec(labels={"a": "b"}))
    path = d.options.conf_dir / "back.conflist"
    expected = network_conflist(
        "back",
        ipaddress.IPv4Network("10.232.0.0/24"),
        ipaddress.IPv4Address("10.232.0.1"),
        "cni-back",
        d.settings.state_dir / "cni" / "networks",
    )
    assert json.loads(path.read_text()) == expected
    assert [p["type"] for p in expected["plugins"]] == ["bridge", "portmap"]
    assert expected["plugins"][0]["ipMasq"] is True
    assert str(info.subnet) == "10.232.0.0/24" and str(info.gateway) == "10.232.0.1"
    assert info.interface == "cni-back" and info.labels == {"a": "b"} and not info.internal
    assert info.extra["generated"] is True and info.extra["conflist"] == str(path)
    assert (d.settings.state_dir / "cni" / "conflists" / "back.json").is_file()


def test_create_dual_stack_generates_two_ranges(make_driver: Make, fake_nft: Any) -> None:
    """subnet6: a second host-local range (gateway6, default the first address) and the
    IPv6 default route, both reported; internal: routes only to the host's gateways (the
    embedded DNS) and a drop rule per family that lets neighbour discovery by."""
    d = make_driver(ipv6=True)
    net6 = ipaddress.IPv6Network("fd00:232::/64")
    info = d.network_create(_spec(subnet6=net6))
    expected = network_conflist(
        "back",
        ipaddress.IPv4Network("10.232.0.0/24"),
        ipaddress.IPv4Address("10.232.0.1"),
        "cni-back",
        d.settings.state_dir / "cni" / "networks",
        host_dns=ipaddress.IPv4Address("10.231.0.1"),
        subnet6=net6,
        gateway6=ipaddress.IPv6Address("fd00:232::1"),
        host_dns6=ipaddress.IPv6Address("fd00:231::1"),
    )
    conf = json.loads((d.options.conf_dir / "back.conflist").read_text())
    assert conf == expected
    ipam = conf["plugins"][0]["ipam"]
    assert ipam["ranges"][1] == [{"subnet": "fd00:232::/64", "gateway": "fd00:232::1"}]
    assert ipam["routes"] == [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
    assert (info.subnet6, str(info.gateway6)) == (net6, "fd00:232::1")
    inner = d.network_create(
        _spec(
            name="inner",
            subnet="10.233.0.0/24",
            subnet6=ipaddress.IPv6Network("fd00:233::/64"),
            gateway6=ipaddress.IPv6Address("fd00:233::fe"),
            internal=True,
        )
    )
    assert str(inner.gateway6) == "fd00:233::fe" and inner.internal
    ipam = json.loads((d.options.conf_dir / "inner.conflist").read_text())["plugins"][0]["ipam"]
    assert ipam["routes"] == [{"dst": "10.231.0.1/32"}, {"dst": "fd00:231::1/128"}]
    rules = [r for r in fake_nft.ruleset() if "net:inner" in r]
    assert [r.split(" # ")[0] for r in rules] == [
        "ip saddr 10.233.0.0/24 ip daddr != 10.233.0.0/24 drop",
        "ip6 saddr fd00:233::/64 ip6 daddr != { fd00:233::/64, fe80::/10, ff00::/8 } drop",
    ]


def test_first_ipv6_attachment_settles_the_bridge_gateway(
    make_driver: Make, fake_bin: Any, fake_links: Any, netns: str
) -> None:
    """The bridge plugin adds the IPv6 gateway with DAD (tentative: not usable for a
    second or so, and again whenever the bridge loses its last port): after the network's
    first IPv6 attachment nyx turns DAD off on the bridge and re-adds a tentative gateway
    nodad, once per network."""
    fake_bin.make("bridge", iface=True, address="fd00:231::5/64")
    fake_links.addrs6["nyx0"] = [{"local": "fd00:231::1", "prefixlen": 64, "tentative": True}]
    d = make_driver(ipv6=True)
    d.setup("c1", netns)
    assert fake_links.sysctls == [("net/ipv6/conf/nyx0/accept_dad", "0")]
    assert fake_links.addr_calls == [
        ("addr", "del", "fd00:231::1/64", "dev", "nyx0"),
        ("addr", "add", "fd00:231::1/64", "dev", "nyx0", "nodad"),
    ]
    d.teardown("c1", netns)
    d.setup("c2", netns)
    assert len(fake_links.sysctls) == 1 and len(fake_links.addr_calls) == 2  # once
    d.teardown("c2", netns)


def test_options_map_to_the_bridge_plugin(make_driver: Make) -> None:
    d = make_driver()
    info = d.network_create(
        _spec(options={"com.docker.network.bridge.name": "br-x", "mtu": "1400"})
    )
    bridge = json.loads((d.options.conf_dir / "back.conflist").read_text())["plugins"][0]
    assert bridge["bridge"] == "br-x" and bridge["mtu"] == 1400
    assert info.interface == "br-x" and info.options["mtu"] == "1400"


def test_bridge_names_are_short_and_distinct() -> None:
    long_a, long_b = "a-rather-long-network-name", "a-rather-long-network-name2"
    assert bridge_for("back") == "cni-back"
    assert len(bridge_for(long_a)) <= 15 and len(bridge_for(long_b)) <= 15
    assert bridge_for(long_a) != bridge_for(long_b)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (_spec(options={"vlan": "5", "color": "red"}), "unknown option(s) color, vlan"),
        (_spec(options={"mtu": "12"}), "option mtu '12'"),
        (_spec(options={"bridge": "a/b"}), "option bridge 'a/b'"),
        (_spec(options={"bridge": "x1", "com.docker.network.bridge.name": "x2"}), "disagree"),
        (NetworkSpec(name="back"), "subnet: the cni driver needs one"),
        (_spec(subnet6=ipaddress.IPv6Network("fd00::/127")), "subnet6 fd00::/127"),
        (
            _spec(
                subnet6=ipaddress.IPv6Network("fd00::/64"), gateway6=ipaddress.IPv6Address("fd00::")
            ),
            "gateway6 fd00::: need",
        ),
        (
            _spec(subnet6=ipaddress.IPv6Network("fd00:231::/80")),
            "subnet6 fd00:231::/80 overlaps fd00:231::/64 of network 'nyx'",
        ),
        (_spec(subnet="10.232.0.0/31"), "subnet 10.232.0.0/31"),
        (_spec(subnet="10.231.0.128/25"), "overlaps 10.231.0.0/24 of network 'nyx'"),
        (_spec(options={"bridge": "nyx0"}), "bridge 'nyx0' is already the bridge of network 'nyx'"),
    ],
)
def test_create_refuses_what_it_cannot_honour_and_changes_nothing(
    make_driver: Make, fake_nft: Any, spec: NetworkSpec, field: str
) -> None:
    d = make_driver(ipv6=True)
    before = sorted(p.name for p in d.options.conf_dir.iterdir())
    with pytest.raises(ConfigError, match="network 'back'") as info:
        d.network_create(spec)
    assert field in str(info.value)
    assert sorted(p.name for p in d.options.conf_dir.iterdir()) == before
    assert not (d.settings.state_dir / "cni" / "conflists").exists()
    assert fake_nft.rules == [] and "back" not in d.networks


def test_create_refuses_a_bridge_that_is_not_nyxs(make_driver: Make, fake_links: Any) -> None:
    d = make_driver()
    fake_links.links["cni-back"] = "bridge"
    with pytest.raises(ConfigError, match="bridge 'cni-back' already exists on the host"):
        d.network_create(_spec())
    assert not (d.options.conf_dir / "back.conflist").exists()


def test_create_is_idempotent_and_refuses_another_spec(make_driver: Make) -> None:
    d = make_driver()
    info = d.network_create(_spec())
    assert d.network_create(_spec()) == info
    with pytest.raises(ConfigError, match=r"subnet 10\.232\.0\.0/24 \(not 10\.233\.0\.0/24\)"):
        d.network_create(_spec(subnet="10.233.0.0/24"))
    # a restarted nyxd re-creates its recorded networks: same spec, adopted again
    again = make_driver()
    assert again.network_create(_spec()) == info
    with pytest.raises(ConfigError, match="already exists"):
        make_driver().network_create(_spec(internal=True))


def test_a_failed_create_undoes_everything(make_driver: Make, fake_bin: Any, fake_nft: Any) -> None:
    d = make_driver()
    fake_bin.make("bridge", mode="error", fail_on=["ADD"])  # the priming ADD fails
    d.options = d.options.model_copy(update={"prime": True})
    with pytest.raises(Exception, match="Invalid Configuration"):
        d.network_create(_spec(internal=True))
    assert not (d.options.conf_dir / "back.conflist").exists()
    assert not (d.settings.state_dir / "cni" / "conflists" / "back.json").exists()
    assert fake_nft.rules == [] and not fake_nft.table
    assert "back" not in d.networks


def test_create_primes_the_new_network(make_driver: Make, fake_bin: Any) -> None:
    d = make_driver()
    d.options = d.options.model_copy(update={"prime": True})
    fake_bin.clear()
    d.network_create(_spec())
    assert fake_bin.sequence("ADD", "DEL") == [
        ("bridge", "ADD"),
        ("portmap", "ADD"),
        ("portmap", "DEL"),
        ("bridge", "DEL"),
    ]
    assert {c["conf"]["name"] for c in fake_bin.calls("ADD")} == {"back"}
    assert ResultCache(d.settings.state_dir).entries() == []


def test_after_a_restart_a_network_is_adopted_not_rebuilt(
    make_driver: Make, fake_bin: Any, fake_links: Any
) -> None:
    make_driver().network_create(_spec())
    path = make_driver().options.conf_dir / "back.conflist"
    text = path.read_text()
    fake_links.links["cni-back"] = "bridge"  # the bridge survived the restart
    fake_bin.clear()
    again = make_driver(prime=True)
    fake_bin.clear()
    again.network_create(_spec())
    assert fake_bin.sequence("ADD") == [] and path.read_text() == text  # nothing to prime
    # a re-create that fails (the chain broke meanwhile) keeps the network of the earlier nyxd
    fake_links.links.clear()
    third = make_driver()
    third.options = third.options.model_copy(update={"prime": True})
    fake_bin.make("bridge", mode="error", fail_on=["ADD"])
    with pytest.raises(Exception, match="Invalid Configuration"):
        third.network_create(_spec())
    assert "back" not in third.networks
    assert path.read_text() == text
    assert (again.settings.state_dir / "cni" / "conflists" / "back.json").exists()


# ------------------------------------------------------------------ the admin's conflists


def test_a_users_conflist_is_used_as_is(make_driver: Make) -> None:
    d = make_driver()
    path = _user_conflist(d.options.conf_dir, "lab", HOST_LOCAL)
    text = path.read_text()
    info = d.network_create(_spec("lab", "10.89.0.0/24"))
    assert str(info.subnet) == "10.77.0.0/16"  # what its IPAM hands out, not nyxd's proposal
    assert info.gateway is None and info.interface == "admin0"
    assert info.extra == {
        "conflist": str(path),
        "generated": False,
        "cniVersion": "1.0.0",
        "plugins": ["bridge"],
    }
    assert path.read_text() == text
    assert sorted(p.name for p in d.options.conf_dir.iterdir()) == ["nyx.conflist", path.name]
    d.network_remove("lab")
    assert path.read_text() == text  # never removed: nyx did not write it


def test_a_users_conflist_refuses_options_and_an_internal_it_cannot_enforce(
    make_driver: Make,
) -> None:
    d = make_driver()
    _user_conflist(d.options.conf_dir, "lab", HOST_LOCAL)
    _user_conflist(d.options.conf_dir, "dyn", {"type": "host-local", "x": 1}, "dyn.conflist")
    (d.options.bin_dir / "dhcp").symlink_to(d.options.bin_dir / "host-local")
    _user_conflist(d.options.conf_dir, "dh", {"type": "dhcp"}, "dh.conflist")
    with pytest.raises(ConfigError, match=r"network 'lab': options mtu: .* used as is"):
        d.network_create(_spec("lab", options={"mtu": "1400"}))
    with pytest.raises(ConfigError, match=r"network 'dh': internal: .*IPAM dhcp"):
        d.network_create(_spec("dh", internal=True))
    with pytest.raises(ConfigError, match=r"network 'dyn': internal: .*IPAM none"):
        d.network_create(_spec("dyn", internal=True))
    assert "lab" not in d.networks and "dh" not in d.networks


def test_a_users_conflist_can_be_internal(make_driver: Make, fake_nft: Any) -> None:
    d = make_driver()
    _user_conflist(d.options.conf_dir, "lab", HOST_LOCAL)
    info = d.network_create(_spec("lab", internal=True))
    assert info.internal
    (rule,) = fake_nft.ruleset()
    assert rule.startswith("ip saddr 10.77.0.0/16 ip daddr != 10.77.0.0/16 drop # nyx-cni net:lab ")
    d.network_remove("lab")
    assert not fake_nft.table


def test_a_conflist_nyx_wrote_but_the_admin_changed_is_kept(
    make_driver: Make, fake_links: Any
) -> None:
    d = make_driver()
    d.network_create(_spec())
    path = d.options.conf_dir / "back.conflist"
    obj = json.loads(path.read_text())
    obj["plugins"][0]["hairpinMode"] = False
    path.write_text(json.dumps(obj))
    fake_links.links["cni-back"] = "bridge"
    d.network_remove("back")
    assert path.exists() and fake_links.deleted == []


def test_the_default_network(make_driver: Make) -> None:
    d = make_driver()
    spec = NetworkSpec(
        name="nyx",
        subnet=ipaddress.IPv4Network("10.231.0.0/24"),
        gateway=ipaddress.IPv4Address("10.231.0.1"),
        default=True,
    )
    info = d.network_create(spec)
    assert str(info.subnet) == "10.231.0.0/24" and str(info.gateway) == "10.231.0.1"
    assert info.interface == "nyx0" and info.extra["generated"] is False
    with pytest.raises(ConfigError, match="options bridge: the default network"):
        make_driver().network_create(spec.model_copy(update={"options": {"bridge": "b"}}))
    with pytest.raises(ConfigError, match="default, but nyxd's default network is 'nyx'"):
        make_driver().network_create(spec.model_copy(update={"name": "other"}))
    with pytest.raises(ConfigError, match="never removed"):
        d.network_remove("nyx")
    assert (d.options.conf_dir / "nyx.conflist").exists()


# ------------------------------------------------------------------ several networks


def test_two_networks_per_container(make_driver: Make, fake_bin: Any, netns: str) -> None:
    d = make_driver()
    d.network_create(_spec())
    fake_bin.clear()
    r0 = d.setup("c1", netns, [PortMapping.parse("8080:80")], network="nyx", ifname="eth0")
    r1 = d.setup("c1", netns, [], network="back", ifname="eth1")
    assert [
        (c["plugin"], c["env"]["CNI_IFNAME"], c["conf"]["name"]) for c in fake_bin.calls("ADD")
    ] == [
        ("loopback", "lo", "cni-loopback"),
        ("bridge", "eth0", "nyx"),
        ("portmap", "eth0", "nyx"),
        ("bridge", "eth1", "back"),
        ("portmap", "eth1", "back"),
    ]
    ports = [
        c["conf"].get("runtimeConfig") for c in fake_bin.calls("ADD") if c["plugin"] == "portmap"
    ]
    assert ports[0]["portMappings"][0]["hostPort"] == 8080 and ports[1] is None
    assert (r0.network, r1.network) == ("nyx", "back")
    assert [i.name for i in r1.interfaces] == ["eth1"] and r1.extra["bridge"] == "cni-back"
    cache = ResultCache(d.settings.state_dir)
    assert sorted(cache.dir.iterdir()) == [
        cache.path("back", "c1", "eth1"),
        cache.path("cni-loopback", "c1", "lo"),
        cache.path("nyx", "c1", "eth0"),
    ]
    # the same network twice, or the same interface twice, is refused and changes nothing
    fake_bin.clear()
    with pytest.raises(BackendError, match="'c1' is already set up on CNI network 'back'"):
        d.setup("c1", netns, network="back", ifname="eth2")
    d.network_create(_spec("third", "10.233.0.0/24"))
    with pytest.raises(BackendError, match="'c1' already has interface 'eth1'"):
        d.setup("c1", netns, network="third", ifname="eth1")
    assert fake_bin.sequence() == [] and len(cache.entries()) == 3


def test_the_default_route_is_the_first_networks(
    make_driver: Make, fake_bin: Any, netns: str
) -> None:
    d = make_driver()
    d.network_create(_spec())
    _user_conflist(d.options.conf_dir, "lab", {**HOST_LOCAL, "routes": [{"dst": "0.0.0.0/0"}]})
    d.network_create(_spec("lab"))
    fake_bin.clear()
    d.setup("c1", netns, network="back", ifname="eth0")
    d.setup("c1", netns, network="nyx", ifname="eth1")
    d.setup("c1", netns, network="lab", ifname="eth2")

    def routes(c: dict[str, Any]) -> Any:
        return c["conf"]["ipam"].get("routes")

    adds = [c for c in fake_bin.calls("ADD") if c["plugin"] == "bridge"]
    # nyx's template networks after the first: no default route; the admin's as written
    assert [(c["conf"]["name"], routes(c)) for c in adds] == [
        ("back", [{"dst": "0.0.0.0/0"}]),
        ("nyx", []),
        ("lab", [{"dst": "0.0.0.0/0"}]),
    ]
    cache = ResultCache(d.settings.state_dir)
    entry = cache.get("nyx", "c1", "eth1")
    assert entry is not None and entry.config["plugins"][0]["ipam"]["routes"] == []
    fake_bin.clear()
    d.teardown("c1", netns)  # DEL with what ADD used
    dels = {c["conf"]["name"]: routes(c) for c in fake_bin.calls("DEL") if c["plugin"] == "bridge"}
    assert dels == {"back": [{"dst": "0.0.0.0/0"}], "nyx": [], "lab": [{"dst": "0.0.0.0/0"}]}


def test_teardown_deletes_every_network_in_reverse(
    make_driver: Make, fake_bin: Any, netns: str
) -> None:
    d = make_driver()
    d.network_create(_spec())
    d.network_create(_spec("third", "10.233.0.0/24"))
    for i, net in enumerate(("nyx", "back", "third")):
        d.setup("c1", netns, network=net, ifname=f"eth{i}")
    for driver in (d, make_driver()):  # in memory, and rebuilt from the cache after a restart
        if driver is not d:
            for i, net in enumerate(("nyx", "back", "third")):
                d.setup("c1", netns, network=net, ifname=f"eth{i}")
            d.close()
        fake_bin.clear()
        driver.teardown("c1", netns)
        assert [
            (c["conf"]["name"], c["env"]["CNI_IFNAME"], c["plugin"]) for c in fake_bin.calls("DEL")
        ] == [
            ("third", "eth2", "portmap"),
            ("third", "eth2", "bridge"),
            ("back", "eth1", "portmap"),
            ("back", "eth1", "bridge"),
            ("nyx", "eth0", "portmap"),
            ("nyx", "eth0", "bridge"),
            ("cni-loopback", "lo", "loopback"),
        ]
        assert ResultCache(d.settings.state_dir).entries() == []


def test_a_failed_second_network_leaves_the_first(
    make_driver: Make, fake_bin: Any, netns: str
) -> None:
    d = make_driver()
    d.network_create(_spec())
    d.setup("c1", netns, network="nyx", ifname="eth0")
    fake_bin.make("portmap", mode="error", fail_on=["ADD"])
    fake_bin.clear()
    with pytest.raises(Exception, match="Invalid Configuration"):
        d.setup("c1", netns, network="back", ifname="eth1")
    assert fake_bin.sequence() == [
        ("bridge", "ADD"),
        ("portmap", "ADD"),
        ("portmap", "DEL"),
        ("bridge", "DEL"),
    ]
    cache = ResultCache(d.settings.state_dir)
    assert {(e.network, e.ifname) for e in cache.entries()} == {
        ("cni-loopback", "lo"),
        ("nyx", "eth0"),
    }
    assert d.attached() == ["c1"]
    fake_bin.make("portmap")
    d.setup("c1", netns, network="back", ifname="eth1")  # now it works


def test_an_unknown_network_is_refused(make_driver: Make, netns: str) -> None:
    d = make_driver()
    with pytest.raises(ConfigError, match="network 'nope': not created on the cni driver"):
        d.setup("c1", netns, network="nope")
    assert d.attached() == []


def test_gc_covers_every_network(make_driver: Make, fake_bin: Any, netns: str) -> None:
    fake_bin.make("bridge", iface=True, versions=["1.0.0", "1.1.0"])
    d = make_driver()
    d.network_create(_spec())
    for cid in ("keep", "stale"):
        d.setup(cid, netns, network="nyx", ifname="eth0")
        d.setup(cid, netns, network="back", ifname="eth1")
    d.close()
    restarted = make_driver()
    restarted.network_create(_spec())
    fake_bin.clear()
    report = restarted.gc(["keep"])
    assert report.removed == ["stale"]
    assert [
        (c["conf"]["name"], c["env"]["CNI_IFNAME"], c["plugin"])
        for c in fake_bin.calls("DEL")
        if c["plugin"] != "portmap"
    ] == [("back", "eth1", "bridge"), ("nyx", "eth0", "bridge"), ("cni-loopback", "lo", "loopback")]
    assert {c["env"]["CNI_CONTAINERID"] for c in fake_bin.calls("DEL")} == {"stale"}
    gcs = {c["conf"]["name"]: c["conf"]["cni.dev/valid-attachments"] for c in fake_bin.calls("GC")}
    assert gcs == {
        "nyx": [{"containerID": "keep", "ifname": "eth0"}],
        "back": [{"containerID": "keep", "ifname": "eth1"}],
    }
    assert {e.container_id for e in ResultCache(d.settings.state_dir).entries()} == {"keep"}


# ------------------------------------------------------------------ internal


def test_an_internal_network_gets_one_rule_for_its_subnet(
    make_driver: Make, fake_nft: Any, netns: str
) -> None:
    d = make_driver()
    info = d.network_create(_spec(internal=True))
    assert info.internal
    conf = json.loads((d.options.conf_dir / "back.conflist").read_text())
    assert conf["plugins"][0]["ipMasq"] is False
    # no default route; one to nyxd's address (gateway_ip, where embedded DNS listens)
    assert conf["plugins"][0]["ipam"]["routes"] == [{"dst": "10.231.0.1/32"}]
    (rule,) = fake_nft.ruleset()
    assert rule.startswith(
        "ip saddr 10.232.0.0/24 ip daddr != 10.232.0.0/24 drop # nyx-cni net:back "
    )
    calls = len(fake_nft.calls)
    assert d.network_create(_spec(internal=True)) == info  # idempotent: nft not even asked
    assert len(fake_nft.calls) == calls
    make_driver().network_create(_spec(internal=True))  # after a restart: the same rule
    assert fake_nft.ruleset() == [rule]
    r = d.setup("c1", netns, network="back", ifname="eth0", internal=True)
    assert r.internal and fake_nft.ruleset() == [rule]  # the network's rule covers it
    d.teardown("c1", netns)
    d.network_remove("back")
    assert not fake_nft.table


def test_an_internal_attachment_on_a_normal_network_gets_its_own_rule(
    make_driver: Make, fake_nft: Any, netns: str
) -> None:
    d = make_driver()
    r = d.setup("c1", netns, internal=True)
    assert r.internal
    (rule,) = fake_nft.ruleset()
    assert rule.startswith(
        "ip saddr 10.231.0.5 ip daddr != 10.231.0.0/24 drop # nyx-cni att:c1:eth0 "
    )
    d.setup("c2", netns)
    assert len(fake_nft.ruleset()) == 1  # not internal: no rule
    d.teardown("c2", netns)
    assert len(fake_nft.ruleset()) == 1
    d.close()
    restarted = make_driver()  # the rule is found again after a restart
    restarted.teardown("c1", netns)
    assert not fake_nft.table


def test_gc_deletes_the_rules_of_gone_containers(
    make_driver: Make, fake_nft: Any, netns: str
) -> None:
    d = make_driver()
    d.setup("keep", netns, internal=True)
    d.setup("gone", netns, internal=True)
    d.close()
    report = make_driver().gc(["keep"])
    assert report.removed == ["gone"] and report.rules == ["att:gone:eth0"]
    assert [r.split(" # ")[1].split()[1] for r in fake_nft.ruleset()] == ["att:keep:eth0"]


def test_internal_without_nft_is_refused_before_anything_changes(
    make_driver: Make, fake_bin: Any, netns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = make_driver()

    def missing(self: InternalFirewall) -> str:
        raise FirewallError("internal networks on the cni driver need the nft binary")

    monkeypatch.setattr(InternalFirewall, "binary", missing)
    fake_bin.clear()
    with pytest.raises(FirewallError, match="nft binary"):
        d.setup("c1", netns, internal=True)
    with pytest.raises(FirewallError, match="nft binary"):
        d.network_create(_spec(internal=True))
    assert fake_bin.sequence() == [] and not (d.options.conf_dir / "back.conflist").exists()


def test_a_failed_rule_undoes_the_attachment(
    make_driver: Make, fake_bin: Any, fake_nft: Any, netns: str
) -> None:
    d = make_driver()
    fake_nft.fail_apply = "Error: Could not process rule: No buffer space available"
    fake_bin.clear()
    with pytest.raises(FirewallError, match="No buffer space"):
        d.setup("c1", netns, internal=True)
    assert fake_bin.sequence("DEL") == [
        ("portmap", "DEL"),
        ("bridge", "DEL"),
        ("loopback", "DEL"),
    ]
    assert ResultCache(d.settings.state_dir).entries() == [] and d.attached() == []


# ------------------------------------------------------------------ remove


def test_remove_deletes_what_nyx_made(make_driver: Make, fake_links: Any, fake_nft: Any) -> None:
    d = make_driver()
    d.network_create(_spec(internal=True))
    leases = d.settings.state_dir / "cni" / "networks" / "back"
    leases.mkdir(parents=True)
    (leases / "last_reserved_ip.0").write_text("10.232.0.2")
    fake_links.links["cni-back"] = "bridge"
    d.network_remove("back")
    assert not (d.options.conf_dir / "back.conflist").exists()
    assert not (d.settings.state_dir / "cni" / "conflists" / "back.json").exists()
    assert fake_links.deleted == ["cni-back"] and not leases.exists()
    assert not fake_nft.table and "back" not in d.networks
    d.network_remove("back")  # idempotent
    d.network_remove("never-was")
    assert fake_links.deleted == ["cni-back"]


def test_remove_is_refused_while_containers_are_attached(
    make_driver: Make, fake_links: Any, netns: str
) -> None:
    d = make_driver()
    d.network_create(_spec())
    d.setup("c1", netns, network="back", ifname="eth0")
    with pytest.raises(ConfigError, match="network 'back': containers c1 are still attached"):
        d.network_remove("back")
    assert (d.options.conf_dir / "back.conflist").exists() and "back" in d.networks


def test_remove_keeps_a_bridge_that_still_has_ports(make_driver: Make, fake_links: Any) -> None:
    d = make_driver()
    d.network_create(_spec())
    fake_links.links["cni-back"] = "bridge"
    fake_links.ports["cni-back"] = ["vethx"]
    with pytest.raises(TeardownError, match="still has ports vethx"):
        d.network_remove("back")
    assert (d.settings.state_dir / "cni" / "conflists" / "back.json").exists()  # for a retry
    fake_links.ports.clear()
    d.network_remove("back")
    assert fake_links.deleted == ["cni-back"]


# ------------------------------------------------------------------ through the hooks


def test_the_hooks_through_the_facade(
    fake_bin: Any, tmp_path: Path, netns: str, fake_nft: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("bridge", "host-local", "portmap"):
        fake_bin.make(name, iface=name == "bridge")
    s = NyxSettings(
        state_dir=tmp_path / "state",
        run_dir=tmp_path / "run",
        container_subnet="10.231.0.0/24",
        gateway_ip="10.231.0.1",
    ).with_plugins(
        CniSettings(bin_dir=fake_bin.dir, conf_dir=tmp_path / "net.d", prime=False, loopback=False)
    )
    backend = NetworkBackend.load("cni")
    caps = backend.capabilities()
    assert caps.multiple_networks and caps.enforces_internal and caps.network_lifecycle
    assert caps.external_dns and caps.publishes_ports and caps.ipv6
    backend.ensure_network(s)
    info = backend.network_create(_spec(internal=True))
    assert info.interface == "cni-back"
    fake_bin.clear()
    backend.setup("c1", netns, [], SetupOptions(network="nyx", interface="eth0"))
    r = backend.setup(
        "c1", netns, [], SetupOptions(network="back", interface="eth1", internal=True)
    )
    assert r.internal and r.network == "back"
    assert [c["env"]["CNI_IFNAME"] for c in fake_bin.calls("ADD") if c["plugin"] == "bridge"] == [
        "eth0",
        "eth1",
    ]
    backend.teardown("c1", netns)
    backend.network_remove("back")
    assert not (tmp_path / "net.d" / "back.conflist").exists() and not fake_nft.table


def test_is_netns_tells_a_namespace_from_a_stale_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.undo()  # the real is_netns, not the unit tests' stand-in
    from nyx_plugins_cni._driver import is_netns

    stale = tmp_path / "stale"
    stale.touch()
    assert is_netns("/proc/self/ns/net")
    assert not is_netns(str(stale)) and not is_netns(str(tmp_path / "missing"))
