"""Published host ports: conflict checks and reservations.

A published port is reserved by a socket bound (TCP: and listening) in the namespace nyxd
runs in, held until teardown: a process on the host that already uses the port makes the
setup fail with a clear error, and nothing else can take the port afterwards. Traffic never
reaches these sockets (DNAT in prerouting/output sends it to the container first), except
on IPv6 ``::1``, which the kernel cannot DNAT: an IPv6 socket bound to ``::`` or ``::1``
is handed to the loopback proxy (:mod:`nyx_plugins_native._proxy`), which answers there.
IPv6 sockets are ``IPV6_V6ONLY``: the IPv4 side of a port has a socket of its own.

Conflicts are found on intervals (:mod:`nyx_core`'s ``find_port_clash``), never port by
port against every other port. Each reserved port costs one file descriptor, so a setup is
refused up front when it would take nyxd close to its ``RLIMIT_NOFILE``; the number of ports
per container is bounded by the ``max_published_ports`` setting.
"""

from __future__ import annotations

import errno
import os
import resource
import socket
from collections.abc import Iterable, Sequence

from nyx_core import PortRange, check_port_clash, runs_of_ports
from nyx_core.errors import PortConflictError

from ._firewall import PortElement

__all__ = [
    "FD_HEADROOM",
    "Overlap",
    "check_conflicts",
    "check_fd_budget",
    "describe",
    "overlapping",
    "reserve",
]

# descriptors left free for everything else nyxd does (API connections, netlink, files)
FD_HEADROOM = 256


def describe(p: PortElement) -> str:
    where = ""
    if p.host_ip:
        where = f"[{p.host_ip}]:" if ":" in p.host_ip else f"{p.host_ip}:"
    return f"host port {where}{p.host_port}/{p.protocol}"


class Overlap:
    """A quick test of one published port ``(protocol, port)``: inside one of ``new``'s
    intervals? Only those need to reach :func:`check_conflicts` (a setup must not pay an
    interval for each port every other container publishes). ``lo``/``hi`` bound every
    interval: a caller scanning many ports compares against them inline first."""

    def __init__(self, new: Sequence[PortRange]) -> None:
        self.spans = [(r.protocol, r.first, r.last) for r in new]
        self.lo = min((r.first for r in new), default=1)
        self.hi = max((r.last for r in new), default=0)

    def __call__(self, protocol: str, port: int) -> bool:
        return any(p == protocol and first <= port <= last for p, first, last in self.spans)


def overlapping(new: Sequence[PortRange]) -> Overlap:
    """:class:`Overlap` of ``new``."""
    return Overlap(new)


def check_conflicts(new: Sequence[PortRange], published: Iterable[tuple[str, PortElement]]) -> None:
    """Refuse ``new`` intervals clashing with each other or with already published ports.

    :param published: (owner, element) of every port already published; consecutive ports
        of one owner are merged into intervals first.
    """
    by_owner: dict[str, list[tuple[str | None, str, int]]] = {}
    for owner, q in published:
        by_owner.setdefault(owner, []).append((q.host_ip, q.protocol, q.host_port))
    taken = [r for owner, ports in by_owner.items() for r in runs_of_ports(ports, owner)]
    check_port_clash(new, taken)


def _open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def _fd_table_size() -> int | None:
    """The size of this process's descriptor table (``FDSize``): no descriptor is open at or
    above it, so it bounds how many are open. O(1), where counting them is O(open)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"FDSize:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def check_fd_budget(count: int) -> None:
    """Refuse to reserve ``count`` more ports when nyxd would run short of descriptors."""
    if count == 0:
        return
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return
    bound = _fd_table_size()
    if bound is not None and bound + count + FD_HEADROOM <= soft:
        return  # far from the limit: no need to count (a restart re-reserves every port)
    used = _open_fds()
    if used + count + FD_HEADROOM > soft:
        raise PortConflictError(
            f"publishing {count} host ports needs {count} file descriptors; nyxd has {used} "
            f"open of its limit {soft} (RLIMIT_NOFILE) and keeps {FD_HEADROOM} free: raise "
            "the limit (systemd: LimitNOFILE=) or publish fewer ports"
        )


def reserve(ports: Sequence[PortElement]) -> list[socket.socket]:
    """Bind every port in the current netns; all-or-nothing. Returns one socket per
    element, in order."""
    check_fd_budget(len(ports))
    socks: list[socket.socket] = []
    try:
        for p in ports:
            kind = socket.SOCK_STREAM if p.protocol == "tcp" else socket.SOCK_DGRAM
            family = socket.AF_INET6 if p.v6 else socket.AF_INET
            s = socket.socket(family, kind | socket.SOCK_CLOEXEC)
            socks.append(s)
            if kind == socket.SOCK_STREAM:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if p.v6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                s.bind((p.host_ip or ("::" if p.v6 else "0.0.0.0"), p.host_port))
                if kind == socket.SOCK_STREAM:
                    s.listen(128 if p.proxied else 1)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise PortConflictError(
                        f"{describe(p)} is already in use by a process on the host"
                    ) from exc
                if exc.errno == errno.EADDRNOTAVAIL:
                    raise PortConflictError(
                        f"{describe(p)}: host_ip {p.host_ip} is not an address of this host"
                    ) from exc
                raise PortConflictError(f"{describe(p)} cannot be reserved: {exc}") from exc
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks
