"""Dual stack on the kit's real-looking host (issue 13).

The host namespace has IPv6 on its uplink (``2001:db8:113::2``, default route via
``2001:db8:113::1``, the "internet" namespace with a server on ``2001:db8:18::10``) and on
its LAN link (``2001:db8:100::1``, the neighbour ``2001:db8:100::2``). The default network
is dual stack: ``10.231.0.0/24`` and ``fd00:231::/64`` (gateway ``fd00:231::1``).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import time
from collections.abc import Callable, Iterator

import pytest
from native_helpers import (
    INTERNET_SERVER_IP,
    LAN_HOST_IP,
    LAN_IP,
    UPLINK_HOST_IP,
    Servers,
    ask,
)

from nyx_core import (
    FirewallError,
    IpamError,
    NetworkBackend,
    NetworkSpec,
    NyxSettings,
    PortMapping,
    SetupOptions,
    SetupResult,
)
from nyx_core.testing import (
    INTERNET_SERVER_IP6,
    LAN_HOST_IP6,
    LAN_NEIGHBOUR_IP6,
    UPLINK_GATEWAY_IP6,
    UPLINK_HOST_IP6,
    Neighbour,
    Netns,
    entered,
    snapshot,
)
from nyx_core.testing._conformance import dual_stack
from nyx_plugins_native import Firewall, NativeDriver, NativeSettings, lease_store
from nyx_plugins_native.plugin import NativePlugin

pytestmark = pytest.mark.kernel

GW6 = "fd00:231::1"  # the default network's IPv6 gateway (dual_stack: fd00:231::/64)
SUBNET6 = "fd00:231::/64"


@pytest.fixture
def settings6(nyx_settings: NyxSettings) -> NyxSettings:
    return dual_stack(nyx_settings)


@pytest.fixture
def native6(settings6: NyxSettings, nyx_in_host: Netns) -> NetworkBackend:
    """The native driver with a dual-stack default network, in the host namespace."""
    backend = NetworkBackend.load("native")
    backend.ensure_network(settings6)
    return backend


def _ip6(result: SetupResult) -> str:
    (ip,) = [str(ip) for ip in result.ips if ip.version == 6]
    return ip


def _ip4(result: SetupResult) -> str:
    (ip,) = [str(ip) for ip in result.ips if ip.version == 4]
    return ip


# ------------------------------------------------------------------ raw frames


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _udp6_frame(dst_mac: str, src_mac: str, src: str, dst: str, dport: int) -> bytes:
    """An Ethernet frame with an IPv6 UDP datagram, crafted by hand: what a container with
    NET_RAW (or a LAN neighbour) can put on the wire whatever its routes say."""
    payload = b"nyx-raw"
    s, d = ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed
    length = 8 + len(payload)
    pseudo = s + d + struct.pack("!IxxxB", length, 17)
    udp = struct.pack("!HHHH", 40000, dport, length, 0) + payload
    udp = udp[:6] + struct.pack("!H", _checksum(pseudo + udp) or 0xFFFF) + udp[8:]
    ip6 = struct.pack("!IHBB", 6 << 28, length, 17, 64) + s + d
    eth = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", ""))
    return eth + b"\x86\xdd" + ip6 + udp


def _send_frame(ns: Netns, ifname: str, frame: bytes) -> None:
    with entered(ns):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    with s:
        s.bind((ifname, 0))
        s.send(frame)


def _mac(ns: Netns | None, ifname: str, host: Netns) -> str:
    return str((ns or host).ipj("link", "show", ifname)[0]["address"])


class _UdpSink:
    """A UDP socket in the calling thread's namespace that counts what reaches it."""

    def __init__(self, ip: str, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        self.sock.bind((ip, port))
        self.sock.settimeout(0.5)

    def got(self) -> bool:
        try:
            self.sock.recv(64)
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def sink() -> Iterator[Callable[[str, int], _UdpSink]]:
    made: list[_UdpSink] = []

    def make(ip: str, port: int) -> _UdpSink:
        made.append(_UdpSink(ip, port))
        return made[-1]

    yield make
    for s in made:
        s.close()


def _send_ra(ns: Netns, ifname: str, source: str) -> None:
    """A router advertisement (router lifetime 1800 s) from ``source`` (a link-local
    address added ``nodad`` first) to all nodes on ``ifname``."""
    ns.ip("-6", "addr", "replace", f"{source}/64", "dev", ifname, "nodad")
    index = ns.ipj("link", "show", ifname)[0]["ifindex"]
    with entered(ns):
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    with s:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        s.bind((source, 0, 0, index))
        s.sendto(struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0), ("ff02::1", 0, 0, index))


