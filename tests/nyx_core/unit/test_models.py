from __future__ import annotations

import ipaddress

import pytest
from pydantic import ValidationError

from nyx_core import ConfigError, PortMapping, SetupResult


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
