from __future__ import annotations

import ipaddress

import pytest
from pydantic import ValidationError

from nyx_core import ConfigError, IpamError, PortMapping, SetupOptions, SetupResult, allocate


@pytest.mark.parametrize(
    ("spec", "host_ip", "host", "ctr", "proto", "rng"),
    [
        ("8080:80", None, 8080, 80, "tcp", 1),
        ("127.0.0.1:8080:80/udp", "127.0.0.1", 8080, 80, "udp", 1),
        ("8000-8005:8000-8005", None, 8000, 8000, "tcp", 6),
        ("9000-9001:80-81/UDP", None, 9000, 80, "udp", 2),
        ("[::1]:8443:443", "::1", 8443, 443, "tcp", 1),
        (":53:53/udp", None, 53, 53, "udp", 1),
        ("0.0.0.0:1:65535", "0.0.0.0", 1, 65535, "tcp", 1),
    ],
)
def test_parse_docker_style(
    spec: str, host_ip: str | None, host: int, ctr: int, proto: str, rng: int
) -> None:
    pm = PortMapping.parse(spec)
    assert (str(pm.host_ip) if pm.host_ip else None) == host_ip
    assert (pm.host_port, pm.container_port, pm.protocol, pm.range) == (host, ctr, proto, rng)
    assert PortMapping.parse(str(pm)) == pm


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("80", "host port missing"),
        ("0:80", "host port 0 is outside 1-65535"),
        ("8080:70000", "container port 70000 is outside 1-65535"),
        ("8080:80/sctp", "protocol 'sctp' is not tcp or udp"),
        ("999.1.1.1:8080:80", "host_ip '999.1.1.1' is not an IP address"),
        ("8000-8005:80-81", "differ in length"),
        ("8005-8000:8005-8000", "reversed"),
        ("a:b", "host port 'a' is not a port or range"),
        ("1:2:3:4", "expected [HOST_IP:]HOST_PORT:CONTAINER_PORT"),
        ("", "empty"),
        ("[::1:80:80", "bracketed IPv6"),
    ],
)
def test_parse_errors_name_the_value(spec: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        PortMapping.parse(spec)
    assert fragment in str(info.value)
    assert repr(spec) in str(info.value)


def test_model_validation_rejects_out_of_range() -> None:
    with pytest.raises(ValidationError, match="container_port"):
        PortMapping(host_port=80, container_port=0)
    with pytest.raises(ValidationError, match="goes past 65535"):
        PortMapping(host_port=65535, container_port=80, range=2)
    with pytest.raises(ValidationError, match="protocol"):
        PortMapping(host_port=80, container_port=80, protocol="icmp")  # type: ignore[arg-type]


def test_port_mapping_is_hashable_and_json_round_trips() -> None:
    pm = PortMapping.parse("127.0.0.1:8080:80/udp")
    assert {pm, PortMapping.parse("127.0.0.1:8080:80/udp")} == {pm}
    assert PortMapping.model_validate_json(pm.model_dump_json()) == pm


def test_setup_result_ips() -> None:
    r = SetupResult.model_validate(
        {
            "container_id": "c1",
            "interfaces": [{"name": "eth0", "addresses": ["10.88.0.2/16", "fd00::2/64"]}],
            "gateway": "10.88.0.1",
        }
    )
    assert r.ips == [ipaddress.ip_address("10.88.0.2"), ipaddress.ip_address("fd00::2")]


def test_setup_options_static_ip6_next_to_static_ip() -> None:
    opts = SetupOptions(static_ip="10.231.0.9", static_ip6="fd00:231::9")
    assert opts.static_ip6 == ipaddress.IPv6Address("fd00:231::9")
    assert (str(opts.static_v4), str(opts.static_v6)) == ("10.231.0.9", "fd00:231::9")
    assert opts.static_v6_field == "static_ip6"
    assert SetupOptions.model_validate_json(opts.model_dump_json()) == opts
    # the older spelling: an IPv6 static_ip still asks for the IPv6 address
    old = SetupOptions(static_ip="fd00:231::7")
    assert (old.static_v4, str(old.static_v6), old.static_v6_field) == (
        None,
        "fd00:231::7",
        "static_ip",
    )
    assert SetupOptions().static_v4 is None and SetupOptions().static_v6 is None


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        ({"static_ip6": "10.231.0.9"}, "static_ip6 '10.231.0.9' is an IPv4 address, not IPv6"),
        ({"static_ip6": "fd00::zz"}, "static_ip6 'fd00::zz' is not an IPv6 address"),
        ({"static_ip6": 5}, "static_ip6 '5' is not an IPv6 address"),
        (
            {"static_ip": "fd00::1", "static_ip6": "fd00::2"},
            "static_ip fd00::1 and static_ip6 fd00::2 both ask for an IPv6 address",
        ),
        (
            {"static_ip": "fd00::1", "static_ip6": "fd00::1"},
            "static_ip fd00::1 and static_ip6 fd00::1 both ask for an IPv6 address",
        ),
    ],
)
def test_setup_options_static_ip6_is_refused_naming_field_and_value(
    kw: dict[str, object], fragment: str
) -> None:
    with pytest.raises(ValidationError, match=fragment):
        SetupOptions.model_validate(kw)


def test_allocate_names_the_field_of_a_refused_static_address() -> None:
    subnet = ipaddress.IPv6Network("fd00:231::/64")
    gw = ipaddress.IPv6Address("fd00:231::1")
    with pytest.raises(IpamError, match="static_ip6 fd00:231::1 is the gateway"):
        allocate(subnet, gw, [], gw, field="static_ip6")
    with pytest.raises(IpamError, match="static_ip fd00:231::5 is already leased"):
        allocate(subnet, gw, ["fd00:231::5"], ipaddress.IPv6Address("fd00:231::5"))
