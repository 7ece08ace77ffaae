"""nyxd dual stack end to end (issue 13): ``--container-subnet6``, a container reachable over
IPv6 from the LAN neighbour and from the host's ``[::1]``, IPv6 egress, a dual-stack
network, both families in ``nyx ps``, ``inspect`` and the container's /etc/hosts.

nyxd's host namespace is the kit's dual-stack host: uplink 2001:db8:113::2 (the internet's
server on 2001:db8:18::10), LAN 2001:db8:100::1 with the neighbour 2001:db8:100::2.
"""

from __future__ import annotations

import http.server
import ipaddress
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from nyxd_e2e_kit import Nyxd
from test_nyxd_e2e import HTTPD, PAGE, assert_clean, wait_for

from nyx_core.testing import (
    INTERNET_SERVER_IP6,
    LAN_HOST_IP6,
    UPLINK_HOST_IP6,
    entered,
)

pytestmark = [pytest.mark.e2e, pytest.mark.kernel]

SUBNET6 = "fd00:e2e::/64"


class _PeerHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"peer {self.client_address[0]}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class _Server6(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6


@pytest.fixture
def nyxd6(nyxd_factory: Callable[..., Nyxd]) -> Nyxd:
    return nyxd_factory("--container-subnet6", SUBNET6)


@pytest.fixture
def peer6(nyxd6: Nyxd) -> Iterator[str]:
    """An HTTP server on [2001:db8:18::10]:8000 in the internet namespace."""
    assert nyxd6.topology is not None
    with entered(nyxd6.topology.internet):
        server = _Server6((INTERNET_SERVER_IP6, 8000), _PeerHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://[{INTERNET_SERVER_IP6}]:8000/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_a_dual_stack_container_end_to_end(nyxd6: Nyxd, peer6: str) -> None:
    assert nyxd6.topology is not None
    lan = nyxd6.topology.lan
    info = nyxd6.client.info()
    assert info["subnet6"] == SUBNET6 and info["gateway6"] == "fd00:e2e::1"
    r = nyxd6.nyx(
        "run", "-d", "--name", "web", "--hostname", "web", "-p", "8083:80", "busybox:nyx", *HTTPD
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    web = nyxd6.client.request("GET", "/v1/containers/web")
    v4, v6 = web["ips"]
    assert v4.startswith(nyxd6.subnet_prefix)
    assert ipaddress.ip_address(v6) in ipaddress.ip_network(SUBNET6)
    ps = nyxd6.nyx("ps").stdout
    assert f"{v4},{v6}" in ps, ps
    curl: Callable[[str], list[str]] = lambda url: ["curl", "-s", "-m", "3", "-g", url]  # noqa: E731
    # from the LAN neighbour over IPv6, and from the host's [::1] (nyxd's loopback proxy)
    assert wait_for(
        lambda: PAGE in lan.run(curl(f"http://[{LAN_HOST_IP6}]:8083/"), check=False).stdout,
        what=f"[{LAN_HOST_IP6}]:8083 from the LAN",
    )
    assert PAGE in nyxd6.host(*curl("http://[::1]:8083/")).stdout
    assert PAGE in nyxd6.host(*curl("http://127.0.0.1:8083/")).stdout
    # IPv6 egress, masqueraded to the uplink's address; both families in /etc/hosts
    r = nyxd6.nyx("run", "--rm", "busybox:nyx", "wget", "-qO-", peer6)
    assert r.returncode == 0, r.stderr
    assert r.stdout.rstrip().endswith(f"peer {UPLINK_HOST_IP6}"), r.stdout
    r = nyxd6.nyx("run", "--rm", "--hostname", "h6", "busybox:nyx", "cat", "/etc/hosts")
    lines = [line.split("\t") for line in r.stdout.splitlines() if "\t" in line]
    families = {ipaddress.ip_address(f[0]).version for f in lines if "h6" in f[1].split()}
    assert families == {4, 6}, r.stdout
    # a dual-stack network from the pool, and its container's address in it
    r = nyxd6.nyx("network", "create", "--ipv6", "back")
    assert r.returncode == 0, r.stderr
    back = nyxd6.client.request("GET", "/v1/networks/back")
    assert back["subnet6"] == "fd6e:7978:1::/64", back
    assert "fd6e:7978:1::/64" in nyxd6.nyx("network", "ls").stdout
    r = nyxd6.nyx("run", "-d", "--name", "b", "--network", "back", "busybox:nyx", "sleep", "60")
    assert r.returncode == 0, r.stderr
    b = nyxd6.client.request("GET", "/v1/containers/b")
    assert any(ip.startswith("fd6e:7978:1::") for ip in b["ips"]), b["ips"]
    assert nyxd6.nyx("rm", "-f", "web", "b").returncode == 0
    assert nyxd6.nyx("network", "rm", "back").returncode == 0
    assert nyxd6.host(*curl("http://[::1]:8083/")).returncode != 0  # the proxy is gone
    assert_clean(nyxd6)
    for name in ("ports_any", "ports_ip", "internal"):
        assert nyxd6.nyx_elements("ip6").get(name, []) == [], name


COMPOSE6 = """
name: dual
services:
  web:
    image: busybox:nyx
    networks: [front]
    ports: ["8084:80"]
    command: [sh, -c, "mkdir -p /w && echo web-ok > /w/index.html && exec httpd -f -p 80 -h /w"]
networks:
  front:
    enable_ipv6: true
    ipam:
      config:
        - subnet: 10.89.60.0/24
        - subnet: fd00:c0::/64
"""


def test_a_dual_stack_compose_stack(nyxd6: Nyxd, tmp_path: Any) -> None:
    """``enable_ipv6`` with an IPv6 ``ipam.config`` entry: the stack's network is dual stack,
    its service answers the LAN over IPv6 and another container of the network over IPv6."""
    assert nyxd6.topology is not None
    lan = nyxd6.topology.lan
    work = tmp_path / "dual"
    work.mkdir()
    (work / "compose.yaml").write_text(COMPOSE6)
    up = nyxd6.nyx("compose", "up", "-d", cwd=work, timeout=180)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        net = nyxd6.client.request("GET", "/v1/networks/dual_front")
        assert (net["subnet"], net["subnet6"]) == ("10.89.60.0/24", "fd00:c0::/64"), net
        web = nyxd6.client.request("GET", "/v1/containers/dual-web-1")
        (v6,) = [ip for ip in web["ips"] if ":" in ip]
        assert ipaddress.ip_address(v6) in ipaddress.ip_network("fd00:c0::/64")
        curl = ["curl", "-s", "-m", "3", "-g", f"http://[{LAN_HOST_IP6}]:8084/"]
        assert wait_for(
            lambda: "web-ok" in lan.run(curl, check=False).stdout, what="the stack over IPv6"
        )
        r = nyxd6.nyx(
            "run", "--rm", "--network", "dual_front", "busybox:nyx",
            "wget", "-qO-", f"http://[{v6}]/",
        )  # fmt: skip
        assert r.returncode == 0 and "web-ok" in r.stdout, r.stdout + r.stderr
    finally:
        down = nyxd6.nyx("compose", "down", "-t", "1", cwd=work, timeout=180)
    assert down.returncode == 0, down.stdout + down.stderr
    assert [n["name"] for n in nyxd6.client.request("GET", "/v1/networks")] == ["nyx"]
    assert_clean(nyxd6)
