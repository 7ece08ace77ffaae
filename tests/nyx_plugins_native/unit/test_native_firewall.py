"""nftables batch building and the binding loader, without root."""

from __future__ import annotations

import importlib.util
import ipaddress
import sys
from pathlib import Path

import pytest

from nyx_core import ConfigError, FirewallError, PortConflictError, PortMapping, port_ranges
from nyx_plugins_native import _firewall as fw
from nyx_plugins_native import _nft, bridge_name, veth_name
from nyx_plugins_native._ports import check_conflicts


def _full_listing() -> fw.TableState:
    state = fw.TableState(sets=list(fw.SETS))
    handle = iter(range(100, 1000))
    for chain, (_base, rules) in fw.CHAINS.items():
        state.chains[chain] = [(fw.rule_comment(n, r), next(handle)) for n, r in rules]
    return state


def test_ensure_batch_creates_everything_once() -> None:
    script = fw.ensure_batch(None)
    assert script.startswith("add table ip nyx\n")
    for name in fw.SETS:
        assert f" {name} {{" in script
    for chain, (_base, rules) in fw.CHAINS.items():
        assert f"add chain ip nyx {chain}" in script
        for name, rule in rules:
            assert script.count(f'"{fw.rule_comment(name, rule)}"') == 1
    # the hooks nyx relies on
    assert "fib daddr type local ip daddr != 127.0.0.0/8 jump ports" in script
    assert "fib daddr type local jump ports" in script  # output: 127.0.0.1:PORT from the host
    assert "ip saddr 127.0.0.0/8 oifname @net_bridges masquerade" in script
    assert "ct status dnat" in script
    assert "flush" not in script and "delete" not in script  # never flushes anything


def test_the_guard_and_the_masquerade_spare_the_host() -> None:
    script = fw.ensure_batch(None)
    # 127.0.0.0/8 only through lo, before the DNAT (-100) and after conntrack (-200)
    assert "add chain ip nyx guard { type filter hook prerouting priority -150;" in script
    assert (
        'iifname != "lo" ip daddr 127.0.0.0/8 ct state != { established, related } drop' in script
    )
    # the host's packets from a gateway address to a local one keep their source
    assert 'ip saddr @net_subnets oifname != @net_bridges oifname != "lo" masquerade' in script


def test_ensure_batch_is_empty_when_complete_and_completes_half_present() -> None:
    assert fw.ensure_batch(_full_listing()) == ""
    half = _full_listing()
    masq = half.chains["postrouting"][0]
    half.chains["postrouting"] = [masq]
    half.sets.remove("internal")
    script = fw.ensure_batch(half)
    lines = script.splitlines()
    assert "add set ip nyx internal" in lines[0]
    # the chain is written again in order, in the same (atomic) batch
    assert lines[1] == f"delete rule ip nyx postrouting handle {masq[1]}"
    assert [ln.rsplit('"', 2)[1] for ln in lines[2:]] == [
        fw.rule_comment(n, r) for n, r in fw.CHAINS["postrouting"][1]
    ]
    assert "add table" not in script and "add chain" not in script


def test_ensure_batch_replaces_an_older_layout() -> None:
    old = _full_listing()
    # an older version: another masquerade rule, a chain that no longer exists
    old.chains["postrouting"][0] = ("nyx:masq", 7)
    old.chains["legacy"] = [("nyx:legacy", 8), ("", 9)]
    lines = fw.ensure_batch(old).splitlines()
    assert "delete rule ip nyx postrouting handle 7" in lines
    assert lines.count("delete rule ip nyx postrouting handle 7") == 1
    assert {"delete rule ip nyx legacy handle 8", "delete rule ip nyx legacy handle 9"} <= set(
        lines
    )
    assert lines[-1] == "delete chain ip nyx legacy"
    adds = [ln for ln in lines if ln.startswith("add rule")]
    assert len(adds) == len(fw.CHAINS["postrouting"][1])
    assert all(" postrouting " in ln for ln in adds)
    # other chains are left alone
    assert not any(" forward " in ln or " guard " in ln for ln in lines)


