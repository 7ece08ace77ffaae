"""The host's own IPv4 routes and addresses, and whether a nyx subnet may claim a range.

A network whose subnet overlaps a route or an address of the host would take that traffic
away from the host (its LAN, its uplink, a VPN): such subnets are refused before anything is
changed. The view is read from ``/proc/thread-self/net`` (``route`` for the main table's
devices, ``fib_trie`` for every table's routes and the local addresses), which is the
network namespace of the calling *thread*: nyxd's, or the one a test switched the thread
into (``/proc/net`` would show the main thread's). No netlink and no ``ip``: nyx_core stays
free of pyroute2, and drivers use the same check.

Default routes (``0.0.0.0/0``, and the ``0.0.0.0/1`` + ``128.0.0.0/1`` pair VPNs install in
their place) are not host routes for this check: every private subnet overlaps them.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

__all__ = [
    "RESERVED_RANGES",
    "HostAddress",
    "HostRoute",
    "HostView",
    "check_subnet_on_host",
    "read_host_view",
    "subnet_host_conflict",
]

_PROC = Path("/proc/thread-self/net")
_RTF_GATEWAY = 0x2
# fib_trie route types that send traffic somewhere (or drop it on purpose)
_ROUTE_TYPES = {"UNICAST", "BLACKHOLE", "UNREACHABLE", "PROHIBIT", "THROW"}

RESERVED_RANGES: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (ipaddress.IPv4Network("0.0.0.0/8"), "'this network'"),
    (ipaddress.IPv4Network("127.0.0.0/8"), "loopback"),
    (ipaddress.IPv4Network("169.254.0.0/16"), "link-local (cloud metadata services live here)"),
    (ipaddress.IPv4Network("224.0.0.0/4"), "multicast"),
    (ipaddress.IPv4Network("240.0.0.0/4"), "reserved and broadcast"),
)


@dataclass(frozen=True)
class HostRoute:
    """One route of the host (not a default route, not a local or broadcast entry)."""

    network: ipaddress.IPv4Network
    dev: str | None = None
    kind: str = "unicast"
    table: str = "main"

    def __str__(self) -> str:
        text = str(self.network) if self.kind == "unicast" else f"{self.kind} {self.network}"
        if self.dev:
            text += f" dev {self.dev}"
        if self.table != "main":
            text += f" table {self.table}"
        return text


@dataclass(frozen=True)
class HostAddress:
    """One local address (or local range, e.g. ``127.0.0.0/8``) of the host."""

    network: ipaddress.IPv4Network
    dev: str | None = None

    def __str__(self) -> str:
        what = str(self.network.network_address if self.network.prefixlen == 32 else self.network)
        return f"{what} ({self.dev})" if self.dev else what


@dataclass(frozen=True)
class HostView:
    """The host's routes and addresses at one moment."""

    routes: tuple[HostRoute, ...] = ()
    addresses: tuple[HostAddress, ...] = ()


def _hex_addr(text: str) -> ipaddress.IPv4Address:
    # /proc/net/route prints the network-order word as a host-order integer
    return ipaddress.IPv4Address(struct.pack("=I", int(text, 16)))


def parse_route(text: str) -> list[tuple[ipaddress.IPv4Network, str | None, bool]]:
    """``/proc/net/route`` (the main table): (destination, device or None, via a gateway)."""
    out: list[tuple[ipaddress.IPv4Network, str | None, bool]] = []
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 8:
            continue
        try:
            dest, mask = _hex_addr(f[1]), _hex_addr(f[7])
            flags = int(f[3], 16)
            net = ipaddress.IPv4Network(f"{dest}/{mask}", strict=False)
        except ValueError:
            continue
        out.append((net, None if f[0] == "*" else f[0], bool(flags & _RTF_GATEWAY)))
    return out


