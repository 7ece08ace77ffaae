"""nyxd ``--net-driver=cni``: a compose stack on two networks, one of them internal.

Needs nyxd to call ``nyx_backend_network_create`` for compose networks (``nyx network
create``) and ``nyx_backend_network_remove`` for ``nyx network rm`` (issue 12's network
lifecycle in the daemon).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from nyxd_e2e_kit import Nyxd

from nyx_core.testing import INTERNET_SERVER_IP

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.kernel,
    pytest.mark.skipif(not Path("/usr/lib/cni/bridge").exists(), reason="needs CNI plugins"),
]

IMAGE = "busybox:nyx"
# busybox's nc, as in tests/e2e/test_compose_stack.py (its static wget crashes on -T)
OUT = (
    f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {INTERNET_SERVER_IP} 8000 | grep -q internet-ok"
)

STACK = f"""
name: cnistack
services:
  api:
    image: {IMAGE}
    networks: [back]
    command:
      - sh
      - -c
      - |
        mkdir -p /srv && echo api-ok > /srv/index.html
        httpd -p 8000 -h /srv
        trap 'exit 0' TERM
        while true; do
          if {OUT}; then s=reached; else s=blocked; fi
          echo $$s > /srv/out.txt
          sleep 1
        done
  web:
    image: {IMAGE}
    depends_on: [api]
    networks: [front, back]
    ports: ["8080:80"]
    command:
      - sh
      - -c
      - |
        mkdir -p /www && echo web-ok > /www/index.html
        httpd -p 80 -h /www
        trap 'exit 0' TERM
        while true; do
          wget -q -O /tmp/a http://api:8000/ && mv /tmp/a /www/api.txt
          wget -q -O /tmp/o http://api:8000/out.txt && mv /tmp/o /www/api-out.txt
          if {OUT}; then s=reached; else s=blocked; fi
          echo $$s > /www/out.txt
          sleep 1
        done
networks:
  front: {{}}
  back:
    internal: true
"""


@pytest.fixture
def cni_nyxd(nyxd_factory: Callable[..., Nyxd], tmp_path: Path) -> Iterator[Nyxd]:
    """nyxd on the CNI driver with embedded DNS for every container (service names), and
    an HTTP server at the internet address the host reaches through its default route."""
    d = nyxd_factory(
        "-net-driver=cni",
        "-cni-bin-dir=/usr/lib/cni",
        f"-cni-conf-dir={tmp_path / 'net.d'}",
        "--dns",
        "embedded",
    )
    assert d.topology is not None
    www = tmp_path / "internet-www"
    www.mkdir()
    (www / "index.html").write_text("internet-ok\n")
    argv = [sys.executable, "-m", "http.server", "--bind", INTERNET_SERVER_IP, "8000"]
    server = subprocess.Popen(
        ["ip", "netns", "exec", d.topology.internet.name, *argv, "--directory", str(www)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield d
    finally:
        server.terminate()
        server.wait(10)


def _curl(d: Nyxd, path: str) -> str:
    return d.host("curl", "-s", "-m", "2", f"http://127.0.0.1:8080{path}").stdout


def _wait(d: Nyxd, path: str, want: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    body = ""
    while time.monotonic() < deadline:
        body = _curl(d, path)
        if want in body:
            return body
        time.sleep(0.5)
    return body


def test_compose_stack_on_two_networks_one_internal(cni_nyxd: Nyxd, tmp_path: Path) -> None:
    d = cni_nyxd
    work = tmp_path / "project"
    work.mkdir()
    (work / "compose.yaml").write_text(STACK)
    conf_dir = tmp_path / "net.d"

    def nyx(*args: str) -> subprocess.CompletedProcess[str]:
        return d.nyx(*args, timeout=180, cwd=work)

    up = nyx("compose", "up", "-d")
    assert up.returncode == 0, up.stdout + up.stderr + d.log.read_text()[-3000:]
    assert "warning" not in up.stderr, up.stderr  # internal is enforced, two networks work
    try:
        nets: dict[str, Any] = {n["name"]: n for n in d.client.request("GET", "/v1/networks")}
        front, back = nets["cnistack_front"], nets["cnistack_back"]
        assert back["internal"] is True
        conflists = sorted(p.name for p in conf_dir.iterdir())
        assert conflists == ["cnistack_back.conflist", "cnistack_front.conflist", "nyx.conflist"]
        web = d.client.request("GET", "/v1/containers/cnistack-web-1")
        assert len(web["ips"]) == 2  # eth0 on front, eth1 on back
        subnets = [front["subnet"].rsplit(".", 1)[0], back["subnet"].rsplit(".", 1)[0]]
        assert [ip.rsplit(".", 1)[0] for ip in web["ips"]] == subnets
        # published on the first network; web reaches api by name on the internal network
        assert _wait(d, "/", "web-ok") == "web-ok\n"
        assert _wait(d, "/api.txt", "api-ok") == "api-ok\n"
        # web (also on a normal network) gets out; api (only on the internal one) does not
        assert _wait(d, "/out.txt", "reached") == "reached\n"
        assert _wait(d, "/api-out.txt", "e") == "blocked\n"
    finally:
        down = nyx("compose", "down", "-t", "1")
    assert down.returncode == 0, down.stdout + down.stderr
    assert d.client.request("GET", "/v1/containers?all=1") == []
    assert [n["name"] for n in d.client.request("GET", "/v1/networks")] == ["nyx"]
    # network rm removed the conflists nyx generated, and their bridges
    assert sorted(p.name for p in conf_dir.iterdir()) == ["nyx.conflist"]
    links = d.host("ip", "-j", "link", "show", "type", "bridge").stdout
    assert "cni-" not in links, links
    assert d.host("nft", "list", "table", "inet", "nyx-cni").returncode != 0  # no rule left
