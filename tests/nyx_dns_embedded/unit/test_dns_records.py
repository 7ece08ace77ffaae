"""The record store: validation, replacement, scoping, internal networks."""

from __future__ import annotations

import ipaddress

import pytest

from nyx_core import DnsError
from nyx_dns_embedded._records import Registry, to_wire


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


@pytest.fixture
def reg() -> Registry:
    r = Registry()
    r.configure(local_clients={"10.231.0.1"}, default_network="nyx")
    return r


def names_of(reg: Registry, client: str) -> dict[str, tuple[str, ...]]:
    scope = reg.snapshot().scope_for(client)
    return {rec.name: rec.v4 + rec.v6 for rec in scope.names.values()}


def test_to_wire_lowercases_and_ends_with_root() -> None:
    assert to_wire("Web.NYXD.local.") == b"\x03web\x04nyxd\x05local\x00"
    assert to_wire("") == b"\x00"


def test_hostname_and_aliases_with_and_without_domain(reg: Registry) -> None:
    reg.register("c1", "Web", [ip("10.231.0.2")], ["www", "Front.end"], ["n1"])
    seen = names_of(reg, "10.231.0.2")
    assert seen == {
        "web": ("10.231.0.2",),
        "web.nyxd.local": ("10.231.0.2",),
        "www": ("10.231.0.2",),
        "www.nyxd.local": ("10.231.0.2",),
        "front.end": ("10.231.0.2",),
        "front.end.nyxd.local": ("10.231.0.2",),
    }


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("hostname", {"hostname": "bad name"}),
        ("hostname", {"hostname": ""}),
        ("hostname", {"hostname": "a..b"}),
        ("hostname", {"hostname": "caf\u00e9"}),
        ("hostname", {"hostname": "a" * 64}),
        ("hostname", {"hostname": "nyxd.local"}),
        ("alias", {"aliases": ["ok", "no/slash"]}),
        ("ips", {"ips": ["10.0.0.300"]}),
        ("container_id", {"container_id": "../x"}),
        ("container_id", {"container_id": "abc\n"}),
        ("network", {"networks": ["bad net"]}),
    ],
)
def test_bad_input_is_a_dns_error_naming_field_and_value(
    reg: Registry, field: str, kwargs: dict[str, object]
) -> None:
    args: dict[str, object] = {
        "container_id": "c1",
        "hostname": "web",
        "ips": ["10.231.0.2"],
        "aliases": [],
        "networks": ["n1"],
    }
    args.update(kwargs)
    with pytest.raises(DnsError) as err:
        reg.register(**args)  # type: ignore[arg-type]
    assert field in str(err.value)
    bad = next(iter(kwargs.values()))
    shown = bad[-1] if isinstance(bad, list) else bad
    assert repr(shown) in str(err.value)
    assert reg.containers() == []


def test_lenient_names_and_domain_suffix(reg: Registry) -> None:
    reg.register("c1", "Web.NYXD.local.", [ip("10.231.0.2")], ["x-", "_svc", "a" * 63], ["n1"])
    seen = names_of(reg, "10.231.0.2")
    assert {"web", "web.nyxd.local", "x-", "_svc", "a" * 63} <= set(seen)
    assert "web.nyxd.local.nyxd.local" not in seen


def test_reregistration_replaces_records(reg: Registry) -> None:
    reg.register("c1", "web", [ip("10.231.0.2")], ["old"], ["n1"])
    reg.register("c1", "web2", [ip("10.231.0.3")], [], ["n1"])
    seen = names_of(reg, "10.231.0.3")
    assert "web" not in seen and "old" not in seen
    assert seen["web2"] == ("10.231.0.3",)
    assert "10.231.0.2" not in reg.snapshot().clients


def test_same_hostname_latest_registration_wins(reg: Registry) -> None:
    reg.register("old", "web", [ip("10.231.0.2")], [], ["n1"])
    reg.register("new", "web", [ip("10.231.0.3")], [], ["n1"])
    assert names_of(reg, "10.231.0.1")["web"] == ("10.231.0.3",)
    reg.deregister("old")
    assert names_of(reg, "10.231.0.1")["web"] == ("10.231.0.3",)
    reg.deregister("new")
    assert "web" not in names_of(reg, "10.231.0.1")


def test_shared_alias_resolves_to_every_holder(reg: Registry) -> None:
    reg.register("a", "web-1", [ip("10.231.0.2")], ["web"], ["n1"])
    reg.register("b", "web-2", [ip("10.231.0.3")], ["web"], ["n1"])
    assert names_of(reg, "10.231.0.2")["web"] == ("10.231.0.2", "10.231.0.3")


def test_hostname_beats_alias(reg: Registry) -> None:
    reg.register("a", "web", [ip("10.231.0.2")], [], ["n1"])
    reg.register("b", "other", [ip("10.231.0.3")], ["web"], ["n1"])
    assert names_of(reg, "10.231.0.2")["web"] == ("10.231.0.2",)


