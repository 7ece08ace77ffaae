"""Networks on the CNI driver with Debian's real plugins, through the facade nyxd uses
(``NetworkBackend.load("cni")``), in the kit's real-host topology.

The host namespace has an uplink with the default route to an "internet" namespace that
holds 198.18.0.10 (reachable from a container only through the host, masqueraded) and no
route back to the container subnets.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nyx_core import (
    ConfigError,
    NetworkBackend,
    NetworkSpec,
    NyxSettings,
    PortMapping,
    SetupOptions,
    SetupResult,
)
from nyx_core.testing import (
    INTERNET_SERVER_IP,
    UPLINK_HOST_IP,
    Netns,
    entered,
    snapshot,
)
from nyx_plugins_cni import CniSettings

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(not Path("/usr/lib/cni/bridge").exists(), reason="needs CNI plugins"),
]

NsFactory = Callable[[], Netns]
PORT = 8089


@pytest.fixture
def backend(nyx_settings: NyxSettings, nyx_in_host: Netns) -> Iterator[NetworkBackend]:
    b = NetworkBackend.load("cni")
    b.ensure_network(nyx_settings)
    yield b


def _conf_dir(settings: NyxSettings) -> Path:
    return settings.plugin(CniSettings).conf_dir


class Server:
    """A TCP server in a namespace that answers every connection with ``payload``."""

    def __init__(self, ns: Netns, ip: str, payload: bytes) -> None:
        with entered(ns):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((ip, PORT))
        self.sock.listen(8)
        self.payload = payload
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(self.payload)

    def close(self) -> None:
        try:  # wakes the accept() (a close alone does not)
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(5)


def fetch(ns: Netns, ip: object, timeout: float = 3) -> bytes | None:
    """What a TCP connection from ``ns`` to ``ip``:PORT gets, or None when it cannot
    connect (a drop: no answer within ``timeout``; a reset or unreachable: at once)."""
    with entered(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        sock.settimeout(timeout)
        try:
            sock.connect((str(ip), PORT))
            return sock.recv(100)
        except OSError:
            return None


def _addr(result: SetupResult, ifname: str) -> ipaddress.IPv4Interface:
    (itf,) = [i for i in result.interfaces if i.name == ifname]
    (addr,) = itf.addresses
    assert isinstance(addr, ipaddress.IPv4Interface)
    return addr


def _links(ns: Netns) -> dict[str, list[str]]:
    return {
        a["ifname"]: [
            f"{i['local']}/{i['prefixlen']}"
            for i in a.get("addr_info", [])
            if i["family"] == "inet"
        ]
        for a in ns.ipj("addr", "show")
    }


def test_a_container_on_two_networks(
    backend: NetworkBackend,
    nyx_settings: NyxSettings,
    nyx_in_host: Netns,
    nyx_container_ns: NsFactory,
) -> None:
    before_net = snapshot(nyx_in_host)
    info = backend.network_create(
        NetworkSpec(name="back", subnet=ipaddress.IPv4Network("10.232.0.0/24"))
    )
    assert info.interface == "cni-back" and str(info.subnet) == "10.232.0.0/24"
    conflist = _conf_dir(nyx_settings) / "back.conflist"
    assert json.loads(conflist.read_text())["name"] == "back"
    a, b, c = nyx_container_ns(), nyx_container_ns(), nyx_container_ns()
    before = snapshot(nyx_in_host)
    servers: list[Server] = []
    try:
        r0 = backend.setup("two-a", a.path, [], SetupOptions(network="nyx", interface="eth0"))
        r1 = backend.setup("two-a", a.path, [], SetupOptions(network="back", interface="eth1"))
        rb = backend.setup("two-b", b.path, [], SetupOptions(network="nyx"))
        rc = backend.setup("two-c", c.path, [], SetupOptions(network="back"))
        eth0, eth1 = _addr(r0, "eth0"), _addr(r1, "eth1")
        assert eth0.ip in nyx_settings.container_subnet
        assert eth1.ip in ipaddress.IPv4Network("10.232.0.0/24")
        links = _links(a)
        assert links["eth0"] == [str(eth0)] and links["eth1"] == [str(eth1)]
        defaults = [(r.get("gateway"), r["dev"]) for r in a.ipj("route", "show", "default")]
        assert defaults == [(str(nyx_settings.gateway_ip), "eth0")]  # the first network's
        servers = [
            Server(b, str(_addr(rb, "eth0").ip), b"peer on nyx"),
            Server(c, str(_addr(rc, "eth0").ip), b"peer on back"),
        ]
        assert fetch(a, _addr(rb, "eth0").ip) == b"peer on nyx"
        assert fetch(a, _addr(rc, "eth0").ip) == b"peer on back"
    finally:
        for s in servers:
            s.close()
        for cid, ns in (("two-a", a), ("two-b", b), ("two-c", c)):
            backend.teardown(cid, ns.path)
    assert snapshot(nyx_in_host) == before
    assert [x["ifname"] for x in a.ipj("link", "show")] == ["lo"]
    # network remove deletes the generated conflist and the bridge: the host is as before
    backend.network_remove("back")
    assert not conflist.exists()
    assert "cni-back" not in _links(nyx_in_host)
    assert snapshot(nyx_in_host) == before_net


def test_an_internal_network_keeps_its_traffic_inside(
    backend: NetworkBackend,
    nyx_settings: NyxSettings,
    nyx_in_host: Netns,
    nyx_internet_ns: Netns,
    nyx_container_ns: NsFactory,
) -> None:
    before_net = snapshot(nyx_in_host)
    backend.network_create(
        NetworkSpec(name="inner", subnet=ipaddress.IPv4Network("10.233.0.0/24"), internal=True)
    )
    x, y, out = nyx_container_ns(), nyx_container_ns(), nyx_container_ns()
    internet = Server(nyx_internet_ns, INTERNET_SERVER_IP, b"internet")
    # where embedded DNS listens: the default network's gateway, on the host
    host = Server(nyx_in_host, str(nyx_settings.gateway_ip), b"host gateway")
    peer: Server | None = None
    try:
        rx = backend.setup("in-x", x.path, [], SetupOptions(network="inner", internal=True))
        ry = backend.setup("in-y", y.path, [], SetupOptions(network="inner", internal=True))
        backend.setup("in-out", out.path, [], SetupOptions())
        assert rx.internal
        # the control: a container of a normal network reaches the internet server
        assert fetch(out, INTERNET_SERVER_IP) == b"internet"
        peer = Server(y, str(_addr(ry, "eth0").ip), b"inner peer")
        with entered(nyx_in_host):  # so bridged traffic crosses the inet forward hook too
            assert Path("/proc/sys/net/bridge/bridge-nf-call-iptables").read_text() == "1\n"
        assert fetch(x, _addr(ry, "eth0").ip) == b"inner peer"  # same bridge: not dropped
        assert fetch(x, nyx_settings.gateway_ip) == b"host gateway"  # the host itself
        # no default route: nothing is routed out ...
        routes = {(r["dst"], r.get("gateway")) for r in x.ipj("route", "show")}
        assert routes == {("10.233.0.0/24", None), (f"{nyx_settings.gateway_ip}", "10.233.0.1")}
        assert fetch(x, INTERNET_SERVER_IP, timeout=2) is None
        # ... and when a container routes out itself (NET_ADMIN) and the far end routes the
        # subnet back (a router that knows it), only the drop of inet nyx-cni keeps it in
        x.ip("route", "add", "default", "via", "10.233.0.1")
        nyx_internet_ns.ip("route", "add", "10.233.0.0/24", "via", UPLINK_HOST_IP)
        assert fetch(x, INTERNET_SERVER_IP, timeout=2) is None
    finally:
        for s in (internet, host, peer):
            if s is not None:
                s.close()
        for cid, ns in (("in-x", x), ("in-y", y), ("in-out", out)):
            backend.teardown(cid, ns.path)
    backend.network_remove("inner")
    assert snapshot(nyx_in_host) == before_net  # the rule and table went with the network


def test_internal_is_what_the_nyx_cni_rule_enforces(
    backend: NetworkBackend,
    nyx_settings: NyxSettings,
    nyx_in_host: Netns,
    nyx_internet_ns: Netns,
    nyx_container_ns: NsFactory,
) -> None:
    """The admin's conflist masquerades its subnet; only nyx's rule keeps it in."""
    conf = {
        "cniVersion": "1.0.0",
        "name": "lab",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "nyxt-lab0",
                "isGateway": True,
                "ipMasq": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": "10.234.0.0/24"}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(nyx_settings.state_dir / "lab-leases"),
                },
            }
        ],
    }
    path = _conf_dir(nyx_settings) / "50-lab.conflist"
    path.write_text(json.dumps(conf))
    internet = Server(nyx_internet_ns, INTERNET_SERVER_IP, b"internet")
    try:
        for internal, expected in ((True, None), (False, b"internet")):
            info = backend.network_create(
                NetworkSpec(
                    name="lab", subnet=ipaddress.IPv4Network("10.99.0.0/24"), internal=internal
                )
            )
            assert str(info.subnet) == "10.234.0.0/24" and info.internal is internal
            ctr = nyx_container_ns()
            backend.setup("lab-c", ctr.path, [], SetupOptions(network="lab", internal=internal))
            try:
                assert fetch(ctr, INTERNET_SERVER_IP, timeout=2) == expected
            finally:
                backend.teardown("lab-c", ctr.path)
                backend.network_remove("lab")
        assert path.exists()  # the admin's conflist stays
    finally:
        internet.close()


def test_an_internal_attachment_on_the_default_network(
    backend: NetworkBackend,
    nyx_in_host: Netns,
    nyx_internet_ns: Netns,
    nyx_container_ns: NsFactory,
) -> None:
    inside, free = nyx_container_ns(), nyx_container_ns()
    before = snapshot(nyx_in_host)
    internet = Server(nyx_internet_ns, INTERNET_SERVER_IP, b"internet")
    peer: Server | None = None
    try:
        ri = backend.setup("att-in", inside.path, [], SetupOptions(internal=True))
        rf = backend.setup("att-free", free.path, [], SetupOptions())
        assert ri.internal and not rf.internal
        assert fetch(free, INTERNET_SERVER_IP) == b"internet"
        peer = Server(free, str(_addr(rf, "eth0").ip), b"neighbour")
        assert fetch(inside, _addr(rf, "eth0").ip) == b"neighbour"
        assert fetch(inside, INTERNET_SERVER_IP, timeout=2) is None
    finally:
        internet.close()
        if peer is not None:
            peer.close()
        backend.teardown("att-in", inside.path)
        backend.teardown("att-free", free.path)
    assert snapshot(nyx_in_host) == before


def _make_stale(ns: Netns) -> None:
    """What a crash leaves: the netns path as a plain file, no longer a namespace."""
    subprocess.run(["umount", "--lazy", ns.path], check=True)


def test_teardown_when_the_netns_path_is_a_stale_file(
    backend: NetworkBackend, nyx_in_host: Netns, nyx_container_ns: NsFactory
) -> None:
    ctr = nyx_container_ns()
    before = snapshot(nyx_in_host)
    backend.setup("stale-t", ctr.path, [PortMapping.parse("18090:80")], SetupOptions())
    _make_stale(ctr)
    backend.teardown("stale-t", ctr.path)  # DEL in the namespace nyx still holds open
    assert snapshot(nyx_in_host) == before
    with pytest.raises(ConfigError, match="not a network namespace"):
        backend.setup("stale-s", ctr.path, [], SetupOptions())
    assert snapshot(nyx_in_host) == before
