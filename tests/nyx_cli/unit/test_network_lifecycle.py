"""Networks have a lifecycle in the driver: nyxd creates them through
``nyx_backend_network_create`` and records only what the driver accepted, removes them through
``nyx_backend_network_remove``, and brings the default and every recorded network up at start.
The fake driver, DNS and host of test_supervisor; the API and CLI with the fake supervisor."""

from __future__ import annotations

import ipaddress
import json
import threading
from pathlib import Path
from typing import Any

import pytest
import test_supervisor as ts
from click.testing import CliRunner
from test_supervisor import Calls, FakeBackend, make_sup, spec

from nyx_cli.client._cli import cli
from nyx_cli.client._http import ApiError, Client
from nyx_cli.daemon._models import NetworkAttachment
from nyx_cli.daemon._networks import NetworkRegistry
from nyx_cli.daemon._state import StateStore
from nyx_cli.daemon._supervisor import Supervisor
from nyx_cli.errors import ConflictError, NotFoundError
from nyx_core import ConfigError, NetworkSpec, TeardownError

calls, parts, sup = ts.calls, ts.parts, ts.sup

N = ipaddress.IPv4Network
A = ipaddress.IPv4Address


def _creates(calls: Calls) -> list[NetworkSpec]:
    return [c[1] for c in calls if c[0] == "net_create"]


def _fake(s: Supervisor) -> FakeBackend:
    (plugin,) = [p for p in s.backend.pm.get_plugins() if isinstance(p, FakeBackend)]
    return plugin


# ------------------------------------------------------------------ create


def test_create_asks_the_driver_and_records_its_answer(sup: Supervisor, calls: Calls) -> None:
    net = sup.create_network(
        "front",
        subnet="10.89.7.0/24",
        gateway="10.89.7.254",
        options={"mtu": "1400"},
        labels={"team": "web"},
    )
    (asked,) = _creates(calls)
    assert asked == NetworkSpec(
        name="front",
        subnet=N("10.89.7.0/24"),
        gateway=A("10.89.7.254"),
        options={"mtu": "1400"},
        labels={"team": "web"},
    )
    assert net["interface"] == "br-front" and net["gateway"] == "10.89.7.254/24"
    assert net["options"] == {"mtu": "1400"} and net["labels"] == {"team": "web"}
    assert net["driver"] == "fake" and net["extra"] == {"mtu": "1400"}
    (rec,) = sup.store.load_networks().values()
    assert (rec.interface, rec.options, rec.labels) == (
        "br-front",
        {"mtu": "1400"},
        {"team": "web"},
    )
    assert sup.get_network("front") == net
    assert [n["name"] for n in sup.list_networks()] == ["nyx", "front"]
    # containers join it with its gateway/prefix as information
    sup.create(spec(networks=[NetworkAttachment(name="front")]))
    (opts,) = [c[4] for c in calls if c[0] == "setup"]
    assert str(opts.subnet) == "10.89.7.254/24"


