"""Fixtures of the nyx test kit."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pluggy
import pytest

from .._plugins import make_plugin_manager
from .._settings import NyxSettings, PluginSettings
from ._netns import Netns, entered, leaked_namespaces
from ._recorder import HookRecorder
from ._topology import HostTopology, Neighbour, Unprivileged

__all__ = [
    "nyx_container_ns",
    "nyx_hook_recorder",
    "nyx_host_ns",
    "nyx_in_host",
    "nyx_internet_ns",
    "nyx_lan_ns",
    "nyx_plugin_settings",
    "nyx_settings",
    "nyx_topology",
    "nyx_unprivileged",
    "require_kernel",
]


def pytest_configure(config: pytest.Config) -> None:
    """Register the kit's marker, so a driver's own test suite needs no ini entry."""
    config.addinivalue_line(
        "markers", "kernel: needs root and the real kernel (network namespaces, nftables)"
    )


def _kernel_ready() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    if shutil.which("ip") is None:
        return "needs iproute2 (ip)"
    return None


@pytest.fixture
def require_kernel() -> None:
    """Skip unless root with iproute2 (the real-kernel tests' precondition)."""
    why = _kernel_ready()
    if why:
        pytest.skip(why)


@pytest.fixture
def nyx_topology(require_kernel: None) -> Iterator[HostTopology]:
    """A real-looking host: the host namespace with an uplink (default route) to an
    "internet" namespace and a LAN link to a neighbour namespace (see
    :class:`~nyx_core.testing.HostTopology`); all deleted after the test."""
    topo = HostTopology.create()
    try:
        yield topo
    finally:
        topo.delete()


@pytest.fixture
def nyx_host_ns(nyx_topology: HostTopology) -> Netns:
    """The "host" namespace the driver under test runs in: ``lo``, ``uplink0``
    203.0.113.2/24 and 2001:db8:113::2/64 with the default routes via 203.0.113.1 and
    2001:db8:113::1, ``lan0`` 198.51.100.1/24 and 2001:db8:100::1/64."""
    return nyx_topology.host


@pytest.fixture
def nyx_internet_ns(nyx_topology: HostTopology) -> Netns:
    """The far end of the host's uplink: 203.0.113.1 / 2001:db8:113::1 and the server
    addresses 198.18.0.10 and 2001:db8:18::10."""
    return nyx_topology.internet


@pytest.fixture
def nyx_lan_ns(nyx_topology: HostTopology) -> Neighbour:
    """The LAN neighbour (198.51.100.2 and 2001:db8:100::2 on the host's ``lan0``); it
    routes more through the host on request
    (:meth:`~nyx_core.testing.Neighbour.route_to_host`,
    :meth:`~nyx_core.testing.Neighbour.route_localhost_to_host`)."""
    return nyx_topology.lan


@pytest.fixture
def nyx_unprivileged(require_kernel: None) -> Unprivileged:
    """Runs commands and Python snippets as ``nobody`` (65534), optionally in a namespace."""
    return Unprivileged()


@pytest.fixture
def nyx_container_ns(require_kernel: None) -> Iterator[Callable[[], Netns]]:
    """Factory of fresh container namespaces; all deleted after the test."""
    made: list[Netns] = []

    def make() -> Netns:
        ns = Netns.create("ctr")
        made.append(ns)
        return ns

    try:
        yield make
    finally:
        for ns in made:
            ns.delete()


@pytest.fixture
def nyx_in_host(nyx_host_ns: Netns) -> Iterator[Netns]:
    """The test thread runs inside ``nyx_host_ns`` for the whole test."""
    with entered(nyx_host_ns):
        yield nyx_host_ns


@pytest.fixture
def nyx_plugin_settings() -> list[PluginSettings]:
    """The plugin's own settings objects the tests run with (none by default).

    Override it in your test module or conftest to run your driver or provider with
    settings of its own, e.g. ``return [MySettings(conf_dir=tmp_path / "conf")]``:
    :func:`nyx_settings` carries them (``settings.plugin(MySettings)`` returns yours).
    """
    return []


@pytest.fixture
def nyx_settings(tmp_path: Path, nyx_plugin_settings: list[PluginSettings]) -> NyxSettings:
    """Default settings with the state and run dirs under ``tmp_path``, carrying
    :func:`nyx_plugin_settings`.

    The subnet is a small test range (10.231.0.0/24, gateway 10.231.0.1) so tests never
    collide with a real nyxd on the machine; DNS port 5353.
    """
    return NyxSettings(
        state_dir=tmp_path / "state",
        run_dir=tmp_path / "run",
        container_subnet="10.231.0.0/24",
        gateway_ip="10.231.0.1",
        dns_port=5353,
    ).with_plugins(*nyx_plugin_settings)


@pytest.fixture
def nyx_hook_recorder() -> Iterator[Callable[..., HookRecorder]]:
    """Factory: ``nyx_hook_recorder(pm=None)`` records calls through ``pm`` (or a new one)."""
    recorders: list[HookRecorder] = []

    def make(pm: pluggy.PluginManager | None = None) -> HookRecorder:
        rec = HookRecorder(pm or make_plugin_manager())
        recorders.append(rec)
        return rec

    yield make
    for rec in recorders:
        rec.close()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    leaked = leaked_namespaces()
    if leaked:
        for name in leaked:
            os.system(f"ip netns del {name} 2>/dev/null")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        print(f"\nnyx_core.testing: leaked test namespaces removed: {', '.join(leaked)}")