def _ra_routes(ns: Netns, via: str) -> list[object]:
    """Default routes ``ns`` learned from router advertisements of ``via`` (a moment given
    for the advertisement to arrive)."""
    for _ in range(20):
        routes = [
            r
            for r in ns.ipj("-6", "route", "show", "default")
            if r.get("gateway") == via and r.get("protocol") == "ra"
        ]
        if routes:
            return routes
        time.sleep(0.05)
    return []


# ------------------------------------------------------------------ containers


def test_containers_reach_each_other_and_the_internet_over_ipv6(
    native6: NetworkBackend,
    nyx_internet_ns: Netns,
    nyx_container_ns: Callable[[], Netns],
    servers: Servers,
) -> None:
    """Container to container over IPv6 (the peer sees the other's own address), and to the
    outside, masqueraded to the uplink's IPv6 address (the internet has no route back to a
    ULA subnet); IPv4 as before."""
    a, b = nyx_container_ns(), nyx_container_ns()
    ra = native6.setup("v6-a", a.path, [], SetupOptions())
    try:
        rb = native6.setup("v6-b", b.path, [], SetupOptions())
        try:
            assert ipaddress.ip_address(_ip6(ra)) in ipaddress.ip_network(SUBNET6)
            assert {r["dst"] for r in a.ipj("-6", "route", "show")} >= {"default", SUBNET6}
            servers(a, _ip6(ra), 9500, "a")
            assert ask(b, _ip6(ra), 9500) == f"a {_ip6(rb)}"
            servers(nyx_internet_ns, INTERNET_SERVER_IP6, 9501, "inet6")
            servers(nyx_internet_ns, INTERNET_SERVER_IP, 9502, "inet4")
            assert ask(a, INTERNET_SERVER_IP6, 9501) == f"inet6 {UPLINK_HOST_IP6}"
            assert ask(a, INTERNET_SERVER_IP, 9502) == f"inet4 {UPLINK_HOST_IP}"
        finally:
            native6.teardown("v6-b", b.path)
    finally:
        native6.teardown("v6-a", a.path)


def test_static_ipv6_address_is_honoured_or_refused(
    native6: NetworkBackend, nyx_in_host: Netns, nyx_container_ns: Callable[[], Netns]
) -> None:
    ctr, other = nyx_container_ns(), nyx_container_ns()
    result = native6.setup(
        "v6-static", ctr.path, [], SetupOptions(static_ip=ipaddress.ip_address("fd00:231::99"))
    )
    try:
        assert _ip6(result) == "fd00:231::99"
        assert _ip4(result).startswith("10.231.0.")
        before = snapshot(nyx_in_host)
        for static, word in (
            ("fd00:231::99", "already leased"),
            ("fd00:231::1", "gateway"),
            ("fd00:999::5", "outside the network's subnet"),
        ):
            opts = SetupOptions(static_ip=ipaddress.ip_address(static))
            with pytest.raises(Exception, match=word):
                native6.setup("v6-other", other.path, [], opts)
        assert snapshot(nyx_in_host) == before
    finally:
        native6.teardown("v6-static", ctr.path)


def test_static_ip6_is_honoured_next_to_static_ip_and_refused_naming_it(
    native6: NetworkBackend, nyx_in_host: Netns, nyx_container_ns: Callable[[], Netns]
) -> None:
    """``static_ip6`` (the field nyxd fills from ``--ip6``/``ipv6_address``) next to an IPv4
    ``static_ip``: both honoured, configured in the container; a refusal names the field."""
    ctr, other = nyx_container_ns(), nyx_container_ns()
    opts = SetupOptions(static_ip="10.231.0.98", static_ip6="fd00:231::98")
    result = native6.setup("v6-static6", ctr.path, [], opts)
    try:
        assert (_ip4(result), _ip6(result)) == ("10.231.0.98", "fd00:231::98")
        inside = {a["local"] for link in ctr.ipj("addr", "show") for a in link["addr_info"]}
        assert {"10.231.0.98", "fd00:231::98"} <= inside, inside
        before = snapshot(nyx_in_host)
        for static, word in (
            ("fd00:231::98", "static_ip6 fd00:231::98 is already leased"),
            ("fd00:231::1", "static_ip6 fd00:231::1 is the gateway"),
            ("fd00:999::5", "static_ip6 fd00:999::5 is outside the network's subnet"),
        ):
            with pytest.raises(IpamError, match=word):
                native6.setup("v6-other6", other.path, [], SetupOptions(static_ip6=static))
        assert snapshot(nyx_in_host) == before
    finally:
        native6.teardown("v6-static6", ctr.path)


