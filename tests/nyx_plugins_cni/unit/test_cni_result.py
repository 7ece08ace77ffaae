"""Converting CNI results (0.3.x - 1.1.0) to SetupResult; request configurations."""

from __future__ import annotations

import ipaddress

import pytest

from nyx_core import BackendError, PortMapping, SetupResult
from nyx_plugins_cni._result import port_mappings, request_config, to_setup_result


def _convert(result: dict[str, object]) -> SetupResult:
    return to_setup_result(
        result, container_id="c", network="nyx", netns="/run/netns/c", ifname="eth0"
    )


def test_only_sandbox_interfaces_with_their_addresses() -> None:
    r = _convert(
        {
            "cniVersion": "0.4.0",
            "interfaces": [
                {"name": "nyx0", "mac": "aa:aa:aa:aa:aa:aa"},
                {"name": "veth1", "mac": "bb:bb:bb:bb:bb:bb"},
                {"name": "eth0", "mac": "cc:cc:cc:cc:cc:cc", "sandbox": "/run/netns/c"},
            ],
            "ips": [
                {"version": "4", "address": "10.88.0.1/16", "interface": 0},  # host side
                {"version": "4", "address": "10.88.0.7/16", "gateway": "10.88.0.1", "interface": 2},
                {"version": "6", "address": "fd00::7/64", "gateway": "fd00::1", "interface": 2},
            ],
        }
    )
    assert [(i.name, i.mac) for i in r.interfaces] == [("eth0", "cc:cc:cc:cc:cc:cc")]
    assert [str(a) for a in r.interfaces[0].addresses] == ["10.88.0.7/16", "fd00::7/64"]
    assert r.gateway == ipaddress.ip_address("10.88.0.1")  # IPv4 first
    assert [str(ip) for ip in r.ips] == ["10.88.0.7", "fd00::7"]


def test_ips_without_interface_go_to_ifname() -> None:
    r = _convert({"cniVersion": "1.0.0", "ips": [{"address": "fd00::9/64", "gateway": "fd00::1"}]})
    assert [i.name for i in r.interfaces] == ["eth0"]
    assert r.gateway == ipaddress.ip_address("fd00::1")
    assert r.dns_server is None and r.dns_search == []


def test_dns_domain_is_the_search_list_when_search_is_missing() -> None:
    r = _convert(
        {"cniVersion": "1.0.0", "dns": {"nameservers": ["bad", "10.1.0.1"], "domain": "x"}}
    )
    assert str(r.dns_server) == "10.1.0.1" and r.dns_search == ["x"]


@pytest.mark.parametrize(
    ("result", "message"),
    [
        ({"interfaces": "eth0"}, "interfaces is not a list"),
        ({"ips": ["10.0.0.1/8"]}, r"ips\[0\] is not an object"),
        ({"ips": [{"address": "10.0.0.1"}, {"address": "x/8"}]}, r"ips\[1\]\.address 'x/8'"),
        ({"ips": [{"address": "10.0.0.1/8", "gateway": "gw"}]}, r"ips\[0\]\.gateway 'gw'"),
    ],
)
def test_bad_results_are_backend_errors(result: dict[str, object], message: str) -> None:
    with pytest.raises(BackendError, match=message):
        _convert(result)


def test_request_config_injects_and_strips_per_spec() -> None:
    plugin = {"type": "p", "capabilities": {"portMappings": True, "mac": False}, "k": [1]}
    conf = request_config(
        plugin,
        name="nyx",
        cni_version="1.0.0",
        prev_result={"cniVersion": "1.0.0"},
        capability_args={"portMappings": [1], "mac": "m", "dns": {}},
    )
    assert conf == {
        "type": "p",
        "k": [1],
        "cniVersion": "1.0.0",
        "name": "nyx",
        "prevResult": {"cniVersion": "1.0.0"},
        "runtimeConfig": {"portMappings": [1]},
    }
    assert "capabilities" in plugin  # the loaded configuration is not modified
    bare = request_config({"type": "p"}, name="nyx", cni_version="1.0.0", capability_args={"x": 1})
    assert "runtimeConfig" not in bare and "prevResult" not in bare


def test_port_mappings_expand_ranges_and_keep_host_ip() -> None:
    assert port_mappings([PortMapping.parse("[::1]:53-54:5353-5354/udp")]) == [
        {"hostPort": 53, "containerPort": 5353, "protocol": "udp", "hostIP": "::1"},
        {"hostPort": 54, "containerPort": 5354, "protocol": "udp", "hostIP": "::1"},
    ]
