"""nyxd on a real-looking host (issue 11, items 1, 3 and 4, end to end).

nyxd's host namespace has an uplink with the default route (203.0.113.2, the "internet"
namespace behind it with a server on 198.18.0.10) and a LAN neighbour (198.51.100.2).
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from nyxd_e2e_kit import Nyxd
from test_nyxd_e2e import HTTPD, PAGE, assert_clean, wait_for

from nyx_core.testing import (
    INTERNET_SERVER_IP,
    LAN_HOST_IP,
    UPLINK_HOST_IP,
    Neighbour,
    Netns,
    entered,
)

pytestmark = [pytest.mark.e2e, pytest.mark.kernel]


class _PeerHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"peer {self.client_address[0]}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def peer_server(internet_ns: Netns) -> Iterator[str]:
    """An HTTP server on 198.18.0.10:8000 in the internet namespace answering ``peer <ip>``."""
    with entered(internet_ns):
        server = http.server.ThreadingHTTPServer((INTERNET_SERVER_IP, 8000), _PeerHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{INTERNET_SERVER_IP}:8000/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_host_resolves_names_on_the_gateway_and_egress_is_masqueraded(
    nyxd: Nyxd, peer_server: str
) -> None:
    """``dig @<gateway> web.nyxd.local`` from the host answers (it was REFUSED: the host's
    query left the gateway address masqueraded to the uplink's); containers reach the
    internet as the uplink address."""
    r = nyxd.nyx("run", "-d", "--name", "web", "--hostname", "web", "busybox:nyx", *HTTPD)
    assert r.returncode == 0, r.stderr
    ip = nyxd.client.request("GET", "/v1/containers/web")["ips"][0]
    dig = ["dig", "+time=2", "+tries=1", f"@{nyxd.gateway}", "web.nyxd.local"]
    out = nyxd.host(*dig).stdout
    assert "status: NOERROR" in out, out
    assert nyxd.host(*dig, "+short").stdout.split() == [ip]
    r = nyxd.nyx("run", "--rm", "busybox:nyx", "wget", "-qO-", peer_server)
    assert r.returncode == 0, r.stderr
    assert r.stdout.rstrip().endswith(f"peer {UPLINK_HOST_IP}"), r.stdout
    assert nyxd.nyx("rm", "-f", "web").returncode == 0
    assert_clean(nyxd)


def test_localhost_publish_is_for_the_host_only(
    nyxd: Nyxd, external_ns: tuple[Neighbour, str]
) -> None:
    """``-p 127.0.0.1:8081:80`` answers the host, not a LAN neighbour routing 127.0.0.1 to
    the host; ``-p 8082:80`` answers the neighbour. (Containers sending to 127.0.0.1 are
    covered by the native driver's kernel tests: a container cannot set route_localnet in
    its read-only /proc/sys, so it could not read an answer here either way.)"""
    lan, host_ip = external_ns
    assert host_ip == LAN_HOST_IP
    r = nyxd.nyx(
        "run", "-d", "--name", "web", "-p", "127.0.0.1:8081:80", "-p", "8082:80",
        "busybox:nyx", *HTTPD,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    curl: Callable[[str], list[str]] = lambda url: ["curl", "-s", "-m", "2", url]  # noqa: E731
    assert wait_for(
        lambda: PAGE in nyxd.host(*curl("http://127.0.0.1:8081/")).stdout, what="127.0.0.1:8081"
    )
    assert PAGE in lan.run(curl(f"http://{LAN_HOST_IP}:8082/"), check=False).stdout
    lan.route_localhost_to_host()
    assert lan.run(curl("http://127.0.0.1:8081/"), check=False).returncode != 0
    assert lan.run(curl(f"http://{LAN_HOST_IP}:8081/"), check=False).returncode != 0
    assert nyxd.nyx("rm", "-f", "web").returncode == 0
    assert_clean(nyxd)
