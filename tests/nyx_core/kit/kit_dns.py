"""Deliberately broken DNS providers: each one is the example ``hosts`` provider
(examples/nyx-dns-hosts, which passes DnsProviderConformance) with one thing wrong, and
names the check it breaks. ``conftest.py`` installs them as entry points of
``nyx.dns_providers``."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Sequence

from nyx_dns_hosts import HostsDnsPlugin
from nyx_dns_hosts._names import Container, Names, Scope
from nyx_dns_hosts._server import Answerer, Server, _Udp, _UdpHandler

from nyx_core import NyxSettings, hookimpl

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class StartTwiceFails(HostsDnsPlugin):
    """Breaks test_start_and_stop_are_idempotent: a second start binds again (and fails)."""

    @hookimpl
    def nyx_dns_start(self, settings: NyxSettings) -> object:
        server, self.server = self.server, None
        try:
            return super().nyx_dns_start(settings)
        finally:
            if self.server is None:
                self.server = server


_LEAKED: list[Server] = []
"""The servers StopKeepsSockets forgot, held for good: a socket collected later, in another
test, would warn there (ResourceWarning) and fail that test instead."""


class StopKeepsSockets(HostsDnsPlugin):
    """Breaks test_start_and_stop_are_idempotent: stop forgets the server, never closes it."""

    @hookimpl
    def nyx_dns_stop(self) -> object:
        if self.server is not None:
            for s in (self.server.udp, self.server.tcp):
                s.shutdown()
            _LEAKED.append(self.server)
            self.server = None
        return True


class _NoPtrNames(Names):
    def scope(self, client: str) -> Scope | None:
        found = super().scope(client)
        return None if found is None else Scope(found.names, {}, found.forward)


class NoPtr(HostsDnsPlugin):
    """Breaks test_register_answers_at_once: no PTR records."""

    def __init__(self) -> None:
        super().__init__()
        self.names = _NoPtrNames()


class _UdpOnly(Server):
    def __init__(self, address: tuple[str, int], answerer: Answerer) -> None:
        self.udp = _Udp(address, _UdpHandler)
        self.udp.answerer = answerer
        self.threads = [threading.Thread(target=self.udp.serve_forever, args=(0.05,), daemon=True)]
        self.threads[0].start()

    def close(self) -> None:
        self.udp.shutdown()
        self.udp.server_close()


class UdpOnly(HostsDnsPlugin):
    """Breaks test_answers_over_tcp: no TCP listener."""

    def serve(self, address: tuple[str, int], answerer: Answerer) -> Server:
        return _UdpOnly(address, answerer)


class _AppendingNames(Names):
    def register(
        self,
        container_id: str,
        hostname: str,
        ips: Sequence[object],
        aliases: Sequence[str],
        networks: Sequence[str],
        internal_networks: Sequence[str],
    ) -> Container:
        old = self.containers.get(container_id)
        if old is not None:
            aliases = [*aliases, old.hostname, *old.aliases]
            ips = [*ips, *old.ips]
        return super().register(container_id, hostname, ips, aliases, networks, internal_networks)


class AppendsOnReplace(HostsDnsPlugin):
    """Breaks test_register_again_replaces_the_records: a second register adds to the
    first instead of replacing it."""

    def __init__(self) -> None:
        super().__init__()
        self.names = _AppendingNames()


class KeepsRecords(HostsDnsPlugin):
    """Breaks test_deregister_removes_the_records: deregister does nothing."""

    @hookimpl
    def nyx_dns_deregister(self, container_id: str) -> object:
        return True


class _UnscopedNames(Names):
    def visible(self, client: str) -> tuple[list[Container], bool] | None:
        found = super().visible(client)
        if found is None:
            return None
        with self.lock:
            return list(self.containers.values()), found[1]


class IgnoresScoping(HostsDnsPlugin):
    """Breaks test_names_are_scoped_to_shared_networks: every container sees every name."""

    def __init__(self) -> None:
        super().__init__()
        self.names = _UnscopedNames()


class NeverForwards(HostsDnsPlugin):
    """Breaks test_other_names_are_forwarded_to_the_upstream: ignores its upstreams."""

    def serve(self, address: tuple[str, int], answerer: Answerer) -> Server:
        answerer.upstreams = []
        return super().serve(address, answerer)


class _LeakyNames(Names):
    def may_forward(self, ctr: Container) -> bool:
        return True


class ForwardsForInternal(HostsDnsPlugin):
    """Breaks test_internal_container_gets_names_but_no_forwarding."""

    def __init__(self) -> None:
        super().__init__()
        self.names = _LeakyNames()


class WrongNameserver(HostsDnsPlugin):
    """Breaks test_resolv_conf_points_at_the_provider: lists the upstream as a second
    nameserver (a container would go around the provider)."""

    @hookimpl
    def nyx_dns_resolv_conf(self, container_id: str) -> str:
        text = super().nyx_dns_resolv_conf(container_id)
        return text + "nameserver 198.18.0.10\n"


class _NoServer(Server):
    def __init__(self) -> None:
        pass

    def close(self) -> None:
        pass


class V4ListenerOnly(HostsDnsPlugin):
    """Breaks test_ipv6_answers_on_gateway_ip6: declares IPv6 but never listens on the
    IPv6 gateway."""

    def serve(self, address: tuple[str, int], answerer: Answerer) -> Server:
        return _NoServer() if ":" in address[0] else super().serve(address, answerer)


class _NoAaaaNames(Names):
    def scope(self, client: str) -> Scope | None:
        found = super().scope(client)
        if found is None:
            return None
        names = {n: [ip for ip in ips if ip.version == 4] for n, ips in found.names.items()}
        return Scope(names, found.ptrs, found.forward)


class NoAaaa(HostsDnsPlugin):
    """Breaks test_ipv6_aaaa_answers: IPv6 addresses are registered but never answered."""

    def __init__(self) -> None:
        super().__init__()
        self.names = _NoAaaaNames()


class _NoPtr6Names(Names):
    def scope(self, client: str) -> Scope | None:
        found = super().scope(client)
        if found is None:
            return None
        ptrs = {n: t for n, t in found.ptrs.items() if not n.endswith("ip6.arpa")}
        return Scope(found.names, ptrs, found.forward)


class NoPtr6(HostsDnsPlugin):
    """Breaks test_ipv6_ptr_under_ip6_arpa: no PTR records for IPv6 addresses."""

    def __init__(self) -> None:
        super().__init__()
        self.names = _NoPtr6Names()


class V4NameserverOnly(HostsDnsPlugin):
    """Breaks test_ipv6_resolv_conf_lists_gateway_ip6: a dual-stack container's
    resolv.conf names the IPv4 gateway only."""

    @hookimpl
    def nyx_dns_resolv_conf(self, container_id: str) -> str:
        text = super().nyx_dns_resolv_conf(container_id)
        return "".join(ln for ln in text.splitlines(keepends=True) if ":" not in ln)


class TrustsGateway6(HostsDnsPlugin):
    """Breaks test_ipv6_spoofed_host_source_gets_no_forwarding: takes the IPv6 gateway
    for the host (as it does the IPv4 one), so a container sending from it is the host."""

    @hookimpl
    def nyx_dns_start(self, settings: NyxSettings) -> object:
        out = super().nyx_dns_start(settings)
        self.names.host_clients |= {str(settings.gateway6)}
        return out


class MissingResolvConf:
    """Breaks test_loads_and_implements_every_dns_hook: no nyx_dns_resolv_conf."""

    @hookimpl
    def nyx_dns_start(self, settings: NyxSettings) -> object:
        return True

    @hookimpl
    def nyx_dns_stop(self) -> object:
        return True

    @hookimpl
    def nyx_dns_register(
        self,
        container_id: str,
        hostname: str,
        ips: Sequence[IPAddress],
        aliases: Sequence[str],
        networks: Sequence[str],
        internal_networks: Sequence[str],
    ) -> object:
        return True

    @hookimpl
    def nyx_dns_deregister(self, container_id: str) -> object:
        return True


VARIANTS: dict[str, type[object]] = {
    "kitdns-start-twice-fails": StartTwiceFails,
    "kitdns-stop-keeps-sockets": StopKeepsSockets,
    "kitdns-no-ptr": NoPtr,
    "kitdns-udp-only": UdpOnly,
    "kitdns-appends-on-replace": AppendsOnReplace,
    "kitdns-keeps-records": KeepsRecords,
    "kitdns-ignores-scoping": IgnoresScoping,
    "kitdns-never-forwards": NeverForwards,
    "kitdns-forwards-for-internal": ForwardsForInternal,
    "kitdns-wrong-nameserver": WrongNameserver,
    "kitdns-missing-resolv-conf": MissingResolvConf,
    "kitdns-v4-listener-only": V4ListenerOnly,
    "kitdns-no-aaaa": NoAaaa,
    "kitdns-no-ptr6": NoPtr6,
    "kitdns-v4-nameserver-only": V4NameserverOnly,
    "kitdns-trusts-gateway6": TrustsGateway6,
}
"""Entry point name -> class; ``conftest.py`` installs them all."""