def parse_fib_trie(text: str) -> list[tuple[str, ipaddress.IPv4Network, str]]:
    """``/proc/net/fib_trie``: (table, prefix, type) of every entry of every table.

    Tables are ``main``, ``local`` or a number; types are the kernel's (``UNICAST``,
    ``LOCAL``, ``BROADCAST``, ``BLACKHOLE``...).
    """
    out: list[tuple[str, ipaddress.IPv4Network, str]] = []
    table = "main"
    leaf: str | None = None
    for line in text.splitlines():
        s = line.strip()
        if not s:
            continue
        if not line[0].isspace():  # "Main:", "Local:", "Id 52:"
            name = s.rstrip(":").strip()
            table = name[3:].strip() if name.startswith("Id ") else name.lower()
            leaf = None
        elif s.startswith("|-- "):
            leaf = s[4:].strip()
        elif s.startswith("/") and leaf is not None:
            f = s.split()
            if len(f) < 3:
                continue
            try:
                net = ipaddress.IPv4Network(f"{leaf}{f[0]}", strict=False)
            except ValueError:
                continue
            out.append((table, net, f[2]))
    return out


def build_view(route_text: str, fib_trie_text: str) -> HostView:
    """A :class:`HostView` from the texts of ``route`` and ``fib_trie``."""
    main = parse_route(route_text)
    dev_of: dict[ipaddress.IPv4Network, str | None] = {}
    for net, dev, _via in main:
        dev_of.setdefault(net, dev)
    connected = sorted(
        ((net, dev) for net, dev, via in main if dev and not via and net.prefixlen > 1),
        key=lambda nd: -nd[0].prefixlen,
    )

    def addr_dev(net: ipaddress.IPv4Network) -> str | None:
        for cnet, dev in connected:
            if net.subnet_of(cnet):
                return dev
        return None

    routes: dict[tuple[ipaddress.IPv4Network, str, str], HostRoute] = {}
    addrs: dict[ipaddress.IPv4Network, HostAddress] = {}
    for table, net, kind in parse_fib_trie(fib_trie_text):
        if kind == "LOCAL":
            addrs.setdefault(net, HostAddress(net, addr_dev(net)))
        elif kind in _ROUTE_TYPES and table != "local" and net.prefixlen > 1:
            dev = dev_of.get(net) if table == "main" else None
            routes.setdefault((net, kind, table), HostRoute(net, dev, kind.lower(), table))
    # the main table's routes fib_trie did not show (it always does; kept for safety)
    shown = {k[0] for k in routes if k[2] == "main"}
    for net, dev, _via in main:
        if net.prefixlen > 1 and net not in shown:
            shown.add(net)
            routes[(net, "UNICAST", "main")] = HostRoute(net, dev)
    return HostView(tuple(routes.values()), tuple(addrs.values()))


def read_host_view(proc: Path = _PROC) -> HostView:
    """The routes and addresses of the calling thread's network namespace."""
    try:
        route = (proc / "route").read_text()
        trie = (proc / "fib_trie").read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the host's routes from {proc}: {exc}") from exc
    return build_view(route, trie)


def subnet_host_conflict(
    subnet: ipaddress.IPv4Network,
    view: HostView,
    ignore_devs: Collection[str] = (),
) -> str | None:
    """Why ``subnet`` cannot be a nyx subnet on this host, or None when it can.

    :param ignore_devs: nyx's own bridges: their routes and addresses are no host's.
    """
    for reserved, what in RESERVED_RANGES:
        if subnet.overlaps(reserved):
            return f"overlaps {reserved} ({what})"
    for addr in view.addresses:
        if addr.dev in ignore_devs or not subnet.overlaps(addr.network):
            continue
        if addr.network.prefixlen == 32:
            return f"contains host address {addr}"
        return f"overlaps the host's local addresses {addr}"
    for route in view.routes:
        if route.dev in ignore_devs or not subnet.overlaps(route.network):
            continue
        return f"overlaps the host route {route}"
    return None


def check_subnet_on_host(
    subnet: ipaddress.IPv4Network,
    what: str,
    *,
    ignore_devs: Iterable[str] = (),
    view: HostView | None = None,
) -> None:
    """Raise :class:`ConfigError` ``"<what>: subnet S overlaps the host route ..."`` when
    ``subnet`` overlaps a reserved range, a host address or a host route.

    :param what: the object named first in the message, e.g. ``network "back"``.
    :param view: the host to check against; None reads the calling thread's namespace.
    """
    reason = subnet_host_conflict(
        subnet, read_host_view() if view is None else view, frozenset(ignore_devs)
    )
    if reason is not None:
        raise ConfigError(f"{what}: subnet {subnet} {reason}")
