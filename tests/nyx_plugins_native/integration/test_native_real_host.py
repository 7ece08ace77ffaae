"""The native firewall on a real-looking host (issue 11, items 1, 3 and 4).

The host namespace has an uplink with the default route (``uplink0`` 203.0.113.2, the
"internet" namespace behind it with a server on 198.18.0.10) and a LAN link (``lan0``
198.51.100.1) to a neighbour that may route ``127.0.0.1`` to the host.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable

import pytest
from native_helpers import (
    GW,
    INTERNET_SERVER_IP,
    LAN_HOST_IP,
    LAN_IP,
    UPLINK_HOST_IP,
    Servers,
    ask,
)

from nyx_core import FirewallError, NetworkBackend, NyxSettings, PortMapping, SetupOptions
from nyx_core.testing import (
    UPLINK_GATEWAY_IP,
    Neighbour,
    Netns,
    entered,
    route_localhost_via,
)
from nyx_plugins_native import Firewall, NativeDriver, NativeSettings

pytestmark = pytest.mark.kernel


def _ip(result: object) -> str:
    return str(result.ips[0])  # type: ignore[attr-defined]


# ---------------------------------------------------------------- item 1: host -> gateway


def test_host_queries_to_the_gateway_keep_their_source_container_egress_is_masqueraded(
    native: NetworkBackend,
    nyx_internet_ns: Netns,
    nyx_container_ns: Callable[[], Netns],
    servers: Servers,
) -> None:
    """The host's own packets from the gateway address through ``lo`` are not masqueraded
    (the DNS server on the gateway must see a host-local client, not the uplink address);
    the containers' packets leaving through the uplink are."""
    servers(None, GW, 53, "dns", udp=True)
    servers(None, GW, 53, "dns-tcp")
    for udp in (True, False):
        answer = ask(None, GW, 53, udp=udp)
        assert answer in (f"dns {GW}", "dns 127.0.0.1", f"dns-tcp {GW}", "dns-tcp 127.0.0.1"), (
            answer
        )
    ctr = nyx_container_ns()
    native.setup("rh-egress", ctr.path, [], SetupOptions())
    try:
        servers(nyx_internet_ns, INTERNET_SERVER_IP, 9400, "inet")
        servers(nyx_internet_ns, INTERNET_SERVER_IP, 9401, "inet-udp", udp=True)
        assert ask(ctr, INTERNET_SERVER_IP, 9400) == f"inet {UPLINK_HOST_IP}"
        assert ask(ctr, INTERNET_SERVER_IP, 9401, udp=True) == f"inet-udp {UPLINK_HOST_IP}"
        # and the container's own queries to the gateway keep the container's address
        assert ask(ctr, GW, 53, udp=True) == f"dns {_ip_of(ctr)}"
    finally:
        native.teardown("rh-egress", ctr.path)


def _ip_of(ns: Netns) -> str:
    (addr,) = [
        a["local"]
        for link in ns.ipj("addr", "show", "eth0")
        for a in link.get("addr_info", [])
        if a.get("family") == "inet"
    ]
    return str(addr)


# ------------------------------------------------- item 3: 127.0.0.1 publishes from the LAN


