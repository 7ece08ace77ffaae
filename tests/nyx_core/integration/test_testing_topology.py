"""The kit's real-looking host (``nyx_core.testing.HostTopology``) is what it says."""

from __future__ import annotations

import socket
import tempfile
import threading
from pathlib import Path

import pytest

from nyx_core.testing import (
    HOST_LINKS,
    INTERNET_SERVER_IP,
    INTERNET_SERVER_IP6,
    LAN_HOST_IP,
    LAN_HOST_IP6,
    LAN_NEIGHBOUR_IP,
    LAN_NEIGHBOUR_IP6,
    UPLINK_GATEWAY_IP,
    UPLINK_GATEWAY_IP6,
    UPLINK_HOST_IP,
    UPLINK_HOST_IP6,
    HostTopology,
    Neighbour,
    Netns,
    Unprivileged,
    entered,
)
from nyx_core.testing._netns import leaked_namespaces

pytestmark = pytest.mark.kernel


def _family(ip: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def _serve_once(ns: Netns, ip: str, port: int) -> tuple[socket.socket, threading.Thread]:
    """A TCP server in ``ns`` answering one connection with the peer's address."""
    with entered(ns):
        srv = socket.socket(_family(ip), socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((ip, port))
    srv.listen(1)
    srv.settimeout(5)

    def serve() -> None:
        try:
            conn, peer = srv.accept()
        except OSError:
            return
        with conn:
            conn.sendall(peer[0].encode())

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return srv, t


def _ask(ns: Netns, ip: str, port: int, timeout: float = 2) -> str:
    with entered(ns):
        s = socket.socket(_family(ip), socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((ip, port))
        return s.recv(64).decode()
    except OSError:
        return ""
    finally:
        s.close()


def test_host_has_an_uplink_with_the_default_route_and_a_lan_link(
    nyx_topology: HostTopology, nyx_host_ns: Netns, nyx_in_host: Netns
) -> None:
    assert nyx_host_ns is nyx_topology.host is nyx_in_host
    links = {link["ifname"] for link in nyx_host_ns.ipj("link", "show")}
    assert links == {"lo", *HOST_LINKS}
    (default,) = nyx_host_ns.ipj("route", "show", "default")
    assert default["gateway"] == UPLINK_GATEWAY_IP and default["dev"] == "uplink0"
    # the outside server is reached through the default route, from the uplink address
    with entered(nyx_host_ns):
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with probe:
        probe.connect((INTERNET_SERVER_IP, 9))
        assert probe.getsockname()[0] == UPLINK_HOST_IP


def test_traffic_flows_on_both_links(
    nyx_host_ns: Netns, nyx_internet_ns: Netns, nyx_lan_ns: Neighbour
) -> None:
    srv, t = _serve_once(nyx_internet_ns, INTERNET_SERVER_IP, 9300)
    with srv:
        assert _ask(nyx_host_ns, INTERNET_SERVER_IP, 9300) == UPLINK_HOST_IP
        t.join(5)
    srv, t = _serve_once(nyx_host_ns, LAN_HOST_IP, 9301)
    with srv:
        assert _ask(nyx_lan_ns, LAN_HOST_IP, 9301) == LAN_NEIGHBOUR_IP
        t.join(5)


def test_every_link_is_dual_stack(
    nyx_host_ns: Netns, nyx_internet_ns: Netns, nyx_lan_ns: Neighbour
) -> None:
    """IPv6 on the uplink (default route, the outside server behind it) and on the LAN,
    usable at once (no duplicate address detection pending); IPv6 forwarding off and
    router advertisements accepted on the host, as on a host nothing configured yet."""
    (default,) = nyx_host_ns.ipj("-6", "route", "show", "default")
    assert default["gateway"] == UPLINK_GATEWAY_IP6 and default["dev"] == "uplink0"
    assert nyx_host_ns.sysctl("net.ipv6.conf.all.forwarding") == "0"
    assert nyx_host_ns.sysctl("net.ipv6.conf.uplink0.accept_ra") == "1"
    srv, t = _serve_once(nyx_internet_ns, INTERNET_SERVER_IP6, 9304)
    with srv:
        assert _ask(nyx_host_ns, INTERNET_SERVER_IP6, 9304) == UPLINK_HOST_IP6
        t.join(5)
    srv, t = _serve_once(nyx_host_ns, LAN_HOST_IP6, 9305)
    with srv:
        assert _ask(nyx_lan_ns, LAN_HOST_IP6, 9305) == LAN_NEIGHBOUR_IP6
        t.join(5)
    nyx_host_ns.ip("-6", "addr", "add", "fd00:231:9::1/64", "dev", "lo")
    srv, t = _serve_once(nyx_host_ns, "fd00:231:9::1", 9306)
    with srv:
        nyx_lan_ns.route_to_host("fd00:231:9::/64")
        assert _ask(nyx_lan_ns, "fd00:231:9::1", 9306) == LAN_NEIGHBOUR_IP6
        t.join(5)
    with entered(nyx_host_ns):
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.settimeout(10)
    with s, pytest.raises(OSError) as info:
        s.connect(("2001:db8:77::1", 80))  # the internet has no route: unreachable at once
    assert not isinstance(info.value, TimeoutError)


def test_internet_answers_unreachable_at_once_for_other_addresses(nyx_host_ns: Netns) -> None:
    with entered(nyx_host_ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(10)
    with s, pytest.raises(OSError) as info:
        s.connect(("100.64.0.99", 80))
    assert not isinstance(info.value, TimeoutError)


def test_neighbour_routes_subnets_and_localhost_to_the_host(
    nyx_host_ns: Netns, nyx_lan_ns: Neighbour
) -> None:
    # a subnet behind the host
    nyx_host_ns.ip("addr", "add", "10.231.9.1/24", "dev", "lo")
    srv, t = _serve_once(nyx_host_ns, "10.231.9.1", 9302)
    with srv:
        assert _ask(nyx_lan_ns, "10.231.9.1", 9302, timeout=0.5) == ""  # no route yet
        nyx_lan_ns.route_to_host("10.231.9.0/24")
        assert _ask(nyx_lan_ns, "10.231.9.1", 9302) == LAN_NEIGHBOUR_IP
        t.join(5)
    # 127.0.0.1: the host accepts it only when its own lan0 has route_localnet (the kind of
    # host setting a firewall must survive); without the helper the neighbour talks to itself
    nyx_host_ns.sysctl("net.ipv4.conf.lan0.route_localnet", "1")
    srv, t = _serve_once(nyx_host_ns, "127.0.0.1", 9303)
    with srv:
        assert _ask(nyx_lan_ns, "127.0.0.1", 9303, timeout=0.5) == ""
        nyx_lan_ns.route_localhost_to_host()
        assert _ask(nyx_lan_ns, "127.0.0.1", 9303) == LAN_NEIGHBOUR_IP
        t.join(5)


def test_unprivileged_runs_as_nobody_in_a_namespace(
    nyx_unprivileged: Unprivileged, nyx_host_ns: Netns
) -> None:
    r = nyx_unprivileged.run(["id", "-u"])
    assert r.returncode == 0 and r.stdout.split() == ["65534"], r.stderr
    assert nyx_unprivileged.run(["id", "-G"]).stdout.split() == ["65534"]  # no root group
    # in the host namespace: sees its links, cannot bind a privileged port
    code = (
        "import socket, sys\n"
        "print(open('/proc/net/dev').read().count('uplink0'))\n"
        "try:\n"
        "    socket.socket().bind(('127.0.0.1', 80))\n"
        "except PermissionError:\n"
        "    print('refused')\n"
    )
    r = nyx_unprivileged.python(code, nyx_host_ns)
    assert r.stdout.split() == ["1", "refused"], r.stderr
    # pytest's tmp_path is under a 0700 directory: use one nobody can traverse
    with tempfile.TemporaryDirectory(prefix="nyxt-") as tmp:
        Path(tmp).chmod(0o755)
        secret = Path(tmp) / "secret"
        secret.write_text("x")
        secret.chmod(0o600)
        assert not nyx_unprivileged.can_read(secret)
        secret.chmod(0o644)
        assert nyx_unprivileged.can_read(secret)
        assert nyx_unprivileged.can_read(tmp)
        Path(tmp).chmod(0o700)
        assert not nyx_unprivileged.can_read(tmp)


def test_delete_leaves_no_namespace(require_kernel: None) -> None:
    before = leaked_namespaces()
    topo = HostTopology.create()
    names = [ns.name for ns in topo.namespaces]
    assert set(names) <= set(leaked_namespaces())
    assert all(n.startswith("nyxt-") for n in names)
    topo.delete()
    assert leaked_namespaces() == before
