"""Fixtures of the native driver's integration tests (all inside test namespaces).

The host namespace is the kit's real-looking host (``nyx_topology``): an uplink to the
"internet" namespace with the default route (``nyx_internet_ns``), a LAN link to a
neighbour (``nyx_lan_ns``); addresses in ``native_helpers``.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator

import pytest
from native_helpers import Servers

from nyx_core import NetworkBackend, NyxSettings, PluginSettings
from nyx_core.testing import Netns
from nyx_plugins_native import NativeSettings


@pytest.fixture
def nyx_plugin_settings() -> list[PluginSettings]:
    """The kit's override point: the native driver's bridge is ``nyxt0`` in these tests."""
    return [NativeSettings(bridge="nyxt0", watch=False)]


@pytest.fixture
def native(nyx_settings: NyxSettings, nyx_in_host: Netns) -> NetworkBackend:
    """The native driver, loaded through its entry point, network ensured in the host ns."""
    backend = NetworkBackend.load("native")
    backend.ensure_network(nyx_settings)
    return backend


@pytest.fixture(autouse=True)
def _no_watch_left() -> Iterator[None]:
    """A driver's host watch holds netlink sockets, and with them its test namespace: it
    must stop with its driver (``close``, or the driver being dropped)."""
    yield
    gc.collect()
    left = [t for t in threading.enumerate() if t.name == "nyx-native-watch"]
    for _ in range(50):
        if not any(t.is_alive() for t in left):
            break
        time.sleep(0.1)
    assert not any(t.is_alive() for t in left), "a native driver's host watch was left running"


@pytest.fixture
def servers() -> Iterator[Servers]:
    srv = Servers()
    try:
        yield srv
    finally:
        srv.close()