def test_lan_neighbour_cannot_reach_a_localhost_publish(
    native: NetworkBackend,
    nyx_lan_ns: Neighbour,
    nyx_container_ns: Callable[[], Netns],
    servers: Servers,
) -> None:
    ctr = nyx_container_ns()
    ports = [
        PortMapping.parse("127.0.0.1:18110:80"),
        PortMapping.parse("127.0.0.1:18111:81/udp"),
        PortMapping.parse("18112:82"),
    ]
    native.setup("rh-local", ctr.path, ports, SetupOptions())
    try:
        servers(ctr, "0.0.0.0", 80, "local-only")
        servers(ctr, "0.0.0.0", 81, "local-udp", udp=True)
        servers(ctr, "0.0.0.0", 82, "everywhere")
        nyx_lan_ns.route_localhost_to_host()
        # positive controls: the host reaches its 127.0.0.1 publishes, the neighbour reaches
        # the publish on every address with its own source address
        assert ask(None, "127.0.0.1", 18110).startswith("local-only ")
        assert ask(None, "127.0.0.1", 18111, udp=True).startswith("local-udp ")
        assert ask(nyx_lan_ns, LAN_HOST_IP, 18112) == f"everywhere {LAN_IP}"
        # the neighbour sending to 127.0.0.1 reaches nothing, whichever port
        assert ask(nyx_lan_ns, "127.0.0.1", 18110, timeout=0.5) == ""
        assert ask(nyx_lan_ns, "127.0.0.1", 18111, udp=True, timeout=0.5) == ""
        assert ask(nyx_lan_ns, "127.0.0.1", 18112, timeout=0.5) == ""
        # nor through the host's LAN address (the publish is for 127.0.0.1 only)
        assert ask(nyx_lan_ns, LAN_HOST_IP, 18110, timeout=0.5) == ""
    finally:
        native.teardown("rh-local", ctr.path)


def test_replies_to_the_hosts_own_localhost_connections_still_arrive(
    native: NetworkBackend,
    nyx_in_host: Netns,
    nyx_lan_ns: Neighbour,
    servers: Servers,
) -> None:
    """The drop of 127.0.0.0/8 arriving on a non-loopback link spares the replies of
    connections the host opened (here: from 127.0.0.1 over a LAN link an administrator
    gave route_localnet)."""
    nyx_in_host.sysctl("net.ipv4.conf.lan0.route_localnet", "1")
    nyx_lan_ns.route_localhost_to_host()
    servers(nyx_lan_ns, LAN_IP, 9420, "neighbour")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        s.bind(("127.0.0.1", 0))
        s.connect((LAN_IP, 9420))
        assert s.recv(64).decode() == "neighbour 127.0.0.1"


# ----------------------------------------- item 4: containers and the host's loopback services


def test_container_with_net_raw_cannot_reach_a_host_loopback_service(
    native: NetworkBackend,
    nyx_container_ns: Callable[[], Netns],
    servers: Servers,
) -> None:
    """CVE-2020-8558 class: route_localnet on the bridge must not let a container talk to
    services bound on the host's 127.0.0.1 only."""
    ctr = nyx_container_ns()
    native.setup("rh-raw", ctr.path, [PortMapping.parse("127.0.0.1:18120:80")], SetupOptions())
    try:
        servers(None, "127.0.0.1", 9410, "loopback-only")
        servers(None, "127.0.0.1", 9411, "loopback-udp", udp=True)
        servers(None, "0.0.0.0", 9412, "everywhere")
        servers(ctr, "0.0.0.0", 80, "published-local")
        # what a container with NET_ADMIN/NET_RAW can do in its own namespace
        route_localhost_via(ctr, GW)
        # positive control: the same kind of service on every address answers on the gateway
        assert ask(ctr, GW, 9412) == f"everywhere {_ip_of(ctr)}"
        assert ask(ctr, "127.0.0.1", 9410, timeout=0.5) == ""
        assert ask(ctr, "127.0.0.1", 9411, udp=True, timeout=0.5) == ""
        assert ask(ctr, "127.0.0.1", 9412, timeout=0.5) == ""
        # nor the host's 127.0.0.1 publishes
        assert ask(ctr, "127.0.0.1", 18120, timeout=0.5) == ""
        assert ask(None, "127.0.0.1", 18120).startswith("published-local ")
    finally:
        native.teardown("rh-raw", ctr.path)


# --------------------------------------------------------------- what must keep working


