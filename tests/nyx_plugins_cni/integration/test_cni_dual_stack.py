"""Dual stack on the CNI driver with Debian's real plugins (bridge, host-local, portmap).

The kit's real-host topology, with IPv6 added to its uplink here (``ip ... replace``: the
same addresses as the kit's own dual-stack topology, so this works whether the kit has
them or not): the host ``uplink0`` 2001:db8:113::2/64 with the default IPv6 route via
2001:db8:113::1 in the "internet" namespace, which holds 2001:db8:18::10 and has no route
back to the container subnets (a container reaches it only masqueraded).
"""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from nyx_core import NetworkBackend, NetworkSpec, NyxSettings, SetupOptions, SetupResult
from nyx_core.testing import Netns, entered, snapshot
from nyx_plugins_cni import CniSettings

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(not Path("/usr/lib/cni/bridge").exists(), reason="needs CNI plugins"),
]

NsFactory = Callable[[], Netns]
SUBNET6 = ipaddress.IPv6Network("2001:db8:231::/64")
GW6 = "2001:db8:231::1"
UPLINK_HOST_IP6, UPLINK_GATEWAY_IP6 = "2001:db8:113::2", "2001:db8:113::1"
INTERNET_SERVER_IP6 = "2001:db8:18::10"
PORT = 8096


@pytest.fixture
def uplink6(nyx_in_host: Netns, nyx_internet_ns: Netns) -> None:
    """IPv6 on the kit's uplink (see the module doc)."""
    nyx_in_host.ip("addr", "replace", f"{UPLINK_HOST_IP6}/64", "dev", "uplink0", "nodad")
    nyx_in_host.ip("-6", "route", "replace", "default", "via", UPLINK_GATEWAY_IP6)
    nyx_internet_ns.ip("addr", "replace", f"{UPLINK_GATEWAY_IP6}/64", "dev", "eth0", "nodad")
    nyx_internet_ns.ip("addr", "replace", f"{INTERNET_SERVER_IP6}/128", "dev", "lo")


@pytest.fixture
def settings6(nyx_settings: NyxSettings) -> NyxSettings:
    return nyx_settings.model_copy(update={"container_subnet6": SUBNET6})


@pytest.fixture
def backend6(settings6: NyxSettings, nyx_in_host: Netns, uplink6: None) -> NetworkBackend:
    b = NetworkBackend.load("cni")
    b.ensure_network(settings6)
    return b


class Server:
    """A TCP server on ``[ip]:PORT`` in ``ns`` answering every connection with ``payload``
    and recording the clients' addresses."""

    def __init__(self, ns: Netns, ip: str, payload: bytes) -> None:
        with entered(ns):
            self.sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((ip, PORT))
        self.sock.listen(8)
        self.payload = payload
        self.clients: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            self.clients.append(peer[0])
            with conn:
                conn.sendall(self.payload)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(5)


def fetch(ns: Netns, ip: object, timeout: float = 3) -> bytes | None:
    """What a TCP connection from ``ns`` to ``[ip]:PORT`` gets, or None."""
    with entered(ns):
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    with sock:
        sock.settimeout(timeout)
        try:
            sock.connect((str(ip), PORT))
            return sock.recv(100)
        except OSError:
            return None


def v6_of(result: SetupResult) -> ipaddress.IPv6Address:
    (ip,) = [ip for ip in result.ips if ip.version == 6]
    assert isinstance(ip, ipaddress.IPv6Address)
    return ip


