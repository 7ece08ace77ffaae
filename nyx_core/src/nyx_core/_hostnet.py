"""The host's own routes and addresses, and whether a nyx subnet may claim a range.

A network whose subnet overlaps a route or an address of the host would take that traffic
away from the host (its LAN, its uplink, a VPN): such subnets are refused before anything is
changed. The view is read from ``/proc/thread-self/net`` (``route`` for the main table's
devices, ``fib_trie`` for every table's routes and the local addresses), which is the
network namespace of the calling *thread*: nyxd's, or the one a test switched the thread
into (``/proc/net`` would show the main thread's). No netlink and no ``ip``: nyx_core stays
free of pyroute2, and drivers use the same check.

IPv6 comes from ``ipv6_route`` (every table's routes, local ones flagged) and ``if_inet6``
(the addresses); both are absent on a kernel without IPv6, and the view is then IPv4 only.

Default routes (``0.0.0.0/0``, ``::/0``, and the ``/1`` pairs VPNs install in their place)
are not host routes for this check: every private subnet overlaps them.
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
_RTF_REJECT = 0x200
_RTF_CACHE = 0x01000000
_RTF_LOCAL = 0x80000000
# fib_trie route types that send traffic somewhere (or drop it on purpose)
_ROUTE_TYPES = {"UNICAST", "BLACKHOLE", "UNREACHABLE", "PROHIBIT", "THROW"}

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

RESERVED_RANGES: tuple[tuple[IPNetwork, str], ...] = (
    (ipaddress.IPv4Network("0.0.0.0/8"), "'this network'"),
    (ipaddress.IPv4Network("127.0.0.0/8"), "loopback"),
    (ipaddress.IPv4Network("169.254.0.0/16"), "link-local (cloud metadata services live here)"),
    (ipaddress.IPv4Network("224.0.0.0/4"), "multicast"),
    (ipaddress.IPv4Network("240.0.0.0/4"), "reserved and broadcast"),
    (ipaddress.IPv6Network("::/8"), "reserved: unspecified, loopback ::1, IPv4-mapped"),
    (ipaddress.IPv6Network("fe80::/10"), "link-local"),
    (ipaddress.IPv6Network("ff00::/8"), "multicast"),
)


@dataclass(frozen=True)
class HostRoute:
    """One route of the host (not a default route, not a local or broadcast entry).

    ``table`` is ``""`` for IPv6 routes (``ipv6_route`` does not say which table).
    """

    network: IPNetwork
    dev: str | None = None
    kind: str = "unicast"
    table: str = "main"

    def __str__(self) -> str:
        text = str(self.network) if self.kind == "unicast" else f"{self.kind} {self.network}"
        if self.dev:
            text += f" dev {self.dev}"
        if self.table not in ("main", ""):
            text += f" table {self.table}"
        return text


@dataclass(frozen=True)
class HostAddress:
    """One local address (or local range, e.g. ``127.0.0.0/8``) of the host."""

    network: IPNetwork
    dev: str | None = None

    def __str__(self) -> str:
        single = self.network.prefixlen == self.network.max_prefixlen
        what = str(self.network.network_address if single else self.network)
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


def _hex6(text: str) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address(bytes.fromhex(text))


def parse_ipv6_route(text: str) -> list[HostRoute]:
    """``/proc/net/ipv6_route``: the routes of every table, minus local addresses, cached
    clones and (/0, /1) defaults; reject routes (blackhole, unreachable, prohibit) as
    ``reject`` without a device."""
    out: dict[tuple[IPNetwork, str | None, str], HostRoute] = {}
    for line in text.splitlines():
        f = line.split()
        if len(f) < 10:
            continue
        try:
            net = ipaddress.IPv6Network(f"{_hex6(f[0])}/{int(f[1], 16)}", strict=False)
            flags = int(f[8], 16)
        except ValueError:
            continue
        if flags & (_RTF_LOCAL | _RTF_CACHE) or net.prefixlen <= 1:
            continue
        kind, dev = ("reject", None) if flags & _RTF_REJECT else ("unicast", f[9])
        out.setdefault((net, dev, kind), HostRoute(net, dev, kind, ""))
    return list(out.values())


def parse_if_inet6(text: str) -> list[HostAddress]:
    """``/proc/net/if_inet6``: every IPv6 address of the host, with its device."""
    out: list[HostAddress] = []
    for line in text.splitlines():
        f = line.split()
        if len(f) < 6:
            continue
        try:
            out.append(HostAddress(ipaddress.IPv6Network(_hex6(f[0])), f[5]))
        except ValueError:
            continue
    return out


def read_host_view(proc: Path = _PROC) -> HostView:
    """The routes and addresses (both families) of the calling thread's network namespace."""
    try:
        route = (proc / "route").read_text()
        trie = (proc / "fib_trie").read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the host's routes from {proc}: {exc}") from exc
    view = build_view(route, trie)
    try:
        route6 = (proc / "ipv6_route").read_text()
        addrs6 = (proc / "if_inet6").read_text()
    except FileNotFoundError:
        return view  # a kernel without IPv6
    except OSError as exc:
        raise ConfigError(f"cannot read the host's IPv6 routes from {proc}: {exc}") from exc
    return HostView(
        view.routes + tuple(parse_ipv6_route(route6)),
        view.addresses + tuple(parse_if_inet6(addrs6)),
    )


def subnet_host_conflict(
    subnet: IPNetwork,
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
        if addr.network.prefixlen == addr.network.max_prefixlen:
            return f"contains host address {addr}"
        return f"overlaps the host's local addresses {addr}"
    for route in view.routes:
        if route.dev in ignore_devs or not subnet.overlaps(route.network):
            continue
        return f"overlaps the host route {route}"
    return None


def check_subnet_on_host(
    subnet: IPNetwork,
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