def test_hairpin_and_external_sources_on_a_real_host(
    native: NetworkBackend,
    nyx_internet_ns: Netns,
    nyx_lan_ns: Neighbour,
    nyx_container_ns: Callable[[], Netns],
    servers: Servers,
) -> None:
    web, client = nyx_container_ns(), nyx_container_ns()
    native.setup("rh-web", web.path, [PortMapping.parse("18130:80")], SetupOptions())
    native.setup("rh-client", client.path, [], SetupOptions())
    try:
        servers(web, "0.0.0.0", 80, "web")
        # external clients keep their address, on the LAN and on the uplink
        assert ask(nyx_lan_ns, LAN_HOST_IP, 18130) == f"web {LAN_IP}"
        assert ask(nyx_internet_ns, UPLINK_HOST_IP, 18130) == f"web {UPLINK_GATEWAY_IP}"
        # hairpin through every host address, the container itself included
        for addr in (UPLINK_HOST_IP, LAN_HOST_IP, GW):
            assert ask(client, addr, 18130).startswith("web "), addr
            assert ask(web, addr, 18130).startswith("web "), addr
        # the host itself, on 127.0.0.1 and on its addresses
        for addr in ("127.0.0.1", UPLINK_HOST_IP, LAN_HOST_IP, GW):
            assert ask(None, addr, 18130).startswith("web "), addr
    finally:
        native.teardown("rh-web", web.path)
        native.teardown("rh-client", client.path)


# ------------------------------------------------------------------ upgrades and ordering

# the table nyx 0.1.0 wrote (before the guard chain and the fixed masquerade)
OLD_LAYOUT = """\
add table ip nyx
add map ip nyx ports_any { type inet_proto . inet_service : ipv4_addr . inet_service; }
add map ip nyx ports_ip { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; }
add set ip nyx net_subnets { type ipv4_addr; flags interval; }
add set ip nyx net_bridges { type ifname; }
add set ip nyx same_bridge { type ifname . ifname; }
add set ip nyx internal { type ipv4_addr; }
add chain ip nyx ports
add rule ip nyx ports dnat ip to ip daddr . meta l4proto . th dport map @ports_ip comment "nyx:ports-ip"
add rule ip nyx ports dnat ip to meta l4proto . th dport map @ports_any comment "nyx:ports-any"
add chain ip nyx prerouting { type nat hook prerouting priority -100; policy accept; }
add rule ip nyx prerouting fib daddr type local jump ports comment "nyx:pre"
add chain ip nyx output { type nat hook output priority -100; policy accept; }
add rule ip nyx output fib daddr type local jump ports comment "nyx:out"
add chain ip nyx postrouting { type nat hook postrouting priority 100; policy accept; }
add rule ip nyx postrouting ip saddr @net_subnets oifname != @net_bridges masquerade comment "nyx:masq"
add rule ip nyx postrouting ip saddr 127.0.0.0/8 oifname @net_bridges masquerade comment "nyx:localhost"
add rule ip nyx postrouting ct status dnat ip saddr @net_subnets oifname @net_bridges masquerade comment "nyx:hairpin"
add chain ip nyx forward { type filter hook forward priority 0; policy accept; }
add rule ip nyx forward iifname @net_bridges ct status dnat accept comment "nyx:published"
add rule ip nyx forward iifname @net_bridges oifname @net_bridges iifname . oifname != @same_bridge drop comment "nyx:isolate"
add rule ip nyx forward ip saddr @internal ip daddr != @net_subnets drop comment "nyx:internal"
add element ip nyx ports_any { tcp . 18199 : 10.231.0.99 . 80 }
"""  # noqa: E501


def _rules(ns: Netns) -> dict[str, list[str]]:
    """Chain -> its rules' comments, in order."""
    listing = json.loads(ns.run(["nft", "-j", "list", "table", "ip", "nyx"]).stdout)
    out: dict[str, list[str]] = {}
    for item in listing["nftables"]:
        if "chain" in item:
            out.setdefault(item["chain"]["name"], [])
        if "rule" in item:
            out.setdefault(item["rule"]["chain"], []).append(item["rule"].get("comment", ""))
    return out


