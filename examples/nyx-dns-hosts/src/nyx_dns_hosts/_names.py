"""Who sees which names: registered containers (scoped by network) and a hosts file."""

from __future__ import annotations

import ipaddress
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DOMAIN", "Container", "HostsFile", "Names", "Scope"]

DOMAIN = "nyxd.local"
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Container:
    """One registration (``nyx_dns_register``)."""

    container_id: str
    hostname: str
    ips: tuple[IPAddress, ...]
    aliases: tuple[str, ...]
    networks: frozenset[str]
    internal: frozenset[str]

    @property
    def internal_only(self) -> bool:
        """Every network is internal for it: container names only, never forwarding."""
        return self.networks <= self.internal

    def names(self) -> list[str]:
        short = [self.hostname, *self.aliases]
        return [n for s in short for n in (s, f"{s}.{DOMAIN}")]


@dataclass(frozen=True)
class Scope:
    """What one client may ask: ``names`` (lower-case name -> addresses), ``ptrs`` (reverse
    name -> host name), and whether other names are forwarded."""

    names: dict[str, list[IPAddress]]
    ptrs: dict[str, str]
    forward: bool


class HostsFile:
    """``IP NAME [ALIAS...]`` lines (``#`` comments), re-read when the file changes."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._entries: list[tuple[IPAddress, list[str]]] = []
        self._lock = threading.Lock()

    def entries(self) -> list[tuple[IPAddress, list[str]]]:
        if self.path is None:
            return []
        try:
            st = os.stat(self.path)
            stamp: tuple[int, int] | None = (st.st_ino, st.st_mtime_ns)
        except OSError:
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                self._stamp = stamp
                self._entries = self._read() if stamp is not None else []
            return self._entries

    def _read(self) -> list[tuple[IPAddress, list[str]]]:
        assert self.path is not None
        out = []
        for line in self.path.read_text(errors="replace").splitlines():
            fields = line.split("#", 1)[0].split()
            if len(fields) < 2:
                continue
            try:
                ip = ipaddress.ip_address(fields[0])
            except ValueError:
                continue
            out.append((ip, [f.lower().rstrip(".") for f in fields[1:]]))
        return out


class Names:
    """The registrations, and the scope of a client address."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.containers: dict[str, Container] = {}
        self.hosts = HostsFile(None)
        self.host_clients: frozenset[str] = frozenset({"127.0.0.1", "::1"})

    def register(
        self,
        container_id: str,
        hostname: str,
        ips: Sequence[object],
        aliases: Sequence[str],
        networks: Sequence[str],
        internal_networks: Sequence[str],
    ) -> Container:
        nets = frozenset(networks) or frozenset({"nyx"})
        ctr = Container(
            container_id=container_id,
            hostname=hostname.lower().rstrip("."),
            ips=tuple(ipaddress.ip_address(str(ip)) for ip in ips),
            aliases=tuple(a.lower().rstrip(".") for a in aliases),
            networks=nets,
            internal=frozenset(internal_networks) & nets,
        )
        with self.lock:
            self.containers[container_id] = ctr
        return ctr

    def has_ipv6(self, container_id: str) -> bool:
        with self.lock:
            ctr = self.containers.get(container_id)
        return ctr is not None and any(ip.version == 6 for ip in ctr.ips)

    def deregister(self, container_id: str) -> None:
        with self.lock:
            self.containers.pop(container_id, None)

    def visible(self, client: str) -> tuple[list[Container], bool] | None:
        """The containers ``client`` sees and whether it may be forwarded; None for a
        stranger (refused). A container sees those sharing a network; the host sees all."""
        with self.lock:
            ctrs = list(self.containers.values())
        me = [c for c in ctrs if any(str(ip) == client for ip in c.ips)]
        if me:
            ctr = me[-1]
            return [c for c in ctrs if c.networks & ctr.networks], self.may_forward(ctr)
        if client in self.host_clients:
            return ctrs, True
        return None

    def may_forward(self, ctr: Container) -> bool:
        return not ctr.internal_only

    def scope(self, client: str) -> Scope | None:
        found = self.visible(client)
        if found is None:
            return None
        ctrs, forward = found
        names: dict[str, list[IPAddress]] = {}
        ptrs: dict[str, str] = {}
        for ip, hostnames in self.hosts.entries():
            for n in hostnames:
                _add(names, n, [ip])
            ptrs.setdefault(ip.reverse_pointer, hostnames[0])
        for ctr in ctrs:
            for n in ctr.names():
                _add(names, n, ctr.ips)
            for ip in ctr.ips:
                ptrs[ip.reverse_pointer] = f"{ctr.hostname}.{DOMAIN}"
        return Scope(names, ptrs, forward)


def _add(names: dict[str, list[IPAddress]], name: str, ips: Iterable[IPAddress]) -> None:
    have = names.setdefault(name, [])
    have.extend(ip for ip in ips if ip not in have)
