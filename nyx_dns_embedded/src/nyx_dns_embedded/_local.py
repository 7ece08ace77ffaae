"""Is a query's source address the host itself? Asked of the kernel, cached briefly.

The host sees every name (docs/dns.md), and "the host" is any address local to nyxd's
network namespace, not only the gateway and 127.0.0.1: a query the host sends to the
gateway may leave with the uplink's or a LAN address as its source (a client that binds
one, or a masquerade rule that rewrites it). The kernel already refuses packets that
arrive from outside (LAN, containers) with one of its own addresses as their source
(martian source), so a local source means the query came from the host.

One exception: 127.0.0.0/8 other than 127.0.0.1 is never counted as local here. With
``route_localnet`` on the bridge and ``rp_filter`` off, a container can send from, say,
127.0.0.5 (it is not an interface address, so the martian check lets it through), and
that must not make it "the host". 127.0.0.1 itself is an interface address (rejected by
the kernel from outside) and is in the server's fixed set of host clients.

IPv6 has no martian-source check at all: a packet from a neighbour with one of the host's
own IPv6 addresses as its source is delivered (``::1`` alone is dropped, RFC 4291). So
this module's answer is enough for IPv4 sources and for TCP, whose handshake proves the
source, but not for IPv6 over UDP: the resolver answers those with TC (ask again over
TCP), see :meth:`~._resolver.Resolver.unlisted`.

The lookup is one ``RTM_GETROUTE`` netlink request (route type ``RTN_LOCAL``), the same
answer ``ip route get`` gives, so ``ip_nonlocal_bind``/``IP_FREEBIND`` cannot fool it
the way a bind test would be fooled. It runs only for sources that are neither a
registered container nor a fixed host address, the answer is cached for a few seconds
(bounded), and lookups are rate limited (a flood of spoofed sources gets REFUSED without
one), so registered containers' queries never pay for it.
"""

from __future__ import annotations

import ipaddress
import itertools
import socket
import struct
import threading
import time
from collections.abc import Callable

__all__ = ["LocalSources", "is_local_address"]

_RTM_NEWROUTE = 24
_RTM_GETROUTE = 26
_NLMSG_ERROR = 2
_NLM_F_REQUEST = 1
_RTA_DST = 1
_RTN_LOCAL = 2
_NLMSG = struct.Struct("=IHHII")
_RTMSG = struct.Struct("=BBBBBBBBI")
_RTA = struct.Struct("=HH")
_LOOPBACK4 = ipaddress.IPv4Network("127.0.0.0/8")
_LOCALHOST4 = ipaddress.IPv4Address("127.0.0.1")
_seq = itertools.count(1)


def is_local_address(ip: str) -> bool:
    """True when ``ip`` is an address of this host in the calling thread's network
    namespace (the kernel routes it as ``local``); False for anything else, for text that
    is not an address, for 0.0.0.0/::, for IPv4-mapped IPv6 addresses, and for 127.0.0.0/8
    other than 127.0.0.1 (see the module doc)."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    if addr.is_unspecified or (addr.version == 4 and addr in _LOOPBACK4 and addr != _LOCALHOST4):
        return False
    if addr.version == 6 and addr.ipv4_mapped is not None:
        return False  # never a source on nyx's IPv6-only sockets; not asked as IPv6
    family = socket.AF_INET if addr.version == 4 else socket.AF_INET6
    raw = addr.packed
    seq = next(_seq) & 0xFFFFFFFF
    body = _RTMSG.pack(family, len(raw) * 8, 0, 0, 0, 0, 0, 0, 0) + _RTA.pack(
        4 + len(raw), _RTA_DST
    )
    msg = _NLMSG.pack(_NLMSG.size + len(body) + len(raw), _RTM_GETROUTE, _NLM_F_REQUEST, seq, 0)
    msg += body + raw
    try:
        with socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE
        ) as nl:
            nl.settimeout(1.0)
            nl.sendto(msg, (0, 0))
            while True:
                data = nl.recv(65536)
                off = 0
                while off + _NLMSG.size <= len(data):
                    length, kind, _flags, got_seq, _pid = _NLMSG.unpack_from(data, off)
                    if length < _NLMSG.size:
                        return False
                    if got_seq == seq:
                        if kind == _RTM_NEWROUTE and length >= _NLMSG.size + _RTMSG.size:
                            return data[off + _NLMSG.size + 7] == _RTN_LOCAL
                        return False  # NLMSG_ERROR: no route (ENETUNREACH...) or refused
                    off += (length + 3) & ~3
    except OSError:
        return False


class LocalSources:
    """``is_local(ip)`` with a bounded, short-lived cache and a lookup rate limit.

    Thread-safe (the server's UDP and TCP threads both ask). ``lookup`` is the kernel
    question (:func:`is_local_address`); ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        *,
        ttl: float = 5.0,
        max_entries: int = 1024,
        lookups_per_second: float = 200.0,
        lookup: Callable[[str], bool] = is_local_address,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.rate = lookups_per_second
        self.lookup = lookup
        self.clock = clock
        self._cache: dict[str, tuple[float, bool]] = {}
        self._tokens = lookups_per_second
        self._last = clock()
        self.lookups = 0
        self.skipped = 0
        self._lock = threading.Lock()

    def __call__(self, ip: str) -> bool:
        with self._lock:
            return self._ask(ip)

    def _ask(self, ip: str) -> bool:
        now = self.clock()
        hit = self._cache.get(ip)
        if hit is not None and hit[0] > now:
            return hit[1]
        self._tokens = min(self.rate, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens < 1.0:
            self.skipped += 1
            return False  # over budget: refused this time, asked again later
        self._tokens -= 1.0
        self.lookups += 1
        local = self.lookup(ip)
        cache = self._cache
        if len(cache) >= self.max_entries:
            for key in [k for k, (exp, _) in cache.items() if exp <= now]:
                del cache[key]
            if len(cache) >= self.max_entries:
                cache.clear()
        cache[ip] = (now + self.ttl, local)
        return local
