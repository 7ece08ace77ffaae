"""Dual stack in the daemon (issue 13): settings, IPv6 networks (pool, refusals, the
driver's word, restarts), the API, the CLI, compose and the container's /etc/hosts.

Fakes only at nyx's own boundary: the fake driver of test_supervisor, a fake host view."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest
import test_supervisor as ts
import yaml
from click.testing import CliRunner
from test_supervisor import Calls, make_sup, spec

from nyx_cli.client._cli import cli
from nyx_cli.client._http import ApiError, Client
from nyx_cli.compose._project import load_compose
from nyx_cli.daemon._networks import USER_NETWORK_POOL6, NetworkRegistry
from nyx_cli.daemon._settings import DaemonSettings
from nyx_cli.daemon._state import StateStore
from nyx_cli.errors import ConflictError
from nyx_core import (
    BackendCapabilities,
    ConfigError,
    HostView,
    InterfaceResult,
    NetworkBackend,
    NetworkSpec,
    NyxSettings,
    SetupOptions,
    SetupResult,
    hookimpl,
    load_settings,
    make_plugin_manager,
)
from nyx_core._hostnet import HostAddress, HostRoute

N6 = ipaddress.IPv6Network

calls, parts, sup = ts.calls, ts.parts, ts.sup


class Caps:
    def __init__(self, ipv6: bool) -> None:
        self.caps = BackendCapabilities(
            publishes_ports=True, multiple_networks=True, network_lifecycle=True, ipv6=ipv6
        )

    @hookimpl
    def nyx_backend_capabilities(self) -> BackendCapabilities:
        return self.caps


def _registry(
    tmp_path: Path,
    *,
    view: HostView | None = None,
    ipv6: bool = True,
    subnet6: str | None = None,
) -> tuple[NetworkRegistry, StateStore, Calls]:
    settings = NyxSettings(
        state_dir=tmp_path / "state",
        container_subnet="10.231.0.0/24",
        gateway_ip="10.231.0.1",
        container_subnet6=subnet6,  # type: ignore[arg-type]
    )
    store = StateStore(settings.state_dir)
    calls = Calls()
    pm = make_plugin_manager()
    pm.register(ts.FakeBackend(calls))
    pm.register(Caps(ipv6))
    backend = NetworkBackend(pm, "fake")
    reg = NetworkRegistry(settings, store, backend, host_view=lambda: view or HostView())
    return reg, store, calls


def _creates(calls: Calls) -> list[NetworkSpec]:
    return [c[1] for c in calls if c[0] == "net_create"]


# ------------------------------------------------------------------ settings


def test_settings_subnet6_from_env_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NYXD_CONTAINER_SUBNET6", raising=False)
    monkeypatch.delenv("NYXD_GATEWAY_IP6", raising=False)
    s = load_settings(DaemonSettings)
    assert s.container_subnet6 is None and s.gateway6 is None and s.gateway_interface6 is None
    monkeypatch.setenv("NYXD_CONTAINER_SUBNET6", "fd6e:7978::/64")
    s = load_settings(DaemonSettings)
    assert str(s.gateway_interface6) == "fd6e:7978::1/64"
    s = load_settings(DaemonSettings, gateway_ip6="fd6e:7978::fe")
    assert str(s.gateway_interface6) == "fd6e:7978::fe/64"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"container_subnet6": "fd00::/80"}, "container_subnet6 fd00::/80 is too small"),
        ({"container_subnet6": "10.0.0.0/8"}, "container_subnet6 (NYXD_CONTAINER_SUBNET6)"),
        (
            {"container_subnet6": "fd00::/64", "gateway_ip6": "fd01::1"},
            "gateway_ip6 fd01::1 is not inside container_subnet6 fd00::/64",
        ),
        ({"gateway_ip6": "fd00::1"}, "gateway_ip6 fd00::1 is set but container_subnet6 is not"),
        (
            {"container_subnet6": "fd00::/64", "gateway_ip6": "fd00::"},
            "subnet-router anycast",
        ),
    ],
)
def test_bad_settings6_are_refused_naming_them(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(DaemonSettings, **overrides)
    assert message in str(info.value)


# ------------------------------------------------------------------ networks


def test_ipv6_networks_get_free_ula_64s_from_the_pool(tmp_path: Path) -> None:
    """The pool's first /64 is the default network's, its second is a host route: the
    first dual-stack network gets the third, the next one the fourth."""
    view = HostView(routes=(HostRoute(N6("fd6e:7978:1:1::/64"), "wg0"),))
    reg, store, calls = _registry(tmp_path, view=view, subnet6="fd6e:7978:1::/64")
    a = reg.create("a", ipv6=True)
    assert (a["subnet6"], a["gateway6"]) == ("fd6e:7978:1:2::/64", "fd6e:7978:1:2::1/64")
    (asked,) = _creates(calls)
    assert asked.subnet6 == N6("fd6e:7978:1:2::/64") and asked.gateway6 is None
    assert str(asked.gateway_interface6) == "fd6e:7978:1:2::1/64"
    assert reg.create("b", ipv6=True)["subnet6"] == "fd6e:7978:1:3::/64"
    v4only = reg.create("c")
    assert v4only["subnet6"] is None and v4only["gateway6"] is None
    assert store.load_networks()["a"].subnet6 == "fd6e:7978:1:2::/64"
    assert N6(a["subnet6"]).subnet_of(USER_NETWORK_POOL6)


def test_a_given_subnet6_and_gateway6_reach_the_driver_and_come_back_after_a_restart(
    tmp_path: Path,
) -> None:
    reg, _store, calls = _registry(tmp_path)
    got = reg.create("a", subnet="10.89.5.0/24", subnet6="fd00:5::/56", gateway6="fd00:5::fe")
    assert (got["subnet6"], got["gateway6"]) == ("fd00:5::/56", "fd00:5::fe/56")
    (asked,) = _creates(calls)
    assert (asked.subnet6, asked.gateway6) == (
        N6("fd00:5::/56"),
        ipaddress.ip_address("fd00:5::fe"),
    )
    again, _store, calls = _registry(tmp_path)  # a new nyxd, same state dir
    assert again.bring_up() == {}
    default, recorded = _creates(calls)
    assert default.default and default.subnet6 is None
    assert (recorded.name, recorded.subnet6, recorded.gateway6) == (
        "a",
        N6("fd00:5::/56"),
        ipaddress.ip_address("fd00:5::fe"),
    )
    assert again.get("a")["gateway6"] == "fd00:5::fe/56"


def test_the_default_network_is_dual_stack_from_the_settings(tmp_path: Path) -> None:
    reg, _store, calls = _registry(tmp_path, subnet6="fd6e:7978::/64")
    reg.bring_up()
    (default,) = _creates(calls)
    assert default.default and default.subnet6 == N6("fd6e:7978::/64")
    assert default.gateway6 == ipaddress.ip_address("fd6e:7978::1")
    listed = reg.get("nyx")
    assert (listed["subnet6"], listed["gateway6"]) == ("fd6e:7978::/64", "fd6e:7978::1/64")


@pytest.mark.parametrize(
    ("kw", "error", "message"),
    [
        ({"subnet6": "nope"}, ConfigError, "subnet6 'nope' is not an IPv6 subnet"),
        ({"subnet6": "10.1.0.0/24"}, ConfigError, "is not an IPv6 subnet"),
        ({"subnet6": "fd00:9::/96"}, ConfigError, "subnet6 fd00:9::/96 is too small"),
        ({"subnet6": "fd6e:7978::/48"}, ConflictError, "overlaps fd6e:7978::/64"),
        ({"subnet6": "fd00:1:0:1::/64"}, ConflictError, "overlaps fd00:1::/48"),
        ({"subnet6": "2001:db8:13::/64"}, ConfigError, "contains host address 2001:db8:13::2"),
        ({"subnet6": "2001:db8:99::/56"}, ConfigError, "overlaps the host route 2001:db8:99::/64"),
        ({"subnet6": "fe80::/64"}, ConfigError, "overlaps fe80::/10 (link-local)"),
        ({"gateway6": "fd00:9::1"}, ConfigError, "gateway6 'fd00:9::1' needs its subnet6"),
        (
            {"subnet6": "fd00:9::/64", "gateway6": "fd00:8::1"},
            ConfigError,
            "gateway6 fd00:8::1 is not a host address of subnet6 fd00:9::/64",
        ),
        (
            {"subnet6": "fd00:9::/64", "gateway6": "fd00:9::"},
            ConfigError,
            "gateway6 fd00:9:: is not a host address",
        ),
        ({"subnet6": "fd00:9::/64", "gateway6": "x"}, ConfigError, "not an IPv6 address"),
    ],
)
def test_bad_ipv6_requests_are_refused_before_the_driver_is_asked(
    tmp_path: Path, kw: dict[str, str], error: type[Exception], message: str
) -> None:
    view = HostView(
        routes=(HostRoute(N6("2001:db8:99::/64"), "wg0"),),
        addresses=(HostAddress(N6("2001:db8:13::2/128"), "eth0"),),
    )
    reg, store, calls = _registry(tmp_path, view=view, subnet6="fd6e:7978::/64")
    reg.create("one", subnet6="fd00:1::/48")
    before, asked = store.load_networks(), len(_creates(calls))
    with pytest.raises(error) as info:
        reg.create("evil", **kw)  # type: ignore[arg-type]
    assert message in str(info.value)
    assert store.load_networks() == before and len(_creates(calls)) == asked


def test_an_ipv4_only_driver_refuses_and_nothing_is_recorded(tmp_path: Path) -> None:
    reg, store, calls = _registry(tmp_path, ipv6=False)
    with pytest.raises(ConfigError, match=r"net driver 'fake' is IPv4-only"):
        reg.create("a", ipv6=True)
    assert store.load_networks() == {} and _creates(calls) == []
    reg.create("b")  # IPv4 still works


# ------------------------------------------------------------------ containers


class DualBackend(ts.FakeBackend):
    @hookimpl
    def nyx_backend_setup(
        self, container_id: str, netns_path: str, ports: Any, opts: SetupOptions
    ) -> Any:
        self.n += 1
        self.calls.append(("setup", container_id, netns_path, list(ports), opts))
        addrs = [
            ipaddress.ip_interface(f"10.231.0.{self.n}/24"),
            ipaddress.ip_interface(f"fd6e:7978::{self.n}/64"),
        ]
        return SetupResult(
            container_id=container_id,
            network=opts.network,
            interfaces=[InterfaceResult(name=opts.interface, addresses=addrs)],
            gateway=ipaddress.ip_address("10.231.0.1"),
        )


def test_a_dual_stack_container_shows_both_addresses_and_hosts_names_both(
    tmp_path: Path, parts: dict[str, Any], calls: Calls
) -> None:
    parts["backend"] = DualBackend(calls)
    s = make_sup(tmp_path, parts, calls)
    c = s.create(spec(name="web", hostname="web"))
    assert c["ips"] == ["10.231.0.2", "fd6e:7978::2"]
    register = next(x for x in calls if x[0] == "register")
    assert [str(ip) for ip in register[3]] == ["10.231.0.2", "fd6e:7978::2"]
    hosts = (tmp_path / "run" / "containers" / c["id"] / "hosts").read_text().splitlines()
    assert "10.231.0.2\tweb" in hosts and "fd6e:7978::2\tweb" in hosts
    assert s.get(c["id"])["ips"] == ["10.231.0.2", "fd6e:7978::2"]


# ------------------------------------------------------------------ API, CLI, compose


def test_api_create_passes_ipv6_and_refuses_loose_types(api: Path, fake_sup: Any) -> None:
    c = Client(api)
    body = {"name": "front", "ipv6": True, "subnet6": "fd00:7::/64", "gateway6": "fd00:7::1"}
    c.request("POST", "/v1/networks", body=body)
    assert fake_sup.network_calls[-1] == ("create6", "front", True, "fd00:7::/64", "fd00:7::1")
    for bad in ({"name": "x", "ipv6": "yes"}, {"name": "x", "subnet6": 64}):
        with pytest.raises(ApiError) as info:
            c.request("POST", "/v1/networks", body=bad)
        assert info.value.status == 400
    assert [x[1] for x in fake_sup.network_calls] == ["front", "front"]


def test_cli_network_create_ipv6(api: Path, fake_sup: Any) -> None:
    def nyx(*args: str) -> Any:
        return CliRunner().invoke(cli, ["--socket", str(api), *args])

    r = nyx("network", "create", "--ipv6", "a")
    assert r.exit_code == 0, r.output
    r = nyx("network", "create", "--subnet6", "fd00:7::/64", "--gateway6", "fd00:7::fe", "b")
    assert r.exit_code == 0, r.output
    assert [c for c in fake_sup.network_calls if c[0] == "create6"] == [
        ("create6", "a", True, None, None),
        ("create6", "b", True, "fd00:7::/64", "fd00:7::fe"),
    ]
    assert "--subnet6" in nyx("network", "create", "--help").output


COMPOSE = """
services:
  web: {image: busybox, networks: [front, back]}
