"""The provider object and the plugin module, without sockets."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest

import nyx_dns_embedded
from nyx_core import DnsError, DnsFacade, NyxSettings, installed_plugins
from nyx_core.hookspecs import DNS_HOOKS
from nyx_dns_embedded import EmbeddedDns, EmbeddedDnsSettings
from nyx_dns_embedded.plugin import EmbeddedDnsPlugin


def test_entry_point_is_the_plugin_class_and_loads_every_hook() -> None:
    found = [p for p in installed_plugins("nyx.dns_providers") if p.name == "embedded"]
    assert found and found[0].value == "nyx_dns_embedded.plugin:EmbeddedDnsPlugin"
    facade = DnsFacade.load("embedded")
    (plugin,) = facade.pm.get_plugins()
    assert isinstance(plugin, EmbeddedDnsPlugin)
    assert isinstance(plugin.provider, EmbeddedDns)
    for hook in DNS_HOOKS:
        impls = getattr(facade.pm.hook, hook).get_hookimpls()
        assert [i.plugin for i in impls] == [plugin]
    # every load is a provider of its own (no process-wide state between loads)
    assert DnsFacade.load("embedded").pm.get_plugins() != facade.pm.get_plugins()


def test_public_names() -> None:
    assert set(nyx_dns_embedded.__all__) >= {"EmbeddedDns", "EmbeddedDnsSettings"}
    p = EmbeddedDns()
    p.set_network_internal("backend")
    assert p.registry.internal_networks() == {"backend"}
    p.set_network_internal("backend", False)
    assert p.registry.internal_networks() == frozenset()


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NYXD_EMBEDDED_UPSTREAM_RESOLV_CONF", str(tmp_path / "r.conf"))
    monkeypatch.setenv("NYXD_EMBEDDED_FORWARD_TIMEOUT", "0.5")
    monkeypatch.setenv("NYXD_EMBEDDED_TCP_MAX_CONNECTIONS_PER_CLIENT", "3")
    cfg = EmbeddedDnsSettings()
    assert cfg.upstream_resolv_conf == tmp_path / "r.conf"
    assert cfg.forward_timeout == 0.5
    assert cfg.tcp_max_connections_per_client == 3
    # the core settings ignore the provider's variables
    assert NyxSettings().dns == "auto"


def test_every_setting_is_documented() -> None:
    docs = (Path(__file__).parents[3] / "docs" / "dns.md").read_text()
    for name, field in EmbeddedDnsSettings.model_fields.items():
        default = field.default if not isinstance(field.default, float) else f"{field.default:g}"
        assert f"| `NYXD_EMBEDDED_{name.upper()}` | `{default}` |" in docs, name


def test_resolv_conf_needs_a_started_provider() -> None:
    p = EmbeddedDns(EmbeddedDnsSettings(upstream_resolv_conf=Path("/nonexistent")))
    with pytest.raises(DnsError, match="not started"):
        p.resolv_conf("c1")
    p.stop()  # safe when never started
    p.deregister("never-registered")


def _started_without_server(p: EmbeddedDns, settings: NyxSettings) -> None:
    """Give the provider its settings and upstreams without binding sockets."""
    from nyx_dns_embedded._upstream import Upstreams

    p._settings = settings
    p._upstreams = Upstreams(p.config.upstream_resolv_conf)


def test_resolv_conf_text_and_file(tmp_path: Path) -> None:
    host = tmp_path / "host-resolv.conf"
    host.write_text("nameserver 192.0.2.1\nsearch corp.example nyxd.local\n")
    settings = NyxSettings(
        run_dir=tmp_path / "run", container_subnet="10.231.0.0/24", gateway_ip="10.231.0.1"
    )
    p = EmbeddedDns(EmbeddedDnsSettings(upstream_resolv_conf=host))
    _started_without_server(p, settings)
    p.register("c1", "web", [ipaddress.ip_address("10.231.0.2")], [], ["n1"])
    path = p.resolv_conf_path("c1")
    assert path == tmp_path / "run" / "dns" / "c1" / "resolv.conf"
    text = p.resolv_conf("c1")
    assert "nameserver 10.231.0.1\n" in text
    assert "search nyxd.local corp.example\n" in text
    assert path.read_text() == text
    inode = path.stat().st_ino
    p.register("c1", "web", [ipaddress.ip_address("10.231.0.2")], [], ["n1"])
    assert path.stat().st_ino == inode  # rewritten in place: a bind mount keeps working
    # internal-only containers get no host search domains
    p.set_network_internal("n1", True)
    assert "search nyxd.local\n" in p.resolv_conf("c1")
    p.deregister("c1")
    assert not path.parent.exists()
    with pytest.raises(DnsError, match="container_id"):
        p.resolv_conf_path("../x")


def test_resolv_conf_that_says_the_same_is_not_written_again(tmp_path: Path) -> None:
    """Re-registering (nyxd re-adopting its containers after a restart) and asking for the
    text right after registering leave an unchanged file alone; a change is written."""
    host = tmp_path / "host-resolv.conf"
    host.write_text("nameserver 192.0.2.1\nsearch corp.example\n")
    settings = NyxSettings(
        run_dir=tmp_path / "run", container_subnet="10.231.0.0/24", gateway_ip="10.231.0.1"
    )
    p = EmbeddedDns(EmbeddedDnsSettings(upstream_resolv_conf=host))
    _started_without_server(p, settings)
    ip = ipaddress.ip_address("10.231.0.2")
    p.register("c1", "web", [ip], [], ["n1"])
    path = p.resolv_conf_path("c1")
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    p.register("c1", "web", [ip], [], ["n1"])
    p.resolv_conf("c1")
    assert path.stat().st_mtime_ns == 1_000_000_000
    p.set_network_internal("n1", True)
    p.register("c1", "web", [ip], [], ["n1"])
    assert path.stat().st_mtime_ns != 1_000_000_000
    assert path.read_text().endswith("search nyxd.local\n")


def test_resolv_conf_lists_the_gateways_a_container_can_reach(tmp_path: Path) -> None:
    """Dual stack: a container with an IPv6 address gets the IPv6 gateway too (the server
    listens there); an IPv4-only one only gateway_ip; an IPv4-only host lists gateway_ip
    whatever the container has."""
    host = tmp_path / "host-resolv.conf"
    host.write_text("nameserver 192.0.2.1\n")
    ip = ipaddress.ip_address
    dual = NyxSettings(
        run_dir=tmp_path / "run",
        container_subnet="10.231.0.0/24",
        gateway_ip="10.231.0.1",
        container_subnet6="2001:db8:231::/64",
    )
    p = EmbeddedDns(EmbeddedDnsSettings(upstream_resolv_conf=host))
    _started_without_server(p, dual)
    p.register("both", "both", [ip("10.231.0.2"), ip("2001:db8:231::2")], [], ["n1"])
    p.register("four", "four", [ip("10.231.0.3")], [], ["n1"])
    p.register("six", "six", [ip("2001:db8:231::4")], [], ["n1"])

    def servers(cid: str) -> list[str]:
        return [ln.split()[1] for ln in p.resolv_conf(cid).splitlines() if ln.startswith("name")]

    assert servers("both") == ["10.231.0.1", "2001:db8:231::1"]
    assert servers("four") == ["10.231.0.1"]
    assert servers("six") == ["2001:db8:231::1"]
    four_only = dual.model_copy(update={"container_subnet6": None})
    p._settings = four_only
    assert servers("both") == ["10.231.0.1"]


def test_register_hook_internal_networks_are_per_container(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """nyxd passes ``internal_networks`` through the facade: that container alone gets no
    forwarding and no host search domains; its network stays open for the others."""
    host = tmp_path / "host-resolv.conf"
    host.write_text("nameserver 192.0.2.1\nsearch corp.example\n")
    settings = NyxSettings(
        run_dir=tmp_path / "run", container_subnet="10.231.0.0/24", gateway_ip="10.231.0.1"
    )
    p = EmbeddedDns(EmbeddedDnsSettings(upstream_resolv_conf=host))
    _started_without_server(p, settings)
    facade = DnsFacade.load("embedded")
    (plugin,) = facade.pm.get_plugins()
    plugin.provider = p
    ip = ipaddress.ip_address
    facade.register("c1", "db", [ip("10.231.0.2")], [], ["nyx"], internal_networks=["nyx"])
    facade.register("c2", "web", [ip("10.231.0.3")], [], ["nyx"], internal_networks=[])
    facade.register("c3", "api", [ip("10.231.0.4")], [], ["nyx", "back"], ["back"])
    assert p.registry.internal_networks() == frozenset()  # no network turned internal
    snap = p.registry.snapshot()
    assert snap.scope_for("10.231.0.2").forward is False
    assert snap.scope_for("10.231.0.3").forward is True
    assert snap.scope_for("10.231.0.4").forward is True
    assert facade.resolv_conf("c1").splitlines()[-1] == "search nyxd.local"
    assert facade.resolv_conf("c2").splitlines()[-1] == "search nyxd.local corp.example"
    assert facade.resolv_conf("c3").splitlines()[-1] == "search nyxd.local corp.example"