def test_default_network_is_dual_stack(
    backend6: NetworkBackend,
    settings6: NyxSettings,
    nyx_in_host: Netns,
    nyx_container_ns: NsFactory,
) -> None:
    """With container_subnet6 set, the default conflist nyx writes has two host-local
    ranges and both default routes; a container gets an address of each family on eth0,
    both in the result, the IPv6 one usable at once, and a default route of each family."""
    conf = json.loads((settings6.plugin(CniSettings).conf_dir / "nyx.conflist").read_text())
    ipam = conf["plugins"][0]["ipam"]
    assert ipam["ranges"] == [
        [{"subnet": "10.231.0.0/24", "gateway": "10.231.0.1"}],
        [{"subnet": str(SUBNET6), "gateway": GW6}],
    ]
    assert ipam["routes"] == [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
    ctr = nyx_container_ns()
    r = backend6.setup("ds-a", ctr.path, [], SetupOptions(hostname="a"))
    try:
        (eth0,) = r.interfaces
        fams = sorted((a.version, a.network.prefixlen) for a in eth0.addresses)
        assert eth0.name == "eth0" and fams == [(4, 24), (6, 64)], r
        assert r.gateway == settings6.gateway_ip
        ip6 = v6_of(r)
        assert ip6 in SUBNET6 and str(ip6) != GW6
        addrs = {a["local"]: a for x in ctr.ipj("-6", "addr", "show") for a in x["addr_info"]}
        assert str(ip6) in addrs and not addrs[str(ip6)].get("tentative"), addrs
        routes = ctr.ipj("-6", "route", "show", "default")
        assert [x.get("gateway") for x in routes] == [GW6], routes
        bridge6 = {
            a["local"]: a
            for x in nyx_in_host.ipj("-6", "addr", "show", "dev", "nyx0")
            for a in x["addr_info"]
        }
        assert GW6 in bridge6 and not bridge6[GW6].get("tentative"), bridge6
    finally:
        backend6.teardown("ds-a", ctr.path)


def test_containers_reach_each_other_the_host_and_the_outside_over_ipv6(
    backend6: NetworkBackend,
    nyx_in_host: Netns,
    nyx_internet_ns: Netns,
    nyx_container_ns: NsFactory,
) -> None:
    """Container to container and to the IPv6 gateway (where embedded DNS listens) at
    once after setup; to the outside masqueraded to the uplink's IPv6 address (the
    internet namespace has no route back to the container subnet)."""
    a, b = nyx_container_ns(), nyx_container_ns()
    ra = backend6.setup("ds-a", a.path, [], SetupOptions(hostname="a"))
    servers: list[Server] = []
    try:
        rb = backend6.setup("ds-b", b.path, [], SetupOptions(hostname="b"))
        peer = Server(b, str(v6_of(rb)), b"peer over ipv6")
        host = Server(nyx_in_host, GW6, b"host gateway6")
        internet = Server(nyx_internet_ns, INTERNET_SERVER_IP6, b"internet6")
        servers = [peer, host, internet]
        assert fetch(a, v6_of(rb)) == b"peer over ipv6"
        assert peer.clients == [str(v6_of(ra))]
        assert fetch(a, GW6) == b"host gateway6"
        assert fetch(a, INTERNET_SERVER_IP6) == b"internet6"
        assert internet.clients == [UPLINK_HOST_IP6]  # masqueraded
    finally:
        for s in servers:
            s.close()
        backend6.teardown("ds-b", b.path)
        backend6.teardown("ds-a", a.path)


def test_a_dual_stack_network_and_its_internal_twin(
    backend6: NetworkBackend,
    settings6: NyxSettings,
    nyx_in_host: Netns,
    nyx_internet_ns: Netns,
    nyx_container_ns: NsFactory,
) -> None:
    """network_create with subnet6: a generated dual-stack conflist, reported with both
    subnets, its containers on both families; an internal one keeps IPv6 in too (route only
    to the host's IPv6 gateway, a drop rule for the IPv6 subnet), and both go away
    without a trace."""
    before = snapshot(nyx_in_host)
    net6 = ipaddress.IPv6Network("2001:db8:232::/64")
    info = backend6.network_create(
        NetworkSpec(name="six", subnet=ipaddress.IPv4Network("10.232.0.0/24"), subnet6=net6)
    )
    assert (info.subnet6, str(info.gateway6)) == (net6, "2001:db8:232::1")
    inner6 = ipaddress.IPv6Network("2001:db8:233::/64")
    info = backend6.network_create(
        NetworkSpec(
            name="in6", subnet=ipaddress.IPv4Network("10.233.0.0/24"), subnet6=inner6, internal=True
        )
    )
    assert info.subnet6 == inner6 and info.internal
    x, y, z = nyx_container_ns(), nyx_container_ns(), nyx_container_ns()
    servers: list[Server] = []
    try:
        rx = backend6.setup("n6-x", x.path, [], SetupOptions(network="six"))
        assert v6_of(rx) in net6
        internet = Server(nyx_internet_ns, INTERNET_SERVER_IP6, b"internet6")
        gw = Server(nyx_in_host, GW6, b"dns gateway6")
        servers = [internet, gw]
        assert fetch(x, INTERNET_SERVER_IP6) == b"internet6"
        ry = backend6.setup("n6-y", y.path, [], SetupOptions(network="in6", internal=True))
        rz = backend6.setup("n6-z", z.path, [], SetupOptions(network="in6", internal=True))
        assert v6_of(ry) in inner6
        peer = Server(z, str(v6_of(rz)), b"inner peer6")
        servers.append(peer)
        assert fetch(y, v6_of(rz)) == b"inner peer6"
        routes6 = {(r["dst"], r.get("gateway")) for r in y.ipj("-6", "route", "show")}
        assert ("default", None) not in routes6 and not any(d == "default" for d, _ in routes6)
        assert (f"{GW6}", "2001:db8:233::1") in routes6, routes6
        assert fetch(y, GW6) == b"dns gateway6"  # the host's IPv6 gateway (embedded DNS)
        assert fetch(y, INTERNET_SERVER_IP6, timeout=2) is None
        # a container that routes out itself, to a far end that routes the subnet back:
        # only nyx's drop keeps it in
        y.ip("-6", "route", "add", "default", "via", "2001:db8:233::1")
        nyx_internet_ns.ip("-6", "route", "add", str(inner6), "via", UPLINK_HOST_IP6)
        assert fetch(y, INTERNET_SERVER_IP6, timeout=2) is None
        rules = nyx_in_host.run(["nft", "list", "table", "inet", "nyx-cni"]).stdout
        assert f"ip6 saddr {inner6} ip6 daddr != {{ {inner6}, fe80::/10, ff00::/8 }} drop" in rules
    finally:
        for s in servers:
            s.close()
        for cid, ns in (("n6-x", x), ("n6-y", y), ("n6-z", z)):
            backend6.teardown(cid, ns.path)
    backend6.network_remove("six")
    backend6.network_remove("in6")
    nyx_internet_ns.ip("-6", "route", "del", str(inner6), check=False)
    assert snapshot(nyx_in_host) == before