def test_a_subnet_from_the_pool_when_none_is_given(sup: Supervisor, calls: Calls) -> None:
    sup.create_network("a")
    sup.create_network("b", internal=True)
    a, b = _creates(calls)
    assert (a.subnet, a.gateway, a.internal) == (N("10.89.0.0/24"), A("10.89.0.1"), False)
    assert (b.subnet, b.gateway, b.internal) == (N("10.89.1.0/24"), A("10.89.1.1"), True)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gateway": "10.89.7.1"}, "gateway '10.89.7.1' needs its subnet"),
        ({"subnet": "10.89.7.0/24", "gateway": "10.89.8.1"}, "not a host address of subnet"),
        ({"subnet": "10.89.7.0/24", "gateway": "10.89.7.255"}, "not a host address of subnet"),
        ({"subnet": "10.89.7.0/24", "gateway": "x"}, "gateway 'x' is not an IPv4 address"),
    ],
)
def test_a_bad_gateway_is_refused_before_the_driver_is_asked(
    sup: Supervisor, calls: Calls, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        sup.create_network("front", **kwargs)
    assert _creates(calls) == [] and sup.store.load_networks() == {}


def test_a_refused_create_records_nothing_and_changes_nothing(
    sup: Supervisor, calls: Calls
) -> None:
    _fake(sup).refuse["front"] = "network 'front': unknown driver option(s) vlan"
    before = sup.list_networks()
    with pytest.raises(ConfigError, match=r"unknown driver option\(s\) vlan"):
        sup.create_network("front", options={"vlan": "7"})
    assert sup.list_networks() == before and sup.store.load_networks() == {}
    with pytest.raises(NotFoundError):
        sup.create(spec(networks=[NetworkAttachment(name="front")]))
    # nothing was burnt: the same name and the same pool subnet are free
    del _fake(sup).refuse["front"]
    assert sup.create_network("front")["subnet"] == "10.89.0.0/24"


def test_without_the_capability_create_is_refused(
    tmp_path: Path, parts: dict[str, Any], calls: Calls
) -> None:
    s = make_sup(tmp_path, parts, calls, lifecycle=False)
    with pytest.raises(ConfigError) as exc:
        s.create_network("front")
    assert str(exc.value) == (
        "net driver 'fake' cannot create networks (network 'front'): it does not declare "
        "the network_lifecycle capability"
    )
    assert _creates(calls) == [] and s.store.load_networks() == {}
    assert [n["name"] for n in s.list_networks()] == ["nyx"]


# ------------------------------------------------------------------ rm


def test_rm_waits_for_the_last_container_then_asks_the_driver(
    sup: Supervisor, calls: Calls
) -> None:
    sup.create_network("back")
    c = sup.create(spec(networks=[NetworkAttachment(name="back")]))
    with pytest.raises(ConflictError, match="in use"):
        sup.remove_network("back")
    assert "net_remove" not in calls.names()
    sup.remove(c["id"], force=True)
    sup.remove_network("back")
    assert ("net_remove", "back") in calls
    assert sup.store.load_networks() == {} and "back" not in _fake(sup).made
    with pytest.raises(ConflictError, match="default network"):
        sup.remove_network("nyx")
    with pytest.raises(NotFoundError):
        sup.remove_network("back")


def test_rm_that_the_driver_fails_keeps_the_network_for_a_retry(
    sup: Supervisor, calls: Calls
) -> None:
    sup.create_network("back")
    _fake(sup).fail_remove = True
    with pytest.raises(TeardownError, match="bridge busy"):
        sup.remove_network("back")
    assert list(sup.store.load_networks()) == ["back"]
    _fake(sup).fail_remove = False
    sup.remove_network("back")
    assert sup.store.load_networks() == {}


# ------------------------------------------------------------------ start


def _registry(s: Supervisor) -> NetworkRegistry:
    """A restarted nyxd's registry over the same state dir and driver."""
    return NetworkRegistry(s.settings, StateStore(s.settings.state_dir), s.backend)


def test_start_creates_the_default_and_every_recorded_network(
    sup: Supervisor, calls: Calls
) -> None:
    sup.create_network("front", options={"mtu": "1400"}, labels={"a": "b"})
    sup.create_network("vault", subnet="10.89.9.0/24", internal=True)
    calls.clear()
    reg = _registry(sup)
    assert reg.bring_up() == {}
    default, front, vault = _creates(calls)
    assert default == NetworkSpec(
        name="nyx", subnet=N("10.231.0.0/24"), gateway=A("10.231.0.1"), default=True
    )
    assert front == NetworkSpec(
        name="front",
        subnet=N("10.89.0.0/24"),
        gateway=A("10.89.0.1"),
        options={"mtu": "1400"},
        labels={"a": "b"},
    )
    assert (vault.subnet, vault.internal) == (N("10.89.9.0/24"), True)
    assert reg.list()[0]["interface"] == "br-nyx"  # what the driver said of the default


def test_a_recorded_network_the_driver_now_refuses_is_reported_and_nyxd_starts(
    sup: Supervisor, calls: Calls, parts: dict[str, Any], tmp_path: Path
) -> None:
    sup.create_network("front")
    sup.create_network("back")
    refusal = "network 'back': subnet 10.89.1.0/24 overlaps the host route 10.89.0.0/16 dev wg0"
    _fake(sup).refuse["back"] = refusal
    reg = _registry(sup)
    assert reg.bring_up() == {"back": refusal}
    s2 = Supervisor(sup.settings, sup.backend, None, sup.host, networks=reg)
    listed = {n["name"]: n for n in s2.list_networks()}
    assert listed["back"]["error"] == refusal and "error" not in listed["front"]
    assert s2.get_network("back")["error"] == refusal
    with pytest.raises(ConflictError, match="network 'back' is not available.*wg0"):
        s2.create(spec(networks=[NetworkAttachment(name="back")]))
    s2.create(spec(networks=[NetworkAttachment(name="front")]))
    # it stays recorded until removed; then it can be made again
    assert set(s2.store.load_networks()) == {"front", "back"}
    s2.remove_network("back")
    del _fake(sup).refuse["back"]
    assert "error" not in s2.create_network("back")


def test_start_without_the_capability_asks_the_driver_nothing(
    tmp_path: Path, parts: dict[str, Any], calls: Calls
) -> None:
    s = make_sup(tmp_path, parts, calls, lifecycle=False)
    assert _registry(s).bring_up() == {}
    assert _creates(calls) == []


def test_a_refused_default_network_stops_nyxd(sup: Supervisor, calls: Calls) -> None:
    _fake(sup).refuse["nyx"] = "default network 'nyx': subnet overlaps the host route"
    with pytest.raises(ConfigError, match="default network 'nyx'"):
        _registry(sup).bring_up()


def test_records_of_an_older_nyxd_load(sup: Supervisor, calls: Calls) -> None:
    old = [
        {
            "name": "back",
            "subnet": "10.89.0.0/24",
            "gateway": "10.89.0.1/24",
            "internal": True,
            "created": "2026-01-01T00:00:00.000+00:00",
        }
    ]
    (sup.settings.state_dir / "networks.json").write_text(json.dumps(old))
    reg = _registry(sup)
    reg.bring_up()
    spec_back = _creates(calls)[-1]
    assert (spec_back.name, spec_back.internal, spec_back.options) == ("back", True, {})
    (rec,) = StateStore(sup.settings.state_dir).load_networks().values()
    assert rec.interface == "br-back" and rec.created == "2026-01-01T00:00:00.000+00:00"


def test_serve_brings_networks_up_between_ensure_and_dns(
    tmp_path: Path, parts: dict[str, Any], calls: Calls
) -> None:
    from nyx_cli.daemon._serve import serve

    s = make_sup(tmp_path, parts, calls)
    s.create_network("front")
    _fake(s).refuse["front"] = "network 'front': refused now"
    calls.clear()
    stop = threading.Event()
    seen: dict[str, Any] = {}

    def ready(running: Supervisor) -> None:
        seen["networks"] = running.list_networks()
        stop.set()

    serve(s.settings, s.backend, s.dns, host=s.host, stop_event=stop, ready=ready)
    assert calls.names()[:4] == ["ensure", "net_create", "net_create", "dns_start"]
    assert [n.name for n in _creates(calls)] == ["nyx", "front"]
    assert {n["name"]: n.get("error") for n in seen["networks"]} == {
        "nyx": None,
        "front": "network 'front': refused now",
    }


# ------------------------------------------------------------------ API and CLI


def test_api_create_passes_options_labels_and_gateway(api: Path, fake_sup: Any) -> None:
    c = Client(api)
    body = {
        "name": "front",
        "subnet": "10.89.7.0/24",
        "gateway": "10.89.7.1",
        "options": {"mtu": "1400"},
        "labels": {"team": "web"},
    }
    net = c.request("POST", "/v1/networks", body=body)
    assert net["interface"] == "br-front" and net["options"] == {"mtu": "1400"}
    assert fake_sup.network_calls == [
        ("create", "front", False, "10.89.7.0/24", "10.89.7.1", {"mtu": "1400"}, {"team": "web"})
    ]
    assert c.request("GET", "/v1/networks/front") == net
    assert c.request("GET", "/v1/networks/nyx")["default"] is True
    with pytest.raises(ApiError) as info:
        c.request("GET", "/v1/networks/nowhere")
    assert info.value.status == 404


def test_api_refusal_is_400_naming_the_option(api: Path, fake_sup: Any) -> None:
    c = Client(api)
    with pytest.raises(ApiError) as info:
        c.request("POST", "/v1/networks", body={"name": "x", "options": {"vlan": "7"}})
    assert info.value.status == 400
    assert str(info.value) == "network 'x': unknown driver option(s) vlan"  # the driver's word
    assert fake_sup.network_calls == [("create", "x", False, None, None, {"vlan": "7"}, {})]
    assert [n["name"] for n in c.request("GET", "/v1/networks")] == ["nyx"]
    for bad in ({"options": {"mtu": 1400}}, {"labels": ["a"]}, {"gateway": 7}):
        with pytest.raises(ApiError) as info:
            c.request("POST", "/v1/networks", body={"name": "x", **bad})
        assert info.value.status == 400


def _nyx(sock: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["--socket", str(sock), *args])


def test_cli_network_create_with_options_and_labels(api: Path, fake_sup: Any) -> None:
    r = _nyx(
        api,
        "network", "create",
        "-o", "mtu=1400",
        "--opt", "com.docker.network.bridge.name=br0",
        "--label", "team=web",
        "--label", "tier",
        "--subnet", "10.89.7.0/24",
        "--gateway", "10.89.7.1",
        "--internal",
        "front",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert r.output == "front\n"
    assert fake_sup.network_calls == [
        (
            "create",
            "front",
            True,
            "10.89.7.0/24",
            "10.89.7.1",
            {"mtu": "1400", "com.docker.network.bridge.name": "br0"},
            {"team": "web", "tier": ""},
        )
    ]
    ls = _nyx(api, "network", "ls")
    assert ls.exit_code == 0
    row = next(line.split() for line in ls.output.splitlines() if line.startswith("front"))
    assert row[-2:] == ["br-front", "com.docker.network.bridge.name=br0,mtu=1400"]
    inspect = _nyx(api, "network", "inspect", "front")
    assert json.loads(inspect.output)[0]["labels"] == {"team": "web", "tier": ""}


def test_cli_refusals(api: Path, fake_sup: Any) -> None:
    r = _nyx(api, "network", "create", "-o", "mtu", "x")
    assert r.exit_code == 125 and "'mtu': expected KEY=VALUE" in r.output
    assert fake_sup.network_calls == []
    r = _nyx(api, "network", "create", "-o", "vlan=7", "x")
    assert r.exit_code == 125 and "unknown driver option(s) vlan" in r.output
    r = _nyx(api, "network", "inspect", "nowhere")
    assert r.exit_code != 0 and "no such network" in r.output


# ------------------------------------------------------------------ reload


def test_reload_asks_the_driver_and_returns_its_report(sup: Supervisor, calls: Calls) -> None:
    from nyx_cli.errors import NotImplementedYet
    from nyx_core import hookimpl

    with pytest.raises(NotImplementedYet, match="'fake' cannot reload"):
        sup.reload_networks()

    class Reloads:
        @hookimpl
        def nyx_backend_reload(self) -> Any:
            calls.append(("reload",))
            return {"tables": 1}

    sup.backend.pm.register(Reloads())
    assert sup.reload_networks() == {"driver": "fake", "report": {"tables": 1}}
    assert ("reload",) in calls


def test_cli_network_reload(api: Path, fake_sup: Any) -> None:
    r = _nyx(api, "network", "reload")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == {"networks": sorted(fake_sup.networks)}
    fake_sup.cannot_reload = True
    r = _nyx(api, "network", "reload")
    assert r.exit_code == 125 and "cannot reload" in r.output, r.output
    assert fake_sup.network_calls == [("reload", ""), ("reload", "")]
