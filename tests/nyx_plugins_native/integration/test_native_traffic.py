"""Real traffic through the native driver: gateway, containers, published ports, internal."""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable

import pytest
from native_helpers import GW, LAN_HOST_IP, LAN_IP, Servers, ask

from nyx_core import NetworkBackend, PortConflictError, PortMapping, SetupOptions
from nyx_core.testing import Netns, entered

pytestmark = pytest.mark.kernel


def _ip(result: object) -> str:
    return str(result.ips[0])  # type: ignore[attr-defined]


def test_container_reaches_gateway_and_other_container(
    native: NetworkBackend,
    nyx_container_ns: Callable[[], Netns],
    servers: Servers,
) -> None:
    a, b = nyx_container_ns(), nyx_container_ns()
    ra = native.setup("tr-a", a.path, [], SetupOptions())
    rb = native.setup("tr-b", b.path, [], SetupOptions())
    try:
        assert str(ra.gateway) == GW
        servers(None, GW, 9001, "gateway")
        servers(b, _ip(rb), 9002, "ctr-b")
        assert ask(a, GW, 9001) == f"gateway {_ip(ra)}"
        assert ask(a, _ip(rb), 9002) == f"ctr-b {_ip(ra)}"
        # inside the container: eth0 with the address, default route via the gateway
        routes = a.ipj("route", "show", "default")
        assert routes and routes[0]["gateway"] == GW and routes[0]["dev"] == "eth0"
        link = a.ipj("link", "show", "eth0")[0]
        assert link["address"] == ra.interfaces[0].mac
        assert link["mtu"] == 1500
    finally:
        native.teardown("tr-a", a.path)
        native.teardown("tr-b", b.path)


def test_published_port_from_external_localhost_and_hairpin(
    native: NetworkBackend,
    nyx_in_host: Netns,
    nyx_lan_ns: Netns,
    nyx_container_ns: Callable[[], Netns],
    servers: Servers,
) -> None:
    web, client = nyx_container_ns(), nyx_container_ns()
    ports = [PortMapping.parse("18080:80"), PortMapping.parse("18053:53/udp")]
    rw = native.setup("tr-web", web.path, ports, SetupOptions())
    rc = native.setup("tr-client", client.path, [], SetupOptions())
    try:
        servers(web, "0.0.0.0", 80, "web")
        servers(web, "0.0.0.0", 53, "dns", udp=True)
        # from another host: the container sees the client's own address (no masquerade)
        assert ask(nyx_lan_ns, LAN_HOST_IP, 18080) == f"web {LAN_IP}"
        assert ask(nyx_lan_ns, LAN_HOST_IP, 18053, udp=True) == f"dns {LAN_IP}"
        # from the host itself, on 127.0.0.1 and on its own addresses
        assert ask(None, "127.0.0.1", 18080).startswith("web ")
        assert ask(None, LAN_HOST_IP, 18080).startswith("web ")
        # hairpin: another container through a host address, and through the gateway
        assert ask(client, LAN_HOST_IP, 18080).startswith("web ")
        assert ask(client, GW, 18080).startswith("web ")
        # the container itself through a host address (hairpin mode on its bridge port)
        assert ask(web, LAN_HOST_IP, 18080).startswith("web ")
        # the subnet leaving through the external link is masqueraded
        servers(nyx_lan_ns, LAN_IP, 9100, "ext")
        assert ask(client, LAN_IP, 9100) == f"ext {LAN_HOST_IP}"
        assert _ip(rw) != _ip(rc)
    finally:
        native.teardown("tr-web", web.path)
        native.teardown("tr-client", client.path)
    # after teardown nothing answers any more
    assert ask(nyx_lan_ns, LAN_HOST_IP, 18080, timeout=0.5) == ""


def test_port_range_and_host_ip(
    native: NetworkBackend,
    nyx_lan_ns: Netns,
    nyx_container_ns: Callable[[], Netns],
    servers: Servers,
) -> None:
    ctr = nyx_container_ns()
    ports = [
        PortMapping.parse("18100-18101:9100-9101"),
        PortMapping.parse("127.0.0.1:18102:9102"),
    ]
    native.setup("tr-range", ctr.path, ports, SetupOptions())
    try:
        for p in (9100, 9101, 9102):
            servers(ctr, "0.0.0.0", p, f"p{p}")
        assert ask(nyx_lan_ns, LAN_HOST_IP, 18100).startswith("p9100 ")
        assert ask(nyx_lan_ns, LAN_HOST_IP, 18101).startswith("p9101 ")
        assert ask(None, "127.0.0.1", 18102).startswith("p9102 ")
        # published on 127.0.0.1 only: not reachable from outside
        assert ask(nyx_lan_ns, LAN_HOST_IP, 18102, timeout=0.5) == ""
    finally:
        native.teardown("tr-range", ctr.path)


