"""The driver conformance suite.

Subclass :class:`BackendConformance` in a test module of your driver and provide a
``nyx_driver_name`` fixture returning its entry point name in ``nyx.net_drivers``::

    pytest_plugins = ["nyx_core.testing"]

    class TestMyDriver(BackendConformance):
        @pytest.fixture
        def nyx_driver_name(self):
            return "mydriver"

Tests marked ``kernel`` run the driver inside a throwaway host namespace and need root.
Override ``nyx_backend`` when your driver needs settings beyond ``nyx_settings``.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from .. import hookspecs
from .._models import PortMapping, SetupOptions, SetupResult
from .._plugins import DRIVER_GROUP, NetworkBackend, installed_plugins, make_plugin_manager
from .._settings import NyxSettings
from ..errors import NyxError, PluginNotFoundError
from ._netns import Netns, entered, snapshot

__all__ = ["BackendConformance"]


class BackendConformance:
    """Contract tests every network driver passes.

    Set ``nyx_publishes_ports = False`` on the subclass for a driver without port maps
    (its setups then get no ports, and the port-conflict test is skipped).
    """

    nyx_publishes_ports: bool = True

    def _require_ports(self) -> None:
        if not self.nyx_publishes_ports:
            pytest.skip("driver publishes no ports")

    def _ports(self, *specs: str) -> list[PortMapping]:
        return [PortMapping.parse(s) for s in specs] if self.nyx_publishes_ports else []

    @pytest.fixture
    def nyx_driver_name(self) -> str:
        raise NotImplementedError("provide a nyx_driver_name fixture")

    @pytest.fixture
    def nyx_backend(
        self, nyx_driver_name: str, nyx_settings: NyxSettings, nyx_in_host: Netns
    ) -> Iterator[NetworkBackend]:
        backend = NetworkBackend.load(nyx_driver_name)
        backend.ensure_network(nyx_settings)
        yield backend

    # ------------------------------------------------------------ no kernel needed

    def test_entry_point_is_installed(self, nyx_driver_name: str) -> None:
        names = {p.name for p in installed_plugins(DRIVER_GROUP)}
        assert nyx_driver_name in names

    def test_loads_and_implements_every_backend_hook(self, nyx_driver_name: str) -> None:
        pm = make_plugin_manager()
        NetworkBackend.load(nyx_driver_name, pm)
        for hook in hookspecs.REQUIRED_BACKEND_HOOKS:
            assert getattr(pm.hook, hook).get_hookimpls(), hook

    def test_unknown_driver_lists_this_one(self, nyx_driver_name: str) -> None:
        with pytest.raises(PluginNotFoundError) as info:
            NetworkBackend.load("no-such-driver-xyz")
        assert nyx_driver_name in str(info.value)

    # ----------------------------------------------------------------- kernel tests

    @pytest.mark.kernel
    def test_ensure_network_is_idempotent(
        self, nyx_backend: NetworkBackend, nyx_settings: NyxSettings, nyx_in_host: Netns
    ) -> None:
        before = snapshot(nyx_in_host)
        nyx_backend.ensure_network(nyx_settings)
        assert snapshot(nyx_in_host) == before

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
            "conf-a", ctr.path, self._ports("18080:80"), SetupOptions(hostname="a")
        )
        assert isinstance(result, SetupResult)
        assert result.ips, "setup returned no address"
        nyx_backend.teardown("conf-a", ctr.path)
        assert snapshot(nyx_in_host) == before

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
        assert snapshot(nyx_in_host) == before

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
            assert snapshot(nyx_in_host) == middle
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
        nyx_backend.setup("conf-c", ctr.path, self._ports("18081:80"), SetupOptions())
        ctr.delete()
        nyx_backend.teardown("conf-c", ctr.path)
        assert snapshot(nyx_in_host) == before

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
                self._ports("18082:80"),
                SetupOptions(),
            )
        assert snapshot(nyx_in_host) == before
        # the failed attempt must not have reserved anything: the same id and port work now
        ctr = nyx_container_ns()
        nyx_backend.setup("conf-d", ctr.path, self._ports("18082:80"), SetupOptions())
        nyx_backend.teardown("conf-d", ctr.path)
        assert snapshot(nyx_in_host) == before

    @pytest.mark.kernel
    def test_port_conflict_is_refused_and_changes_nothing(
        self,
        nyx_backend: NetworkBackend,
        nyx_in_host: Netns,
        nyx_container_ns: Callable[[], Netns],
    ) -> None:
        self._require_ports()
        a, b = nyx_container_ns(), nyx_container_ns()
        nyx_backend.setup("conf-e", a.path, self._ports("18083:80"), SetupOptions())
        try:
            middle = snapshot(nyx_in_host)
            with pytest.raises(NyxError) as info:
                nyx_backend.setup("conf-f", b.path, self._ports("18083:80"), SetupOptions())
            assert "18083" in str(info.value)
            assert snapshot(nyx_in_host) == middle
        finally:
            nyx_backend.teardown("conf-e", a.path)

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
            assert len(ips) == len(set(ips)) == len(nss)
        finally:
            for i, ns in enumerate(nss):
                nyx_backend.teardown(f"conf-p{i}", ns.path)

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
    def test_published_port_answers_on_the_gateway_address(
        self,
        nyx_backend: NetworkBackend,
        nyx_in_host: Netns,
        nyx_container_ns: Callable[[], Netns],
    ) -> None:
        self._require_ports()
        ctr = nyx_container_ns()
        result = nyx_backend.setup("conf-g", ctr.path, self._ports("18084:8084"), SetupOptions())
        server: socket.socket | None = None
        try:
            if result.gateway is None:
                pytest.skip("driver reports no gateway")
            with entered(ctr):
                server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            server.bind(("0.0.0.0", 8084))
            server.listen(1)
            server.settimeout(5)

            def answer() -> None:
                assert server is not None
                try:
                    conn, _peer = server.accept()
                except OSError:
                    return
                with conn:
                    conn.sendall(b"conformance")

            t = threading.Thread(target=answer, daemon=True)
            t.start()
            with socket.create_connection((str(result.gateway), 18084), timeout=5) as client:
                assert client.recv(64) == b"conformance"
            t.join(timeout=5)
        finally:
            if server is not None:
                server.close()
            nyx_backend.teardown("conf-g", ctr.path)
