"""Every row of the spec's -dns table, from the drivers' declared capabilities."""

from __future__ import annotations

from functools import cache

import pytest

from nyx_core import (
    DRIVER_GROUP,
    BackendCapabilities,
    DnsDecision,
    NetworkBackend,
    StackNetwork,
    dns_policy,
    installed_plugins,
)


@cache
def caps(driver: str) -> BackendCapabilities:
    """What the installed driver declares (the policy never sees its name).

    The spec's table is about the first-party drivers: with nyx-core alone installed (tox's
    ``core`` environment) those rows are skipped; ``make test`` installs everything."""
    if driver not in {p.name for p in installed_plugins(DRIVER_GROUP)}:
        pytest.skip(f"driver {driver!r} is not installed")
    return NetworkBackend.load(driver).capabilities()


INTERNAL = StackNetwork("back", internal=True)
INTERNAL2 = StackNetwork("db", internal=True)
PUBLIC = StackNetwork("default", internal=False)

ALL_INTERNAL = {"api": [INTERNAL], "db": [INTERNAL, INTERNAL2]}
MIXED_SERVICE = {"api": [INTERNAL, PUBLIC], "db": [INTERNAL]}
ONE_PUBLIC = {"web": [PUBLIC], "db": [INTERNAL]}
NO_NETWORKS = {"web": []}

EMBEDDED = DnsDecision(use_provider=True, resolv_conf="provider")
CNI_SIDE = DnsDecision(use_provider=False, resolv_conf="driver")
OFF = DnsDecision(use_provider=False, resolv_conf="none")


@pytest.mark.parametrize("stack", [None, ALL_INTERNAL, MIXED_SERVICE, ONE_PUBLIC])
@pytest.mark.parametrize("driver", ["native", "loopback"])
def test_auto_non_cni_driver_embeds_for_every_container(driver: str, stack: object) -> None:
    assert dns_policy("auto", caps(driver), stack) == EMBEDDED  # type: ignore[arg-type]


def test_auto_cni_embeds_only_for_solely_internal_stacks() -> None:
    assert dns_policy("auto", caps("cni"), ALL_INTERNAL) == EMBEDDED
    assert dns_policy("auto", caps("cni"), MIXED_SERVICE) == CNI_SIDE
    assert dns_policy("auto", caps("cni"), ONE_PUBLIC) == CNI_SIDE
    assert dns_policy("auto", caps("cni"), NO_NETWORKS) == CNI_SIDE
    assert dns_policy("auto", caps("cni"), {}) == CNI_SIDE
    assert dns_policy("auto", caps("cni"), None) == CNI_SIDE


@pytest.mark.parametrize("driver", ["native", "cni"])
@pytest.mark.parametrize("stack", [None, ALL_INTERNAL, ONE_PUBLIC])
def test_fixed_modes(driver: str, stack: object) -> None:
    assert dns_policy("embedded", caps(driver), stack) == EMBEDDED  # type: ignore[arg-type]
    assert dns_policy("cni", caps(driver), stack) == CNI_SIDE  # type: ignore[arg-type]
    assert dns_policy("off", caps(driver), stack) == OFF  # type: ignore[arg-type]


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="'sometimes'"):
        dns_policy("sometimes", caps("native"))  # type: ignore[arg-type]


def test_only_external_dns_matters() -> None:
    """A third-party driver is treated by what it declares, not by its name."""
    own_dns = BackendCapabilities(external_dns=True)
    assert dns_policy("auto", own_dns, ONE_PUBLIC) == CNI_SIDE
    assert dns_policy("auto", own_dns, ALL_INTERNAL) == EMBEDDED
    assert dns_policy("auto", BackendCapabilities(), ONE_PUBLIC) == EMBEDDED
