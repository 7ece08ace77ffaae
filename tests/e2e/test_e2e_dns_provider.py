"""nyxd with a third-party DNS provider: ``--dns-provider hosts`` (examples/nyx-dns-hosts)
selects it, its own flags configure it, containers resolve a name of its hosts file and
each other's names through it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from nyxd_e2e_kit import Nyxd

pytestmark = [pytest.mark.e2e, pytest.mark.kernel]


def test_nyxd_serves_dns_with_the_hosts_provider(
    nyxd_factory: Callable[..., Nyxd], tmp_path: Path
) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("192.0.2.80 db.corp.example db\n")
    d = nyxd_factory("--dns-provider", "hosts", "--hosts-file", str(hosts))
    info = d.client.info()
    assert info["dns_provider"] == "hosts", info

    r = d.nyx("run", "--rm", "busybox:nyx", "cat", "/etc/resolv.conf")
    assert r.returncode == 0, r.stderr
    assert "hosts DNS" in r.stdout and f"nameserver {d.gateway}" in r.stdout

    r = d.nyx("run", "--rm", "busybox:nyx", "nslookup", "db.corp.example")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "192.0.2.80" in r.stdout

    r = d.nyx("run", "-d", "--name", "web", "--hostname", "web", "busybox:nyx", "sleep", "60")
    assert r.returncode == 0, r.stderr
    try:
        ip = d.client.request("GET", "/v1/containers/web")["ips"][0]
        r = d.nyx("run", "--rm", "busybox:nyx", "nslookup", "web.nyxd.local")
        assert r.returncode == 0, r.stdout + r.stderr
        assert ip in r.stdout
    finally:
        d.nyx("rm", "-f", "web")
