"""Backend conformance checks of networks: lifecycle, several networks, internal, IPv6.

Part of :class:`~nyx_core.testing.BackendConformance` (see :mod:`._conformance`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import pytest

from .._models import (
    NetworkSpec,
    SetupOptions,
)
from .._plugins import NetworkBackend
from .._settings import NyxSettings
from ..errors import ConfigError, NyxError
from ._kit import (
    INTERNAL_NETWORK,
    INTERNET_PORT,
    LIFECYCLE_NETWORK,
    PEER_PORT,
    SECOND_NETWORK,
    SHORT_TIMEOUT,
    BackendKit,
    container_state,
    dual_stack,
    in_subnet,
    in_subnet6,
    same,
)
from ._netns import Netns, snapshot
from ._probe import reach, tcp_server
from ._topology import INTERNET_SERVER_IP, UPLINK_HOST_IP

__all__ = ["Ipv6Checks", "NetworkChecks"]


class NetworkChecks(BackendKit):
    """Networks made and removed through the driver, several per container, internal."""

    # --------------------------------------------------------- network lifecycle

    @pytest.mark.kernel
    def test_network_create_and_remove_leave_the_host_as_it_was(
        self,
        nyx_backend: NetworkBackend,
        nyx_in_host: Netns,
        nyx_container_ns: Callable[[], Netns],
    ) -> None:
        self._require(nyx_backend, "network_lifecycle")
        name, gateway = LIFECYCLE_NETWORK
        iface = ipaddress.IPv4Interface(gateway)
        spec = NetworkSpec(name=name, subnet=iface.network, gateway=iface.ip)
        before = snapshot(nyx_in_host)
        info = nyx_backend.network_create(spec)
        try:
            assert info.name == name
            assert info.subnet in (None, iface.network), f"{name}: created with {info.subnet}"
            middle = snapshot(nyx_in_host)
            assert nyx_backend.network_create(spec) == info, "a second identical create differs"
            same(middle, snapshot(nyx_in_host), "a second identical network_create")
            ctr = nyx_container_ns()
            opts = SetupOptions(network=name, subnet=iface)
            result = nyx_backend.setup("conf-n", ctr.path, [], opts)
            try:
                assert result.network == name
                in_subnet(result, iface.network)
            finally:
                nyx_backend.teardown("conf-n", ctr.path)
        finally:
            nyx_backend.network_remove(name)
        same(before, snapshot(nyx_in_host), "network_create then network_remove")
        nyx_backend.network_remove(name)  # idempotent
        nyx_backend.network_remove("kit-never-created")
        same(before, snapshot(nyx_in_host), "network_remove of removed and unknown networks")

    @pytest.mark.kernel
    def test_network_create_refuses_what_it_cannot_honour(
        self, nyx_backend: NetworkBackend, nyx_in_host: Netns
    ) -> None:
        """Unknown options and a different spec under an existing name are refused with a
        ConfigError naming them, before anything changes; so is ``internal`` from a driver
        that does not declare enforces_internal."""
        self._require(nyx_backend, "network_lifecycle")
        name, gateway = LIFECYCLE_NETWORK
        iface = ipaddress.IPv4Interface(gateway)
        spec = NetworkSpec(name=name, subnet=iface.network, gateway=iface.ip)
        before = snapshot(nyx_in_host)
        bad = spec.model_copy(update={"options": {"kit-no-such-option": "1"}})
        with pytest.raises(ConfigError, match="kit-no-such-option"):
            nyx_backend.network_create(bad)
        same(before, snapshot(nyx_in_host), "a refused network_create (unknown option)")
        if not nyx_backend.capabilities().enforces_internal:
            with pytest.raises(ConfigError, match="internal"):
                nyx_backend.network_create(spec.model_copy(update={"internal": True}))
            same(before, snapshot(nyx_in_host), "a refused internal network_create")
        nyx_backend.network_create(spec)
        try:
            middle = snapshot(nyx_in_host)
            other = NetworkSpec(name=name, subnet=ipaddress.IPv4Network("10.231.4.0/24"))
            with pytest.raises(ConfigError, match=name):
                nyx_backend.network_create(other)
            same(middle, snapshot(nyx_in_host), "a refused network_create (name taken)")
        finally:
            nyx_backend.network_remove(name)
        same(before, snapshot(nyx_in_host), "network_create then network_remove")

    # --------------------------------------------------------- several networks

    @pytest.mark.kernel
    def test_container_on_two_networks(
        self,
        nyx_backend: NetworkBackend,
        nyx_settings: NyxSettings,
        nyx_in_host: Netns,
        nyx_container_ns: Callable[[], Netns],
    ) -> None:
        """``eth0`` on the default network and ``eth1`` on a second one, both up, each
        reachable by a peer of its network; one teardown removes both."""
        self._require(nyx_backend, "multiple_networks")
        name, gateway = SECOND_NETWORK
        ctr, peer = nyx_container_ns(), nyx_container_ns()
        host_before, ctr_before = snapshot(nyx_in_host), container_state(ctr)
        with self._network(nyx_backend, name, gateway) as opts:
            r0 = nyx_backend.setup("conf-m", ctr.path, [], SetupOptions(hostname="m"))
            try:
                r1 = nyx_backend.setup(
                    "conf-m", ctr.path, [], opts.model_copy(update={"interface": "eth1"})
                )
                nyx_backend.setup("conf-mp", peer.path, [], opts)
                try:
                    in_subnet(r0, nyx_settings.container_subnet)
                    ip1 = in_subnet(r1, ipaddress.IPv4Interface(gateway).network)
                    links = {link["ifname"]: link for link in ctr.ipj("link", "show")}
                    for ifname in ("eth0", "eth1"):
                        assert ifname in links, f"no {ifname} in the container: {sorted(links)}"
                        assert "UP" in links[ifname]["flags"], f"{ifname} is down"
                    with tcp_server(ctr, str(ip1), PEER_PORT):
                        err = reach(peer, str(ip1), PEER_PORT)
                    assert err is None, f"a peer on {name} cannot reach {ip1} (eth1): {err}"
                finally:
                    nyx_backend.teardown("conf-mp", peer.path)
            finally:
                nyx_backend.teardown("conf-m", ctr.path)
            same(ctr_before, container_state(ctr), "one teardown of a container on two networks")
        same(host_before, snapshot(nyx_in_host), "a container on two networks, torn down")

    @pytest.mark.kernel
    def test_internal_network_reaches_a_peer_but_not_the_internet(
        self,
        nyx_backend: NetworkBackend,
        nyx_in_host: Netns,
        nyx_internet_ns: Netns,
        nyx_container_ns: Callable[[], Netns],
    ) -> None:
        """On an internal network a container reaches its peers, but not the kit's
        internet server (198.18.0.10), which a container of the default network reaches.
        The internet namespace routes the internal subnet back to the host meanwhile (as a
        router that knows it would), so only a drop on the host keeps the traffic in, not
        a missing masquerade."""
        self._require(nyx_backend, "enforces_internal")
        name, gateway = INTERNAL_NETWORK
        outside, a, b = nyx_container_ns(), nyx_container_ns(), nyx_container_ns()
        before = snapshot(nyx_in_host)
        with tcp_server(nyx_internet_ns, INTERNET_SERVER_IP, INTERNET_PORT):
            nyx_backend.setup("conf-out", outside.path, [], SetupOptions())
            try:
                err = reach(outside, INTERNET_SERVER_IP, INTERNET_PORT)
            finally:
                nyx_backend.teardown("conf-out", outside.path)
            assert err is None, (
                f"a container of the default network cannot reach {INTERNET_SERVER_IP} "
                f"either ({err}): egress must work for the internal check to mean anything"
            )
            subnet = str(ipaddress.IPv4Interface(gateway).network)
            nyx_internet_ns.ip("route", "add", subnet, "via", UPLINK_HOST_IP)
            with self._network(nyx_backend, name, gateway, internal=True) as opts:
                ra = nyx_backend.setup("conf-ia", a.path, [], opts)
                try:
                    nyx_backend.setup("conf-ib", b.path, [], opts)
                    try:
                        ip = str(ra.ips[0])
                        with tcp_server(a, ip, PEER_PORT):
                            err = reach(b, ip, PEER_PORT)
                        assert err is None, f"a peer on internal {name} cannot reach {ip}: {err}"
                        err = reach(a, INTERNET_SERVER_IP, INTERNET_PORT, SHORT_TIMEOUT)
                        assert err is not None, (
                            f"a container of internal network {name} reached "
                            f"{INTERNET_SERVER_IP}:{INTERNET_PORT}"
                        )
                    finally:
                        nyx_backend.teardown("conf-ib", b.path)
                finally:
                    nyx_backend.teardown("conf-ia", a.path)
        same(before, snapshot(nyx_in_host), "containers on an internal network, torn down")


class Ipv6Checks(BackendKit):
    """Dual-stack networks (drivers that declare ``ipv6``)."""

    # ------------------------------------------------------------------ IPv6

    @pytest.mark.kernel
    def test_ipv6_addresses_of_both_families_and_a_default_route(
        self,
        nyx_backend6: NetworkBackend,
        nyx_settings: NyxSettings,
        nyx_container_ns: Callable[[], Netns],
    ) -> None:
        """On a dual-stack network a container gets an address of each family, both
        reported and configured, the IPv6 one usable at once (not waiting for duplicate
        address detection), and a default IPv6 route through the network's IPv6 gateway."""
        settings = dual_stack(nyx_settings)
        ctr = nyx_container_ns()
        result = nyx_backend6.setup("conf-v6", ctr.path, [], SetupOptions(hostname="v6"))
        try:
            in_subnet(result, settings.container_subnet)
            assert settings.container_subnet6 is not None
            ip6 = in_subnet6(result, settings.container_subnet6)
            addrs = {
                a["local"]: a
                for link in ctr.ipj("-6", "addr", "show")
                for a in link.get("addr_info", [])
            }
            assert str(ip6) in addrs, f"{ip6} is reported but not configured in the container"
            flags = sorted(k for k in ("tentative", "dadfailed") if addrs[str(ip6)].get(k))
            assert not flags, (
                f"{ip6} is {', '.join(flags)} right after setup: duplicate address detection "
                "delays the container's IPv6 (add it nodad or optimistic)"
            )
            routes = ctr.ipj("-6", "route", "show", "default")
            assert any(r.get("gateway") == str(settings.gateway6) for r in routes), (
                f"no default IPv6 route via the network's gateway {settings.gateway6} in the "
                f"container (its default routes: {routes})"
            )
        finally:
            nyx_backend6.teardown("conf-v6", ctr.path)

    @pytest.mark.kernel
    def test_static_ipv6_address_is_honoured(
        self,
        nyx_backend6: NetworkBackend,
        nyx_settings: NyxSettings,
        nyx_in_host: Netns,
        nyx_container_ns: Callable[[], Netns],
    ) -> None:
        """``static_addresses`` and ``ipv6``: on a dual-stack network ``static_ip6`` (next to
        an IPv4 ``static_ip``) is what the container gets, in its netns and in the result,
        and so is an IPv6 ``static_ip`` (older callers); a second container asking for the
        same IPv6 address is refused with a :class:`NyxError` that changes nothing on the
        host."""
        self._require(nyx_backend6, "static_addresses")
        settings = dual_stack(nyx_settings)
        subnet, subnet6 = settings.container_subnet, settings.container_subnet6
        assert subnet6 is not None
        want = subnet.network_address + (subnet.num_addresses - 4)
        want6 = subnet6.network_address + 0xBEEF
        old6 = subnet6.network_address + 0xCAFE
        ctr, old = nyx_container_ns(), nyx_container_ns()
        opts = SetupOptions(static_ip=want, static_ip6=want6)
        result = nyx_backend6.setup("conf-static6", ctr.path, [], opts)
        try:
            assert want6 in result.ips and want in result.ips, (
                f"asked for {want} and {want6}, the result reports {result.ips}"
            )
            inside = {
                a["local"]
                for link in ctr.ipj("addr", "show")
                if link.get("ifname") != "lo"
                for a in link.get("addr_info", [])
            }
            assert {str(want), str(want6)} <= inside, (
                f"asked for {want} and {want6}; the container has {sorted(inside)}"
            )
            got = nyx_backend6.setup("conf-static6-old", old.path, [], SetupOptions(static_ip=old6))
            assert old6 in got.ips, f"asked for static_ip {old6}, the result reports {got.ips}"
            other = nyx_container_ns()
            before = snapshot(nyx_in_host)
            with pytest.raises(NyxError):
                nyx_backend6.setup("conf-static6b", other.path, [], SetupOptions(static_ip6=want6))
            same(before, snapshot(nyx_in_host), "the refused static IPv6 address changed the host")
        finally:
            nyx_backend6.teardown("conf-static6", ctr.path)
            nyx_backend6.teardown("conf-static6-old", old.path)
            nyx_backend6.teardown("conf-static6b", "")

    @pytest.mark.kernel
    def test_two_containers_exchange_a_packet_over_ipv6(
        self,
        nyx_backend6: NetworkBackend,
        nyx_settings: NyxSettings,
        nyx_container_ns: Callable[[], Netns],
    ) -> None:
        """A TCP connection from one container to another's IPv6 address."""
        subnet6 = dual_stack(nyx_settings).container_subnet6
        assert subnet6 is not None
        a, b = nyx_container_ns(), nyx_container_ns()
        ra = nyx_backend6.setup("conf-6a", a.path, [], SetupOptions(hostname="a6"))
        try:
            rb = nyx_backend6.setup("conf-6b", b.path, [], SetupOptions(hostname="b6"))
            try:
                ip = str(in_subnet6(ra, subnet6))
                assert str(in_subnet6(rb, subnet6)) != ip, f"both containers got {ip}"
                with tcp_server(a, ip, PEER_PORT) as server:
                    err = reach(b, ip, PEER_PORT)
                assert err is None, f"container conf-6b cannot reach conf-6a at [{ip}]: {err}"
                assert server.clients, f"[{ip}]:{PEER_PORT} answered but conf-6a saw no client"
            finally:
                nyx_backend6.teardown("conf-6b", b.path)
        finally:
            nyx_backend6.teardown("conf-6a", a.path)

    @pytest.mark.kernel
    def test_published_port_answers_over_ipv6(
        self,
        nyx_backend6: NetworkBackend,
        nyx_settings: NyxSettings,
        nyx_container_ns: Callable[[], Netns],
    ) -> None:
        """A port published without a host address answers on the host's IPv6 addresses
        too (here the network's IPv6 gateway), reaching the container's IPv6 server."""
        self._require(nyx_backend6, "publishes_ports")
        gw6 = str(dual_stack(nyx_settings).gateway6)
        ctr = nyx_container_ns()
        nyx_backend6.setup(
            "conf-6p", ctr.path, self._ports(nyx_backend6, "18087:8087"), SetupOptions()
        )
        try:
            with tcp_server(ctr, "::", 8087):
                err = reach(None, gw6, 18087)
            assert err is None, f"published port [{gw6}]:18087 -> 8087: {err}"
        finally:
            nyx_backend6.teardown("conf-6p", ctr.path)
