"""The native driver's networks: what one is, its options, and where it is stored.

A network is a bridge with the gateway address (and the IPv6 gateway of a dual-stack
network), three firewall elements (its subnet, its bridge, the bridge's same-bridge pair;
the IPv6 subnet in the ``ip6`` table too) and one record in
``<state_dir>/native/networks.json``.
Its leases live next to it in ``attachments/``: both are kept by nyx_core's
:class:`~nyx_core.LeaseStore`, in the layout the driver has always used (an upgraded nyxd
reads the leases of the previous one).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nyx_core import LeaseStore, NetworkInfo
from nyx_core.errors import ConfigError

__all__ = [
    "BRIDGE_OPTIONS",
    "MTU_OPTIONS",
    "Network",
    "bridge_name",
    "cursor6",
    "lease_store",
    "networks_of",
    "overlap6",
    "owner",
    "parse_options",
    "port_token",
]

IFNAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,14}$")

# docker's names first, then the short ones (podman's, nyx's)
BRIDGE_OPTIONS = ("com.docker.network.bridge.name", "bridge")
MTU_OPTIONS = ("com.docker.network.driver.mtu", "mtu")
MTU_MIN, MTU_MAX = 68, 65535  # IPv4's minimum; the kernel checks the bridge's own maximum
MTU_MIN6 = 1280  # IPv6's minimum link MTU (RFC 8200)


def port_token(protocol: str, host_port: int) -> tuple[str, str, int]:
    """The lease index's token of a published host port (any host address)."""
    return ("port", protocol, host_port)


def _published(rec: Mapping[str, Any]) -> Iterator[Hashable]:
    """A lease's index tokens: its published host ports (``ports`` entries are
    ``[host_ip, protocol, host_port, container_ip, container_port]``)."""
    for p in rec.get("ports", ()):
        yield port_token(str(p[1]), int(p[2]))


def lease_store(state_dir: Path | str) -> LeaseStore:
    """The driver's leases and networks under ``<state_dir>/native``.

    ``state.lock`` (the flock, generation and round-robin cursors), ``networks.json``
    (``{"networks": {name: record}}``) and ``attachments/<container>@<network>.json``:
    the layout of the driver's own store before nyx_core had one, so leases survive an
    upgrade. Leases are indexed by their published host ports too (:func:`port_token`).
    """
    return LeaseStore(
        Path(state_dir) / "native",
        records_dir="attachments",
        meta_file="networks.json",
        meta_key="networks",
        index=_published,
    )


def owner(rec: Mapping[str, Any]) -> str:
    """The container of a lease record (``container`` in records of older versions)."""
    return str(rec.get("owner", rec.get("container")))


def _h(text: str, n: int) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:n]


def bridge_name(network: str) -> str:
    """Bridge of a non-default network: ``nyx-<name>`` or, when too long, shortened + hash."""
    cand = f"nyx-{network}"
    if IFNAME_RE.match(cand):
        return cand
    return f"nyx-{network[:4]}-{_h(network, 6)}"


def _one(what: str, options: Mapping[str, str], keys: tuple[str, ...]) -> str | None:
    given = {k: options[k] for k in keys if k in options}
    if len(set(given.values())) > 1:
        shown = ", ".join(f"{k}={v}" for k, v in given.items())
        raise ConfigError(f"{what}: options {shown} disagree")
    return next(iter(given.values()), None)


def parse_options(
    what: str, options: Mapping[str, str], *, bridge: bool = True
) -> tuple[str | None, int | None]:
    """The bridge name and MTU a network's driver options ask for (None: not given).

    :param what: names the object in errors (``network 'back'``).
    :param bridge: whether the bridge name may be chosen here (not for the default
        network, whose bridge is ``--bridge``).
    :raises ConfigError: an unknown key (named), a bad bridge name or MTU.
    """
    known = MTU_OPTIONS + (BRIDGE_OPTIONS if bridge else ())
    unknown = sorted(k for k in options if k not in known)
    if unknown:
        raise ConfigError(
            f"{what}: unknown driver option(s) {', '.join(unknown)} (the native driver "
            f"takes {', '.join(known)}; see docs/native.md)"
        )
    name = _one(what, options, BRIDGE_OPTIONS)
    if name is not None and not IFNAME_RE.match(name):
        raise ConfigError(
            f"{what}: bridge name {name!r} is not a valid interface name "
            "(1-15 of [a-zA-Z0-9_.-], starting with a letter or digit)"
        )
    text = _one(what, options, MTU_OPTIONS)
    mtu = None
    if text is not None:
        try:
            mtu = int(text)
        except ValueError:
            mtu = -1
        if not MTU_MIN <= mtu <= MTU_MAX:
            raise ConfigError(f"{what}: mtu {text!r} is not a number in {MTU_MIN}-{MTU_MAX}")
    return name, mtu


@dataclass(frozen=True)
class Network:
    """One network as the driver records it."""

    name: str
    bridge: str
    gateway: ipaddress.IPv4Interface
    default: bool
    internal: bool = False
    mtu: int | None = None
    options: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    gateway6: ipaddress.IPv6Interface | None = None

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return self.gateway.network

    @property
    def subnet6(self) -> ipaddress.IPv6Network | None:
        return None if self.gateway6 is None else self.gateway6.network

    def record(self) -> dict[str, Any]:
        rec = {
            "bridge": self.bridge,
            "gateway": str(self.gateway),
            "default": self.default,
            "internal": self.internal,
            "mtu": self.mtu,
            "options": dict(self.options),
            "labels": dict(self.labels),
        }
        if self.gateway6 is not None:  # IPv4-only records stay as older versions wrote them
            rec["gateway6"] = str(self.gateway6)
        return rec

    @classmethod
    def from_record(cls, name: str, rec: Mapping[str, Any]) -> Network:
        gw6 = rec.get("gateway6")
        return cls(
            name,
            rec["bridge"],
            ipaddress.IPv4Interface(rec["gateway"]),
            bool(rec["default"]),
            bool(rec.get("internal", False)),
            rec.get("mtu"),
            dict(rec.get("options", {})),
            dict(rec.get("labels", {})),
            None if gw6 is None else ipaddress.IPv6Interface(gw6),
        )

    def differences(self, other: Network) -> list[str]:
        """What ``other`` (a new request) asks for that this network is not."""
        out = []
        for what in ("gateway", "gateway6", "bridge", "internal", "mtu", "options", "labels"):
            mine, theirs = getattr(self, what), getattr(other, what)
            if mine != theirs:
                out.append(f"{what} {theirs} (it has {mine})")
        return out

    def info(self) -> NetworkInfo:
        return NetworkInfo(
            name=self.name,
            subnet=self.subnet,
            gateway=self.gateway.ip,
            subnet6=self.subnet6,
            gateway6=None if self.gateway6 is None else self.gateway6.ip,
            internal=self.internal,
            interface=self.bridge,
            options=dict(self.options),
            labels=dict(self.labels),
            extra={"bridge": self.bridge, **({"mtu": self.mtu} if self.mtu else {})},
        )


def networks_of(meta: Mapping[str, Any]) -> dict[str, Network]:
    """Every network the store records (its ``meta``), by name."""
    return {name: Network.from_record(name, rec) for name, rec in meta.items()}


def overlap6(a: Network, b: Network) -> bool:
    """Whether both networks have an IPv6 subnet and they overlap."""
    return a.subnet6 is not None and b.subnet6 is not None and a.subnet6.overlaps(b.subnet6)


def cursor6(network: str) -> str:
    """The IPv6 round-robin cursor's key (network names hold no ``/``)."""
    return f"{network}/6"
