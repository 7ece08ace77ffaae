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
from ._dnsnet import NETWORK_A, NETWORK_B, UPSTREAM_ANSWER, DnsClient, DnsNetworks, FakeUpstream
from ._netns import Netns, entered

__all__ = ["DnsProviderConformance", "UpstreamConfig"]

UpstreamConfig = Callable[[str, int], Sequence[PluginSettings]]
"""``(ip, port) -> plugin settings`` making the provider forward to ``ip:port``."""
DOMAIN = "nyxd.local"


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
    dns.register(cid, cid, [client.ip], list(aliases), nets, list(internal))


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
    def nyx_dns_upstream_server(self, nyx_internet_ns: Netns) -> Iterator[FakeUpstream]:
        """The fake upstream resolver at 198.18.0.10:53 in the internet namespace."""
        server = FakeUpstream(nyx_internet_ns)
        try:
            yield server
        finally:
            server.close()

    @pytest.fixture
    def nyx_dns_networks(
        self, nyx_in_host: Netns, nyx_settings: NyxSettings, nyx_container_ns: Callable[[], Netns]
    ) -> DnsNetworks:
        """The two networks' bridges in the host namespace (gateway_ip on ``kitdns-a``)
        and a factory of clients: ``nyx_dns_networks.client("kit-a")``."""
        return DnsNetworks(nyx_in_host, nyx_settings, nyx_container_ns)

    @pytest.fixture
    def nyx_dns_settings(
        self,
        nyx_settings: NyxSettings,
        nyx_dns_upstream: UpstreamConfig | None,
        nyx_dns_upstream_server: FakeUpstream,
    ) -> NyxSettings:
        """``nyx_settings`` plus the provider's settings for the fake upstream."""
        if nyx_dns_upstream is None:
            return nyx_settings
        up = nyx_dns_upstream_server
        return nyx_settings.with_plugins(*nyx_dns_upstream(up.ip, up.port))

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
        assert servers and all(s == gw for s in servers), (
            f"resolv.conf nameservers {servers}: every one must be gateway_ip {gw} (a "
            f"container would fall over to the others, around the provider)\n{text}"
        )
        assert DOMAIN in search, f"{DOMAIN} is not in the search list {search}\n{text}"
        res = dns.resolver.Resolver(configure=False)
        res.read_resolv_conf(io.StringIO(text))
        res.port = nyx_dns_settings.dns_port
        res.lifetime = 5
        with entered(p.ns):
            answer = res.resolve("kit-q", "A", search=True)
        assert sorted(rd.to_text() for rd in answer) == [str(q.ip)]


def _hidden(client: DnsClient, other: DnsClient, name: str) -> None:
    """``client`` learns neither ``name`` (short or under nyxd.local) nor the PTR of
    ``other``'s address."""
    who = f"{client.ip} ({client.network})"
    for qname in (name, f"{name}.{DOMAIN}"):
        got = client.addresses(qname)
        assert str(other.ip) not in got, f"{who} resolved {qname} of network {other.network}"
    ptr = client.addresses(other.ip.reverse_pointer, "PTR")
    assert ptr == [], f"{who} got the PTR of {other.ip} on network {other.network}: {ptr}"
