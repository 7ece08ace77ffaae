"""The example third-party driver is found by name and passes the conformance suite."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from nyx_core import ConfigError, NetworkBackend, PortMapping, SetupOptions
from nyx_core.testing import BackendConformance, Netns


class TestLoopbackConformance(BackendConformance):
    """The suite reads the driver's capabilities (none: no ports, one network...) and skips
    those checks by itself. Three checks assume containers get an address of their own;
    a loopback-only driver opts out of them here, by name, with its reason."""

    @pytest.fixture
    def nyx_driver_name(self) -> str:
        return "loopback"

    def test_concurrent_setups_get_distinct_addresses(self) -> None:  # type: ignore[override]
        pytest.skip("loopback only: every container's address is 127.0.0.1 by design")

    def test_leases_are_released_and_reused(self) -> None:  # type: ignore[override]
        pytest.skip("loopback only: no addresses are leased")

    def test_two_containers_exchange_a_packet(self) -> None:  # type: ignore[override]
        pytest.skip("loopback only: containers are isolated from each other by design")


def test_nyxd_lists_the_example_driver() -> None:
    nyxd = Path(sys.executable).with_name("nyxd")
    out = subprocess.run([nyxd, "--list-plugins"], capture_output=True, text=True, check=True)
    assert "loopback" in out.stdout
    assert "nyx-driver-loopback" in out.stdout


def test_ports_are_refused_with_the_port_named() -> None:
    backend = NetworkBackend.load("loopback")
    with pytest.raises(ConfigError, match="8080:80/tcp"):
        backend.setup("x", "/nonexistent", [PortMapping.parse("8080:80")], SetupOptions())


@pytest.mark.kernel
def test_setup_brings_lo_up(nyx_container_ns: Callable[[], Netns]) -> None:
    ctr = nyx_container_ns()
    ctr.ip("link", "set", "lo", "down")
    backend = NetworkBackend.load("loopback")
    result = backend.setup("lo-1", ctr.path, [], SetupOptions())
    assert [str(ip) for ip in result.ips] == ["127.0.0.1"]
    flags = ctr.ipj("link", "show", "lo")[0]["flags"]
    assert "UP" in flags
