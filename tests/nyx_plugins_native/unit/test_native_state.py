"""The native driver's state on nyx_core's LeaseStore, its network options and gc's element
filter, without root."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from nyx_core import ConfigError, PortConflictError, PortMapping, port_ranges
from nyx_plugins_native import lease_store
from nyx_plugins_native._driver import _publishing
from nyx_plugins_native._firewall import PortElement, stale_elements
from nyx_plugins_native._network import Network, owner, parse_options
from nyx_plugins_native._ports import check_conflicts, overlapping


def _old_layout(state_dir: Path) -> None:
    """What the driver's own StateStore (nyx 0.1 to issue 11) left on disk."""
    d = state_dir / "native"
    (d / "attachments").mkdir(parents=True)
    (d / "networks.json").write_text(
        json.dumps(
            {"networks": {"nyx": {"bridge": "nyx0", "gateway": "10.88.0.1/16", "default": True}}}
        )
    )
    rec = {
        "container": "c1",
        "network": "nyx",
        "ip": "10.88.0.2",
        "veth": "nv0123456789ab",
        "interface": "eth0",
        "mac": "02:00:00:00:00:01",
        "internal": False,
        "ports": [[None, "tcp", 8080, "10.88.0.2", 80]],
        "netns": "/run/nyx/netns/c1",
    }
    (d / "attachments" / "c1@nyx.json").write_text(json.dumps(rec))
    (d / "state.lock").write_text(json.dumps({"g": 7, "c": {"nyx": "10.88.0.2"}}))


