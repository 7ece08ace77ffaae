"""A static IPv6 address end to end (issues 13, 14): ``nyx run --ip6`` and compose
``ipv6_address`` give the container exactly that address, which the LAN neighbour reaches
over IPv6 (through a published port: nyx routes no unpublished port in from the LAN), and
a second container asking for the same address gets a 409 with nothing left behind.

nyxd runs dual stack in the kit's host namespace (LAN 2001:db8:100::1, the neighbour
2001:db8:100::2; see test_dual_stack_e2e.py).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from pathlib import Path

import pytest
from nyxd_e2e_kit import Nyxd
from test_nyxd_e2e import HTTPD, PAGE, assert_clean, wait_for

from nyx_cli.client._http import ApiError
from nyx_core.testing import LAN_HOST_IP6

pytestmark = [pytest.mark.e2e, pytest.mark.kernel]

SUBNET6 = "fd00:e2e:6::/64"
IP6 = "fd00:e2e:6::50"


@pytest.fixture
def nyxd6(nyxd_factory: Callable[..., Nyxd]) -> Nyxd:
    return nyxd_factory("--container-subnet6", SUBNET6)


def _curl_from_lan(d: Nyxd, port: int) -> str:
    assert d.topology is not None
    url = f"http://[{LAN_HOST_IP6}]:{port}/"
    return d.topology.lan.run(["curl", "-s", "-m", "3", "-g", url], check=False).stdout


def _inet6(d: Nyxd, name: str) -> list[str]:
    """The global IPv6 addresses of ``name``'s eth0, as the container sees them."""
    r = d.nyx("run", "--rm", "--network", f"container:{name}", "busybox:nyx", "ip", "-6", "addr")
    assert r.returncode == 0, r.stderr
    return [
        w for line in r.stdout.splitlines() if "scope global" in line for w in line.split()[1:2]
    ]


def _names(d: Nyxd) -> list[str]:
    return sorted(c["name"] for c in d.client.request("GET", "/v1/containers", params={"all": 1}))


