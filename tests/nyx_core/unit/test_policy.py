"""Every row of the spec's -dns table."""

from __future__ import annotations

import pytest

from nyx_core import DnsDecision, StackNetwork, dns_policy

INTERNAL = StackNetwork("back", internal=True)
INTERNAL2 = StackNetwork("db", internal=True)
PUBLIC = StackNetwork("default", internal=False)

ALL_INTERNAL = {"api": [INTERNAL], "db": [INTERNAL, INTERNAL2]}
MIXED_SERVICE = {"api": [INTERNAL, PUBLIC], "db": [INTERNAL]}
ONE_PUBLIC = {"web": [PUBLIC], "db": [INTERNAL]}
NO_NETWORKS = {"web": []}

EMBEDDED = DnsDecision(embedded=True, resolv_conf="embedded")
CNI_SIDE = DnsDecision(embedded=False, resolv_conf="cni")
OFF = DnsDecision(embedded=False, resolv_conf="none")


@pytest.mark.parametrize("stack", [None, ALL_INTERNAL, MIXED_SERVICE, ONE_PUBLIC])
@pytest.mark.parametrize("driver", ["native", "loopback"])
def test_auto_non_cni_driver_embeds_for_every_container(driver: str, stack: object) -> None:
    assert dns_policy("auto", driver, stack) == EMBEDDED  # type: ignore[arg-type]


def test_auto_cni_embeds_only_for_solely_internal_stacks() -> None:
    assert dns_policy("auto", "cni", ALL_INTERNAL) == EMBEDDED
    assert dns_policy("auto", "cni", MIXED_SERVICE) == CNI_SIDE
    assert dns_policy("auto", "cni", ONE_PUBLIC) == CNI_SIDE
    assert dns_policy("auto", "cni", NO_NETWORKS) == CNI_SIDE
    assert dns_policy("auto", "cni", {}) == CNI_SIDE
    assert dns_policy("auto", "cni", None) == CNI_SIDE


@pytest.mark.parametrize("driver", ["native", "cni"])
@pytest.mark.parametrize("stack", [None, ALL_INTERNAL, ONE_PUBLIC])
def test_fixed_modes(driver: str, stack: object) -> None:
    assert dns_policy("embedded", driver, stack) == EMBEDDED  # type: ignore[arg-type]
    assert dns_policy("cni", driver, stack) == CNI_SIDE  # type: ignore[arg-type]
    assert dns_policy("off", driver, stack) == OFF  # type: ignore[arg-type]


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="'sometimes'"):
        dns_policy("sometimes", "native")  # type: ignore[arg-type]
