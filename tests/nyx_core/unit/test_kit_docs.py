"""docs/writing-a-driver.md lists every conformance check and every fixture of the kit."""

from __future__ import annotations

from pathlib import Path

import pytest

from nyx_core.testing import BackendConformance, DnsProviderConformance, _pytest_plugin

DOC = Path(__file__).resolve().parents[3] / "docs" / "writing-a-driver.md"


def _members(cls: type, prefix: str) -> list[str]:
    """The kit's own members, its bases' included (the checks come in groups)."""
    kit = [c for c in cls.__mro__ if c.__module__.startswith("nyx_core.testing")]
    return sorted({n for c in kit for n in vars(c) if n.startswith(prefix)})


CHECKS = _members(BackendConformance, "test_") + _members(DnsProviderConformance, "test_")
FIXTURES = (
    list(_pytest_plugin.__all__)
    + _members(BackendConformance, "nyx_")
    + _members(DnsProviderConformance, "nyx_")
)


def test_the_kit_is_found() -> None:
    assert len(CHECKS) > 30 and "nyx_driver_name" in FIXTURES and "nyx_dns" in FIXTURES


@pytest.mark.parametrize("name", CHECKS)
def test_every_check_is_listed(name: str) -> None:
    assert f"`{name}`" in DOC.read_text(), f"{name} is not in docs/writing-a-driver.md"


@pytest.mark.parametrize("name", sorted(set(FIXTURES)))
def test_every_fixture_is_listed(name: str) -> None:
    assert f"`{name}`" in DOC.read_text(), f"fixture {name} is not in docs/writing-a-driver.md"
