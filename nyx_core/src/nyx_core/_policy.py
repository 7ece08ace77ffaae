"""The DNS policy of the spec's ``-dns`` table, as a pure function."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from ._models import BackendCapabilities
from ._settings import DnsMode

__all__ = ["DnsDecision", "StackNetwork", "dns_policy"]

ResolvSource = Literal["embedded", "cni", "none"]


@dataclass(frozen=True)
class StackNetwork:
    """One compose network a service is attached to."""

    name: str
    internal: bool = False


@dataclass(frozen=True)
class DnsDecision:
    """What nyxd does for one container.

    ``embedded``: register the container with the embedded DNS provider.
    ``resolv_conf``: ``"embedded"`` bind-mounts the provider's resolv.conf; ``"cni"`` leaves
    DNS to the CNI side (nyxd writes what the CNI result's ``dns`` says, or the host's
    resolvers); ``"none"`` means no ``/etc/resolv.conf`` override from nyxd at all.
    """

    embedded: bool
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
        return DnsDecision(embedded=False, resolv_conf="none")
    if mode == "embedded":
        return DnsDecision(embedded=True, resolv_conf="embedded")
    if mode == "cni":
        return DnsDecision(embedded=False, resolv_conf="cni")
    if mode == "auto":
        if not capabilities.external_dns:
            return DnsDecision(embedded=True, resolv_conf="embedded")
        if stack is not None and _solely_internal(stack):
            return DnsDecision(embedded=True, resolv_conf="embedded")
        return DnsDecision(embedded=False, resolv_conf="cni")
    raise ValueError(f"dns mode {mode!r} is not one of auto, embedded, cni, off")
