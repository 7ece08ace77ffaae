"""The re-apply transaction of the native firewall (pure: no root needed)."""

from __future__ import annotations

import ipaddress

import pytest

from nyx_plugins_native._firewall import PortElement, element_text, rebuild_script


def test_rebuild_replaces_the_tables_then_writes_every_element() -> None:
    web = [PortElement(None, "tcp", 8080, "10.88.0.2", 80)]
    local = [PortElement("127.0.0.1", "udp", 5353, "10.88.0.3", 53)]
    script = rebuild_script(
        ("ip",),
        [("nyx0", ipaddress.IPv4Network("10.88.0.0/16"), None)],
        [(web, None, None), (local, "10.88.0.3", None)],
    )
    lines = script.splitlines()
    assert lines[:3] == ["add table ip nyx", "delete table ip nyx", "add table ip nyx"]
    assert "add element ip nyx ports_any { tcp . 8080 : 10.88.0.2 . 80 }" in lines
    assert "add element ip nyx ports_ip { 127.0.0.1 . udp . 5353 : 10.88.0.3 . 53 }" in lines
    assert "add element ip nyx net_subnets { 10.88.0.0/16 }" in lines
    assert 'add element ip nyx net_bridges { "nyx0" }' in lines
    assert 'add element ip nyx same_bridge { "nyx0" . "nyx0" }' in lines
    assert "add element ip nyx internal { 10.88.0.3 }" in lines
    # the fixed layout comes before any element
    first_elem = next(i for i, line in enumerate(lines) if " element " in line)
    assert all(" element " not in line for line in lines[:first_elem])
    assert any(line.startswith("add chain ip nyx guard") for line in lines[:first_elem])


def test_rebuild_writes_ipv6_elements_only_into_a_table_it_writes() -> None:
    pels = [
        PortElement(None, "tcp", 80, "10.88.0.2", 80),
        PortElement(None, "tcp", 80, "fd00::2", 80),
    ]
    nets = [("nyx0", ipaddress.IPv4Network("10.88.0.0/16"), ipaddress.IPv6Network("fd00::/64"))]
    v4 = rebuild_script(("ip",), nets, [(pels, None, None)])
    assert "ip6" not in v4
    both = rebuild_script(("ip", "ip6"), nets, [(pels, None, None)])
    assert "add element ip6 nyx ports_any { tcp . 80 : fd00::2 . 80 }" in both.splitlines()
    assert "add element ip6 nyx net_subnets { fd00::/64 }" in both.splitlines()


@pytest.mark.parametrize("bad", ['nyx0" }; flush ruleset; #', "a b", "", "x\ny"])
def test_a_value_nft_could_read_as_more_is_refused(bad: str) -> None:
    cmd = {
        "add": {"element": {"family": "ip", "table": "nyx", "name": "net_bridges", "elem": [bad]}}
    }
    with pytest.raises(ValueError, match="no nft spelling"):
        element_text(cmd)
