"""The host view's IPv6 half: ``ipv6_route`` and ``if_inet6`` as the kernel prints them."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from nyx_core import ConfigError, check_subnet_on_host
from nyx_core._hostnet import (
    HostView,
    parse_if_inet6,
    parse_ipv6_route,
    read_host_view,
    subnet_host_conflict,
)

# a host with a SLAAC uplink (eth0, default via fe80::1), a VPN route in another table, a
# blackhole, a dual-stack nyx bridge (nyx0), and the kernel's own local/multicast entries
IPV6_ROUTE = """\
20010db8000500000000000000000000 40 00000000000000000000000000000000 00 fd000009000000000000000000000005 00000400 00000001 00000000 00000003     wg0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00450003     eth0
20010db8001300000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000002 00000000 00000001     eth0
fd000077000000000000000000000000 30 00000000000000000000000000000000 00 00000000000000000000000000000000 00000400 00000001 00000000 00200200       lo
fd000231000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000002 00000000 00000001     nyx0
fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000002 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000002 00000000 80200001       lo
20010db8001300000000000000000002 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000002 00000000 80200001     eth0
ff000000000000000000000000000000 08 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000003 00000000 00000001     eth0
"""  # noqa: E501
IF_INET6 = """\
00000000000000000000000000000001 01 80 10 80       lo
20010db8001300000000000000000002 02 40 00 00     eth0
fe800000000000000000000000000002 02 40 20 80     eth0
fd000231000000000000000000000001 05 40 00 82     nyx0
"""


def N(text: str) -> ipaddress.IPv6Network:
    return ipaddress.IPv6Network(text)


def _view() -> HostView:
    return HostView(tuple(parse_ipv6_route(IPV6_ROUTE)), tuple(parse_if_inet6(IF_INET6)))


def test_routes_and_addresses_are_read() -> None:
    routes = {str(r) for r in parse_ipv6_route(IPV6_ROUTE)}
    assert routes == {
        "2001:db8:5::/64 dev wg0",
        "2001:db8:13::/64 dev eth0",
        "reject fd00:77::/48",
        "fd00:231::/64 dev nyx0",
        "fe80::/64 dev eth0",
        "ff00::/8 dev eth0",
    }  # no default route, no local address, no per-table ::/0 reject
    assert {str(a) for a in parse_if_inet6(IF_INET6)} == {
        "::1 (lo)",
        "2001:db8:13::2 (eth0)",
        "fe80::2 (eth0)",
        "fd00:231::1 (nyx0)",
    }


@pytest.mark.parametrize(
    ("subnet", "reason"),
    [
        ("2001:db8:13::/64", "contains host address 2001:db8:13::2 (eth0)"),
        ("2001:db8:13::/56", "contains host address 2001:db8:13::2 (eth0)"),
        ("2001:db8:5::/64", "overlaps the host route 2001:db8:5::/64 dev wg0"),
        ("fd00:77:0:5::/64", "overlaps the host route reject fd00:77::/48"),
        ("fe80::/64", "overlaps fe80::/10 (link-local)"),
        ("::/64", "overlaps ::/8 (reserved: unspecified, loopback ::1, IPv4-mapped)"),
        ("ff02::/64", "overlaps ff00::/8 (multicast)"),
        ("fd00:88::/64", None),
        ("2001:db8:14::/64", None),  # the default route is no host route
    ],
)
def test_ipv6_subnets_of_the_host_are_refused(subnet: str, reason: str | None) -> None:
    assert subnet_host_conflict(N(subnet), _view()) == reason


def test_nyx_bridges_are_not_the_hosts_and_families_do_not_mix() -> None:
    assert subnet_host_conflict(N("fd00:231::/64"), _view()) is not None
    assert subnet_host_conflict(N("fd00:231::/64"), _view(), {"nyx0"}) is None
    assert subnet_host_conflict(ipaddress.IPv4Network("10.0.0.0/8"), _view()) is None
    with pytest.raises(ConfigError, match=r"network 'x': subnet 2001:db8:13::/64 contains"):
        check_subnet_on_host(N("2001:db8:13::/64"), "network 'x'", view=_view())


def test_a_kernel_without_ipv6_gives_an_ipv4_view(tmp_path: Path) -> None:
    (tmp_path / "route").write_text(
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        "eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
    )
    (tmp_path / "fib_trie").write_text("")
    view = read_host_view(tmp_path)
    assert [str(r) for r in view.routes] == ["192.168.0.0/24 dev eth0"]
    (tmp_path / "ipv6_route").write_text(IPV6_ROUTE)
    (tmp_path / "if_inet6").write_text(IF_INET6)
    assert len(read_host_view(tmp_path).routes) == 7