def test_run_ip6_gives_exactly_that_address_and_a_second_asker_gets_409(nyxd6: Nyxd) -> None:
    r = nyxd6.nyx(
        "run", "-d", "--name", "web", "--ip6", IP6, "-p", "8085:80", "busybox:nyx", *HTTPD
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    web = nyxd6.client.request("GET", "/v1/containers/web")
    v4, v6 = web["ips"]
    assert v6 == IP6 and v4.startswith(nyxd6.subnet_prefix), web["ips"]
    assert f"{v4},{IP6}" in nyxd6.nyx("ps").stdout
    assert _inet6(nyxd6, "web") == [f"{IP6}/64"]
    assert wait_for(lambda: PAGE in _curl_from_lan(nyxd6, 8085), what=f"[{IP6}]:80 from the LAN")
    # the same address again: 409 through the API, a clear error through the CLI, and
    # nothing made (no veth, no container, no firewall element)
    veths, elements6 = nyxd6.veths(), nyxd6.nyx_elements("ip6")
    with pytest.raises(ApiError) as info:
        nyxd6.client.create({"image": "busybox:nyx", "name": "clash", "ipv6_address": IP6})
    assert info.value.status == 409, info.value
    assert f"ipv6_address {IP6} is already taken on network 'nyx' by container 'web'" in str(
        info.value
    )
    r = nyxd6.nyx("run", "-d", "--name", "clash", "--ip6", IP6, "busybox:nyx", "sleep", "60")
    assert r.returncode == 125 and f"ipv6_address {IP6} is already taken" in r.stderr, r.stderr
    # outside the subnet and on the gateway: refused, naming the field
    for bad, why in (
        ("fd00:e2e:7::50", "is outside the subnet6 fd00:e2e:6::/64 of network 'nyx'"),
        ("fd00:e2e:6::1", "is the gateway of network 'nyx'"),
    ):
        r = nyxd6.nyx("run", "-d", "--ip6", bad, "busybox:nyx", "true")
        assert r.returncode == 125 and f"ipv6_address {bad} {why}" in r.stderr, r.stderr
    assert nyxd6.veths() == veths and nyxd6.nyx_elements("ip6") == elements6
    assert _names(nyxd6) == ["web"]
    # once web is gone the address is free again
    assert nyxd6.nyx("rm", "-f", "web").returncode == 0
    r = nyxd6.nyx("run", "--rm", "--ip6", IP6, "busybox:nyx", "ip", "-6", "addr", "show", "eth0")
    assert r.returncode == 0 and f"inet6 {IP6}/64 scope global" in r.stdout, r.stdout + r.stderr
    assert_clean(nyxd6)
    for name in ("ports_any", "ports_ip", "internal"):
        assert nyxd6.nyx_elements("ip6").get(name, []) == [], name


COMPOSE = """
name: st6
services:
  web:
    image: busybox:nyx
    networks:
      front: {{ipv6_address: "{ip}"}}
    ports: ["8086:80"]
    command: [sh, -c, "mkdir -p /w && echo web6-ok > /w/index.html && exec httpd -f -p 80 -h /w"]
networks:
  front:
    enable_ipv6: true
    ipam:
      config:
        - subnet: 10.89.61.0/24
        - subnet: fd00:c6::/64
"""

CLASH = """
name: clash6
services:
  other:
    image: busybox:nyx
    command: [sleep, "60"]
    networks:
      front: {{ipv6_address: "{ip}"}}
networks:
  front: {{external: true, name: st6_front}}
"""


def test_compose_ipv6_address_is_honoured_and_a_clash_refused(nyxd6: Nyxd, tmp_path: Path) -> None:
    ip = "fd00:c6::50"
    work, clash = tmp_path / "st6", tmp_path / "clash6"
    work.mkdir()
    clash.mkdir()
    (work / "compose.yaml").write_text(COMPOSE.format(ip=ip))
    (clash / "compose.yaml").write_text(CLASH.format(ip=ip))
    up = nyxd6.nyx("compose", "up", "-d", cwd=work, timeout=180)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        web = nyxd6.client.request("GET", "/v1/containers/st6-web-1")
        assert [a for a in web["ips"] if ":" in a] == [ip], web["ips"]
        v4 = [a for a in web["ips"] if ":" not in a]
        assert [ipaddress.ip_address(a) in ipaddress.ip_network("10.89.61.0/24") for a in v4] == [
            True
        ]
        assert _inet6(nyxd6, "st6-web-1") == [f"{ip}/64"]
        assert wait_for(
            lambda: "web6-ok" in _curl_from_lan(nyxd6, 8086), what="the stack over IPv6"
        )
        r = nyxd6.nyx(
            "run", "--rm", "--network", "st6_front", "busybox:nyx", "wget", "-qO-", f"http://[{ip}]/"
        )  # fmt: skip
        assert r.returncode == 0 and "web6-ok" in r.stdout, r.stdout + r.stderr
        veths = nyxd6.veths()
        refused = nyxd6.nyx("compose", "up", "-d", cwd=clash, timeout=180)
        assert refused.returncode != 0, refused.stdout
        assert f"ipv6_address {ip} is already taken on network 'st6_front'" in refused.stderr, (
            refused.stdout + refused.stderr
        )
        assert _names(nyxd6) == ["st6-web-1"] and nyxd6.veths() == veths
    finally:
        nyxd6.nyx("compose", "down", "-t", "0", cwd=clash, timeout=180)
        down = nyxd6.nyx("compose", "down", "-t", "1", cwd=work, timeout=180)
    assert down.returncode == 0, down.stdout + down.stderr
    assert [n["name"] for n in nyxd6.client.request("GET", "/v1/networks")] == ["nyx"]
    assert_clean(nyxd6)
