"""Fixtures of the native driver's integration tests (all inside test namespaces)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from native_helpers import Servers

from nyx_core import NetworkBackend, NyxSettings
from nyx_core.testing import Netns

HOST_EXT_IP = "198.51.100.1"
EXT_IP = "198.51.100.2"


@pytest.fixture
def native(nyx_settings: NyxSettings, nyx_in_host: Netns) -> NetworkBackend:
    """The native driver, loaded through its entry point, network ensured in the host ns."""
    backend = NetworkBackend.load("native")
    backend.ensure_network(nyx_settings)
    return backend


@pytest.fixture
def ext_ns(nyx_in_host: Netns) -> Iterator[Netns]:
    """An "external" namespace linked to the host one over 198.51.100.0/24."""
    ext = Netns.create("ext")
    try:
        nyx_in_host.ip(
            "link", "add", "ext0", "type", "veth", "peer", "name", "eth0", "netns", ext.name
        )
        nyx_in_host.ip("addr", "add", f"{HOST_EXT_IP}/24", "dev", "ext0")
        nyx_in_host.ip("link", "set", "ext0", "up")
        ext.ip("addr", "add", f"{EXT_IP}/24", "dev", "eth0")
        ext.ip("link", "set", "eth0", "up")
        yield ext
    finally:
        ext.delete()


@pytest.fixture
def servers() -> Iterator[Servers]:
    srv = Servers()
    try:
        yield srv
    finally:
        srv.close()