def test_rule_comments_follow_the_rule_text() -> None:
    a = fw.rule_comment("nyx:masq", "ip saddr @net_subnets masquerade")
    b = fw.rule_comment("nyx:masq", "ip saddr @net_subnets oifname != lo masquerade")
    assert a.startswith("nyx:masq:") and b.startswith("nyx:masq:") and a != b


def test_parse_table_reads_a_listing() -> None:
    listing = {
        "nftables": [
            {"metainfo": {}},
            {"table": {"family": "ip", "name": "nyx"}},
            {"map": {"name": "ports_any"}},
            {"set": {"name": "internal"}},
            {"chain": {"name": "forward"}},
            {"chain": {"name": "ports"}},
            {"rule": {"chain": "forward", "comment": "nyx:internal:abcdef", "handle": 4}},
            {"rule": {"chain": "forward", "handle": 5}},
        ]
    }
    got = fw.parse_table(listing)
    assert got.sets == ["ports_any", "internal"]
    assert got.chains == {"forward": [("nyx:internal:abcdef", 4), ("", 5)], "ports": []}


def test_port_elements_expand_ranges_and_host_ips() -> None:
    ports = [
        PortMapping.parse("8000-8002:9000-9002"),
        PortMapping.parse("127.0.0.1:53:5353/udp"),
        PortMapping.parse("0.0.0.0:80:80"),
    ]
    els = fw.port_elements(ports, "10.231.0.5")
    assert [(e.host_ip, e.protocol, e.host_port, e.container_port) for e in els] == [
        (None, "tcp", 8000, 9000),
        (None, "tcp", 8001, 9001),
        (None, "tcp", 8002, 9002),
        ("127.0.0.1", "udp", 53, 5353),
        (None, "tcp", 80, 80),
    ]


def test_container_batch_is_one_command_per_map() -> None:
    els = fw.port_elements(
        [PortMapping.parse("8080:80"), PortMapping.parse("127.0.0.1:8443:443")], "10.231.0.5"
    )
    add = fw.container_batch("add", els, "10.231.0.5")
    assert [next(iter(c["add"]["element"].values())) for c in add] == ["ip"] * 3
    by_name = {c["add"]["element"]["name"]: c["add"]["element"]["elem"] for c in add}
    assert by_name["ports_any"] == [[{"concat": ["tcp", 8080]}, {"concat": ["10.231.0.5", 80]}]]
    assert by_name["ports_ip"] == [
        [{"concat": ["127.0.0.1", "tcp", 8443]}, {"concat": ["10.231.0.5", 443]}]
    ]
    assert by_name["internal"] == ["10.231.0.5"]
    delete = fw.container_batch("delete", els, None)
    assert [c["delete"]["element"]["name"] for c in delete] == ["ports_any", "ports_ip"]
    assert delete[0]["delete"]["element"]["elem"] == [{"concat": ["tcp", 8080]}]
    assert fw.container_batch("add", [], None) == []


def test_network_elements() -> None:
    cmds = fw.network_elements("add", "nyx-blue", ipaddress.IPv4Network("10.89.1.0/24"))
    names = [c["add"]["element"]["name"] for c in cmds]
    assert names == ["net_subnets", "net_bridges", "same_bridge"]
    assert cmds[0]["add"]["element"]["elem"] == [{"prefix": {"addr": "10.89.1.0", "len": 24}}]