networks:
  front:
    enable_ipv6: true
    ipam:
      config:
        - subnet: 10.89.40.0/24
        - subnet: fd00:40::/64
          gateway: fd00:40::fe
  back:
    enable_ipv6: true
"""


def _compose(tmp_path: Path, text: str) -> Any:
    return load_compose(yaml.safe_load(text), project_name="st", environ={})


def test_compose_enable_ipv6_and_ipam_subnets_of_both_families(tmp_path: Path) -> None:
    project = _compose(tmp_path, COMPOSE)
    front, back = project.networks["front"].request(), project.networks["back"].request()
    assert front == {
        "name": "st_front",
        "internal": False,
        "subnet": "10.89.40.0/24",
        "ipv6": True,
        "subnet6": "fd00:40::/64",
        "gateway6": "fd00:40::fe",
    }
    assert back == {"name": "st_back", "internal": False, "ipv6": True}
    assert json.dumps(front)  # a plain JSON body


@pytest.mark.parametrize(
    ("networks", "message"),
    [
        (
            "n: {ipam: {config: [{subnet: 'fd00::/64'}]}}",
            "networks.n.ipam.config: an IPv6 subnet needs enable_ipv6: true",
        ),
        (
            "n: {enable_ipv6: true, ipam: {config: [{subnet: 'fd0::/64'}, {subnet: 'fd1::/64'}]}}",
            "networks.n.ipam.config: one IPv6 subnet per network is supported",
        ),
        ("n: {enable_ipv6: maybe}", "networks.n.enable_ipv6"),
    ],
)
def test_compose_ipv6_refusals(tmp_path: Path, networks: str, message: str) -> None:
    doc = f"services: {{a: {{image: x, networks: [n]}}}}\nnetworks: {{{networks}}}\n"
    with pytest.raises(ConfigError) as info:
        _compose(tmp_path, doc)
    assert message in str(info.value)
