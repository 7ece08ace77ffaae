"""nyxd survives what a real host's firewall does under it (issue 15, end to end).

A published port answers the LAN neighbour; then the host's firewall is reloaded under nyxd
(``nft flush ruleset``, a whole foreign ruleset loaded with ``nft -f``) or its bridge is
deleted. nyxd notices by itself and the port, the container's egress and its DNS answer
again without a restart; ``nyx network reload`` does the same by hand. The 127.0.0.1
protection comes back with the rest.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest
from nyxd_e2e_kit import Nyxd
from test_nyxd_e2e import HTTPD, PAGE, assert_clean, wait_for

from nyx_core.testing import LAN_HOST_IP, Neighbour

pytestmark = [pytest.mark.e2e, pytest.mark.kernel]

curl: Callable[[str], list[str]] = lambda url: ["curl", "-s", "-m", "2", url]  # noqa: E731


def _lan_sees_the_page(lan: Neighbour) -> bool:
    return PAGE in lan.run(curl(f"http://{LAN_HOST_IP}:8090/"), check=False).stdout


def _resolves(nyxd: Nyxd) -> bool:
    r = nyxd.nyx("run", "--rm", "busybox:nyx", "nslookup", "web")
    return r.returncode == 0 and "Address" in r.stdout


def test_a_firewall_reload_and_a_deleted_bridge_are_repaired(
    nyxd: Nyxd, external_ns: tuple[Neighbour, str]
) -> None:
    lan, _host_ip = external_ns
    r = nyxd.nyx(
        "run", "-d", "--name", "web", "--hostname", "web",
        "-p", "8090:80", "-p", "127.0.0.1:8091:80", "busybox:nyx", *HTTPD,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert wait_for(lambda: _lan_sees_the_page(lan), what="the published port")
    before = nyxd.nyx_elements()
    lan.route_localhost_to_host()

    foreign = "flush ruleset\ntable inet site {\n  set admins { type ipv4_addr; }\n}\n"
    breakers: list[tuple[str, Callable[[], object]]] = [
        ("nft flush ruleset", lambda: nyxd.host("nft", "flush", "ruleset")),
        ("nft delete table ip nyx", lambda: nyxd.host("nft", "delete", "table", "ip", "nyx")),
        (
            "nft -f of a foreign ruleset",
            lambda: subprocess.run(
                ["nsenter", f"--net={nyxd.ns.path}", "--", "nft", "-f", "-"],
                input=foreign,
                text=True,
                check=True,
            ),
        ),
        ("ip link del of the bridge", lambda: nyxd.host("ip", "link", "del", "nyxt0")),
    ]
    for what, breaker in breakers:
        breaker()
        assert wait_for(lambda: _lan_sees_the_page(lan), what=f"the port after {what}"), what
        assert nyxd.nyx_elements() == before, what
        # the LAN still cannot reach the 127.0.0.1 publish: the guard came back too
        assert lan.run(curl("http://127.0.0.1:8091/"), check=False).returncode != 0, what
        assert PAGE in nyxd.host(*curl("http://127.0.0.1:8091/")).stdout, what
        assert _resolves(nyxd), what
    # the foreign table is the site's: never touched
    assert "admins" in nyxd.host("nft", "list", "table", "inet", "site").stdout
    nyxd.host("nft", "delete", "table", "inet", "site")

    # by hand: the report names what was re-applied
    r = nyxd.nyx("network", "reload")
    assert r.returncode == 0, r.stderr
    assert '"networks"' in r.stdout and '"nyx"' in r.stdout, r.stdout
    assert _lan_sees_the_page(lan) and nyxd.nyx_elements() == before

    assert nyxd.nyx("rm", "-f", "web").returncode == 0
    assert_clean(nyxd)