def test_the_ip6_table_mirrors_the_ip_one_for_ipv6() -> None:
    script = fw.ensure_batch(None, "ip6")
    assert script.startswith("add table ip6 nyx\n")
    assert "ipv4_addr" not in script and "type ipv6_addr; flags interval;" in script
    assert "add chain ip6 nyx guard { type filter hook prerouting priority -150;" in script
    assert 'iifname != "lo" ip6 daddr ::1 drop' in script
    # ::1 is never DNAT'd (the loopback proxy answers there), from outside or from the host
    assert "fib daddr type local ip6 daddr != ::1 jump ports" in script
    assert script.count("ip6 daddr != ::1 jump ports") == 2
    assert "dnat ip6 to ip6 daddr . meta l4proto . th dport map @ports_ip" in script
    assert 'ip6 saddr @net_subnets oifname != @net_bridges oifname != "lo" masquerade' in script
    assert "ct status dnat ip6 saddr @net_subnets oifname @net_bridges masquerade" in script
    # internal: nothing leaves the subnets, neighbour discovery (multicast) between peers does
    assert "ip6 saddr @internal ip6 daddr != @net_subnets ip6 daddr != ff00::/8 drop" in script
    assert "route_localnet" not in script and "127.0.0.0/8" not in script
    assert " ip saddr" not in script and " ip daddr" not in script
    # no comment is shared with the ip table's rules: hashes follow each table's text
    full = fw.TableState(sets=list(fw.SETS6))
    handle = iter(range(100, 1000))
    for chain, (_base, rules) in fw.CHAINS6.items():
        full.chains[chain] = [(fw.rule_comment(n, r), next(handle)) for n, r in rules]
    assert fw.ensure_batch(full, "ip6") == ""
    assert fw.ensure_batch(_full_listing(), "ip6") != ""


def test_port_elements_of_a_dual_stack_container() -> None:
    ports = [
        PortMapping.parse("8080:80"),
        PortMapping.parse("0.0.0.0:8081:81"),
        PortMapping.parse("[::]:8082:82"),
        PortMapping.parse("[::1]:8083:83"),
        PortMapping.parse("[2001:db8::1]:8084:84/udp"),
        PortMapping.parse("127.0.0.1:8085:85"),
    ]
    els = fw.port_elements(ports, "10.231.0.5", "fd00::5")
    got = [(e.host_ip, e.host_port, e.container_ip, e.family, e.in_nft, e.proxied) for e in els]
    assert got == [
        (None, 8080, "10.231.0.5", "ip", True, False),
        (None, 8080, "fd00::5", "ip6", True, True),  # [::]:8080 answers [::1] by proxy
        (None, 8081, "10.231.0.5", "ip", True, False),
        (None, 8082, "fd00::5", "ip6", True, True),
        ("::1", 8083, "fd00::5", "ip6", False, True),
        ("2001:db8::1", 8084, "fd00::5", "ip6", True, False),
        ("127.0.0.1", 8085, "10.231.0.5", "ip", True, False),
    ]
    add = fw.container_batch("add", els, "10.231.0.5", "fd00::5")
    where = [(c["add"]["element"]["family"], c["add"]["element"]["name"]) for c in add]
    assert where == [
        ("ip", "ports_any"),
        ("ip", "ports_ip"),
        ("ip6", "ports_any"),
        ("ip6", "ports_ip"),
        ("ip", "internal"),
        ("ip6", "internal"),
    ]
    assert add[2]["add"]["element"]["elem"] == [
        [{"concat": ["tcp", 8080]}, {"concat": ["fd00::5", 80]}],
        [{"concat": ["tcp", 8082]}, {"concat": ["fd00::5", 82]}],
    ]


def test_port_elements_of_an_ipv4_only_container() -> None:
    els = fw.port_elements(
        [PortMapping.parse("8080:80"), PortMapping.parse("[::1]:8081:81")], "10.231.0.5"
    )
    assert [(e.host_ip, e.container_ip, e.in_nft, e.proxied) for e in els] == [
        (None, "10.231.0.5", True, False),
        ("::1", "10.231.0.5", False, True),  # [::1] reaches its IPv4 address by proxy
    ]
    for spec in ("[::]:8082:82", "[2001:db8::1]:8083:83"):
        with pytest.raises(ConfigError, match="has no IPv6 address"):
            fw.port_elements([PortMapping.parse(spec)], "10.231.0.5")


