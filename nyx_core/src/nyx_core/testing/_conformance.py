"""The driver conformance suite.

Subclass :class:`BackendConformance` in a test module of your driver and provide a
``nyx_driver_name`` fixture returning its entry point name in ``nyx.net_drivers``::

    pytest_plugins = ["nyx_core.testing"]

    class TestMyDriver(BackendConformance):
        @pytest.fixture
        def nyx_driver_name(self):
            return "mydriver"

Tests marked ``kernel`` run the driver inside the kit's throwaway host namespace and need
root. The suite reads the driver's declared :class:`~nyx_core.BackendCapabilities` and
checks every claim: a capability the driver declares is tested (and a failure is a
failure, never a skip); one it does not declare is skipped with the reason "driver does
not declare <capability>". Override ``nyx_make_backend`` when your driver needs more than
``NetworkBackend.load`` + ``ensure_network`` (its own settings go in
``nyx_plugin_settings``). docs/writing-a-driver.md lists every check.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable

import pytest

from .. import hookspecs
from .._models import (
    BackendCapabilities,
    SetupOptions,
    SetupResult,
)
from .._plugins import DRIVER_GROUP, NetworkBackend, installed_plugins, make_plugin_manager
from .._settings import NyxSettings
from ..errors import NyxError, PluginNotFoundError
from ._conformance_networks import Ipv6Checks, NetworkChecks
from ._kit import (
    GATEWAY_PORT,
    INTERNAL_NETWORK,
    KIT_SUBNET6,
    LIFECYCLE_NETWORK,
    PEER_PORT,
    SECOND_NETWORK,
    TINY_SUBNET,
    container_state,
    default_network_spec,
    dual_stack,
    in_subnet,
    same,
    snapshot_diff,
)
from ._netns import Netns, snapshot
from ._probe import reach, tcp_server

__all__ = [
    "INTERNAL_NETWORK",
    "KIT_SUBNET6",
    "LIFECYCLE_NETWORK",
    "SECOND_NETWORK",
    "TINY_SUBNET",
    "BackendConformance",
    "default_network_spec",
    "dual_stack",
    "snapshot_diff",
]


class BackendConformance(NetworkChecks, Ipv6Checks):
    """Contract tests every network driver passes (see the module docstring). The checks
    of networks and IPv6 come from its bases (:mod:`._conformance_networks`), the
    fixtures and helpers from :class:`~nyx_core.testing._kit.BackendKit`."""

    # ----------------------------------------------------------- no kernel needed

    def test_entry_point_is_installed(self, nyx_driver_name: str) -> None:
        names = {p.name for p in installed_plugins(DRIVER_GROUP)}
        assert nyx_driver_name in names

    def test_loads_and_implements_every_backend_hook(self, nyx_driver_name: str) -> None:
        pm = make_plugin_manager()
        backend = NetworkBackend.load(nyx_driver_name, pm)
        for hook in hookspecs.REQUIRED_BACKEND_HOOKS:
            assert getattr(pm.hook, hook).get_hookimpls(), hook
        caps = backend.capabilities()
        assert isinstance(caps, BackendCapabilities)
        assert backend.capabilities() == caps, "capabilities changed between two calls"

    def test_unknown_driver_lists_this_one(self, nyx_driver_name: str) -> None:
        with pytest.raises(PluginNotFoundError) as info:
            NetworkBackend.load("no-such-driver-xyz")
        assert nyx_driver_name in str(info.value)

    # ------------------------------------------------------------------ host side

    @pytest.mark.kernel
    def test_ensure_network_is_idempotent(
        self, nyx_backend: NetworkBackend, nyx_settings: NyxSettings, nyx_in_host: Netns
    ) -> None:
        before = snapshot(nyx_in_host)
        nyx_backend.ensure_network(nyx_settings)
        same(before, snapshot(nyx_in_host), "a second ensure_network changed the host")

    @pytest.mark.kernel
    def test_setup_then_teardown_leaves_host_as_it_was(
        self,
        nyx_backend: NetworkBackend,
        nyx_in_host: Netns,
        nyx_container_ns: Callable[[], Netns],
    ) -> None:
        ctr = nyx_container_ns()
        before = snapshot(nyx_in_host)
        result = nyx_backend.setup(
            "conf-a", ctr.path, self._ports(nyx_backend, "18080:80"), SetupOptions(hostname="a")
        )
        assert isinstance(result, SetupResult)
        assert result.ips, "setup returned no address"
        nyx_backend.teardown("conf-a", ctr.path)
        same(before, snapshot(nyx_in_host), "teardown left the host changed")

    @pytest.mark.kernel
    def test_teardown_leaves_the_container_as_it_was(
        self, nyx_backend: NetworkBackend, nyx_container_ns: Callable[[], Netns]
    ) -> None:
        """Links, addresses, routes and nftables the driver made *inside* the container
        are gone after teardown (a macvlan or a route left there used to pass)."""
        ctr = nyx_container_ns()
        before = container_state(ctr)
        nyx_backend.setup("conf-in", ctr.path, [], SetupOptions(hostname="in"))
        nyx_backend.teardown("conf-in", ctr.path)
        same(before, container_state(ctr), "teardown left the container's namespace changed")

    @pytest.mark.kernel
    def test_teardown_twice_and_never_set_up(
        self,
        nyx_backend: NetworkBackend,
        nyx_in_host: Netns,
        nyx_container_ns: Callable[[], Netns],
    ) -> None:
        ctr = nyx_container_ns()
        before = snapshot(nyx_in_host)
        nyx_backend.teardown("conf-never", ctr.path)
        nyx_backend.setup("conf-b", ctr.path, [], SetupOptions())
        nyx_backend.teardown("conf-b", ctr.path)
        nyx_backend.teardown("conf-b", ctr.path)
        same(before, snapshot(nyx_in_host), "teardowns left the host changed")

    @pytest.mark.kernel
    def test_second_setup_of_the_same_attachment_is_refused(
        self,
        nyx_backend: NetworkBackend,
        nyx_in_host: Netns,
        nyx_container_ns: Callable[[], Netns],
    ) -> None:
        ctr = nyx_container_ns()
        nyx_backend.setup("conf-twice", ctr.path, [], SetupOptions())
        try:
            middle = snapshot(nyx_in_host)
            with pytest.raises(NyxError, match="conf-twice"):
                nyx_backend.setup("conf-twice", ctr.path, [], SetupOptions())
            same(middle, snapshot(nyx_in_host), "the refused setup changed the host")
        finally:
            nyx_backend.teardown("conf-twice", ctr.path)

    @pytest.mark.kernel
    def test_teardown_after_netns_is_gone(
        self,
        nyx_backend: NetworkBackend,
        nyx_in_host: Netns,
        nyx_container_ns: Callable[[], Netns],
    ) -> None:
        ctr = nyx_container_ns()
        before = snapshot(nyx_in_host)
        nyx_backend.setup("conf-c", ctr.path, self._ports(nyx_backend, "18081:80"), SetupOptions())
        ctr.delete()
        nyx_backend.teardown("conf-c", ctr.path)
        same(before, snapshot(nyx_in_host), "teardown after the netns was deleted")

    @pytest.mark.kernel
    def test_teardown_when_the_netns_is_a_stale_file(
        self,
        nyx_backend: NetworkBackend,
        nyx_in_host: Netns,
        nyx_container_ns: Callable[[], Netns],
    ) -> None:
        """After a crash the netns path may still exist as a plain file that is no longer
        a namespace: teardown must still release everything, without an error."""
        ctr = nyx_container_ns()
        before = snapshot(nyx_in_host)
        nyx_backend.setup(
            "conf-stale", ctr.path, self._ports(nyx_backend, "18085:80"), SetupOptions()
        )
        ctr.make_stale()
        try:
            nyx_backend.teardown("conf-stale", ctr.path)
        except NyxError as exc:
            pytest.fail(f"teardown failed when {ctr.path} is a stale file, not a netns: {exc}")
        same(before, snapshot(nyx_in_host), "teardown with a stale netns file")

    @pytest.mark.kernel
    def test_setup_on_a_stale_netns_file_is_refused(
        self,
        nyx_backend: NetworkBackend,
        nyx_in_host: Netns,
        nyx_container_ns: Callable[[], Netns],
    ) -> None:
        ctr = nyx_container_ns()
        ctr.make_stale()
        before = snapshot(nyx_in_host)
        with pytest.raises(NyxError):
            nyx_backend.setup(
                "conf-stale2", ctr.path, self._ports(nyx_backend, "18086:80"), SetupOptions()
            )
        same(before, snapshot(nyx_in_host), "the refused setup on a stale netns file")

    @pytest.mark.kernel
    def test_failed_setup_leaves_nothing(
        self,
        nyx_backend: NetworkBackend,
        nyx_in_host: Netns,
        nyx_container_ns: Callable[[], Netns],
    ) -> None:
        before = snapshot(nyx_in_host)
        with pytest.raises(NyxError):
            nyx_backend.setup(
                "conf-d",
                "/run/netns/nyxt-does-not-exist",
                self._ports(nyx_backend, "18082:80"),
                SetupOptions(),
            )
        same(before, snapshot(nyx_in_host), "the failed setup changed the host")
        # the failed attempt must not have reserved anything: the same id and port work now
        ctr = nyx_container_ns()
        nyx_backend.setup("conf-d", ctr.path, self._ports(nyx_backend, "18082:80"), SetupOptions())
        nyx_backend.teardown("conf-d", ctr.path)
        same(before, snapshot(nyx_in_host), "setup and teardown after a failed setup")

    @pytest.mark.kernel
    def test_concurrent_setups_get_distinct_addresses(
        self,
        nyx_backend: NetworkBackend,
        nyx_in_host: Netns,
        nyx_container_ns: Callable[[], Netns],
    ) -> None:
        nss = [nyx_container_ns() for _ in range(8)]
        results: dict[int, SetupResult] = {}
        errors: list[BaseException] = []

        def one(i: int) -> None:
            try:
                results[i] = nyx_backend.setup(f"conf-p{i}", nss[i].path, [], SetupOptions())
            except BaseException as exc:  # collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(nss))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        try:
            assert not errors, errors
            ips = [ip for r in results.values() for ip in r.ips]
            assert len(ips) == len(nss), f"{len(nss)} setups reported {len(ips)} addresses"
            assert len(set(ips)) == len(ips), (
                f"the same address went to two containers: {sorted(map(str, ips))}"
            )
        finally:
            for i, ns in enumerate(nss):
                nyx_backend.teardown(f"conf-p{i}", ns.path)

    @pytest.mark.kernel
    def test_leases_are_released_and_reused(
        self,
        nyx_make_backend: Callable[[NyxSettings], NetworkBackend],
        nyx_settings: NyxSettings,
        nyx_in_host: Netns,
        nyx_container_ns: Callable[[], Netns],
    ) -> None:
        """On a /29 (5 addresses): three times as many setup/teardown cycles as there are
        addresses, then a full pool refuses one more cleanly, and an address released by
        teardown is handed out again (a driver that never released passed before)."""
        subnet = ipaddress.IPv4Network(TINY_SUBNET)
        gateway = subnet.network_address + 1
        tiny = nyx_settings.model_copy(update={"container_subnet": subnet, "gateway_ip": gateway})
        backend = nyx_make_backend(tiny)
        reserved = {subnet.network_address, subnet.broadcast_address, gateway}
        pool = [ip for ip in subnet.hosts() if ip != gateway]
        before = snapshot(nyx_in_host)

        def setup(cid: str, ns: Netns, what: str) -> ipaddress.IPv4Address:
            try:
                result = backend.setup(cid, ns.path, [], SetupOptions())
            except NyxError as exc:
                pytest.fail(f"{what}: setup of {cid!r} on {subnet} failed: {exc}")
            ip = in_subnet(result, subnet)
            assert ip not in reserved, f"{cid!r} got {ip}: the network, broadcast or gateway"
            return ip

        cycles = 3 * len(pool)
        for i in range(cycles):
            ctr = nyx_container_ns()
            setup(
                f"conf-l{i}",
                ctr,
                f"cycle {i + 1} of {cycles} ({len(pool)} addresses; is the lease released "
                "at teardown?)",
            )
            backend.teardown(f"conf-l{i}", ctr.path)
            ctr.delete()
        held: dict[str, tuple[Netns, ipaddress.IPv4Address]] = {}
        try:
            for i in range(len(pool)):
                ctr = nyx_container_ns()
                held[f"conf-f{i}"] = (ctr, setup(f"conf-f{i}", ctr, "filling the pool"))
            ips = [ip for _ns, ip in held.values()]
            assert len(set(ips)) == len(pool), f"addresses handed out twice: {sorted(ips)}"
            middle = snapshot(nyx_in_host)
            extra = nyx_container_ns()
            with pytest.raises(NyxError):
                backend.setup("conf-over", extra.path, [], SetupOptions())
            same(middle, snapshot(nyx_in_host), "the setup refused for a full pool")
            ctr, freed = held.pop("conf-f0")
            backend.teardown("conf-f0", ctr.path)
            again = setup("conf-again", extra, "after one teardown in a full pool")
            held["conf-again"] = (extra, again)
            assert again == freed, f"the one free address is {freed}, but setup gave {again}"
        finally:
            for cid, (ns, _ip) in held.items():
                backend.teardown(cid, ns.path)
        same(before, snapshot(nyx_in_host), "the lease cycles left the host changed")

    # ------------------------------------------------------------- container side

    @pytest.mark.kernel
    def test_setup_result_describes_the_container(
        self,
        nyx_backend: NetworkBackend,
        nyx_container_ns: Callable[[], Netns],
    ) -> None:
        ctr = nyx_container_ns()
        result = nyx_backend.setup("conf-r", ctr.path, [], SetupOptions())
        try:
            assert result.container_id == "conf-r"
            assert result.interfaces, "setup returned no interface"
            for iface in result.interfaces:
                assert iface.name
                for addr in iface.addresses:
                    assert addr.network.prefixlen > 0, f"{iface.name}: {addr} has no prefix"
            # every address it reports is really configured in the container's netns
            inside = {
                f"{a['local']}/{a['prefixlen']}"
                for link in ctr.ipj("addr", "show")
                for a in link.get("addr_info", [])
            }
            for iface in result.interfaces:
                for addr in iface.addresses:
                    assert str(addr) in inside, f"{addr} is not configured in the container"
        finally:
            nyx_backend.teardown("conf-r", ctr.path)

    @pytest.mark.kernel
    def test_interfaces_are_up_with_a_default_route(
        self,
        nyx_backend: NetworkBackend,
        nyx_container_ns: Callable[[], Netns],
    ) -> None:
        """Every interface the driver reports is up with a carrier, and a driver that
        reports a gateway has put the container's default route through it (a driver
        leaving eth0 down used to pass)."""
        ctr = nyx_container_ns()
        result = nyx_backend.setup("conf-up", ctr.path, [], SetupOptions())
        try:
            links = {link["ifname"]: link for link in ctr.ipj("link", "show")}
            for iface in result.interfaces:
                assert iface.name in links, f"{iface.name} is reported but not in the container"
                flags = links[iface.name].get("flags", [])
                assert "UP" in flags, f"{iface.name} is down in the container (flags {flags})"
                assert "LOWER_UP" in flags, (
                    f"{iface.name} has no carrier in the container (flags {flags}): "
                    "is the host side of its link up?"
                )
            if result.gateway is not None:
                routes = ctr.ipj("route", "show", "default")
                assert any(r.get("gateway") == str(result.gateway) for r in routes), (
                    f"the driver reports gateway {result.gateway} but the container's default "
                    f"routes are {routes}"
                )
        finally:
            nyx_backend.teardown("conf-up", ctr.path)

    @pytest.mark.kernel
    def test_static_address_and_mac_are_honoured(
        self,
        nyx_backend: NetworkBackend,
        nyx_settings: NyxSettings,
        nyx_in_host: Netns,
        nyx_container_ns: Callable[[], Netns],
    ) -> None:
        """``static_addresses``: ``static_ip`` and ``mac`` are what the container gets (and
        what the result reports); a second container asking for the same address is
        refused with a :class:`NyxError` that changes nothing on the host."""
        self._require(nyx_backend, "static_addresses")
        subnet = nyx_settings.container_subnet
        want = subnet.network_address + (subnet.num_addresses - 3)
        mac = "02:42:0a:e7:00:fd"
        ctr = nyx_container_ns()
        opts = SetupOptions(static_ip=want, mac=mac)
        result = nyx_backend.setup("conf-static", ctr.path, [], opts)
        try:
            assert want in result.ips, f"asked for {want}, the result reports {result.ips}"
            links = [link for link in ctr.ipj("addr", "show") if link.get("ifname") != "lo"]
            got = {
                (link.get("address"), a["local"])
                for link in links
                for a in link.get("addr_info", [])
                if a.get("family") == "inet"
            }
            assert (mac, str(want)) in got, (
                f"asked for {want} with MAC {mac}; the container has (mac, address) {sorted(got)}"
            )
            other = nyx_container_ns()
            before = snapshot(nyx_in_host)
            with pytest.raises(NyxError):
                nyx_backend.setup("conf-static2", other.path, [], SetupOptions(static_ip=want))
            same(before, snapshot(nyx_in_host), "the refused static address changed the host")
        finally:
            nyx_backend.teardown("conf-static", ctr.path)
            nyx_backend.teardown("conf-static2", "")

    @pytest.mark.kernel
    def test_two_containers_exchange_a_packet(
        self,
        nyx_backend: NetworkBackend,
        nyx_container_ns: Callable[[], Netns],
    ) -> None:
        """A TCP connection from one container to another on the default network (the
        only traffic check a driver without ports used to get was none)."""
        a, b = nyx_container_ns(), nyx_container_ns()
        ra = nyx_backend.setup("conf-pa", a.path, [], SetupOptions(hostname="pa"))
        try:
            nyx_backend.setup("conf-pb", b.path, [], SetupOptions(hostname="pb"))
            try:
                ip = str(ra.ips[0])
                with tcp_server(a, ip, PEER_PORT):
                    err = reach(b, ip, PEER_PORT)
                assert err is None, f"container conf-pb cannot reach conf-pa at {ip}: {err}"
            finally:
                nyx_backend.teardown("conf-pb", b.path)
        finally:
            nyx_backend.teardown("conf-pa", a.path)

    @pytest.mark.kernel
    def test_gateway_ip_is_on_a_host_link(
        self,
        nyx_backend: NetworkBackend,
        nyx_settings: NyxSettings,
        nyx_in_host: Netns,
        nyx_container_ns: Callable[[], Netns],
    ) -> None:
        """Once the default network is up (before any container), ``gateway_ip`` is an
        address of a host link: the DNS provider binds it at start, and containers reach
        it there (their resolv.conf names it)."""
        host_addrs = {
            a["local"] for link in nyx_in_host.ipj("addr", "show") for a in link["addr_info"]
        }
        ctr = nyx_container_ns()
        result = nyx_backend.setup("conf-gw", ctr.path, [], SetupOptions())
        try:
            if result.gateway is None:
                pytest.skip(
                    "driver reports no gateway: its containers cannot use nyxd's DNS "
                    "provider (run nyxd with --dns off)"
                )
            gw = str(nyx_settings.gateway_ip)
            assert gw in host_addrs, (
                f"gateway_ip {gw} is on no host link after ensure_network (the host has "
                f"{sorted(host_addrs)}): the DNS provider cannot listen there"
            )
            with tcp_server(None, gw, GATEWAY_PORT) as server:
                err = reach(ctr, gw, GATEWAY_PORT)
            assert err is None, f"the container cannot reach gateway_ip {gw}: {err}"
            assert server.clients == [str(result.ips[0])], (
                f"the host saw the container's connection from {server.clients}, not from "
                f"its address {result.ips[0]} (the DNS provider tells containers apart by "
                "their source address)"
            )
        finally:
            nyx_backend.teardown("conf-gw", ctr.path)

    # ------------------------------------------------------------------ ports

    @pytest.mark.kernel
    def test_port_conflict_is_refused_and_changes_nothing(
        self,
        nyx_backend: NetworkBackend,
        nyx_in_host: Netns,
        nyx_container_ns: Callable[[], Netns],
    ) -> None:
        self._require(nyx_backend, "publishes_ports")
        a, b = nyx_container_ns(), nyx_container_ns()
        ports = self._ports(nyx_backend, "18083:80")
        nyx_backend.setup("conf-e", a.path, ports, SetupOptions())
        try:
            middle = snapshot(nyx_in_host)
            with pytest.raises(NyxError) as info:
                nyx_backend.setup("conf-f", b.path, ports, SetupOptions())
            assert "18083" in str(info.value)
            same(middle, snapshot(nyx_in_host), "the refused setup changed the host")
        finally:
            nyx_backend.teardown("conf-e", a.path)

    @pytest.mark.kernel
    def test_published_port_answers_on_the_gateway_address(
        self,
        nyx_backend: NetworkBackend,
        nyx_in_host: Netns,
        nyx_container_ns: Callable[[], Netns],
    ) -> None:
        self._require(nyx_backend, "publishes_ports")
        ctr = nyx_container_ns()
        result = nyx_backend.setup(
            "conf-g", ctr.path, self._ports(nyx_backend, "18084:8084"), SetupOptions()
        )
        try:
            assert result.gateway is not None, (
                "the driver declares publishes_ports but its setup reports no gateway: the "
                "host reaches a published port on the gateway address (SetupResult.gateway)"
            )
            with tcp_server(ctr, "0.0.0.0", 8084):
                err = reach(None, str(result.gateway), 18084)
            assert err is None, f"published port {result.gateway}:18084 -> 8084: {err}"
        finally:
            nyx_backend.teardown("conf-g", ctr.path)