def test_ensure_upgrades_the_table_of_an_older_nyx(
    nyx_in_host: Netns,
    nyx_settings: NyxSettings,
    nyx_lan_ns: Neighbour,
    nyx_container_ns: Callable[[], Netns],
    servers: Servers,
) -> None:
    """A host upgraded from a nyx with the old rules gets the fixed ones at the next start
    (the elements of the running containers stay)."""
    nyx_in_host.run(["nft", "-f", "-"], input=OLD_LAYOUT)
    backend = NetworkBackend.load("native")
    backend.ensure_network(nyx_settings)
    fresh = Netns.create("fresh")
    try:
        with entered(fresh):
            Firewall().ensure()
        assert _rules(nyx_in_host) == _rules(fresh)
    finally:
        fresh.delete()
    assert Firewall().elements("ports_any")  # the old element survived
    servers(None, GW, 53, "dns", udp=True)
    assert ask(None, GW, 53, udp=True) in (f"dns {GW}", "dns 127.0.0.1")
    ctr = nyx_container_ns()
    backend.setup("rh-up", ctr.path, [PortMapping.parse("127.0.0.1:18140:80")], SetupOptions())
    try:
        servers(ctr, "0.0.0.0", 80, "local-only")
        nyx_lan_ns.route_localhost_to_host()
        assert ask(None, "127.0.0.1", 18140).startswith("local-only ")
        assert ask(nyx_lan_ns, "127.0.0.1", 18140, timeout=0.5) == ""
    finally:
        backend.teardown("rh-up", ctr.path)


class _BrokenFirewall(Firewall):
    def ensure(self, ipv6: bool = True) -> None:
        raise FirewallError("nft: table ip nyx: Operation not permitted (test)")


def test_no_route_localnet_without_the_guard(nyx_in_host: Netns, nyx_settings: NyxSettings) -> None:
    """When the table (and its guard) cannot be written, no bridge gets route_localnet and
    forwarding is not switched on."""
    forwarding = nyx_in_host.sysctl("net.ipv4.ip_forward")
    driver = NativeDriver(firewall=_BrokenFirewall())
    with pytest.raises(FirewallError, match="test"):
        driver.ensure_network(nyx_settings)
    links = {link["ifname"] for link in nyx_in_host.ipj("link", "show")}
    bridge = nyx_settings.plugin(NativeSettings).bridge
    if bridge in links:
        key = f"net.ipv4.conf.{bridge}.route_localnet"
        assert nyx_in_host.sysctl(key) == "0"
    assert nyx_in_host.sysctl("net.ipv4.ip_forward") == forwarding


# ------------------------------------------- direct access to containers from the LAN


def test_lan_neighbour_routing_the_subnet_reaches_only_published_ports(
    native: NetworkBackend,
    nyx_settings: NyxSettings,
    nyx_lan_ns: Neighbour,
    nyx_internet_ns: Netns,
    nyx_container_ns: Callable[[], Netns],
    servers: Servers,
) -> None:
    """A neighbour that routes the container subnet through the host reaches a container
    only through its published ports (as with Docker), not every port it listens on."""
    ctr = nyx_container_ns()
    r = native.setup("rh-direct", ctr.path, [PortMapping.parse("18150:80")], SetupOptions())
    try:
        ip = _ip(r)
        servers(ctr, "0.0.0.0", 80, "published")
        servers(ctr, "0.0.0.0", 5000, "unpublished")
        servers(ctr, "0.0.0.0", 5001, "unpublished-udp", udp=True)
        nyx_lan_ns.route_to_host(nyx_settings.container_subnet)
        # positive controls: the published port, with the client's address kept; the
        # container's own egress (and its replies) through the uplink and the LAN
        assert ask(nyx_lan_ns, LAN_HOST_IP, 18150) == f"published {LAN_IP}"
        servers(nyx_internet_ns, INTERNET_SERVER_IP, 9430, "inet")
        assert ask(ctr, INTERNET_SERVER_IP, 9430) == f"inet {UPLINK_HOST_IP}"
        servers(nyx_lan_ns, LAN_IP, 9431, "lan")
        assert ask(ctr, LAN_IP, 9431) == f"lan {LAN_HOST_IP}"
        # the container's addresses, straight
        assert ask(nyx_lan_ns, ip, 5000, timeout=0.5) == ""
        assert ask(nyx_lan_ns, ip, 5001, udp=True, timeout=0.5) == ""
        assert ask(nyx_lan_ns, ip, 80, timeout=0.5) == ""
    finally:
        native.teardown("rh-direct", ctr.path)
