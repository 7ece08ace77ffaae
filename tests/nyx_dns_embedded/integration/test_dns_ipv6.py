"""Dual stack: the embedded DNS server on a host whose default network has an IPv6 gateway.

A bridge in the kit's host namespace carries both gateways (10.231.0.1/24 and
2001:db8:231::1/64, ``nodad`` as the native driver adds it); "containers" are namespaces on
it with both families and both default routes. Queries are made with dnspython and dig,
from the containers and from the host, over UDP and TCP.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.resolver
import pytest
from conftest import FakeUpstream
from test_dns_server import answers, status

from nyx_core import NyxSettings
from nyx_core.testing import Netns, entered
from nyx_dns_embedded import EmbeddedDns, EmbeddedDnsSettings

pytestmark = pytest.mark.kernel

PORT = 5353
GW, GW6 = "10.231.0.1", "2001:db8:231::1"
SUBNET6 = ipaddress.IPv6Network("2001:db8:231::/64")
BRIDGE = "nyxt6br0"
UPSTREAM_ANSWER = "203.0.113.7"
_IPV6_FREEBIND = 78


@dataclass
class Ctr:
    """A "container": its namespace, its IPv4 and IPv6 address."""

    ns: Netns
    ip: str
    ip6: str

    def query(
        self, name: str, rdtype: str = "A", *, v6: bool = True, tcp: bool = False
    ) -> dns.message.Message:
        """One query to the gateway of the family ``v6`` says, from this container."""
        server, source = (GW6, self.ip6) if v6 else (GW, self.ip)
        q = dns.message.make_query(name, rdtype)
        with entered(self.ns):
            if tcp:
                return dns.query.tcp(q, server, port=PORT, source=source, timeout=5)
            return dns.query.udp(q, server, port=PORT, source=source, timeout=5)

    def dig(self, *args: str) -> str:
        argv = ["dig", f"@{GW6}", "-p", str(PORT), "+time=3", "+tries=1", *args]
        return self.ns.run(argv, check=False).stdout


def addrs(r: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in r.answer for rd in rrset)


class DualStack:
    """The bridge with both gateways in ``host``; :meth:`container` adds one on it."""

    def __init__(self, host: Netns, make_ns: Callable[[], Netns]) -> None:
        self.host, self.make_ns = host, make_ns
        self.n = 1
        host.ip("link", "add", BRIDGE, "type", "bridge")
        host.ip("addr", "add", f"{GW}/24", "dev", BRIDGE)
        host.ip("addr", "add", f"{GW6}/64", "dev", BRIDGE, "nodad")
        host.ip("link", "set", BRIDGE, "up")

    def container(self) -> Ctr:
        self.n += 1
        ns, veth = self.make_ns(), f"nyxt6v{self.n}"
        ip, ip6 = f"10.231.0.{self.n}", str(SUBNET6.network_address + self.n)
        self.host.ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns.name)
        self.host.ip("link", "set", veth, "master", BRIDGE, "up")
        ns.ip("addr", "add", f"{ip}/24", "dev", "eth0")
        ns.ip("addr", "add", f"{ip6}/64", "dev", "eth0", "nodad")
        ns.ip("link", "set", "eth0", "up")
        ns.ip("link", "set", "lo", "up")
        ns.ip("route", "add", "default", "via", GW)
        ns.ip("-6", "route", "add", "default", "via", GW6)
        return Ctr(ns, ip, ip6)


@pytest.fixture
def dual(nyx_in_host: Netns, nyx_container_ns: Callable[[], Netns]) -> DualStack:
    return DualStack(nyx_in_host, nyx_container_ns)


@pytest.fixture
def settings6(nyx_settings: NyxSettings) -> NyxSettings:
    """The kit's settings (10.231.0.0/24, port 5353) plus the IPv6 subnet; the gateway is
    its first address, 2001:db8:231::1."""
    return nyx_settings.model_copy(update={"container_subnet6": SUBNET6})


@pytest.fixture
def up(nyx_in_host: Netns) -> Iterator[Callable[..., FakeUpstream]]:
    """Factory of fake upstreams in the host namespace."""
    made: list[FakeUpstream] = []

    def make(host: str = "127.0.0.1", answer: str = UPSTREAM_ANSWER) -> FakeUpstream:
        made.append(FakeUpstream(host, answer=answer))
        return made[-1]

    try:
        yield make
    finally:
        for u in made:
            u.close()


@pytest.fixture
def resolv(tmp_path: Path) -> Path:
    path = tmp_path / "host-resolv.conf"
    path.write_text("nameserver 127.0.0.1\n")
    return path


@pytest.fixture
def provider6(dual: DualStack, settings6: NyxSettings, resolv: Path) -> Iterator[EmbeddedDns]:
    p = EmbeddedDns(
        EmbeddedDnsSettings(upstream_resolv_conf=resolv, forward_timeout=0.5, tcp_idle_timeout=2)
    )
    p.start(settings6)
    try:
        yield p
    finally:
        p.stop()


def register(p: EmbeddedDns, name: str, c: Ctr, **kw: object) -> None:
    ips = [ipaddress.ip_address(c.ip), ipaddress.ip_address(c.ip6)]
    p.register(name, name, ips, [], ["n1"], **kw)  # type: ignore[arg-type]


def test_listens_on_both_gateways_and_nowhere_else(dual: DualStack, provider6: EmbeddedDns) -> None:
    for proto in ("-u", "-t"):
        out = dual.host.run(["ss", "-ln", proto, f"sport = :{PORT}"]).stdout
        got = sorted(line.split()[3] for line in out.splitlines()[1:] if line.strip())
        assert got == sorted([f"{GW}:{PORT}", f"[{GW6}]:{PORT}"]), out
    assert [s.address[0] for s in provider6.servers] == [GW, GW6]


def test_aaaa_and_ptr_from_a_container_over_ipv6(dual: DualStack, provider6: EmbeddedDns) -> None:
    web, peer = dual.container(), dual.container()
    register(provider6, "web", web)
    register(provider6, "peer", peer)
    for tcp in (False, True):
        assert addrs(peer.query("web", "AAAA", tcp=tcp)) == [web.ip6]
        assert addrs(peer.query("web.nyxd.local", "A", tcp=tcp)) == [web.ip]
        rev = ipaddress.ip_address(web.ip6).reverse_pointer
        assert rev.endswith(".ip6.arpa")
        assert addrs(peer.query(rev, "PTR", tcp=tcp)) == ["web.nyxd.local."]
    # and with dig, strictly: a status and the answer lines
    out = peer.dig("web.nyxd.local", "AAAA")
    assert status(out) == "NOERROR"
    assert [line.split()[-1] for line in answers(out)] == [web.ip6]
    out = peer.dig("-x", web.ip6)
    assert status(out) == "NOERROR"
    assert [line.split()[-1] for line in answers(out)] == ["web.nyxd.local."]
    # the same names over the IPv4 gateway
    assert addrs(peer.query("web", "AAAA", v6=False)) == [web.ip6]


def test_aaaa_and_ptr_from_the_host(
    dual: DualStack, provider6: EmbeddedDns, up: Callable[..., FakeUpstream]
) -> None:
    """The host asks over IPv4 as before; over IPv6 (source: the gateway itself) UDP says
    TC and TCP answers, which dig and resolver libraries do on their own. A reverse name
    in the IPv6 subnet that nobody has is NXDOMAIN and never forwarded."""
    upstream = up()
    web = dual.container()
    register(provider6, "web", web)
    q = dns.message.make_query("web.nyxd.local", "AAAA")
    r = dns.query.udp(q, GW, port=PORT, timeout=5)
    assert addrs(r) == [web.ip6]
    r = dns.query.udp(q, GW6, port=PORT, timeout=5)
    assert r.flags & dns.flags.TC and r.answer == [], r
    assert addrs(dns.query.tcp(q, GW6, port=PORT, timeout=5)) == [web.ip6]
    out = dual.host.run(["dig", f"@{GW6}", "-p", str(PORT), "+time=3", "+tries=1", "web", "AAAA"])
    assert status(out.stdout) == "NOERROR" and "Truncated, retrying in TCP" in out.stdout
    assert [line.split()[-1] for line in answers(out.stdout)] == [web.ip6]
    res = dns.resolver.Resolver(configure=False)
    res.nameservers, res.port, res.lifetime = [GW6], PORT, 5
    assert sorted(a.to_text() for a in res.resolve("web.nyxd.local", "AAAA")) == [web.ip6]
    rev = ipaddress.ip_address(web.ip6).reverse_pointer
    assert [a.to_text() for a in res.resolve(rev, "PTR")] == ["web.nyxd.local."]
    nobody = (SUBNET6.network_address + 0xBEEF).reverse_pointer
    r = dns.query.udp(dns.message.make_query(nobody, "PTR"), GW, port=PORT, timeout=5)
    assert r.rcode() == dns.rcode.NXDOMAIN
    assert addrs(dns.query.udp(dns.message.make_query("x.example", "A"), GW, port=PORT)) == [
        UPSTREAM_ANSWER
    ]  # the upstream works, and saw only that
    assert upstream.names() == ["x.example."]


def test_a_container_forwards_over_ipv6(
    dual: DualStack, provider6: EmbeddedDns, up: Callable[..., FakeUpstream]
) -> None:
    """A forwarded answer goes back to the container over IPv6 (UDP and TCP)."""
    upstream = up()
    c = dual.container()
    register(provider6, "c", c)
    assert addrs(c.query("v6.example")) == [UPSTREAM_ANSWER]
    assert addrs(c.query("v6-tcp.example", tcp=True)) == [UPSTREAM_ANSWER]
    assert upstream.names() == ["v6.example.", "v6-tcp.example."]


def _spoof_from_gateway6(c: Ctr, name: str) -> None:
    """From ``c``, one UDP query whose source is the host's IPv6 gateway (the answer goes to
    the host, not to ``c``: a blind query)."""
    with entered(c.ns):
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    with s:
        s.setsockopt(socket.IPPROTO_IPV6, _IPV6_FREEBIND, 1)
        s.bind((GW6, 0))
        s.sendto(dns.message.make_query(name, "A").to_wire(), (GW6, PORT))


def test_a_container_cannot_pass_for_the_host_over_ipv6(
    dual: DualStack, provider6: EmbeddedDns, up: Callable[..., FakeUpstream]
) -> None:
    """IPv6 has no martian-source check: the kernel delivers a container's UDP packet that
    carries the host's gateway as its source. If the server took it for the host, an
    internal container could still push names to the upstream (CVE-2024-29018 class)."""
    upstream = up()
    inner = dual.container()
    register(provider6, "inner", inner, internal_networks=["n1"])
    assert inner.query("inner-direct.example").rcode() == dns.rcode.REFUSED  # control
    server6 = provider6.servers[1]
    before = server6.stats["udp"]
    _spoof_from_gateway6(inner, "inner-leak.example")
    deadline = time.monotonic() + 10
    while server6.stats["udp"] == before:
        assert time.monotonic() < deadline, "the spoofed query never reached the server"
        time.sleep(0.01)
    # the host itself, over TCP: forwarded (so a forwarded spoof would be seen by now,
    # the upstream handles its queries in order)
    q = dns.message.make_query("host-control.example", "A")
    assert addrs(dns.query.tcp(q, GW6, port=PORT, timeout=5)) == [UPSTREAM_ANSWER]
    assert upstream.names() == ["host-control.example."]


UDP_MODES = pytest.mark.parametrize("burst_gap", [0.0, float("inf")], ids=["one-by-one", "batches"])


def _burst(
    ns: Netns, source: str, server: str, names: list[str], rdtype: str = "A"
) -> list[dns.message.Message]:
    """From ``source`` in ``ns``: every query sent back to back, then every answer read;
    the answers in the order of the queries (matched by ID)."""
    family = socket.AF_INET6 if ":" in source else socket.AF_INET
    with entered(ns):
        s = socket.socket(family, socket.SOCK_DGRAM)
    with s:
        s.bind((source, 0))
        s.settimeout(5)
        sent = [dns.message.make_query(name, rdtype) for name in names]
        for i, q in enumerate(sent):
            q.id = i + 1
            s.sendto(q.to_wire(), (server, PORT))
        got: dict[int, dns.message.Message] = {}
        for _ in sent:
            r = dns.message.from_wire(s.recv(4096))
            assert r.id not in got, r
            got[r.id] = r
    return [got[q.id] for q in sent]


@UDP_MODES
def test_the_host_over_udp_on_gateway6_gets_tc_even_for_cached_names(
    dual: DualStack, provider6: EmbeddedDns, up: Callable[..., FakeUpstream], burst_gap: float
) -> None:
    """The forward cache and the UDP thread's inline repeats must not go around the rule
    that an IPv6 address of the host is the host over TCP only: with the name cached (by
    the host over TCP, by a container over UDP on both gateways), the host's UDP queries
    from the IPv6 gateway, one by one or in batches, still get TC and no answer, and an
    unregistered IPv6 source still gets REFUSED."""
    upstream = up()
    c, stranger = dual.container(), dual.container()
    register(provider6, "c", c)
    s6 = provider6.servers[1]
    s6.burst_gap = burst_gap
    q = dns.message.make_query("cached.example", "A")
    assert addrs(dns.query.tcp(q, GW6, port=PORT, source=GW6, timeout=5)) == [UPSTREAM_ANSWER]
    for v6 in (False, True, True, False):  # the container's scopes get replays
        assert addrs(c.query("cached.example", v6=v6)) == [UPSTREAM_ANSWER]
    assert upstream.names() == ["cached.example."]
    batches = s6.stats["udp_batches"]
    for _ in range(20):  # one by one: single datagrams, then (batches mode) batches of one
        r = dns.query.udp(q, GW6, port=PORT, source=GW6, timeout=5)
        assert r.flags & dns.flags.TC and r.rcode() == dns.rcode.NOERROR and r.answer == [], r
    for r in _burst(dual.host, GW6, GW6, ["cached.example"] * 30 + ["c", "new.example"]):
        assert r.flags & dns.flags.TC and r.answer == [], r
    for r in _burst(stranger.ns, stranger.ip6, GW6, ["cached.example"] * 30):
        assert r.rcode() == dns.rcode.REFUSED and r.answer == [], r
    for r in _burst(c.ns, c.ip6, GW6, ["cached.example"] * 30):  # control: the container
        assert addrs(r) == [UPSTREAM_ANSWER] and not r.flags & dns.flags.TC, r
    assert upstream.names() == ["cached.example."]
    if burst_gap:
        assert s6.stats["udp_batches"] > batches
    else:
        assert s6.stats["udp_batches"] == batches == 0
    assert s6.stats["errors"] == 0


@UDP_MODES
def test_both_gateways_answer_bursts_in_both_udp_modes(
    dual: DualStack, provider6: EmbeddedDns, up: Callable[..., FakeUpstream], burst_gap: float
) -> None:
    """recvmmsg/sendmmsg with sockaddr_in and sockaddr_in6: container names, a cached
    external name and new names that are forwarded, sent back to back to each gateway,
    each answered to its sender with its ID."""
    upstream = up()
    a, b = dual.container(), dual.container()
    register(provider6, "a", a)
    register(provider6, "b", b)
    for server in provider6.servers:
        server.burst_gap = burst_gap
    assert addrs(a.query("warm.example", v6=False)) == [UPSTREAM_ANSWER]
    assert a.query("warm.example", "AAAA").answer  # the fake answers A records to all types
    for v6, (source, gw) in ((False, (b.ip, GW)), (True, (b.ip6, GW6))):
        fam = "v6" if v6 else "v4"
        names = ["a", "warm.example", f"new-{fam}-0.example"] * 10
        names += [f"new-{fam}-{i}.example" for i in range(1, 11)]
        got = _burst(b.ns, source, gw, names, "AAAA" if v6 else "A")
        for name, r in zip(names, got, strict=True):
            if name == "a":
                assert addrs(r) == [a.ip6 if v6 else a.ip], r
            elif not v6:
                assert addrs(r) == [UPSTREAM_ANSWER], (name, r)
            else:  # the fake upstream answers A records whatever the type
                assert r.rcode() == dns.rcode.NOERROR and r.answer, (name, r)
    for server in provider6.servers:
        assert server.stats["errors"] == 0
        assert server.stats["udp_batches"] > 0  # while forwarded queries are pending, too
    assert upstream.names().count("warm.example.") == 2  # A and AAAA once: then the cache


def test_one_cache_for_both_gateways_emptied_for_both_on_an_upstream_change(
    dual: DualStack, provider6: EmbeddedDns, up: Callable[..., FakeUpstream], resolv: Path
) -> None:
    """The IPv4 and IPv6 servers share one forward cache: a name forwarded through one
    gateway is answered from the cache on the other; when the host's resolvers change,
    the flush (by whichever thread sees it) empties it for both, replays included."""
    old, new = up("127.0.0.1", answer="203.0.113.7"), up("127.0.0.2", answer="203.0.113.8")
    c = dual.container()
    register(provider6, "c", c)
    s4, s6 = provider6.servers
    assert s4.cache is not None and s4.cache is s6.cache
    assert s4.resolver.cache is s6.resolver.cache is s4.cache
    for v6 in (False, True, True, False, True):  # the IPv6 server never forwards it
        assert addrs(c.query("moved.example", v6=v6)) == ["203.0.113.7"]
    assert addrs(c.query("moved.example", v6=True, tcp=True)) == ["203.0.113.7"]
    # forwarded through the IPv4 server only (its forwarder may retransmit to a slow
    # upstream, so the upstream may see the name more than once on a loaded machine)
    assert set(old.names()) == {"moved.example."}
    assert s6.forwarder is not None and s6.forwarder.stats["forwarded"] == 0
    flushes = s4.cache.stats["flushes"]
    resolv.write_text("nameserver 127.0.0.2\n")
    got: list[str] = []
    for _ in range(50):  # the file is looked at about once a second (TTL is 30 s)
        got = addrs(c.query("moved.example", v6=False))
        if got == ["203.0.113.8"]:
            break
        time.sleep(0.1)
    assert got == ["203.0.113.8"]
    for v6 in (True, True, False):  # and the IPv6 server: the new answer, from the cache
        assert addrs(c.query("moved.example", v6=v6)) == ["203.0.113.8"]
    # (no count here: the change may be seen by each server's look in turn, and a query
    # between two flushes is forwarded again; the sharing itself is proven above)
    assert set(new.names()) == {"moved.example."}
    assert s4.cache.stats["flushes"] > flushes


def test_ipv6_upstreams_are_used(
    dual: DualStack,
    provider6: EmbeddedDns,
    up: Callable[..., FakeUpstream],
    resolv: Path,
    nyx_container_ns: Callable[[], Netns],
) -> None:
    """``nameserver ::1`` and a link-local server with its zone (``fe80::53%link``, as
    NetworkManager writes router-advertised ones; here a router's namespace on a link of
    its own) get forwarded queries, UDP and TCP."""
    c = dual.container()
    register(provider6, "c", c)
    router = nyx_container_ns()
    dual.host.ip(
        "link", "add", "nyxt6ll", "type", "veth", "peer", "name", "eth0", "netns", router.name
    )
    dual.host.ip("addr", "add", "fe80::1/64", "dev", "nyxt6ll", "nodad")
    dual.host.ip("link", "set", "nyxt6ll", "up")
    router.ip("addr", "add", "fe80::53/64", "dev", "eth0", "nodad")
    router.ip("link", "set", "eth0", "up")
    with entered(router):
        link_local = FakeUpstream("fe80::53%eth0", answer=UPSTREAM_ANSWER)
    try:
        for i, (server, upstream) in enumerate(
            (("::1", up("::1")), ("fe80::53%nyxt6ll", link_local))
        ):
            resolv.write_text(f"nameserver {server}\n")
            provider6.servers[0].upstreams.reload()  # one Upstreams for both servers
            for v6 in (False, True):
                for tcp in (False, True):  # new names each round: none is in the cache
                    name = f"{'v6' if v6 else 'v4'}-{'tcp' if tcp else 'udp'}-{i}.example"
                    r = c.query(name, v6=v6, tcp=tcp)
                    assert addrs(r) == [UPSTREAM_ANSWER], f"{name} via {server}: {r}"
            assert len(upstream.names()) == 4, upstream.names()
    finally:
        link_local.close()


def test_gateway6_that_arrives_after_start_is_served(
    nyx_in_host: Netns,
    nyx_container_ns: Callable[[], Netns],
    settings6: NyxSettings,
    resolv: Path,
) -> None:
    """The server binds the IPv6 gateway before it is on a link (a CNI bridge gets it with
    its first container; DAD may hold it tentative): queries are answered once it is."""
    p = EmbeddedDns(EmbeddedDnsSettings(upstream_resolv_conf=resolv))
    nyx_in_host.ip("link", "add", BRIDGE, "type", "bridge")
    nyx_in_host.ip("addr", "add", f"{GW}/24", "dev", BRIDGE)
    nyx_in_host.ip("link", "set", BRIDGE, "up")
    p.start(settings6)
    try:
        nyx_in_host.ip("addr", "add", f"{GW6}/64", "dev", BRIDGE, "nodad")
        p.register("web", "web", [ipaddress.ip_address("2001:db8:231::80")], [], ["n1"])
        q = dns.message.make_query("web", "AAAA")
        assert addrs(dns.query.tcp(q, GW6, port=PORT, timeout=5)) == ["2001:db8:231::80"]
    finally:
        p.stop()
    out = nyx_in_host.run(["ss", "-lnu", f"sport = :{PORT}"]).stdout
    assert GW6 not in out and GW not in out, out