def test_internal_container_cannot_leave_the_subnet(
    native: NetworkBackend,
    nyx_lan_ns: Netns,
    nyx_container_ns: Callable[[], Netns],
    servers: Servers,
) -> None:
    inner, normal = nyx_container_ns(), nyx_container_ns()
    ri = native.setup("tr-int", inner.path, [], SetupOptions(internal=True))
    rn = native.setup("tr-norm", normal.path, [], SetupOptions())
    try:
        assert ri.internal
        servers(nyx_lan_ns, LAN_IP, 9200, "ext")
        servers(normal, _ip(rn), 9201, "normal")
        servers(None, GW, 9202, "gateway")
        assert ask(normal, LAN_IP, 9200) == f"ext {LAN_HOST_IP}"
        assert ask(inner, LAN_IP, 9200, timeout=0.7) == ""
        # inside the bridge it still works, and so does the gateway (DNS lives there)
        assert ask(inner, _ip(rn), 9201) == f"normal {_ip(ri)}"
        assert ask(inner, GW, 9202) == f"gateway {_ip(ri)}"
    finally:
        native.teardown("tr-int", inner.path)
        native.teardown("tr-norm", normal.path)
    # the address is not internal any more once torn down
    native.setup("tr-int2", inner.path, [], SetupOptions())
    try:
        assert ask(inner, LAN_IP, 9200) == f"ext {LAN_HOST_IP}"
    finally:
        native.teardown("tr-int2", inner.path)


def test_port_in_use_on_the_host_is_refused_and_published_ports_are_reserved(
    native: NetworkBackend,
    nyx_container_ns: Callable[[], Netns],
    servers: Servers,
) -> None:
    a, b = nyx_container_ns(), nyx_container_ns()
    servers(None, "0.0.0.0", 18090, "host-process")
    with pytest.raises(PortConflictError, match="18090"):
        native.setup("tr-busy", a.path, [PortMapping.parse("18090:80")], SetupOptions())
    native.setup("tr-pub", a.path, [PortMapping.parse("18091:80")], SetupOptions())
    try:
        # nothing else can take a published port
        with pytest.raises(OSError):
            servers(None, "0.0.0.0", 18091, "late")
        # a specific address clashes with the same port on every address
        with pytest.raises(PortConflictError, match=r"18091.*tr-pub"):
            native.setup(
                "tr-dup", b.path, [PortMapping.parse("127.0.0.1:18091:80")], SetupOptions()
            )
    finally:
        native.teardown("tr-pub", a.path)
    # released at teardown
    servers(None, "0.0.0.0", 18091, "now-free")


def _group_socket(ns: Netns, local: str, group: str, port: int) -> socket.socket:
    """A UDP socket in ``ns`` that joined ``group`` on the interface holding ``local``."""
    with entered(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("", port))
    mreq = struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton(local))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    return sock


def _got(sock: socket.socket, timeout: float) -> bytes | None:
    sock.settimeout(timeout)
    try:
        return sock.recv(512)
    except TimeoutError:
        return None


def test_multicast_reaches_the_other_containers_never_the_lan(
    native: NetworkBackend, nyx_container_ns: Callable[[], Netns], nyx_lan_ns: Netns
) -> None:
    """nyx's bridge has multicast snooping off: a container's multicast goes to every other
    container of its network (a plain switch); the LAN neighbour's multicast is not routed
    in, and a container's does not leave the network."""
    a, b = nyx_container_ns(), nyx_container_ns()
    native.setup("tr-mc-a", a.path, [], SetupOptions())
    rb = native.setup("tr-mc-b", b.path, [], SetupOptions())
    group, port = "239.7.7.7", 17700
    member = _group_socket(b, _ip(rb), group, port)
    on_lan = _group_socket(nyx_lan_ns, LAN_IP, group, port)
    try:
        with entered(a):
            sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sender.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 8)
        got = None
        for _ in range(20):  # the first datagrams may race the join's report
            sender.sendto(b"from a", (group, port))
            got = _got(member, 0.1)
            if got is not None:
                break
        sender.close()
        assert got == b"from a"
        assert _got(on_lan, 0.5) is None
        with entered(nyx_lan_ns):
            lan = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        lan.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 8)
        lan.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(LAN_IP))
        for _ in range(5):
            lan.sendto(b"from the lan", (group, port))
        lan.close()
        assert _got(member, 0.5) is None
    finally:
        member.close()
        on_lan.close()
        native.teardown("tr-mc-a", a.path)
        native.teardown("tr-mc-b", b.path)
