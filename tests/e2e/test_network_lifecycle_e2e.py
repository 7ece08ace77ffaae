"""Networks have a lifecycle end to end: ``nyx network create -o ...`` asks the native driver
(bridge with the MTU asked for), containers join it, ``nyx network rm`` is refused while one
uses it and removes the bridge after; a restarted nyxd brings recorded networks back."""

from __future__ import annotations

import json
from typing import Any

import pytest
from nyxd_e2e_kit import Nyxd

pytestmark = [pytest.mark.e2e, pytest.mark.kernel]


def _bridge(d: Nyxd, name: str) -> dict[str, Any] | None:
    r = d.host("ip", "-j", "-d", "link", "show", name)
    return json.loads(r.stdout)[0] if r.returncode == 0 else None


def _addresses(d: Nyxd, name: str) -> list[str]:
    info = json.loads(d.host("ip", "-j", "addr", "show", name).stdout)[0]
    return [f"{a['local']}/{a['prefixlen']}" for a in info["addr_info"]]


def test_create_run_rm_a_network_with_an_mtu(nyxd: Nyxd) -> None:
    before = nyxd.nyx_elements()
    r = nyxd.nyx("network", "create", "-o", "mtu=1400", "--label", "team=web", "mynet")
    assert r.returncode == 0, r.stderr
    br = _bridge(nyxd, "nyx-mynet")
    assert br is not None and br["linkinfo"]["info_kind"] == "bridge" and br["mtu"] == 1400
    assert _addresses(nyxd, "nyx-mynet") == ["10.89.0.1/24"]
    assert "nyx-mynet" in nyxd.nyx_elements()["net_bridges"]
    ls = nyxd.nyx("network", "ls")
    assert any(
        line.split()[0] == "mynet" and "nyx-mynet" in line for line in ls.stdout.splitlines()
    )
    (net,) = json.loads(nyxd.nyx("network", "inspect", "mynet").stdout)
    assert net["options"] == {"mtu": "1400"} and net["labels"] == {"team": "web"}
    assert net["interface"] == "nyx-mynet" and net["driver"] == "native"

    # a container on it gets the network's MTU (the last line: its output, after the
    # container object nyx run prints)
    r = nyxd.nyx(
        "run", "--rm", "--network", "mynet", "busybox:nyx", "cat", "/sys/class/net/eth0/mtu"
    )
    assert r.returncode == 0 and r.stdout.splitlines()[-1] == "1400", r.stderr
    r = nyxd.nyx("run", "-d", "--name", "user", "--network", "mynet", "busybox:nyx", "sleep", "600")
    assert r.returncode == 0, r.stderr
    rm = nyxd.nyx("network", "rm", "mynet")
    assert rm.returncode != 0 and "in use by user" in rm.stderr
    assert _bridge(nyxd, "nyx-mynet") is not None

    # the network outlives its containers ...
    assert nyxd.nyx("rm", "-f", "user").returncode == 0
    assert _bridge(nyxd, "nyx-mynet") is not None
    # ... until it is removed: bridge and firewall elements gone
    rm = nyxd.nyx("network", "rm", "mynet")
    assert rm.returncode == 0, rm.stderr
    assert _bridge(nyxd, "nyx-mynet") is None
    assert nyxd.nyx_elements() == before
    assert [n["name"] for n in nyxd.client.request("GET", "/v1/networks")] == ["nyx"]


def test_what_the_driver_refuses_is_not_created(nyxd: Nyxd) -> None:
    r = nyxd.nyx("network", "create", "-o", "vlan=7", "bad")
    assert r.returncode == 125
    assert "unknown driver option(s) vlan" in r.stderr
    # the kit host's uplink route: refused by nyxd (and the driver) before anything is made
    r = nyxd.nyx("network", "create", "--subnet", "203.0.113.128/25", "evil")
    assert r.returncode == 125 and "overlaps the host route 203.0.113.0/24" in r.stderr
    assert [n["name"] for n in nyxd.client.request("GET", "/v1/networks")] == ["nyx"]
    assert _bridge(nyxd, "nyx-bad") is None and _bridge(nyxd, "nyx-evil") is None


def test_a_restarted_nyxd_brings_recorded_networks_back(nyxd: Nyxd) -> None:
    r = nyxd.nyx("network", "create", "--subnet", "10.89.33.0/24", "-o", "mtu=1450", "kept")
    assert r.returncode == 0, r.stderr
    assert nyxd.stop() == 0
    # as after a reboot: bridges and firewall elements are gone, the state dir is not
    assert nyxd.host("ip", "link", "del", "nyx-kept").returncode == 0
    assert nyxd.host("nft", "flush", "set", "ip", "nyx", "net_bridges").returncode == 0
    nyxd.start()
    br = _bridge(nyxd, "nyx-kept")
    assert br is not None and br["mtu"] == 1450
    assert _addresses(nyxd, "nyx-kept") == ["10.89.33.1/24"]
    assert "nyx-kept" in nyxd.nyx_elements()["net_bridges"]
    r = nyxd.nyx(
        "run", "--rm", "--network", "kept", "busybox:nyx", "cat", "/sys/class/net/eth0/mtu"
    )
    assert r.returncode == 0 and r.stdout.splitlines()[-1] == "1450", r.stderr
    assert nyxd.nyx("network", "rm", "kept").returncode == 0