def test_scoping_by_shared_network(reg: Registry) -> None:
    reg.register("a", "a", [ip("10.231.0.2")], [], ["n1"])
    reg.register("b", "b", [ip("10.231.0.3")], [], ["n2"])
    reg.register("c", "c", [ip("10.231.0.4")], [], ["n1", "n2"])
    assert set(names_of(reg, "10.231.0.2")) == {"a", "a.nyxd.local", "c", "c.nyxd.local"}
    assert set(names_of(reg, "10.231.0.3")) == {"b", "b.nyxd.local", "c", "c.nyxd.local"}
    assert len(names_of(reg, "10.231.0.4")) == 6
    # the local (host) client sees everything, unknown clients nothing
    assert len(names_of(reg, "10.231.0.1")) == 6
    snap = reg.snapshot()
    assert snap.scope_for("10.231.0.99").known is False
    assert snap.scope_for("10.231.0.99").names == {}


def test_ptrs_are_scoped_too(reg: Registry) -> None:
    reg.register("a", "a", [ip("10.231.0.2")], [], ["n1"])
    reg.register("b", "b", [ip("10.231.0.3"), ip("fd00::3")], [], ["n2"])
    snap = reg.snapshot()
    assert snap.scope_for("10.231.0.2").ptrs == {
        to_wire("2.0.231.10.in-addr.arpa"): "a.nyxd.local."
    }
    ptrs_b = snap.scope_for("10.231.0.3").ptrs
    assert ptrs_b[to_wire(ip("fd00::3").reverse_pointer)] == "b.nyxd.local."
    assert snap.is_ours(ip("10.231.0.2")) and not snap.is_ours(ip("192.0.2.1"))


def test_empty_networks_means_default_network(reg: Registry) -> None:
    reg.register("a", "a", [ip("10.231.0.2")], [], [])
    reg.register("b", "b", [ip("10.231.0.3")], [], ["nyx"])
    assert "b" in names_of(reg, "10.231.0.2")


def test_internal_networks_get_no_forwarding(reg: Registry) -> None:
    reg.register("a", "a", [ip("10.231.0.2")], [], ["backend"])
    reg.register("b", "b", [ip("10.231.0.3")], [], ["backend", "frontend"])
    assert reg.snapshot().scope_for("10.231.0.2").forward is True
    reg.set_network_internal("backend", True)
    snap = reg.snapshot()
    assert snap.scope_for("10.231.0.2").forward is False
    assert snap.scope_for("10.231.0.3").forward is True  # also on a non-internal network
    assert snap.scope_for("10.231.0.1").forward is True
    reg.set_network_internal("backend", False)
    assert reg.snapshot().scope_for("10.231.0.2").forward is True
    with pytest.raises(DnsError, match="bad name"):
        reg.set_network_internal("bad name", True)


@pytest.mark.parametrize("internal_first", [True, False])
def test_internal_per_registration_leaves_the_network_alone(
    reg: Registry, internal_first: bool
) -> None:
    """One container internal on "nyx" must not stop forwarding for the others there."""
    regs = [
        ("a", "a", [ip("10.231.0.2")], [], ["nyx"], ["nyx"]),
        ("b", "b", [ip("10.231.0.3")], [], ["nyx"], []),
    ]
    for args in regs if internal_first else regs[::-1]:
        reg.register(*args)  # type: ignore[arg-type]
    snap = reg.snapshot()
    assert snap.scope_for("10.231.0.2").forward is False
    assert snap.scope_for("10.231.0.3").forward is True
    assert snap.scope_for("10.231.0.1").forward is True
    assert names_of(reg, "10.231.0.2") == names_of(reg, "10.231.0.3")  # same names
    assert reg.internal_networks() == frozenset()
    a = reg.get("a")
    b = reg.get("b")
    assert a is not None and b is not None
    assert reg.internal_only(a) and not reg.internal_only(b)


def test_internal_networks_of_a_registration(reg: Registry) -> None:
    # on two networks, internal on one: still forwarded
    reg.register("a", "a", [ip("10.231.0.2")], [], ["back", "front"], ["back"])
    assert reg.snapshot().scope_for("10.231.0.2").forward is True
    # internal on both (one by the registration, one by the network): no forwarding
    reg.set_network_internal("front", True)
    assert reg.snapshot().scope_for("10.231.0.2").forward is False
    # names outside the container's networks are ignored; an empty list means "nyx"
    reg.register("b", "b", [ip("10.231.0.3")], [], ["front2"], ["elsewhere"])
    assert reg.snapshot().scope_for("10.231.0.3").forward is True
    reg.register("c", "c", [ip("10.231.0.4")], [], [], ["nyx"])
    assert reg.snapshot().scope_for("10.231.0.4").forward is False
    with pytest.raises(DnsError, match="internal_networks: network name 'bad name'"):
        reg.register("d", "d", [ip("10.231.0.5")], [], ["x"], ["bad name"])


def test_every_change_bumps_the_generation(reg: Registry) -> None:
    g = reg.generation
    reg.register("a", "a", [ip("10.231.0.2")], [], [])
    assert reg.generation > g
    g = reg.generation
    reg.deregister("a")
    assert reg.generation > g
    g = reg.generation
    reg.deregister("a")  # unknown: ignored, nothing changed
    assert reg.generation == g
