"""The DNS provider conformance suite.

Subclass :class:`DnsProviderConformance` in a test module of your provider, name its entry
point in ``nyx.dns_providers`` and say how to make it forward to an upstream::

    pytest_plugins = ["nyx_core.testing"]

    class TestMyProvider(DnsProviderConformance):
        @pytest.fixture
        def nyx_dns_provider_name(self):
            return "myprovider"

        @pytest.fixture
        def nyx_dns_upstream(self, tmp_path):
            def configure(ip, port):            # -> the provider's own settings
                return [MySettings(upstream=f"{ip}:{port}")]
            return configure                    # or None: the provider never forwards

Tests marked ``kernel`` start the provider in the kit's host namespace on
``gateway_ip:dns_port`` and query it from client namespaces of two networks (see
:mod:`nyx_core.testing._dnsnet`); they need root and dnspython. docs/writing-a-driver.md
lists every check.

A provider that serves IPv6 says so with the ``nyx_dns_ipv6`` fixture (True): the
topology is then dual stack (``container_subnet6`` 2001:db8:231::/64, gateway
2001:db8:231::1) and the ``test_ipv6_*`` checks run, each a failure when it fails; they
are skipped with the reason "provider does not declare IPv6" otherwise, the way the
backend suite treats an undeclared capability.
"""

from __future__ import annotations

import io
import socket
from collections.abc import Callable, Iterator, Sequence

import pytest

from .. import hookspecs
from .._plugins import DNS_GROUP, DnsFacade, installed_plugins, make_plugin_manager
from .._settings import NyxSettings, PluginSettings
from ..errors import PluginNotFoundError
from ._dnsnet import (
    NETWORK_A,
    NETWORK_B,
    QUERY_TIMEOUT,
    SUBNET6_A,
    UPSTREAM_ANSWER,
    DnsClient,
    DnsNetworks,
    FakeUpstream,
)
from ._netns import Netns, entered

__all__ = ["DnsProviderConformance", "UpstreamConfig"]

UpstreamConfig = Callable[[str, int], Sequence[PluginSettings]]
"""``(ip, port) -> plugin settings`` making the provider forward to ``ip:port``."""
DOMAIN = "nyxd.local"
_IPV6_FREEBIND = 78  # Linux; not exported by the socket module


def _register(
    dns: DnsFacade,
    cid: str,
    client: DnsClient,
    *,
    aliases: Sequence[str] = (),
    networks: Sequence[str] | None = None,
    internal: Sequence[str] = (),
) -> None:
    nets = [client.network] if networks is None else list(networks)
    dns.register(cid, cid, client.ips, list(aliases), nets, list(internal))


