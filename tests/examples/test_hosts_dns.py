"""The example third-party DNS provider (examples/nyx-dns-hosts) is found by name, passes
the DNS provider conformance suite, and serves the names of its hosts file."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from nyx_dns_hosts import HostsDnsSettings

from nyx_core import DnsFacade, NyxSettings, PluginSettings
from nyx_core.testing import DnsNetworks, DnsProviderConformance, UpstreamConfig


class TestHostsDnsConformance(DnsProviderConformance):
    @pytest.fixture
    def nyx_dns_provider_name(self) -> str:
        return "hosts"

    @pytest.fixture
    def nyx_dns_ipv6(self) -> bool:
        return True

    @pytest.fixture
    def nyx_dns_upstream(self) -> UpstreamConfig:
        def configure(ip: str, port: int) -> Sequence[PluginSettings]:
            return [HostsDnsSettings(upstream=[f"{ip}:{port}"], timeout=1.0)]

        return configure


def test_nyxd_lists_the_example_provider() -> None:
    nyxd = Path(sys.executable).with_name("nyxd")
    out = subprocess.run([nyxd, "--list-plugins"], capture_output=True, text=True, check=True)
    assert "hosts" in out.stdout
    assert "nyx-dns-hosts" in out.stdout


def test_nyxd_help_has_the_providers_flags() -> None:
    nyxd = Path(sys.executable).with_name("nyxd")
    out = subprocess.run(
        [nyxd, "--dns-provider", "hosts", "--help"], capture_output=True, text=True, check=True
    )
    for flag in ("--hosts-file", "--hosts-upstream", "NYXD_HOSTS_FILE"):
        assert flag in out.stdout


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NYXD_HOSTS_UPSTREAM", "192.0.2.53, 192.0.2.54:5300")
    monkeypatch.setenv("NYXD_HOSTS_FILE", "/etc/nyx/hosts")
    cfg = HostsDnsSettings()
    assert cfg.upstreams() == [("192.0.2.53", 53), ("192.0.2.54", 5300)]
    assert cfg.file == Path("/etc/nyx/hosts")
    with pytest.raises(ValueError, match="not IP or IP:PORT"):
        HostsDnsSettings(upstream=["dns.example"])


@pytest.mark.kernel
def test_hosts_file_names_for_every_container(
    nyx_settings: NyxSettings, nyx_container_ns: object, nyx_in_host: object, tmp_path: Path
) -> None:
    """A name of the hosts file resolves for containers of both networks, a change of the
    file is seen at the next query, and the PTR of its address names it."""
    hosts = tmp_path / "hosts"
    hosts.write_text("# static names\n192.0.2.80 db.corp.example db\n")
    settings = nyx_settings.with_plugins(HostsDnsSettings(file=hosts))
    nets = DnsNetworks(nyx_in_host, settings, nyx_container_ns)  # type: ignore[arg-type]
    a, b = nets.client("kit-a"), nets.client("kit-b")
    dns = DnsFacade.load("hosts")
    dns.start(settings)
    try:
        dns.register("kit-a", "kit-a", [a.ip], [], ["kit-a"], [])
        dns.register("kit-b", "kit-b", [b.ip], [], ["kit-b"], [])
        for client in (a, b):
            assert client.addresses("db.corp.example") == ["192.0.2.80"]
            assert client.addresses("DB") == ["192.0.2.80"]
        assert a.addresses("80.2.0.192.in-addr.arpa", "PTR") == ["db.corp.example."]
        hosts.write_text("192.0.2.81 db.corp.example\n")
        assert a.addresses("db.corp.example") == ["192.0.2.81"]
        assert a.addresses("db") == []  # gone from the file; nothing to forward to: REFUSED
    finally:
        dns.stop()
