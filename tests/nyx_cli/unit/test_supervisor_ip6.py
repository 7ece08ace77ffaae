"""A static IPv6 address through nyxd (issues 13, 14): ``ipv6_address`` on the default
attachment (``nyx run --ip6``) and on ``networks[]`` (compose), validated before anything
is made: an IPv6 address, inside the network's ``subnet6``, not its gateway, not held by a
running container (409). The fake driver, DNS and host of test_supervisor."""

from __future__ import annotations

import ipaddress

import pytest
import test_supervisor as ts
from pydantic import ValidationError
from test_supervisor import Calls, spec

from nyx_cli.daemon._api import error_status
from nyx_cli.daemon._models import NetworkAttachment
from nyx_cli.daemon._supervisor import Supervisor
from nyx_cli.errors import ConflictError
from nyx_core import ConfigError

calls, parts, sup = ts.calls, ts.parts, ts.sup

SUBNET6 = "fd00:231::/64"


@pytest.fixture
def sup6(sup: Supervisor) -> Supervisor:
    """The fake supervisor with a dual-stack default network and a driver declaring
    ``static_addresses`` and ``ipv6``."""
    sup.backend._caps = sup.backend.capabilities().model_copy(
        update={"static_addresses": True, "ipv6": True}
    )
    sup.settings = sup.settings.model_copy(
        update={"container_subnet6": ipaddress.IPv6Network(SUBNET6)}
    )
    sup.networks.settings = sup.settings
    return sup


def _setups(calls: Calls) -> list[tuple[str | None, str | None]]:
    return [
        (
            None if c[4].static_ip is None else str(c[4].static_ip),
            None if c[4].static_ip6 is None else str(c[4].static_ip6),
        )
        for c in calls
        if c[0] == "setup"
    ]


def test_ipv6_address_reaches_the_driver_as_static_ip6(sup6: Supervisor, calls: Calls) -> None:
    sup6.create_network("back", subnet="10.89.7.0/24", subnet6="fd00:b::/64")
    sup6.create(spec(name="a", ipv4_address="10.231.0.50", ipv6_address="fd00:231:0::50"))
    sup6.create(
        spec(
            name="b",
            networks=[
                NetworkAttachment(name="nyx"),
                NetworkAttachment(name="back", ipv6_address="fd00:b::9"),
            ],
        )
    )
    assert _setups(calls) == [
        ("10.231.0.50", "fd00:231::50"),
        (None, None),
        (None, "fd00:b::9"),
    ]
    assert sup6._find("a").rec.spec.ipv6_address == "fd00:231::50"  # normalised


def test_bad_ipv6_addresses_name_the_field() -> None:
    with pytest.raises(ValidationError, match="ipv6_address '10.231.0.5' is an IPv4 address"):
        spec(ipv6_address="10.231.0.5")
    with pytest.raises(ValidationError, match="ipv6_address 'fd00::zz' is not an IPv6 address"):
        NetworkAttachment(ipv6_address="fd00::zz")
    with pytest.raises(ValidationError, match=r"give it on the network \(networks\[\].ipv6"):
        spec(ipv6_address="fd00:231::5", networks=[NetworkAttachment()])
    with pytest.raises(ValidationError, match="ipv6_address 'fd00:231::5': not with network_mode"):
        spec(ipv6_address="fd00:231::5", network_mode="host")


@pytest.mark.parametrize(
    ("address", "fragment"),
    [
        (
            "fd00:999::5",
            "ipv6_address fd00:999::5 is outside the subnet6 fd00:231::/64 of network 'nyx'",
        ),
        ("fd00:231::1", r"ipv6_address fd00:231::1 is the gateway of network 'nyx'"),
        ("fd00:231::", "ipv6_address fd00:231:: is the subnet-router anycast address"),
    ],
)
def test_an_ipv6_address_the_network_cannot_give_is_refused_before_anything(
    sup6: Supervisor, calls: Calls, address: str, fragment: str
) -> None:
    with pytest.raises(ConfigError, match=fragment) as info:
        sup6.create(spec(name="a", ipv6_address=address))
    assert error_status(info.value) == 400
    assert calls == [] and sup6.list_containers(all=True) == []


def test_an_ipv6_address_on_an_ipv4_only_network_is_refused(sup: Supervisor, calls: Calls) -> None:
    sup.backend._caps = sup.backend.capabilities().model_copy(update={"static_addresses": True})
    with pytest.raises(ConfigError, match="ipv6_address fd00:231::5: network 'nyx' has no IPv6"):
        sup.create(spec(name="a", ipv6_address="fd00:231::5"))
    sup.create_network("only4", subnet="10.89.8.0/24")
    nets = [NetworkAttachment(name="only4", ipv6_address="fd00:231::5")]
    with pytest.raises(ConfigError, match=r"networks\[0\].ipv6_address fd00:231::5: network 'on"):
        sup.create(spec(name="b", networks=nets))
    assert "setup" not in calls.names() and sup.list_containers(all=True) == []


def test_ipv6_address_on_a_driver_that_cannot_is_refused(sup: Supervisor, calls: Calls) -> None:
    with pytest.raises(ConfigError, match=r"ipv6_address 'fd00:231::5': .*static_addresses"):
        sup.create(spec(name="a", ipv6_address="fd00:231::5"))
    assert calls == []


def test_a_taken_ipv6_address_is_a_conflict_and_changes_nothing(
    sup6: Supervisor, calls: Calls
) -> None:
    first = sup6.create(spec(name="a", ipv6_address="fd00:231::50"))
    before = list(calls)
    with pytest.raises(ConflictError, match="ipv6_address fd00:231::50 is already taken") as info:
        sup6.create(spec(name="b", ipv6_address="fd00:231::50"))
    assert "by container 'a'" in str(info.value) and error_status(info.value) == 409
    assert calls == before
    assert [c["name"] for c in sup6.list_containers(all=True)] == ["a"]
    # an address a running container got without asking is taken too
    sup6.live[first["id"]].rec.ips.append("fd00:231::77")
    with pytest.raises(ConflictError, match="fd00:231::77 is already taken"):
        sup6.create(spec(name="c", ipv6_address="fd00:231::77"))
    # a created container holds nothing; it is checked again when it starts
    waiting = sup6.create(spec(name="d", ipv6_address="fd00:231::60"), start=False)
    sup6.create(spec(name="e", ipv6_address="fd00:231::60"))
    with pytest.raises(ConflictError, match="fd00:231::60 is already taken .* container 'e'"):
        sup6.start(waiting["id"])
    assert sup6.get("d")["state"] == "created"
    sup6.remove("e", force=True)
    assert sup6.start(waiting["id"])["state"] == "running"