class DnsProviderConformance:
    """Contract tests every DNS provider passes (see the module docstring)."""

    # ------------------------------------------------------------------ fixtures

    @pytest.fixture
    def nyx_dns_provider_name(self) -> str:
        raise NotImplementedError("provide a nyx_dns_provider_name fixture")

    @pytest.fixture
    def nyx_dns_upstream(self) -> UpstreamConfig | None:
        raise NotImplementedError(
            "provide a nyx_dns_upstream fixture: a function (ip, port) -> the plugin settings "
            "that make your provider forward other names to ip:port, or None if it never "
            "forwards (the forwarding checks are then skipped with that reason)"
        )

    @pytest.fixture
    def nyx_dns_ipv6(self) -> bool:
        """True when the provider serves IPv6: it listens on ``settings.gateway6`` too,
        answers AAAA and ``ip6.arpa`` PTRs, and lists the IPv6 gateway in a dual-stack
        container's resolv.conf. Default False: the ``test_ipv6_*`` checks are skipped."""
        return False

    @pytest.fixture
    def nyx_dns_upstream_server(self, nyx_internet_ns: Netns) -> Iterator[FakeUpstream]:
        """The fake upstream resolver at 198.18.0.10:53 in the internet namespace."""
        server = FakeUpstream(nyx_internet_ns)
        try:
            yield server
        finally:
            server.close()

    @pytest.fixture
    def nyx_dns_networks(
        self,
        nyx_in_host: Netns,
        nyx_dns_settings: NyxSettings,
        nyx_container_ns: Callable[[], Netns],
    ) -> DnsNetworks:
        """The two networks' bridges in the host namespace (gateway_ip, and gateway6 when
        ``nyx_dns_ipv6``, on ``kitdns-a``) and a factory of clients:
        ``nyx_dns_networks.client("kit-a")``."""
        return DnsNetworks(nyx_in_host, nyx_dns_settings, nyx_container_ns)

    @pytest.fixture
    def nyx_dns_settings(
        self,
        nyx_settings: NyxSettings,
        nyx_dns_upstream: UpstreamConfig | None,
        nyx_dns_upstream_server: FakeUpstream,
        nyx_dns_ipv6: bool,
    ) -> NyxSettings:
        """``nyx_settings`` plus the provider's settings for the fake upstream, and
        ``container_subnet6`` 2001:db8:231::/64 when ``nyx_dns_ipv6``."""
        settings = nyx_settings
        if nyx_dns_ipv6 and settings.container_subnet6 is None:
            settings = settings.model_copy(update={"container_subnet6": SUBNET6_A})
        if nyx_dns_upstream is None:
            return settings
        up = nyx_dns_upstream_server
        return settings.with_plugins(*nyx_dns_upstream(up.ip, up.port))

    @pytest.fixture
    def nyx_dns(
        self,
        nyx_dns_provider_name: str,
        nyx_dns_networks: DnsNetworks,
        nyx_dns_settings: NyxSettings,
    ) -> Iterator[DnsFacade]:
        """The provider, started in the host namespace; stopped after the test."""
        dns = DnsFacade.load(nyx_dns_provider_name)
        dns.start(nyx_dns_settings)
        try:
            yield dns
        finally:
            dns.stop()

    @staticmethod
    def _require_forwarding(upstream: UpstreamConfig | None) -> None:
        if upstream is None:
            pytest.skip("provider never forwards (its nyx_dns_upstream is None)")

    @staticmethod
    def _require_ipv6(ipv6: bool) -> None:
        if not ipv6:
            pytest.skip("provider does not declare IPv6 (its nyx_dns_ipv6 is False)")

    # ----------------------------------------------------------- no kernel needed

    def test_entry_point_is_installed(self, nyx_dns_provider_name: str) -> None:
        names = {p.name for p in installed_plugins(DNS_GROUP)}
        assert nyx_dns_provider_name in names

    def test_loads_and_implements_every_dns_hook(self, nyx_dns_provider_name: str) -> None:
        pm = make_plugin_manager()
        DnsFacade.load(nyx_dns_provider_name, pm)
        for hook in hookspecs.DNS_HOOKS:
            assert getattr(pm.hook, hook).get_hookimpls(), hook

    def test_unknown_provider_lists_this_one(self, nyx_dns_provider_name: str) -> None:
        with pytest.raises(PluginNotFoundError) as info:
            DnsFacade.load("no-such-provider-xyz")
        assert nyx_dns_provider_name in str(info.value)

    # ------------------------------------------------------------------ lifecycle

    @pytest.mark.kernel
    def test_start_and_stop_are_idempotent(
        self,
        nyx_dns_provider_name: str,
        nyx_dns_networks: DnsNetworks,
        nyx_dns_settings: NyxSettings,
    ) -> None:
        """Stop before any start is harmless; a second start changes nothing (records
        kept, still answering); stop closes the sockets (the address can be bound again);
        a second stop is harmless."""
        dns = DnsFacade.load(nyx_dns_provider_name)
        dns.stop()
        web, peer = nyx_dns_networks.client(), nyx_dns_networks.client()
        dns.start(nyx_dns_settings)
        try:
            _register(dns, "kit-web", web)
            _register(dns, "kit-peer", peer)
            assert peer.addresses("kit-web") == [str(web.ip)]
            dns.start(nyx_dns_settings)
            assert peer.addresses("kit-web") == [str(web.ip)], "after a second start"
        finally:
            dns.stop()
        dns.stop()
        gw, port = nyx_dns_networks.server
        for kind, what in ((socket.SOCK_DGRAM, "UDP"), (socket.SOCK_STREAM, "TCP")):
            with socket.socket(socket.AF_INET, kind) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind((gw, port))
                except OSError as exc:
                    pytest.fail(f"{what} {gw}:{port} is still bound after nyx_dns_stop: {exc}")

    # ------------------------------------------------------------------ records

    @pytest.mark.kernel
    def test_register_answers_at_once(
        self, nyx_dns: DnsFacade, nyx_dns_networks: DnsNetworks
    ) -> None:
        """hostname, ``hostname.nyxd.local``, aliases (any case) and the PTR of its
        address, for a container of the same network, right after register."""
        web, peer = nyx_dns_networks.client(), nyx_dns_networks.client()
        _register(nyx_dns, "kit-web", web, aliases=["kit-www"])
        _register(nyx_dns, "kit-peer", peer)
        for name in ("kit-web", f"kit-web.{DOMAIN}", "kit-www", f"KIT-WWW.{DOMAIN.upper()}"):
            assert peer.addresses(name) == [str(web.ip)], f"{name} from a container of its network"
        ptr = peer.addresses(web.ip.reverse_pointer, "PTR")
        assert ptr == [f"kit-web.{DOMAIN}."], f"PTR of {web.ip}"

    @pytest.mark.kernel
    def test_answers_over_tcp(self, nyx_dns: DnsFacade, nyx_dns_networks: DnsNetworks) -> None:
        web, peer = nyx_dns_networks.client(), nyx_dns_networks.client()
        _register(nyx_dns, "kit-web", web)
        _register(nyx_dns, "kit-peer", peer)
        assert peer.addresses(f"kit-web.{DOMAIN}", tcp=True) == [str(web.ip)]

    @pytest.mark.kernel
    def test_register_again_replaces_the_records(
        self, nyx_dns: DnsFacade, nyx_dns_networks: DnsNetworks
    ) -> None:
        old, new, peer = (nyx_dns_networks.client() for _ in range(3))
        _register(nyx_dns, "kit-peer", peer)
        nyx_dns.register("kit-svc", "kit-old", [old.ip], ["kit-old-alias"], [NETWORK_A], [])
        assert peer.addresses("kit-old") == [str(old.ip)]
        nyx_dns.register("kit-svc", "kit-new", [new.ip], [], [NETWORK_A], [])
        got = peer.addresses("kit-new")
        assert got == [str(new.ip)], f"kit-new after re-register: {got}, not the new address only"
        for stale in (f"kit-old.{DOMAIN}", f"kit-old-alias.{DOMAIN}"):
            assert peer.addresses(stale) == [], f"{stale} still answers after re-register"
        assert peer.addresses(old.ip.reverse_pointer, "PTR") == [], f"PTR of {old.ip} kept"

    @pytest.mark.kernel
    def test_deregister_removes_the_records(
        self, nyx_dns: DnsFacade, nyx_dns_networks: DnsNetworks
    ) -> None:
        web, peer = nyx_dns_networks.client(), nyx_dns_networks.client()
        _register(nyx_dns, "kit-web", web, aliases=["kit-www"])
        _register(nyx_dns, "kit-peer", peer)
        assert peer.addresses("kit-web") == [str(web.ip)]
        nyx_dns.deregister("kit-web")
        for name in (f"kit-web.{DOMAIN}", f"kit-www.{DOMAIN}"):
            assert peer.addresses(name) == [], f"{name} still answers after deregister"
        assert str(web.ip) not in peer.addresses("kit-web")
        assert peer.addresses(web.ip.reverse_pointer, "PTR") == [], f"PTR of {web.ip} kept"
        nyx_dns.deregister("kit-web")
        nyx_dns.deregister("kit-never-registered")

    @pytest.mark.kernel
    def test_names_are_scoped_to_shared_networks(
        self, nyx_dns: DnsFacade, nyx_dns_networks: DnsNetworks
    ) -> None:
        """A container resolves the names of containers sharing a network with it, and
        neither the names nor the PTRs of the others."""
        a = nyx_dns_networks.client(NETWORK_A)
        b = nyx_dns_networks.client(NETWORK_B)
        both = nyx_dns_networks.client(NETWORK_A)
        _register(nyx_dns, "kit-a", a)
        _register(nyx_dns, "kit-b", b)
        _register(nyx_dns, "kit-both", both, networks=[NETWORK_A, NETWORK_B])
        assert a.addresses("kit-both") == [str(both.ip)], "a peer on network kit-a"
        _hidden(a, b, "kit-b")
        assert b.addresses("kit-both") == [str(both.ip)], "a peer on network kit-b"
        _hidden(b, a, "kit-a")
        assert both.addresses("kit-a") == [str(a.ip)], "a peer on kit-a, from kit-a+kit-b"
        assert both.addresses("kit-b") == [str(b.ip)], "a peer on kit-b, from kit-a+kit-b"

    # ------------------------------------------------------------------ forwarding

    @pytest.mark.kernel
    def test_other_names_are_forwarded_to_the_upstream(
        self,
        nyx_dns: DnsFacade,
        nyx_dns_networks: DnsNetworks,
        nyx_dns_upstream: UpstreamConfig | None,
        nyx_dns_upstream_server: FakeUpstream,
    ) -> None:
        """Names that are not containers' go to the upstream, also for a container that is
        internal on only one of its networks; names under nyxd.local never do."""
        self._require_forwarding(nyx_dns_upstream)
        p = nyx_dns_networks.client()
        half = nyx_dns_networks.client()
        _register(nyx_dns, "kit-p", p)
        _register(nyx_dns, "kit-half", half, networks=[NETWORK_A, NETWORK_B], internal=[NETWORK_B])
        assert p.addresses("kit-forwarded.example") == [UPSTREAM_ANSWER]
        assert "kit-forwarded.example" in nyx_dns_upstream_server.names()
        got = half.addresses("kit-half-internal.example")
        assert got == [UPSTREAM_ANSWER], "a container internal on one of two networks"
        assert p.addresses(f"kit-nobody.{DOMAIN}") == []
        assert f"kit-nobody.{DOMAIN}" not in nyx_dns_upstream_server.names(), (
            f"a name under {DOMAIN} was forwarded upstream"
        )

    @pytest.mark.kernel
    def test_internal_container_gets_names_but_no_forwarding(
        self,
        nyx_dns: DnsFacade,
        nyx_dns_networks: DnsNetworks,
        nyx_dns_upstream: UpstreamConfig | None,
        nyx_dns_upstream_server: FakeUpstream,
    ) -> None:
        """A container whose networks are all internal resolves container names, but no
        name it asks ever reaches an upstream (over UDP or TCP)."""
        p = nyx_dns_networks.client()
        inner = nyx_dns_networks.client()
        _register(nyx_dns, "kit-p", p)
        _register(nyx_dns, "kit-inner", inner, internal=[NETWORK_A])
        assert inner.addresses("kit-p") == [str(p.ip)], "an internal container's peer"
        if nyx_dns_upstream is not None:
            assert p.addresses("kit-control.example") == [UPSTREAM_ANSWER], (
                "the provider forwards nothing at all (check nyx_dns_upstream): the internal "
                "check would mean nothing"
            )
        for tcp in (False, True):
            got = inner.addresses("kit-inner-leak.example", tcp=tcp)
            assert got == [], f"an internal container got {got} for an outside name"
        leaked = [n for n in nyx_dns_upstream_server.names() if "kit-inner-leak" in n]
        assert not leaked, f"an internal container's query reached the upstream: {leaked}"

    # ------------------------------------------------------------------ resolv.conf

    @pytest.mark.kernel
    def test_resolv_conf_points_at_the_provider(
        self,
        nyx_dns: DnsFacade,
        nyx_dns_networks: DnsNetworks,
        nyx_dns_settings: NyxSettings,
    ) -> None:
        """Every nameserver is gateway_ip, the search list has nyxd.local, and a resolver
        reading the text in the container finds a peer by its short name."""
        import dns.resolver

        p, q = nyx_dns_networks.client(), nyx_dns_networks.client()
        _register(nyx_dns, "kit-p", p)
        _register(nyx_dns, "kit-q", q)
        text = nyx_dns.resolv_conf("kit-p")
        servers, search = [], []
        for line in text.splitlines():
            words = line.split("#", 1)[0].split()
            if not words:
                continue
            key = words[0]
            assert key in ("nameserver", "search", "domain", "options"), f"bad line {line!r}"
            if key == "nameserver":
                servers += words[1:]
            elif key in ("search", "domain"):
                search = words[1:]
        gw = str(nyx_dns_settings.gateway_ip)
        ours = {gw, str(nyx_dns_settings.gateway6)}  # "None" when IPv4 only
        assert servers and all(s in ours for s in servers), (
            f"resolv.conf nameservers {servers}: every one must be gateway_ip {gw} (or the "
            f"IPv6 gateway; a container would fall over to the others, around the "
            f"provider)\n{text}"
        )
        assert DOMAIN in search, f"{DOMAIN} is not in the search list {search}\n{text}"
        res = dns.resolver.Resolver(configure=False)
        res.read_resolv_conf(io.StringIO(text))
        res.port = nyx_dns_settings.dns_port
        res.lifetime = 5
        with entered(p.ns):
            answer = res.resolve("kit-q", "A", search=True)
        assert sorted(rd.to_text() for rd in answer) == [str(q.ip)]

    # ------------------------------------------------------------------ IPv6

    @pytest.mark.kernel
    def test_ipv6_answers_on_gateway_ip6(
        self, nyx_dns: DnsFacade, nyx_dns_networks: DnsNetworks, nyx_dns_ipv6: bool
    ) -> None:
        """The provider listens on the IPv6 gateway too: a dual-stack container asking
        ``[gateway6]:dns_port`` from its IPv6 address gets A and AAAA, over UDP and TCP,
        and a container of the second network reaches it through its own gateway."""
        self._require_ipv6(nyx_dns_ipv6)
        web, peer = nyx_dns_networks.client(), nyx_dns_networks.client()
        other = nyx_dns_networks.client(NETWORK_B)
        _register(nyx_dns, "kit-web", web)
        _register(nyx_dns, "kit-peer", peer)
        _register(nyx_dns, "kit-other", other, networks=[NETWORK_A, NETWORK_B])
        for tcp in (False, True):
            for client in (peer, other):
                got = client.addresses("kit-web", "AAAA", tcp=tcp, v6=True)
                assert got == [str(web.ip6)], f"AAAA over IPv6 from {client.ip6}, tcp={tcp}"
                got = client.addresses("kit-web", tcp=tcp, v6=True)
                assert got == [str(web.ip)], f"A over IPv6 from {client.ip6}, tcp={tcp}"

    @pytest.mark.kernel
    def test_ipv6_aaaa_answers(
        self, nyx_dns: DnsFacade, nyx_dns_networks: DnsNetworks, nyx_dns_ipv6: bool
    ) -> None:
        """AAAA for the hostname, ``hostname.nyxd.local`` and aliases (any case) are the
        registered IPv6 addresses, over either gateway; a container of another network
        does not get them."""
        self._require_ipv6(nyx_dns_ipv6)
        web, peer = nyx_dns_networks.client(), nyx_dns_networks.client()
        stranger = nyx_dns_networks.client(NETWORK_B)
        _register(nyx_dns, "kit-web", web, aliases=["kit-www"])
        _register(nyx_dns, "kit-peer", peer)
        _register(nyx_dns, "kit-stranger", stranger)
        for name in ("kit-web", f"kit-web.{DOMAIN}", "kit-www", f"KIT-WWW.{DOMAIN.upper()}"):
            for v6 in (False, True):
                got = peer.addresses(name, "AAAA", v6=v6)
                assert got == [str(web.ip6)], f"AAAA {name} (over IPv{6 if v6 else 4}): {got}"
        got = stranger.addresses("kit-web", "AAAA", v6=True)
        assert str(web.ip6) not in got, f"network {NETWORK_B} got AAAA of kit-web: {got}"

    @pytest.mark.kernel
    def test_ipv6_ptr_under_ip6_arpa(
        self, nyx_dns: DnsFacade, nyx_dns_networks: DnsNetworks, nyx_dns_ipv6: bool
    ) -> None:
        """The PTR of a container's IPv6 address (``...ip6.arpa``) is its
        ``hostname.nyxd.local.``; another network's container does not get it."""
        self._require_ipv6(nyx_dns_ipv6)
        web, peer = nyx_dns_networks.client(), nyx_dns_networks.client()
        stranger = nyx_dns_networks.client(NETWORK_B)
        _register(nyx_dns, "kit-web", web)
        _register(nyx_dns, "kit-peer", peer)
        _register(nyx_dns, "kit-stranger", stranger)
        assert web.ip6 is not None
        rev = web.ip6.reverse_pointer
        for v6 in (False, True):
            got = peer.addresses(rev, "PTR", v6=v6)
            assert got == [f"kit-web.{DOMAIN}."], f"PTR of {web.ip6} (over IPv{6 if v6 else 4})"
        got = stranger.addresses(rev, "PTR", v6=True)
        assert got == [], f"network {NETWORK_B} got the PTR of {web.ip6}: {got}"

    @pytest.mark.kernel
    def test_ipv6_resolv_conf_lists_gateway_ip6(
        self,
        nyx_dns: DnsFacade,
        nyx_dns_networks: DnsNetworks,
        nyx_dns_settings: NyxSettings,
        nyx_dns_ipv6: bool,
    ) -> None:
        """A dual-stack container's resolv.conf lists the IPv6 gateway (it can reach it),
        and a resolver that reads only its IPv6 nameservers finds a peer by short name."""
        import dns.resolver

        self._require_ipv6(nyx_dns_ipv6)
        p, q = nyx_dns_networks.client(), nyx_dns_networks.client()
        _register(nyx_dns, "kit-p", p)
        _register(nyx_dns, "kit-q", q)
        text = nyx_dns.resolv_conf("kit-p")
        gw6 = str(nyx_dns_settings.gateway6)
        res = dns.resolver.Resolver(configure=False)
        res.read_resolv_conf(io.StringIO(text))
        assert gw6 in res.nameservers, (
            f"the resolv.conf of a dual-stack container does not list gateway6 {gw6}\n{text}"
        )
        res.nameservers = [s for s in res.nameservers if ":" in str(s)]
        res.port = nyx_dns_settings.dns_port
        res.lifetime = 5
        with entered(p.ns):
            answer = res.resolve("kit-q", "AAAA", search=True)
        assert sorted(rd.to_text() for rd in answer) == [str(q.ip6)]

    @pytest.mark.kernel
    def test_ipv6_spoofed_host_source_gets_no_forwarding(
        self,
        nyx_dns: DnsFacade,
        nyx_dns_networks: DnsNetworks,
        nyx_dns_settings: NyxSettings,
        nyx_dns_ipv6: bool,
        nyx_dns_upstream_server: FakeUpstream,
    ) -> None:
        """IPv6 has no martian-source check: the kernel delivers a container's UDP query
        that carries the host's IPv6 gateway as its source. An internal container doing
        so must not get the host's view (forwarding); the answer, which goes to the
        gateway, is read there."""
        self._require_ipv6(nyx_dns_ipv6)
        inner = nyx_dns_networks.client()
        _register(nyx_dns, "kit-inner", inner, internal=[NETWORK_A])
        gw6, port = str(nyx_dns_settings.gateway6), nyx_dns_settings.dns_port
        name = "kit-spoofed-leak.example"
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as catcher:  # the host's
            catcher.bind((gw6, 0))
            catcher.settimeout(QUERY_TIMEOUT)
            with entered(inner.ns):
                spoof = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            with spoof:
                spoof.setsockopt(socket.IPPROTO_IPV6, _IPV6_FREEBIND, 1)
                spoof.bind((gw6, catcher.getsockname()[1]))
                spoof.sendto(_query_wire(name), (gw6, port))
            try:
                answer = catcher.recv(65535)
            except TimeoutError:
                answer = b""  # dropped: fine
        got = _a_records(answer)
        assert UPSTREAM_ANSWER not in got, (
            f"a query from a container with the host's source {gw6} was forwarded: {got}"
        )
        leaked = [n for n in nyx_dns_upstream_server.names() if "kit-spoofed-leak" in n]
        assert not leaked, f"the spoofed query reached the upstream: {leaked}"


def _query_wire(name: str) -> bytes:
    import dns.message

    return bytes(dns.message.make_query(name, "A").to_wire())


def _a_records(wire: bytes) -> list[str]:
    """The A records of a response ([] for nothing or junk)."""
    import dns.exception
    import dns.message
    import dns.rdatatype

    if not wire:
        return []
    try:
        r = dns.message.from_wire(wire)
    except dns.exception.DNSException:
        return []
    return [rd.to_text() for rrset in r.answer if rrset.rdtype == dns.rdatatype.A for rd in rrset]


def _hidden(client: DnsClient, other: DnsClient, name: str) -> None:
    """``client`` learns neither ``name`` (short or under nyxd.local) nor the PTR of
    ``other``'s address."""
    who = f"{client.ip} ({client.network})"
    for qname in (name, f"{name}.{DOMAIN}"):
        got = client.addresses(qname)
        assert str(other.ip) not in got, f"{who} resolved {qname} of network {other.network}"
    ptr = client.addresses(other.ip.reverse_pointer, "PTR")
    assert ptr == [], f"{who} got the PTR of {other.ip} on network {other.network}: {ptr}"