def test_an_upgraded_nyxd_keeps_the_previous_leases(tmp_path: Path) -> None:
    _old_layout(tmp_path)
    store = lease_store(tmp_path)
    leases = store.leases()
    assert list(leases) == ["c1/nyx"]
    assert owner(leases["c1/nyx"]) == "c1" and leases["c1/nyx"]["ip"] == "10.88.0.2"
    with store.locked(write=False) as st:
        net = Network.from_record("nyx", st.meta["nyx"])
        assert st.cursor == {"nyx": "10.88.0.2"}
    # an old record reads as a network without options, labels, MTU
    assert (net.bridge, str(net.gateway), net.default, net.mtu) == (
        "nyx0",
        "10.88.0.1/16",
        True,
        None,
    )
    ip = store.lease("c2", "nyx", net.subnet, net.gateway.ip)
    assert str(ip) == "10.88.0.3"  # not c1's, after the cursor
    # the new lease is one more file in the same place; the old one is untouched
    names = sorted(p.name for p in (tmp_path / "native" / "attachments").iterdir())
    assert names == ["c1@nyx.json", "c2@nyx.json"]
    assert store.release("c1") == ["10.88.0.2"]
    assert list(lease_store(tmp_path).leases()) == ["c2/nyx"]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, (None, None)),
        ({"mtu": "1400"}, (None, 1400)),
        ({"com.docker.network.driver.mtu": "9000"}, (None, 9000)),
        ({"bridge": "br-x"}, ("br-x", None)),
        ({"com.docker.network.bridge.name": "br-y", "mtu": "1280"}, ("br-y", 1280)),
        ({"mtu": "1400", "com.docker.network.driver.mtu": "1400"}, (None, 1400)),
    ],
)
def test_options_honoured(options: dict[str, str], expected: tuple[object, object]) -> None:
    assert parse_options("network 'n'", options) == expected


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"vlan": "3"}, "network 'n': unknown driver option(s) vlan"),
        ({"mtu": "big"}, "network 'n': mtu 'big' is not a number in 68-65535"),
        ({"mtu": "67"}, "network 'n': mtu '67' is not a number"),
        ({"bridge": "a-name-much-too-long"}, "bridge name 'a-name-much-too-long' is not a valid"),
        ({"bridge": "-x"}, "bridge name '-x' is not a valid"),
        ({"mtu": "1400", "com.docker.network.driver.mtu": "1500"}, "disagree"),
    ],
)
def test_options_refused_naming_them(options: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_options("network 'n'", options)
    assert message in str(exc.value)


def test_the_default_networks_bridge_is_not_an_option() -> None:
    with pytest.raises(ConfigError, match=r"unknown driver option\(s\) bridge"):
        parse_options("nyxd --driver-opt", {"bridge": "x"}, bridge=False)
    assert parse_options("nyxd --driver-opt", {"mtu": "1400"}, bridge=False) == (None, 1400)


def test_stale_elements_are_those_of_our_subnets_without_a_lease() -> None:
    listed = {
        "ports_any": [
            [{"concat": ["tcp", 8080]}, {"concat": ["10.231.0.2", 80]}],  # leased
            [{"concat": ["tcp", 8081]}, {"concat": ["10.231.0.9", 80]}],  # leaked
            [{"concat": ["udp", 53]}, {"concat": ["192.0.2.9", 53]}],  # not our subnet
        ],
        "ports_ip": [[{"concat": ["127.0.0.1", "tcp", 8082]}, {"concat": ["10.232.1.5", 80]}]],
        "internal": ["10.231.0.2", "10.231.0.7", "192.0.2.1"],
    }
    subnets = [ipaddress.IPv4Network("10.231.0.0/24"), ipaddress.IPv4Network("10.232.1.0/24")]
    cmds = stale_elements(listed, {"10.231.0.2"}, subnets)
    got = {c["delete"]["element"]["name"]: c["delete"]["element"]["elem"] for c in cmds}
    assert got == {
        "ports_any": [{"concat": ["tcp", 8081]}],
        "ports_ip": [{"concat": ["127.0.0.1", "tcp", 8082]}],
        "internal": ["10.231.0.7"],
    }
    assert (
        stale_elements(listed, {"10.231.0.2", "10.231.0.9", "10.232.1.5", "10.231.0.7"}, subnets)
        == []
    )


def test_port_conflicts_are_looked_up_in_the_lease_index(tmp_path: Path) -> None:
    """A setup's conflict check reads only the leases publishing one of its ports (found
    by the store's port index), or every lease when its ranges hold more ports than there
    are leases; both find the same clash."""
    store = lease_store(tmp_path)
    net = ipaddress.IPv4Network("10.88.0.0/16")
    gw = ipaddress.IPv4Address("10.88.0.1")
    published = {
        "a": [[None, "tcp", 8080, "10.88.0.2", 80], ["::", "tcp", 8080, "fd00::2", 80]],
        "b": [["127.0.0.1", "tcp", p, "10.88.0.3", p] for p in (9000, 9001, 9002)],
        "c": [[None, "udp", 8080, "10.88.0.4", 53]],
    }
    for name, ports in published.items():
        store.lease(name, "nyx", net, gw, ports=ports)
    for i in range(10):
        store.lease(f"quiet{i}", "nyx", net, gw, ports=[])

    def owners(mappings: list[PortMapping]) -> list[str]:
        with store.locked(write=False) as st:
            return sorted(owner(r) for r in _publishing(st, port_ranges(mappings)))

    tcp = PortMapping(host_port=8080, container_port=80)
    assert owners([tcp]) == ["a"]
    assert owners([PortMapping(host_port=8080, container_port=80, protocol="udp")]) == ["c"]
    assert owners([PortMapping(host_port=8999, container_port=1, range=2)]) == ["b"]
    assert owners([PortMapping(host_port=7000, container_port=7000)]) == []
    everything = [PortMapping(host_port=8000, container_port=1, range=1100)]
    assert len(owners(everything)) == 13  # more ports than leases: all of them
    for mappings in ([tcp], everything):
        ranges = port_ranges(mappings)
        with store.locked(write=False) as st:
            near = overlapping(ranges)
            found = [
                (owner(a), PortElement(*p))
                for a in _publishing(st, ranges)
                for p in a.get("ports", ())
                if near(p[1], p[2])
            ]
        with pytest.raises(PortConflictError, match="already published by container 'a'"):
            check_conflicts(ranges, found)
    store.release("a")
    assert owners([tcp]) == []