def test_a_v4_only_network_refuses_ipv6_requests(
    native6: NetworkBackend, nyx_in_host: Netns, nyx_container_ns: Callable[[], Netns]
) -> None:
    native6.network_create(NetworkSpec(name="only4", subnet=ipaddress.IPv4Network("10.232.7.0/24")))
    try:
        ctr = nyx_container_ns()
        before = snapshot(nyx_in_host)
        for ports, opts, word in (
            ([], SetupOptions(network="only4", static_ip=ipaddress.ip_address("fd00::5")), "IPv6"),
            (
                [],
                SetupOptions(network="only4", static_ip6="fd00::5"),
                "static_ip6 fd00::5 is IPv6 but network 'only4' has no IPv6 subnet",
            ),
            ([PortMapping.parse("[::]:18390:80")], SetupOptions(network="only4"), "IPv6"),
        ):
            with pytest.raises(Exception, match=word):
                native6.setup("v6-only4", ctr.path, ports, opts)
        assert snapshot(nyx_in_host) == before
        result = native6.setup("v6-only4", ctr.path, [], SetupOptions(network="only4"))
        assert [ip.version for ip in result.ips] == [4]
        native6.teardown("v6-only4", ctr.path)
    finally:
        native6.network_remove("only4")


# ------------------------------------------------------------------ published ports


def test_a_publish_without_host_ip_answers_on_both_families(
    native6: NetworkBackend,
    nyx_lan_ns: Neighbour,
    nyx_internet_ns: Netns,
    nyx_container_ns: Callable[[], Netns],
    servers: Servers,
) -> None:
    """``18300:80`` answers on the host's IPv4 and IPv6 addresses, from the LAN and the
    internet with the client's own address, from the host on its addresses, on
    ``127.0.0.1`` and on ``[::1]`` (the loopback proxy: the container sees the gateway)."""
    ctr = nyx_container_ns()
    ports = [PortMapping.parse("18300:80"), PortMapping.parse("18301:81/udp")]
    native6.setup("v6-pub", ctr.path, ports, SetupOptions())
    try:
        servers(ctr, "::", 80, "web6")
        servers(ctr, "0.0.0.0", 80, "web4")
        servers(ctr, "::", 81, "udp6", udp=True)
        servers(ctr, "0.0.0.0", 81, "udp4", udp=True)
        assert ask(nyx_lan_ns, LAN_HOST_IP6, 18300) == f"web6 {LAN_NEIGHBOUR_IP6}"
        assert ask(nyx_lan_ns, LAN_HOST_IP, 18300) == f"web4 {LAN_IP}"
        assert ask(nyx_internet_ns, UPLINK_HOST_IP6, 18300) == f"web6 {UPLINK_GATEWAY_IP6}"
        assert ask(nyx_lan_ns, LAN_HOST_IP6, 18301, udp=True) == f"udp6 {LAN_NEIGHBOUR_IP6}"
        assert ask(None, LAN_HOST_IP6, 18300).startswith("web6 ")
        assert ask(None, "::1", 18300) == f"web6 {GW6}"
        assert ask(None, "::1", 18301, udp=True) == f"udp6 {GW6}"
        assert ask(None, "127.0.0.1", 18300).startswith("web4 ")
    finally:
        native6.teardown("v6-pub", ctr.path)
    # teardown stops the proxy and frees the ports for anybody
    assert ask(None, "::1", 18300, timeout=0.5) == ""
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the proxy closed first
        s.bind(("::1", 18300))
        s.listen()


