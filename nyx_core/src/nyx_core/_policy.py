"""The DNS policy of the spec's ``-dns`` table, as a pure function."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from ._models import BackendCapabilities
from ._settings import DnsMode

__all__ = ["DnsDecision", "StackNetwork", "dns_policy"]

ResolvSource = Literal["provider", "driver", "none"]


@dataclass(frozen=True)
class StackNetwork:
    """One compose network a service is attached to."""

    name: str
    internal: bool = False


@dataclass(frozen=True)
class DnsDecision:
    """What nyxd does for one container.

    ``use_provider``: register the container with the DNS provider (the spec's "embedded
    DNS").
    ``resolv_conf``: ``"provider"`` bind-mounts the provider's resolv.conf; ``"driver"`` leaves
    DNS to the driver's side (nyxd writes what the driver's result says in ``dns_server`` /
    ``dns_search``, as a CNI result's ``dns``, or the host's resolvers); ``"none"`` means no
    ``/etc/resolv.conf`` override from nyxd at all.
    """

    use_provider: bool
    resolv_conf: ResolvSource


def _solely_internal(stack: Mapping[str, Sequence[StackNetwork]]) -> bool:
    if not stack:
        return False
    return all(nets and all(n.internal for n in nets) for nets in stack.values())


def dns_policy(
    mode: DnsMode,
    capabilities: BackendCapabilities,
    stack: Mapping[str, Sequence[StackNetwork]] | None = None,
) -> DnsDecision:
    """Decide embedded DNS for one container, exactly as the spec's ``-dns`` table says.

    :param mode: ``auto`` | ``embedded`` | ``cni`` | ``off``.
    :param capabilities: the loaded driver's capabilities; only ``external_dns`` matters
        (the CNI driver declares it: its chain may serve DNS, as the dnsname plugin does).
    :param stack: for a Compose stack, every service name mapped to the networks it is
        attached to (the default network included); ``None`` for a plain ``nyx run``.

    ``auto``: embedded DNS for every container of a driver without ``external_dns`` (the
    native driver); with ``external_dns`` (cni), only for Compose stacks whose services are
    all attached solely to internal networks.
    """
    if mode == "off":
        return DnsDecision(use_provider=False, resolv_conf="none")
    if mode == "embedded":
        return DnsDecision(use_provider=True, resolv_conf="provider")
    if mode == "cni":
        return DnsDecision(use_provider=False, resolv_conf="driver")
    if mode == "auto":
        if not capabilities.external_dns:
            return DnsDecision(use_provider=True, resolv_conf="provider")
        if stack is not None and _solely_internal(stack):
            return DnsDecision(use_provider=True, resolv_conf="provider")
        return DnsDecision(use_provider=False, resolv_conf="driver")
    raise ValueError(f"dns mode {mode!r} is not one of auto, embedded, cni, off")
