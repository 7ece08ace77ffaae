"""Published host ports: conflict checks and reservations.

A published port is reserved by a socket bound (TCP: and listening) in the namespace nyxd
runs in, held until teardown: a process on the host that already uses the port makes the
setup fail with a clear error, and nothing else can take the port afterwards. Traffic never
reaches these sockets: DNAT in prerouting/output sends it to the container first.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable, Sequence

from nyx_core.errors import PortConflictError

from ._firewall import PortElement

__all__ = ["check_conflicts", "describe", "reserve"]


def describe(p: PortElement) -> str:
    where = f"{p.host_ip}:" if p.host_ip else ""
    return f"host port {where}{p.host_port}/{p.protocol}"


def _clash(a: PortElement, b: PortElement) -> bool:
    return (
        a.protocol == b.protocol
        and a.host_port == b.host_port
        and (a.host_ip is None or b.host_ip is None or a.host_ip == b.host_ip)
    )


def check_conflicts(
    new: Sequence[PortElement], published: Iterable[tuple[str, PortElement]]
) -> None:
    """Refuse ``new`` ports clashing with each other or with already published ones."""
    for i, p in enumerate(new):
        for q in new[:i]:
            if _clash(p, q):
                raise PortConflictError(f"{describe(p)} is listed twice in the port mappings")
    index: dict[tuple[str, int], list[tuple[str, PortElement]]] = {}
    for owner, q in published:
        index.setdefault((q.protocol, q.host_port), []).append((owner, q))
    for p in new:
        for owner, q in index.get((p.protocol, p.host_port), []):
            if _clash(p, q):
                raise PortConflictError(
                    f"{describe(p)} is already published by container {owner!r}"
                )


def reserve(ports: Sequence[PortElement]) -> list[socket.socket]:
    """Bind every port in the current netns; all-or-nothing."""
    socks: list[socket.socket] = []
    try:
        for p in ports:
            kind = socket.SOCK_STREAM if p.protocol == "tcp" else socket.SOCK_DGRAM
            s = socket.socket(socket.AF_INET, kind | socket.SOCK_CLOEXEC)
            socks.append(s)
            if kind == socket.SOCK_STREAM:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((p.host_ip or "0.0.0.0", p.host_port))
                if kind == socket.SOCK_STREAM:
                    s.listen(1)
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