def test_publishes_on_ipv6_host_addresses(
    native6: NetworkBackend,
    nyx_lan_ns: Neighbour,
    nyx_internet_ns: Netns,
    nyx_container_ns: Callable[[], Netns],
    servers: Servers,
) -> None:
    """``[2001:db8:100::1]:P`` answers on that address only; ``[::]:P`` on every IPv6
    address and not IPv4; ``0.0.0.0:P`` on IPv4 only."""
    ctr = nyx_container_ns()
    ports = [
        PortMapping.parse(f"[{LAN_HOST_IP6}]:18320:80"),
        PortMapping.parse("[::]:18321:80"),
        PortMapping.parse("0.0.0.0:18322:80"),
    ]
    native6.setup("v6-hostip", ctr.path, ports, SetupOptions())
    try:
        servers(ctr, "::", 80, "web6")
        servers(ctr, "0.0.0.0", 80, "web4")
        assert ask(nyx_lan_ns, LAN_HOST_IP6, 18320) == f"web6 {LAN_NEIGHBOUR_IP6}"
        assert ask(nyx_internet_ns, UPLINK_HOST_IP6, 18320, timeout=0.5) == ""
        assert ask(nyx_lan_ns, LAN_HOST_IP6, 18321) == f"web6 {LAN_NEIGHBOUR_IP6}"
        assert ask(nyx_internet_ns, UPLINK_HOST_IP6, 18321) == f"web6 {UPLINK_GATEWAY_IP6}"
        assert ask(nyx_lan_ns, LAN_HOST_IP, 18321, timeout=0.5) == ""
        assert ask(nyx_lan_ns, LAN_HOST_IP, 18322) == f"web4 {LAN_IP}"
        assert ask(nyx_lan_ns, LAN_HOST_IP6, 18322, timeout=0.5) == ""
    finally:
        native6.teardown("v6-hostip", ctr.path)


def test_localhost6_publish_is_for_the_host_only(
    native6: NetworkBackend,
    nyx_lan_ns: Neighbour,
    nyx_container_ns: Callable[[], Netns],
    servers: Servers,
) -> None:
    """``[::1]:P`` reaches the container from the host (through the proxy, also for a
    container without IPv6: to its IPv4 address), never from the LAN."""
    native6.network_create(NetworkSpec(name="only4", subnet=ipaddress.IPv4Network("10.232.7.0/24")))
    ctr, ctr4 = nyx_container_ns(), nyx_container_ns()
    try:
        native6.setup("v6-lo", ctr.path, [PortMapping.parse("[::1]:18310:80")], SetupOptions())
        native6.setup(
            "v6-lo4",
            ctr4.path,
            [PortMapping.parse("[::1]:18311:80/udp")],
            SetupOptions(network="only4"),
        )
        try:
            servers(ctr, "::", 80, "web6")
            servers(ctr4, "0.0.0.0", 80, "udp4", udp=True)
            assert ask(None, "::1", 18310) == f"web6 {GW6}"
            assert ask(None, "::1", 18311, udp=True) == "udp4 10.232.7.1"
            assert ask(nyx_lan_ns, LAN_HOST_IP6, 18310, timeout=0.5) == ""
            assert ask(nyx_lan_ns, LAN_HOST_IP, 18310, timeout=0.5) == ""
            assert ask(None, "127.0.0.1", 18310, timeout=0.5) == ""
        finally:
            native6.teardown("v6-lo", ctr.path)
            native6.teardown("v6-lo4", ctr4.path)
    finally:
        native6.network_remove("only4")


def test_the_loopback_proxy_comes_back_after_a_restart(
    native6: NetworkBackend,
    settings6: NyxSettings,
    nyx_container_ns: Callable[[], Netns],
    servers: Servers,
) -> None:
    ctr = nyx_container_ns()
    native6.setup("v6-again", ctr.path, [PortMapping.parse("[::1]:18312:80")], SetupOptions())
    servers(ctr, "::", 80, "web6")
    assert ask(None, "::1", 18312) == f"web6 {GW6}"
    del native6  # nyxd stops without tearing the container down...
    import gc

    gc.collect()
    after = NetworkBackend.load("native")  # ...and a new one starts
    after.ensure_network(settings6)
    try:
        assert ask(None, "::1", 18312) == f"web6 {GW6}"
    finally:
        after.teardown("v6-again", ctr.path)


