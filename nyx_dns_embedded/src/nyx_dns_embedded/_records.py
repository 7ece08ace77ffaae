"""The record store: containers, their names and networks, and per-client views.

nyxd threads mutate a :class:`Registry` under its lock; the server's threads read
immutable :class:`Snapshot` objects built from it. Every change bumps
``Registry.generation``; the server compares it per query (per batch) and rebuilds its
snapshot when it moved, so a change is visible to the very next query.

Names are kept in DNS wire format, lower-cased (``b"\\x03web\\x04nyxd\\x05local\\x00"``),
so the server can look a query's name up without decoding it.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
import sys
import threading
from collections.abc import Iterable, Sequence, Set
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from nyx_core import DnsError

if TYPE_CHECKING:
    from ._cache import Replay

__all__ = [
    "DOMAIN",
    "Container",
    "NameRecord",
    "Registry",
    "Scope",
    "Snapshot",
    "to_wire",
]

DOMAIN = "nyxd.local"
Template = tuple[bytes, bytes, bytes]
"""A cached response: (header bytes 2-12 with RD clear, the same with RD set, after the
question); or the ``FORWARD`` marker object of :mod:`._resolver`."""
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_LABEL = re.compile(r"^[a-z0-9_-]{1,63}$")
_ID = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,254}$")
_NETWORK = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,254}$")


def to_wire(name: str) -> bytes:
    """``"Web.nyxd.local"`` -> ``b"\\x03web\\x04nyxd\\x05local\\x00"`` (lower-cased)."""
    out = bytearray()
    for label in name.strip(".").lower().split("."):
        if label:
            raw = label.encode("ascii")
            out.append(len(raw))
            out += raw
    out.append(0)
    return bytes(out)


DOMAIN_WIRE = to_wire(DOMAIN)


def check_name(value: str, field_name: str, container_id: str) -> str:
    """Validate a hostname or alias (one or more DNS labels); return it lower-cased."""
    text = value.strip().rstrip(".").lower() if isinstance(value, str) else ""
    text = text.removesuffix("." + DOMAIN)  # "web.nyxd.local" registers "web"
    labels = text.split(".") if text else []
    if (
        not labels
        or len(text) > 253 - len(DOMAIN) - 1
        or not all(_LABEL.fullmatch(label) for label in labels)
        or text == DOMAIN
    ):
        raise DnsError(
            f"embedded DNS register {container_id!r}: {field_name} {value!r} is not a valid "
            "DNS name (labels of letters, digits, '-', '_'; at most 63 characters each)"
        )
    return text


def check_ip(value: object, container_id: str) -> IPAddress:
    try:
        return ipaddress.ip_address(value if isinstance(value, int) else str(value))
    except ValueError as exc:
        raise DnsError(
            f"embedded DNS register {container_id!r}: ips entry {value!r} is not an IP address"
        ) from exc


def check_network(value: str, what: str) -> str:
    if not isinstance(value, str) or not _NETWORK.fullmatch(value):
        raise DnsError(f"embedded DNS {what}: network name {value!r} is not valid")
    return value


@dataclass(frozen=True)
class Container:
    """One registered container, with its wire-format names precomputed (in the caller's
    thread, at registration) so rebuilding views on the server thread stays cheap."""

    container_id: str
    hostname: str
    ips: tuple[IPAddress, ...]
    aliases: tuple[str, ...]
    networks: frozenset[str]
    seq: int
    internal: frozenset[str] = frozenset()
    """Those of ``networks`` that are internal for this registration (``internal_networks``
    of ``nyx_dns_register``): it alone loses forwarding there, not the other containers."""
    records: dict[bytes, NameRecord] = field(default_factory=dict, compare=False)
    host_wires: tuple[bytes, ...] = ()
    alias_wires: tuple[bytes, ...] = ()
    ptr_wires: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        v4 = tuple(str(ip) for ip in self.ips if ip.version == 4)
        v6 = tuple(str(ip) for ip in self.ips if ip.version == 6)
        hosts = (self.hostname, f"{self.hostname}.{DOMAIN}")
        aliases = [n for a in self.aliases for n in (a, f"{a}.{DOMAIN}")]
        for name in (*hosts, *aliases):
            self.records[to_wire(name)] = NameRecord(name, v4, v6)
        object.__setattr__(self, "host_wires", tuple(to_wire(n) for n in hosts))
        object.__setattr__(self, "alias_wires", tuple(to_wire(n) for n in aliases))
        object.__setattr__(self, "ptr_wires", tuple(_reverse_wire(ip) for ip in self.ips))

    @property
    def fqdn(self) -> str:
        return f"{self.hostname}.{DOMAIN}."


@dataclass(frozen=True)
class NameRecord:
    """The addresses a name resolves to in one view."""

    name: str
    v4: tuple[str, ...]
    v6: tuple[str, ...]


@dataclass(eq=False)
class Scope:
    """What one client sees: names, reverse names, whether it may be forwarded.

    ``known`` is False for clients that are neither registered nor local: they are refused.
    ``tcp_only``: every UDP query gets an empty truncated answer (TC), so the client asks
    again over TCP (see :attr:`Snapshot.host6_udp`); such a scope never forwards, so its
    caches only ever hold that answer. ``cache0``/``cache1`` are the server's response
    templates for queries without/with an OPT record; ``exact`` maps a whole query but its
    ID to the response but its ID, for queries answered from a template before, or to a
    :class:`~._cache.Replay` for those answered from the forward cache (all filled lazily,
    dropped with the snapshot).
    """

    names: dict[bytes, NameRecord]
    ptrs: dict[bytes, str]
    forward: bool
    known: bool = True
    tcp_only: bool = False
    cache0: dict[bytes, Template] = field(default_factory=dict)
    cache1: dict[bytes, Template] = field(default_factory=dict)
    exact: dict[bytes, bytes | Replay] = field(default_factory=dict)


@dataclass(frozen=True)
class Snapshot:
    """An immutable picture of the registry for the server's threads."""

    generation: int
    clients: dict[str, Scope]
    local: Scope
    unknown: Scope
    subnets: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    all_ips: frozenset[IPAddress]
    host6_udp: Scope = field(
        default_factory=lambda: Scope(names={}, ptrs={}, forward=False, tcp_only=True)
    )
    """What an IPv6 address of the host gets over UDP: TC, "ask again over TCP". IPv6 has
    no martian-source check, so a container or a LAN neighbour can send UDP from the
    host's own IPv6 addresses (never from ``::1``); over TCP the handshake proves the
    source, and the host then gets :attr:`local`."""
    clients4: dict[int, Scope] = field(default_factory=dict)
    """The IPv4 entries of ``clients`` keyed by the address's 4 bytes read as one native
    unsigned int: what the UDP batch finds in a received ``sockaddr_in``, no formatting.
    IPv6 sources have no such shortcut: the server looks them up by text, and an unlisted
    one goes through :meth:`~._resolver.Resolver.unlisted` (TC for the host over UDP)."""

    def scope_for(self, client_ip: str) -> Scope:
        return self.clients.get(client_ip, self.unknown)

    def is_ours(self, ip: IPAddress) -> bool:
        """True for a registered address or one inside a container subnet (never forwarded)."""
        return ip in self.all_ips or any(ip in net for net in self.subnets)