def test_network_and_stale_elements_of_a_dual_stack_network() -> None:
    cmds = fw.network_elements(
        "add",
        "nyx-blue",
        ipaddress.IPv4Network("10.89.1.0/24"),
        ipaddress.IPv6Network("fd00:89:1::/64"),
    )
    where = [(c["add"]["element"]["family"], c["add"]["element"]["name"]) for c in cmds]
    assert where == [
        ("ip", "net_subnets"),
        ("ip", "net_bridges"),
        ("ip", "same_bridge"),
        ("ip6", "net_subnets"),
        ("ip6", "net_bridges"),
        ("ip6", "same_bridge"),
    ]
    listed = {
        "ports_any": [
            [{"concat": ["tcp", 80]}, {"concat": ["fd00:89:1::5", 80]}],
            [{"concat": ["tcp", 81]}, {"concat": ["fd00:89:1::6", 81]}],
            [{"concat": ["tcp", 82]}, {"concat": ["fd00:99::6", 82]}],  # not nyx's subnet
        ],
        "internal": ["fd00:89:1::7", "fd00:89:1::5"],
    }
    cmds = fw.stale_elements(
        listed, {"fd00:89:1::5"}, [ipaddress.IPv6Network("fd00:89:1::/64")], "ip6"
    )
    assert [(c["delete"]["element"]["family"], c["delete"]["element"]["name"]) for c in cmds] == [
        ("ip6", "ports_any"),
        ("ip6", "internal"),
    ]
    assert cmds[0]["delete"]["element"]["elem"] == [{"concat": ["tcp", 81]}]
    assert cmds[1]["delete"]["element"]["elem"] == ["fd00:89:1::7"]


def test_port_conflicts() -> None:
    mine = fw.port_elements([PortMapping.parse("8080:80")], "10.0.0.2")
    other = port_ranges([PortMapping.parse("127.0.0.1:8080:80")])
    udp = port_ranges([PortMapping.parse("8080:80/udp")])
    with pytest.raises(PortConflictError, match=r"127\.0\.0\.1:8080/tcp.*'web'"):
        check_conflicts(other, [("web", mine[0])])
    check_conflicts(udp, [("web", mine[0])])  # another protocol is fine
    with pytest.raises(PortConflictError, match="listed twice"):
        check_conflicts(port_ranges([PortMapping.parse("8080:80")]) + other, [])


def test_interface_names_fit_ifnamsiz() -> None:
    assert veth_name("x" * 64, "nyx").startswith("nv") and len(veth_name("x" * 64, "n")) <= 15
    assert veth_name("a", "nyx") != veth_name("a", "other")
    assert bridge_name("blue") == "nyx-blue"
    long = bridge_name("a-very-long-network-name")
    assert len(long) <= 15 and long != bridge_name("a-very-long-network-nam3")


def test_missing_binding_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "nftables", raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FirewallError, match="python3-nftables") as info:
        _nft.load_nftables(search=(Path("/nonexistent/nftables"),))
    assert "\n" not in str(info.value)


def test_binding_loads_from_its_file_location(monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = Path("/usr/lib/python3/dist-packages/nftables")
    if not (pkg / "__init__.py").exists():
        pytest.skip("python3-nftables is not installed")
    monkeypatch.delitem(sys.modules, "nftables", raising=False)
    monkeypatch.delitem(sys.modules, "nftables.nftables", raising=False)
    path_before = list(sys.path)
    mod = _nft.load_nftables()
    assert hasattr(mod, "Nftables")
    assert sys.path == path_before
    assert "/usr/lib/python3/dist-packages" not in sys.path


def test_missing_veth_support_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from nyx_core import NetlinkError
    from nyx_plugins_native import _netlink

    monkeypatch.setattr(_netlink.Rtnl, "batch", lambda self, reqs: [errno.EOPNOTSUPP])
    with pytest.raises(NetlinkError, match=r"no veth support \(CONFIG_VETH; .*modprobe veth"):
        _netlink.check_veth_support()
    monkeypatch.setattr(_netlink.Rtnl, "batch", lambda self, reqs: [errno.EINVAL])
    _netlink.check_veth_support()  # veth present: its own validation refused MTU 1