def test_hairpin_over_ipv6(
    native6: NetworkBackend, nyx_container_ns: Callable[[], Netns], servers: Servers
) -> None:
    """A container reaches another one's (and its own) published port through a host IPv6
    address; the answer comes back (the server sees the gateway)."""
    a, b = nyx_container_ns(), nyx_container_ns()
    native6.setup("v6-hp-a", a.path, [PortMapping.parse("18330:80")], SetupOptions())
    try:
        native6.setup("v6-hp-b", b.path, [], SetupOptions())
        try:
            servers(a, "::", 80, "web6")
            assert ask(b, UPLINK_HOST_IP6, 18330) == f"web6 {GW6}"
            assert ask(a, UPLINK_HOST_IP6, 18330) == f"web6 {GW6}"
            assert ask(b, LAN_HOST_IP6, 18330) == f"web6 {GW6}"
        finally:
            native6.teardown("v6-hp-b", b.path)
    finally:
        native6.teardown("v6-hp-a", a.path)


# ------------------------------------------------------------------ what stays out


def test_internal_network_keeps_ipv6_inside(
    native6: NetworkBackend,
    nyx_internet_ns: Netns,
    nyx_container_ns: Callable[[], Netns],
    servers: Servers,
) -> None:
    """An internal dual-stack network: peers over IPv6, never the internet, although the
    internet routes the subnet back to the host (only a drop on the host keeps it in)."""
    native6.network_create(
        NetworkSpec(
            name="int6",
            subnet=ipaddress.IPv4Network("10.232.8.0/24"),
            subnet6=ipaddress.IPv6Network("fd00:232:8::/64"),
            internal=True,
        )
    )
    outside, a, b = nyx_container_ns(), nyx_container_ns(), nyx_container_ns()
    try:
        servers(nyx_internet_ns, INTERNET_SERVER_IP6, 9510, "inet6")
        native6.setup("v6-out", outside.path, [], SetupOptions())
        try:
            assert ask(outside, INTERNET_SERVER_IP6, 9510) == f"inet6 {UPLINK_HOST_IP6}"
        finally:
            native6.teardown("v6-out", outside.path)
        nyx_internet_ns.ip("-6", "route", "add", "fd00:232:8::/64", "via", UPLINK_HOST_IP6)
        ra = native6.setup("v6-ia", a.path, [], SetupOptions(network="int6"))
        try:
            rb = native6.setup("v6-ib", b.path, [], SetupOptions(network="int6"))
            try:
                servers(a, _ip6(ra), 9511, "peer")
                assert ask(b, _ip6(ra), 9511) == f"peer {_ip6(rb)}"
                assert ask(a, INTERNET_SERVER_IP6, 9510, timeout=1) == ""
            finally:
                native6.teardown("v6-ib", b.path)
        finally:
            native6.teardown("v6-ia", a.path)
    finally:
        native6.network_remove("int6")


def test_lan_neighbour_routing_the_ipv6_subnet_reaches_only_published_ports(
    native6: NetworkBackend,
    nyx_lan_ns: Neighbour,
    nyx_container_ns: Callable[[], Netns],
    servers: Servers,
) -> None:
    ctr = nyx_container_ns()
    result = native6.setup("v6-in", ctr.path, [PortMapping.parse("18340:80")], SetupOptions())
    try:
        servers(ctr, "::", 80, "web6")
        servers(ctr, "::", 81, "other")
        nyx_lan_ns.route_to_host(SUBNET6)
        assert ask(nyx_lan_ns, LAN_HOST_IP6, 18340) == f"web6 {LAN_NEIGHBOUR_IP6}"
        assert ask(nyx_lan_ns, _ip6(result), 81, timeout=0.5) == ""
        assert ask(nyx_lan_ns, _ip6(result), 80, timeout=0.5) == ""
    finally:
        native6.teardown("v6-in", ctr.path)


