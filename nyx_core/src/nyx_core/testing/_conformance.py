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

import contextlib
import ipaddress
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .. import hookspecs
from .._models import (
    BackendCapabilities,
    NetworkSpec,
    PortMapping,
    SetupOptions,
    SetupResult,
)
from .._plugins import DRIVER_GROUP, NetworkBackend, installed_plugins, make_plugin_manager
from .._settings import NyxSettings
from ..errors import ConfigError, NyxError, PluginNotFoundError
from ._netns import Netns, snapshot
from ._probe import reach, tcp_server
from ._topology import INTERNET_SERVER_IP, UPLINK_HOST_IP

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

LIFECYCLE_NETWORK = ("kit-net1", "10.231.1.1/24")
"""Name and gateway/prefix of the network the lifecycle checks create and remove."""
SECOND_NETWORK = ("kit-net2", "10.231.2.1/24")
"""The second network of the ``multiple_networks`` check (``eth1``)."""
INTERNAL_NETWORK = ("kit-int", "10.231.3.1/24")
"""The internal network of the ``enforces_internal`` check."""
TINY_SUBNET = "10.231.0.0/29"
"""The default network's subnet in the lease check: 5 addresses for containers."""
KIT_SUBNET6 = "fd00:231::/64"
"""The default network's IPv6 subnet in the ``ipv6`` checks (gateway ``fd00:231::1``)."""
PEER_PORT, GATEWAY_PORT, INTERNET_PORT = 18090, 18091, 18092
"""TCP ports of the servers the packet checks connect to."""

_SHORT_TIMEOUT = 3.0
"""Seconds a connection that must *not* get through is given (a dropped SYN)."""


def default_network_spec(settings: NyxSettings) -> NetworkSpec:
    """The default network as nyxd creates it at start (``network_lifecycle`` drivers)."""
    return NetworkSpec(
        name=settings.network,
        subnet=settings.container_subnet,
        gateway=settings.gateway_ip,
        subnet6=settings.container_subnet6,
        gateway6=settings.gateway6,
        default=True,
    )


def dual_stack(settings: NyxSettings) -> NyxSettings:
    """``settings`` with :data:`KIT_SUBNET6` as the default network's IPv6 subnet."""
    return settings.model_copy(
        update={"container_subnet6": ipaddress.IPv6Network(KIT_SUBNET6), "gateway_ip6": None}
    )


def _show(items: list[Any]) -> str:
    text = ", ".join(
        json.dumps(x, sort_keys=True) if isinstance(x, dict) else str(x) for x in items
    )
    return text if len(text) < 600 else text[:600] + "..."


def snapshot_diff(before: dict[str, Any], after: dict[str, Any]) -> str:
    """What differs between two :func:`~nyx_core.testing.snapshot` results, for messages."""
    parts = []
    for key in sorted(before.keys() | after.keys()):
        b, a = before.get(key, []), after.get(key, [])
        if b == a:
            continue
        extra = [x for x in a if x not in b]
        gone = [x for x in b if x not in a]
        text = key + ":"
        if extra:
            text += f" left behind [{_show(extra)}]"
        if gone:
            text += f" removed [{_show(gone)}]"
        parts.append(text if extra or gone else f"{key}: reordered")
    return "; ".join(parts) or "no difference"


def _same(before: dict[str, Any], after: dict[str, Any], what: str) -> None:
    assert after == before, f"{what}: {snapshot_diff(before, after)}"


_KERNEL_LO = frozenset({("lo", "127.0.0.1/8"), ("lo", "::1/128")})


def _container_state(ns: Netns) -> dict[str, Any]:
    """:func:`snapshot` of a container, minus the addresses the kernel itself puts on
    ``lo`` (``::1`` comes and goes with lo's state, which is the runtime's business: the
    CNI loopback plugin brings lo down on DEL)."""
    snap = snapshot(ns)
    snap["addresses"] = [a for a in snap["addresses"] if tuple(a) not in _KERNEL_LO]
    return snap


def _in_subnet6(result: SetupResult, subnet: ipaddress.IPv6Network) -> ipaddress.IPv6Address:
    v6 = [ip for ip in result.ips if ip.version == 6]
    assert v6, (
        f"setup of {result.container_id!r} on a dual-stack network reported no IPv6 address "
        f"(it has {[str(ip) for ip in result.ips]})"
    )
    ip = v6[0]
    assert isinstance(ip, ipaddress.IPv6Address)
    assert ip in subnet, f"{result.container_id!r} got {ip}, outside its network's {subnet}"
    return ip