def _reverse_wire(ip: IPAddress) -> bytes:
    return to_wire(ip.reverse_pointer)


class Registry:
    """Thread-safe store of registered containers and internal networks.

    "Internal" comes two ways: per registration (``internal_networks`` of
    :meth:`register`: internal for that container only) and per network
    (:meth:`set_network_internal`: internal for every container on it). A container whose
    networks are all internal, one way or the other, gets container names only.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.generation = 0
        self._containers: dict[str, Container] = {}
        self._internal: set[str] = set()
        self._seq = itertools.count(1)
        self.default_network = "nyx"
        self.local_clients: frozenset[str] = frozenset({"127.0.0.1", "::1"})
        self.subnets: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    # ------------------------------------------------------------------ mutations

    def _bump(self) -> None:
        self.generation += 1

    def configure(
        self,
        *,
        default_network: str | None = None,
        local_clients: Iterable[str] | None = None,
        subnets: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network] | None = None,
    ) -> None:
        with self.lock:
            if default_network is not None:
                self.default_network = check_network(default_network, "default network")
            if local_clients is not None:
                self.local_clients = frozenset(local_clients)
            if subnets is not None:
                self.subnets = tuple(subnets)
            self._bump()

    def register(
        self,
        container_id: str,
        hostname: str,
        ips: Sequence[object],
        aliases: Sequence[str],
        networks: Sequence[str],
        internal_networks: Sequence[str] = (),
    ) -> Container:
        """Validate and store one container; a second call for the id replaces it.

        ``internal_networks``: those of ``networks`` that are internal for this container
        (names not in ``networks`` are ignored).
        """
        if not isinstance(container_id, str) or not _ID.fullmatch(container_id):
            raise DnsError(f"embedded DNS register: container_id {container_id!r} is not valid")
        host = check_name(hostname, "hostname", container_id)
        addrs = tuple(dict.fromkeys(check_ip(ip, container_id) for ip in ips))
        names = tuple(
            dict.fromkeys(
                a for a in (check_name(x, "alias", container_id) for x in aliases) if a != host
            )
        )
        nets = frozenset(check_network(n, f"register {container_id!r}") for n in networks)
        internal = frozenset(
            check_network(n, f"register {container_id!r} internal_networks")
            for n in internal_networks
        )
        with self.lock:
            nets = nets or frozenset({self.default_network})
            ctr = Container(
                container_id=container_id,
                hostname=host,
                ips=addrs,
                aliases=names,
                networks=nets,
                seq=next(self._seq),
                internal=internal & nets,
            )
            self._containers[container_id] = ctr
            self._bump()
        return ctr

    def deregister(self, container_id: str) -> bool:
        with self.lock:
            found = self._containers.pop(container_id, None) is not None
            if found:
                self._bump()
        return found

    def set_network_internal(self, name: str, internal: bool = True) -> None:
        check_network(name, "set_network_internal")
        with self.lock:
            if internal:
                self._internal.add(name)
            else:
                self._internal.discard(name)
            self._bump()

    # ------------------------------------------------------------------ reads

    def get(self, container_id: str) -> Container | None:
        with self.lock:
            return self._containers.get(container_id)

    def containers(self) -> list[Container]:
        with self.lock:
            return sorted(self._containers.values(), key=lambda c: c.seq)

    def internal_networks(self) -> frozenset[str]:
        """The networks marked internal for everyone (:meth:`set_network_internal`)."""
        with self.lock:
            return frozenset(self._internal)

    def internal_only(self, ctr: Container) -> bool:
        """True when every network of ``ctr`` is internal for it: no forwarding."""
        with self.lock:
            return _internal_only(ctr, self._internal)

    def snapshot(self) -> Snapshot:
        """Build the per-client views from the current registrations."""
        with self.lock:
            gen = self.generation
            ctrs = sorted(self._containers.values(), key=lambda c: c.seq)
            internal = frozenset(self._internal)
            local_clients = self.local_clients
            subnets = self.subnets
        scopes: dict[tuple[frozenset[str], bool], Scope] = {}
        clients: dict[str, Scope] = {}
        for ctr in ctrs:
            # containers on the same networks see the same names, but forwarding is decided
            # per container: the scope is shared only between equals on both counts
            forward = not _internal_only(ctr, internal)
            scope = scopes.get((ctr.networks, forward))
            if scope is None:
                members = [c for c in ctrs if c.networks & ctr.networks]
                scope = _build_scope(members, forward=forward)
                scopes[(ctr.networks, forward)] = scope
            for ip in ctr.ips:
                clients[str(ip)] = scope
        local = _build_scope(ctrs, forward=True)
        for client in local_clients:
            clients.setdefault(client, local)
        unknown = Scope(names={}, ptrs={}, forward=False, known=False)
        clients4: dict[int, Scope] = {}
        for text, scope in clients.items():
            try:
                ip = ipaddress.ip_address(text)
            except ValueError:
                continue
            if ip.version == 4:
                clients4[int.from_bytes(ip.packed, sys.byteorder)] = scope
        return Snapshot(
            generation=gen,
            clients=clients,
            local=local,
            unknown=unknown,
            subnets=subnets,
            all_ips=frozenset(ip for c in ctrs for ip in c.ips),
            clients4=clients4,
        )


def _internal_only(ctr: Container, internal: Set[str]) -> bool:
    return ctr.networks <= (ctr.internal | internal)


def _build_scope(members: Sequence[Container], *, forward: bool) -> Scope:
    """Names and reverse names of ``members`` (sorted by registration order).

    A name that is some container's hostname belongs to the most recent such registration;
    a name that is only an alias resolves to every container carrying it (round robin set).
    """
    names: dict[bytes, NameRecord] = {}
    shared: dict[bytes, list[Container]] = {}
    owned: set[bytes] = set()
    ptrs: dict[bytes, str] = {}
    for ctr in members:
        records = ctr.records
        for wire in ctr.host_wires:
            names[wire] = records[wire]
            owned.add(wire)
        for wire in ctr.alias_wires:
            if wire in owned:
                continue
            holders = shared.setdefault(wire, [])
            holders.append(ctr)
            names[wire] = records[wire]
        for wire in ctr.ptr_wires:
            ptrs[wire] = ctr.fqdn
    for wire, holders in shared.items():
        if wire not in owned and len(holders) > 1:
            ips = list(dict.fromkeys(ip for c in holders for ip in c.ips))
            names[wire] = NameRecord(
                name=holders[0].records[wire].name,
                v4=tuple(str(ip) for ip in ips if ip.version == 4),
                v6=tuple(str(ip) for ip in ips if ip.version == 6),
            )
    return Scope(names=names, ptrs=ptrs, forward=forward)
