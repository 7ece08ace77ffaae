"""Published host ports as interval sets.

A mapping ``8000-8999:...`` is one interval, not a thousand ports: conflict checks sort the
intervals once and sweep them, O(m log m) for m mappings whatever their sizes. Two intervals
clash when they have the same protocol, share a port and their host addresses meet: the same
address, or either of them on every address (``None``, ``0.0.0.0`` or ``::``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import PortConflictError

__all__ = [
    "PortRange",
    "check_port_clash",
    "clash_message",
    "find_port_clash",
    "port_ranges",
    "published_count",
    "runs_of_ports",
]


@dataclass(frozen=True)
class PortRange:
    """Host ports ``first..last`` of one protocol on one host address (None: every one)."""

    protocol: str
    host_ip: str | None
    first: int
    last: int
    owner: str | None = None

    def where(self, port: int | None = None) -> str:
        """``host port 127.0.0.1:8080/tcp``; the whole interval when ``port`` is None."""
        ip = ""
        if self.host_ip is not None:
            ip = f"[{self.host_ip}]:" if ":" in self.host_ip else f"{self.host_ip}:"
        if port is None and self.first != self.last:
            return f"host ports {ip}{self.first}-{self.last}/{self.protocol}"
        return f"host port {ip}{self.first if port is None else port}/{self.protocol}"


def _host_ip(ip: Any) -> str | None:
    if ip is None or ip == "":
        return None
    addr = ipaddress.ip_address(str(ip))
    return None if addr.is_unspecified else str(addr)


def port_ranges(mappings: Iterable[Any], owner: str | None = None) -> list[PortRange]:
    """The host-side intervals of :class:`~nyx_core.PortMapping` objects (one per mapping)."""
    return [
        PortRange(m.protocol, _host_ip(m.host_ip), m.host_port, m.host_port + m.range - 1, owner)
        for m in mappings
    ]


def published_count(mappings: Iterable[Any]) -> int:
    """How many host ports the mappings publish (each port of a range counts)."""
    return sum(int(m.range) for m in mappings)


def runs_of_ports(
    ports: Iterable[tuple[str | None, str, int]], owner: str | None = None
) -> list[PortRange]:
    """Merge single ports ``(host_ip, protocol, port)`` into intervals of consecutive ports."""
    out: list[PortRange] = []
    items = sorted(
        {(_host_ip(ip) or "", proto, port) for ip, proto, port in ports},
    )
    for ip, proto, port in items:
        host_ip = ip or None
        if out:
            last = out[-1]
            if (last.host_ip, last.protocol) == (host_ip, proto) and last.last + 1 == port:
                out[-1] = PortRange(proto, host_ip, last.first, port, owner)
                continue
        out.append(PortRange(proto, host_ip, port, port, owner))
    return out


class _Reach:
    """The interval reaching furthest among those seen, per host address and overall."""

    def __init__(self) -> None:
        self.by_ip: dict[str | None, PortRange] = {}
        self.any: PortRange | None = None

    def add(self, r: PortRange) -> None:
        cur = self.by_ip.get(r.host_ip)
        if cur is None or r.last > cur.last:
            self.by_ip[r.host_ip] = r
        if self.any is None or r.last > self.any.last:
            self.any = r

    def meeting(self, r: PortRange) -> PortRange | None:
        """An interval seen so far (all start at or before ``r``) that overlaps ``r``."""
        if r.host_ip is None:
            cands = [self.any]
        else:
            cands = [self.by_ip.get(r.host_ip), self.by_ip.get(None)]
        for c in cands:
            if c is not None and c.last >= r.first:
                return c
        return None


def find_port_clash(
    new: Sequence[PortRange], taken: Iterable[PortRange] = ()
) -> tuple[PortRange, PortRange] | None:
    """The first clash ``(new interval, other)`` where ``other`` is another interval of
    ``new`` or one of ``taken``; None when there is none. Clashes among ``taken`` are not
    looked for. O((n + t) log(n + t)) for n new and t taken intervals.
    """
    events = [(r.protocol, r.first, 0, i, r) for i, r in enumerate(new)]
    events += [(r.protocol, r.first, 1, i, r) for i, r in enumerate(taken)]
    events.sort(key=lambda e: (e[0], e[1], e[2], e[3]))
    proto: str | None = None
    mine = theirs = _Reach()
    for p, _first, is_taken, _i, r in events:
        if p != proto:
            proto, mine, theirs = p, _Reach(), _Reach()
        other = mine.meeting(r)
        if is_taken:
            if other is not None:
                return other, r
            theirs.add(r)
            continue
        if other is None:
            other = theirs.meeting(r)
        if other is not None:
            return r, other
        mine.add(r)
    return None


def clash_message(a: PortRange, b: PortRange) -> str:
    """What a clash ``(a, b)`` of :func:`find_port_clash` means, naming the first shared port."""
    port = max(a.first, b.first)
    # name the more specific address of the two
    where = (a if a.host_ip is not None else b).where(port)
    if b.owner is None:
        return f"{where} is listed twice in the port mappings"
    return f"{where} is already published by container {b.owner!r}"


def check_port_clash(new: Sequence[PortRange], taken: Iterable[PortRange] = ()) -> None:
    """Raise :class:`PortConflictError` naming the first port two intervals share."""
    clash = find_port_clash(new, taken)
    if clash is not None:
        raise PortConflictError(clash_message(*clash))
