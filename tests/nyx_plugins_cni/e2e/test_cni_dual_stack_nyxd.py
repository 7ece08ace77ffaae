"""nyxd with ``-net-driver=cni``, ``--container-subnet6`` and embedded DNS: the CNI
result's two families reach the supervisor (inspect), DNS (AAAA, PTR, both gateways in
resolv.conf) and the containers (one reaches another over IPv6)."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from nyxd_e2e_kit import Nyxd

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.kernel,
    pytest.mark.skipif(not Path("/usr/lib/cni/bridge").exists(), reason="needs CNI plugins"),
]

SUBNET6 = ipaddress.IPv6Network("2001:db8:231::/64")
GW6 = "2001:db8:231::1"
HTTPD = ["httpd", "-f", "-p", "80", "-h", "/www"]
PAGE = "hello from nyx"


def test_dual_stack_cni_container_with_embedded_dns(
    nyxd_factory: Callable[..., Nyxd], tmp_path: Path
) -> None:
    d = nyxd_factory(
        "-net-driver=cni",
        "-cni-bin-dir=/usr/lib/cni",
        f"-cni-conf-dir={tmp_path / 'net.d'}",
        "--container-subnet6",
        str(SUBNET6),
        "--dns",
        "embedded",
    )
    conflist = json.loads((tmp_path / "net.d" / "nyx.conflist").read_text())
    ranges = conflist["plugins"][0]["ipam"]["ranges"]
    assert [r[0]["subnet"] for r in ranges] == [f"10.231.{d.octet}.0/24", str(SUBNET6)]
    r = d.nyx("run", "-d", "--name", "web", "--hostname", "web", "busybox:nyx", *HTTPD)
    assert r.returncode == 0, r.stderr + d.log.read_text()[-3000:]
    try:
        ips = [
            ipaddress.ip_address(ip) for ip in d.client.request("GET", "/v1/containers/web")["ips"]
        ]
        assert sorted(ip.version for ip in ips) == [4, 6], ips
        (ip6,) = [ip for ip in ips if ip.version == 6]
        assert ip6 in SUBNET6
        r = d.nyx("run", "--rm", "busybox:nyx", "cat", "/etc/resolv.conf")
        servers = [ln.split()[1] for ln in r.stdout.splitlines() if ln.startswith("nameserver")]
        assert servers == [d.gateway, GW6], r.stdout
        # AAAA and PTR from a container, over the IPv6 gateway
        r = d.nyx("run", "--rm", "busybox:nyx", "nslookup", "-type=AAAA", "web", GW6)
        assert r.returncode == 0 and str(ip6) in r.stdout, r.stdout + r.stderr
        r = d.nyx("run", "--rm", "busybox:nyx", "nslookup", str(ip6), GW6)
        assert r.returncode == 0 and "web.nyxd.local" in r.stdout, r.stdout + r.stderr
        # a container reaches another over IPv6 (busybox's static wget crashes; nc works)
        get = f'printf "GET / HTTP/1.0\\r\\n\\r\\n" | nc -w 5 {ip6} 80'
        r = d.nyx("run", "--rm", "busybox:nyx", "sh", "-c", get)
        assert PAGE in r.stdout, f"{r.returncode} {r.stdout[-600:]} {r.stderr}"
        # AAAA and PTR from the host: over IPv4, and over IPv6 (UDP says TC, dig retries TCP)
        for server in (d.gateway, GW6):
            out = d.host("dig", f"@{server}", "+time=3", "+tries=1", "+short", "AAAA", "web").stdout
            assert out.split() == [str(ip6)], (server, out)
            out = d.host(
                "dig", f"@{server}", "+time=3", "+tries=1", "+short", "-x", str(ip6)
            ).stdout
            assert out.split() == ["web.nyxd.local."], (server, out)
    finally:
        d.nyx("rm", "-f", "web")