def test_the_hosts_ipv6_loopback_is_out_of_reach_of_containers_and_the_lan(
    native6: NetworkBackend,
    nyx_in_host: Netns,
    nyx_lan_ns: Neighbour,
    nyx_container_ns: Callable[[], Netns],
    sink: Callable[[str, int], _UdpSink],
    settings6: NyxSettings,
) -> None:
    """``::1`` counterparts of the 127.0.0.0/8 defences: a datagram for the host's ``::1``
    crafted by a container (NET_RAW) or by a LAN neighbour reaches no host service, while
    the same frame for a real host address does (the crafting works)."""
    ctr = nyx_container_ns()
    result = native6.setup("v6-raw", ctr.path, [], SetupOptions())
    try:
        bridge = settings6.plugin(NativeSettings).bridge
        lo, real = sink("::1", 18350), sink(GW6, 18351)
        bridge_mac = _mac(None, bridge, nyx_in_host)
        ctr_mac = _mac(ctr, "eth0", nyx_in_host)
        for dst, port, target in (("::1", 18350, lo), (GW6, 18351, real)):
            _send_frame(ctr, "eth0", _udp6_frame(bridge_mac, ctr_mac, _ip6(result), dst, port))
            assert target.got() == (dst != "::1"), f"container -> [{dst}]:{port}"
        lan0_mac = _mac(None, "lan0", nyx_in_host)
        lan_mac = _mac(nyx_lan_ns, "eth0", nyx_in_host)
        real_lan = sink(LAN_HOST_IP6, 18352)
        for dst, port, target in (("::1", 18350, lo), (LAN_HOST_IP6, 18352, real_lan)):
            frame = _udp6_frame(lan0_mac, lan_mac, LAN_NEIGHBOUR_IP6, dst, port)
            _send_frame(nyx_lan_ns, "eth0", frame)
            assert target.got() == (dst != "::1"), f"LAN neighbour -> [{dst}]:{port}"
    finally:
        native6.teardown("v6-raw", ctr.path)


def test_host_queries_to_the_ipv6_gateway_keep_their_source(
    native6: NetworkBackend, nyx_container_ns: Callable[[], Netns], servers: Servers
) -> None:
    """The host's own packets to the IPv6 gateway (its DNS server) are not masqueraded to
    the uplink address; a container's keep the container's address."""
    servers(None, GW6, 18360, "dns6", udp=True)
    assert ask(None, GW6, 18360, udp=True) == f"dns6 {GW6}"
    ctr = nyx_container_ns()
    result = native6.setup("v6-dns", ctr.path, [], SetupOptions())
    try:
        assert ask(ctr, GW6, 18360, udp=True) == f"dns6 {_ip6(result)}"
    finally:
        native6.teardown("v6-dns", ctr.path)


def test_router_advertisements_of_a_container_configure_nothing(
    native6: NetworkBackend, nyx_in_host: Netns, nyx_container_ns: Callable[[], Netns]
) -> None:
    """A container sending router advertisements on the bridge gives neither its
    neighbours nor the host a route (both ignore advertisements there)."""
    a, b = nyx_container_ns(), nyx_container_ns()
    native6.setup("v6-ra-a", a.path, [], SetupOptions())
    try:
        native6.setup("v6-ra-b", b.path, [], SetupOptions())
        try:
            _send_ra(a, "eth0", "fe80::bad")
            assert _ra_routes(b, "fe80::bad") == []
            assert _ra_routes(nyx_in_host, "fe80::bad") == []
        finally:
            native6.teardown("v6-ra-b", b.path)
    finally:
        native6.teardown("v6-ra-a", a.path)


def test_an_ipv4_only_network_gives_its_containers_no_ipv6(
    native: NetworkBackend, nyx_container_ns: Callable[[], Netns]
) -> None:
    """On an IPv4-only network the container's interface has IPv6 off before it comes up:
    no link-local address, so none of the duplicate address detection, router
    solicitations and MLD reports the bridge would flood to every other port (with 1,000
    containers attached, a storm); a neighbour's router advertisement configures nothing.
    ``lo`` keeps ``::1``."""
    a, b = nyx_container_ns(), nyx_container_ns()
    native.setup("v4-only-a", a.path, [], SetupOptions())
    try:
        native.setup("v4-only-b", b.path, [], SetupOptions())
        try:
            for ns in (a, b):
                assert ns.sysctl("net.ipv6.conf.eth0.disable_ipv6") == "1"
                info = ns.ipj("addr", "show", "eth0")[0]["addr_info"]
                assert [x["local"] for x in info if x["family"] == "inet6"] == []
                assert ns.sysctl("net.ipv6.conf.lo.disable_ipv6") == "0"
            a.run(["sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=0"])  # a rogue container
            _send_ra(a, "eth0", "fe80::bad")
            assert _ra_routes(b, "fe80::bad") == []
        finally:
            native.teardown("v4-only-b", b.path)
    finally:
        native.teardown("v4-only-a", a.path)


