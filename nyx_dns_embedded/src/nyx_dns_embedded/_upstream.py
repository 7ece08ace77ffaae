"""The host's resolvers, read from a resolv.conf and re-read when the file changes."""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["HostResolvConf", "Upstreams", "parse_resolv_conf", "sockaddr"]

MAX_NAMESERVERS = 3  # glibc's MAXNS
MAX_SEARCH = 6
_ZONE = re.compile(r"[a-zA-Z0-9_.@-]{1,15}")  # an interface name or index


@dataclass(frozen=True)
class HostResolvConf:
    """The parts of a resolv.conf nyx uses."""

    nameservers: tuple[str, ...] = ()
    search: tuple[str, ...] = ()


def _nameserver(text: str) -> str | None:
    """One ``nameserver`` value, normalised: an IPv4 or IPv6 literal; ``0.0.0.0``/``::``
    mean this host (``127.0.0.1``/``::1``, as glibc reads them). A link-local IPv6 server
    keeps its zone (``fe80::1%eth0``, as NetworkManager writes router-advertised servers):
    without it the address names no link and cannot be used; any other zone is dropped."""
    addr, _, zone = text.partition("%")
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return None
    if ip.is_unspecified:
        return "127.0.0.1" if ip.version == 4 else "::1"
    if ip.version == 6 and ip.is_link_local:
        return f"{ip}%{zone}" if _ZONE.fullmatch(zone) else None
    return str(ip)


def sockaddr(server: str, port: int) -> tuple[str, int] | tuple[str, int, int, int]:
    """The address to send to: ``(server, port)``, or for a server with a zone
    (``fe80::1%eth0``) ``(address, port, 0, interface index)``: the socket module takes
    the scope from the tuple only, never from the text. Raises OSError for a zone that
    names no interface (the forwarder then moves to the next upstream)."""
    if "%" not in server:
        return server, port
    addr, _, zone = server.partition("%")
    return addr, port, 0, int(zone) if zone.isdigit() else socket.if_nametoindex(zone)


def parse_resolv_conf(text: str) -> HostResolvConf:
    """Nameservers (IP literals, at most 3; see :func:`_nameserver`) and search domains.

    The last ``search``/``domain`` line wins, as in glibc.
    """
    servers: list[str] = []
    search: list[str] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        parts = line.split()
        if len(parts) < 2:
            continue
        key, args = parts[0], parts[1:]
        if key == "nameserver":
            server = _nameserver(args[0])
            if server is not None and server not in servers and len(servers) < MAX_NAMESERVERS:
                servers.append(server)
        elif key in ("search", "domain"):
            search = [d.strip(".").lower() for d in args if d.strip(".")][:MAX_SEARCH]
    return HostResolvConf(tuple(servers), tuple(search))


class Upstreams:
    """The current upstream servers from ``path``, re-read when its stat changes.

    :meth:`get` looks at the file at most every ``check_interval`` seconds. Servers equal to
    one of the ``exclude`` addresses (our own listen address when we listen on port 53) are
    dropped so the server never forwards to itself.
    """

    def __init__(
        self,
        path: Path,
        *,
        exclude: frozenset[str] = frozenset(),
        check_interval: float = 1.0,
    ) -> None:
        self.path = Path(path)
        self.exclude = exclude
        self.check_interval = check_interval
        self._stamp: tuple[int, int, int, int] | None = None
        self._checked = float("-inf")
        self._conf = HostResolvConf()
        self._servers: tuple[str, ...] = ()
        self.reload()

    def _stat(self) -> tuple[int, int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)

    def reload(self) -> HostResolvConf:
        self._checked = time.monotonic()
        stamp = self._stat()
        if stamp == self._stamp and stamp is not None:
            return self._conf
        try:
            text = self.path.read_text(errors="replace")
        except OSError:
            text = ""
        conf = parse_resolv_conf(text)
        self._servers = tuple(s for s in conf.nameservers if s not in self.exclude)
        self._conf = conf
        self._stamp = stamp  # last: another thread reading meanwhile reads the file too
        return conf

    def conf(self) -> HostResolvConf:
        """The parsed file, re-read first when it may have changed."""
        if time.monotonic() - self._checked >= self.check_interval:
            self.reload()
        return self._conf

    def servers(self) -> tuple[str, ...]:
        """The upstream nameservers to forward to (possibly empty)."""
        if time.monotonic() - self._checked >= self.check_interval:
            self.reload()
        return self._servers