def _in_subnet(result: SetupResult, subnet: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    v4 = [ip for ip in result.ips if ip.version == 4]
    assert v4, f"setup of {result.container_id!r} reported no IPv4 address"
    ip = v4[0]
    assert isinstance(ip, ipaddress.IPv4Address)
    assert ip in subnet, f"{result.container_id!r} got {ip}, outside its network's {subnet}"
    return ip


class BackendConformance:
    """Contract tests every network driver passes (see the module docstring)."""

    # ------------------------------------------------------------------ fixtures

    @pytest.fixture
    def nyx_driver_name(self) -> str:
        raise NotImplementedError("provide a nyx_driver_name fixture")

    @pytest.fixture
    def nyx_make_backend(
        self, nyx_driver_name: str, nyx_in_host: Netns
    ) -> Callable[[NyxSettings], NetworkBackend]:
        """Factory: a freshly loaded driver, host-wide setup done for ``settings``, as nyxd
        does at start (``ensure_network``, then ``network_create`` of the default network
        when the driver declares ``network_lifecycle``). Runs in the host namespace."""

        def make(settings: NyxSettings) -> NetworkBackend:
            backend = NetworkBackend.load(nyx_driver_name)
            backend.ensure_network(settings)
            if backend.capabilities().network_lifecycle:
                backend.network_create(default_network_spec(settings))
            return backend

        return make

    @pytest.fixture
    def nyx_backend(
        self, nyx_make_backend: Callable[[NyxSettings], NetworkBackend], nyx_settings: NyxSettings
    ) -> NetworkBackend:
        """The driver, ready for containers on ``nyx_settings``' default network."""
        return nyx_make_backend(nyx_settings)

    @pytest.fixture
    def nyx_backend6(
        self,
        nyx_driver_name: str,
        nyx_make_backend: Callable[[NyxSettings], NetworkBackend],
        nyx_settings: NyxSettings,
    ) -> NetworkBackend:
        """The driver on a dual-stack default network (:func:`dual_stack`: IPv6 subnet
        :data:`KIT_SUBNET6`); the checks using it skip for a driver without ``ipv6``."""
        if not NetworkBackend.load(nyx_driver_name).capabilities().ipv6:
            pytest.skip("driver does not declare ipv6")
        return nyx_make_backend(dual_stack(nyx_settings))

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _require(backend: NetworkBackend, capability: str) -> None:
        if not getattr(backend.capabilities(), capability):
            pytest.skip(f"driver does not declare {capability}")

    @staticmethod
    def _ports(backend: NetworkBackend, *specs: str) -> list[PortMapping]:
        """The ports to publish in a check: none for a driver without ``publishes_ports``."""
        if not backend.capabilities().publishes_ports:
            return []
        return [PortMapping.parse(s) for s in specs]

    @staticmethod
    @contextlib.contextmanager
    def _network(
        backend: NetworkBackend, name: str, gateway: str, *, internal: bool = False
    ) -> Iterator[SetupOptions]:
        """A non-default network for the ``with`` block, as nyxd makes one: created and
        removed through the driver when it declares ``network_lifecycle``, else left to
        the driver's setup (``SetupOptions.subnet``). Yields the options of a container
        on it."""
        iface = ipaddress.IPv4Interface(gateway)
        lifecycle = backend.capabilities().network_lifecycle
        if lifecycle:
            backend.network_create(
                NetworkSpec(name=name, subnet=iface.network, gateway=iface.ip, internal=internal)
            )
        ok = False
        try:
            yield SetupOptions(network=name, subnet=iface, internal=internal)
            ok = True
        finally:
            if lifecycle:
                if ok:
                    backend.network_remove(name)
                else:
                    with contextlib.suppress(NyxError):
                        backend.network_remove(name)

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
        _same(before, snapshot(nyx_in_host), "a second ensure_network changed the host")

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
        _same(before, snapshot(nyx_in_host), "teardown left the host changed")

    @pytest.mark.kernel
    def test_teardown_leaves_the_container_as_it_was(
        self, nyx_backend: NetworkBackend, nyx_container_ns: Callable[[], Netns]
    ) -> None:
        """Links, addresses, routes and nftables the driver made *inside* the container
        are gone after teardown (a macvlan or a route left there used to pass)."""
        ctr = nyx_container_ns()
        before = _container_state(ctr)
        nyx_backend.setup("conf-in", ctr.path, [], SetupOptions(hostname="in"))
        nyx_backend.teardown("conf-in", ctr.path)
        _same(before, _container_state(ctr), "teardown left the container's namespace changed")

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
        _same(before, snapshot(nyx_in_host), "teardowns left the host changed")

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
            _same(middle, snapshot(nyx_in_host), "the refused setup changed the host")
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
        _same(before, snapshot(nyx_in_host), "teardown after the netns was deleted")

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
        _same(before, snapshot(nyx_in_host), "teardown with a stale netns file")

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
        _same(before, snapshot(nyx_in_host), "the refused setup on a stale netns file")

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
        _same(before, snapshot(nyx_in_host), "the failed setup changed the host")
        # the failed attempt must not have reserved anything: the same id and port work now
        ctr = nyx_container_ns()
        nyx_backend.setup("conf-d", ctr.path, self._ports(nyx_backend, "18082:80"), SetupOptions())
        nyx_backend.teardown("conf-d", ctr.path)
        _same(before, snapshot(nyx_in_host), "setup and teardown after a failed setup")

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
            ip = _in_subnet(result, subnet)
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
            _same(middle, snapshot(nyx_in_host), "the setup refused for a full pool")
            ctr, freed = held.pop("conf-f0")
            backend.teardown("conf-f0", ctr.path)
            again = setup("conf-again", extra, "after one teardown in a full pool")
            held["conf-again"] = (extra, again)
            assert again == freed, f"the one free address is {freed}, but setup gave {again}"
        finally:
            for cid, (ns, _ip) in held.items():
                backend.teardown(cid, ns.path)
        _same(before, snapshot(nyx_in_host), "the lease cycles left the host changed")

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
            _same(before, snapshot(nyx_in_host), "the refused static address changed the host")
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
            _same(middle, snapshot(nyx_in_host), "the refused setup changed the host")
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
            _same(middle, snapshot(nyx_in_host), "a second identical network_create")
            ctr = nyx_container_ns()
            opts = SetupOptions(network=name, subnet=iface)
            result = nyx_backend.setup("conf-n", ctr.path, [], opts)
            try:
                assert result.network == name
                _in_subnet(result, iface.network)
            finally:
                nyx_backend.teardown("conf-n", ctr.path)
        finally:
            nyx_backend.network_remove(name)
        _same(before, snapshot(nyx_in_host), "network_create then network_remove")
        nyx_backend.network_remove(name)  # idempotent
        nyx_backend.network_remove("kit-never-created")
        _same(before, snapshot(nyx_in_host), "network_remove of removed and unknown networks")

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
        _same(before, snapshot(nyx_in_host), "a refused network_create (unknown option)")
        if not nyx_backend.capabilities().enforces_internal:
            with pytest.raises(ConfigError, match="internal"):
                nyx_backend.network_create(spec.model_copy(update={"internal": True}))
            _same(before, snapshot(nyx_in_host), "a refused internal network_create")
        nyx_backend.network_create(spec)
        try:
            middle = snapshot(nyx_in_host)
            other = NetworkSpec(name=name, subnet=ipaddress.IPv4Network("10.231.4.0/24"))
            with pytest.raises(ConfigError, match=name):
                nyx_backend.network_create(other)
            _same(middle, snapshot(nyx_in_host), "a refused network_create (name taken)")
        finally:
            nyx_backend.network_remove(name)
        _same(before, snapshot(nyx_in_host), "network_create then network_remove")

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
        host_before, ctr_before = snapshot(nyx_in_host), _container_state(ctr)
        with self._network(nyx_backend, name, gateway) as opts:
            r0 = nyx_backend.setup("conf-m", ctr.path, [], SetupOptions(hostname="m"))
            try:
                r1 = nyx_backend.setup(
                    "conf-m", ctr.path, [], opts.model_copy(update={"interface": "eth1"})
                )
                nyx_backend.setup("conf-mp", peer.path, [], opts)
                try:
                    _in_subnet(r0, nyx_settings.container_subnet)
                    ip1 = _in_subnet(r1, ipaddress.IPv4Interface(gateway).network)
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
            _same(ctr_before, _container_state(ctr), "one teardown of a container on two networks")
        _same(host_before, snapshot(nyx_in_host), "a container on two networks, torn down")

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
                        err = reach(a, INTERNET_SERVER_IP, INTERNET_PORT, _SHORT_TIMEOUT)
                        assert err is not None, (
                            f"a container of internal network {name} reached "
                            f"{INTERNET_SERVER_IP}:{INTERNET_PORT}"
                        )
                    finally:
                        nyx_backend.teardown("conf-ib", b.path)
                finally:
                    nyx_backend.teardown("conf-ia", a.path)
        _same(before, snapshot(nyx_in_host), "containers on an internal network, torn down")

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
            _in_subnet(result, settings.container_subnet)
            assert settings.container_subnet6 is not None
            ip6 = _in_subnet6(result, settings.container_subnet6)
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
            _same(before, snapshot(nyx_in_host), "the refused static IPv6 address changed the host")
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
                ip = str(_in_subnet6(ra, subnet6))
                assert str(_in_subnet6(rb, subnet6)) != ip, f"both containers got {ip}"
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