# ------------------------------------------------------------------ the host's IPv6


def test_ipv6_forwarding_keeps_the_hosts_router_advertisements(
    settings6: NyxSettings, nyx_in_host: Netns, nyx_internet_ns: Netns
) -> None:
    """The uplink learned its default route from a router advertisement (SLAAC,
    ``accept_ra=1``): turning IPv6 forwarding on must neither drop that route nor stop
    further advertisements (``accept_ra=2``)."""
    _send_ra(nyx_internet_ns, "eth0", "fe80::1")
    assert _ra_routes(nyx_in_host, "fe80::1"), "the test's RA was not learned"
    assert nyx_in_host.sysctl("net.ipv6.conf.all.forwarding") == "0"
    NetworkBackend.load("native").ensure_network(settings6)
    assert nyx_in_host.sysctl("net.ipv6.conf.all.forwarding") == "1"
    assert _ra_routes(nyx_in_host, "fe80::1"), "the RA-learned default route was dropped"
    _send_ra(nyx_internet_ns, "eth0", "fe80::2")
    assert _ra_routes(nyx_in_host, "fe80::2"), "a new router advertisement was ignored"
    assert nyx_in_host.sysctl("net.ipv6.conf.uplink0.accept_ra") == "2"


def test_an_ipv4_only_nyx_leaves_ipv6_forwarding_alone(
    nyx_settings: NyxSettings, nyx_in_host: Netns
) -> None:
    NetworkBackend.load("native").ensure_network(nyx_settings)
    assert nyx_in_host.sysctl("net.ipv6.conf.all.forwarding") == "0"
    assert nyx_in_host.sysctl("net.ipv6.conf.uplink0.accept_ra") == "1"
    bridge = nyx_settings.plugin(NativeSettings).bridge
    assert nyx_in_host.sysctl(f"net.ipv6.conf.{bridge}.disable_ipv6") == "1"


class _BrokenFirewall(Firewall):
    def ensure(self, ipv6: bool = True) -> None:
        raise FirewallError("nft: table ip6 nyx: Operation not permitted (test)")


def test_no_ipv6_forwarding_without_the_tables(settings6: NyxSettings, nyx_in_host: Netns) -> None:
    with pytest.raises(FirewallError, match="test"):
        NativeDriver(firewall=_BrokenFirewall()).ensure_network(settings6)
    assert nyx_in_host.sysctl("net.ipv6.conf.all.forwarding") == "0"


def test_a_default_subnet6_on_a_host_prefix_fails_ensure_and_changes_nothing(
    nyx_settings: NyxSettings, nyx_in_host: Netns
) -> None:
    before = snapshot(nyx_in_host)
    bad = nyx_settings.model_copy(
        update={"container_subnet6": ipaddress.IPv6Network("2001:db8:100::/64")}
    )
    with pytest.raises(Exception, match=r"NYXD_CONTAINER_SUBNET6.*2001:db8:100::/64"):
        NetworkBackend.load("native").ensure_network(bad)
    assert snapshot(nyx_in_host) == before


def test_gc_releases_stale_ipv6_elements(
    native6: NetworkBackend,
    settings6: NyxSettings,
    nyx_container_ns: Callable[[], Netns],
) -> None:
    """A lease lost in a crash leaves map and set elements in ``ip6 nyx``; gc removes them."""
    ctr = nyx_container_ns()
    native6.setup("v6-gc", ctr.path, [PortMapping.parse("18370:80")], SetupOptions())
    fw = Firewall()
    assert fw.elements("ports_any", "ip6")
    store = lease_store(settings6.state_dir)
    with store.locked() as st:  # the crash: the lease is gone, the elements stay
        st.records.pop("v6-gc/nyx")
    # ...and the process that held the reserved ports with it
    (plugin,) = [p for p in native6.pm.get_plugins() if isinstance(p, NativePlugin)]
    plugin.driver._proxies.remove("v6-gc/nyx")
    for sock in plugin.driver._reserved.pop("v6-gc/nyx"):
        sock.close()
    report = native6.gc([])
    assert report and report["elements"] >= 2  # type: ignore[index]
    assert fw.elements("ports_any", "ip6") == [] and fw.elements("ports_any") == []
