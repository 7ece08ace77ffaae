"""The nftables layout of nyx and the JSON batches that change it.

nyx owns exactly two tables, ``ip nyx`` and, on a kernel with IPv6, ``ip6 nyx`` (the same
layout for IPv6: its ``ipv4_addr`` types are ``ipv6_addr``). Their rules are fixed and
written once by ``ensure``; containers and networks only add or delete *elements* of their
maps and sets, so a setup or teardown is one small batch whose cost does not grow with the
number of containers.

* ``ports_any`` (``inet_proto . inet_service : ipv4_addr . inet_service``): ports published on
  every host address; ``ports_ip`` adds the host address to the key.
* ``net_subnets`` / ``net_bridges`` / ``same_bridge``: the subnets and bridges of nyx networks
  (in ``ip6 nyx``: those of dual-stack networks).
* ``internal``: addresses of containers on an ``internal`` network.

Besides NAT, the fixed rules keep out what a real host's neighbours would try: ``guard``
drops ``127.0.0.0/8`` (and ``::1``) arriving on any link but ``lo`` (route_localnet is on for
the bridges), the masquerade spares the host's own packets through ``lo``, and the forward
chain lets traffic from outside into a bridge only through published ports
(docs/native.md). ``::1`` is never DNAT'd (the kernel cannot): the driver's loopback proxy
answers there (:mod:`nyx_plugins_native._proxy`).

The builders here are pure functions (unit-tested without root); :class:`Firewall` runs them.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nyx_core.errors import ConfigError

from ._nft import nft_context

__all__ = [
    "FAMILIES",
    "FAMILY",
    "FAMILY6",
    "TABLE",
    "Firewall",
    "PortElement",
    "TableState",
    "ensure_batch",
    "network_elements",
    "pel_from_list",
    "pel_to_list",
    "port_elements",
    "rebuild_script",
    "stale_elements",
]

FAMILY = "ip"
FAMILY6 = "ip6"
FAMILIES = (FAMILY, FAMILY6)
TABLE = "nyx"

Cmd = dict[str, Any]


# The fixed rules, in nft syntax: libnftables 1.0.6's JSON parser crashes on a ``dnat`` to a
# concatenated map, so the (one-time) ensure batch is written in nft's own language; the
# per-container batches use the JSON API.
# chain name -> (base chain spec or "", [(name, rule)]); each rule's comment is its name and
# a hash of its text (see rule_comment), so an upgraded layout is recognised.
CHAINS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "guard": (
        # after conntrack (-200), before the DNAT of nat prerouting (-100): a packet is seen
        # with the destination it arrived with, and replies are not yet de-NAT'd
        "type filter hook prerouting priority -150; policy accept;",
        [
            # 127.0.0.0/8 comes from lo only (route_localnet is on for the bridges): a LAN
            # neighbour routing 127.0.0.1 here, or a container sending there, gets nothing;
            # the replies of connections the host opened are established and pass
            (
                "nyx:localnet",
                'iifname != "lo" ip daddr 127.0.0.0/8 ct state != { established, related } drop',
            ),
        ],
    ),
    "ports": (
        "",
        [
            ("nyx:ports-ip", "dnat ip to ip daddr . meta l4proto . th dport map @ports_ip"),
            ("nyx:ports-any", "dnat ip to meta l4proto . th dport map @ports_any"),
        ],
    ),
    "prerouting": (
        "type nat hook prerouting priority -100; policy accept;",
        # never DNAT 127.0.0.0/8 arriving from outside (the guard drops it already)
        [("nyx:pre", "fib daddr type local ip daddr != 127.0.0.0/8 jump ports")],
    ),
    "output": (
        "type nat hook output priority -100; policy accept;",
        [("nyx:out", "fib daddr type local jump ports")],
    ),
    "postrouting": (
        "type nat hook postrouting priority 100; policy accept;",
        [
            # the subnets leaving through a non-bridge interface (never DNAT'd clients);
            # not lo: the host's own packets from a gateway address to a local address
            # (its DNS server) keep their source
            (
                "nyx:masq",
                'ip saddr @net_subnets oifname != @net_bridges oifname != "lo" masquerade',
            ),
            # 127.0.0.1:PORT from the host: the container must answer the gateway
            ("nyx:localhost", "ip saddr 127.0.0.0/8 oifname @net_bridges masquerade"),
            # hairpin: a container reaching a published port through a host address
            (
                "nyx:hairpin",
                "ct status dnat ip saddr @net_subnets oifname @net_bridges masquerade",
            ),
        ],
    ),
    "forward": (
        "type filter hook forward priority 0; policy accept;",
        [
            # published ports are for everybody, containers of other networks included
            ("nyx:published", "iifname @net_bridges ct status dnat accept"),
            # networks are isolated from each other
            (
                "nyx:isolate",
                "iifname @net_bridges oifname @net_bridges iifname . oifname != @same_bridge drop",
            ),
            # internal containers never leave the nyx subnets
            ("nyx:internal", "ip saddr @internal ip daddr != @net_subnets drop"),
            # from outside into a bridge (a neighbour routing the subnets through the host):
            # published ports and replies only, never a container's other ports
            (
                "nyx:inbound-published",
                "iifname != @net_bridges oifname @net_bridges ct status dnat accept",
            ),
            (
                "nyx:inbound",
                "iifname != @net_bridges oifname @net_bridges "
                "ct state != { established, related } drop",
            ),
        ],
    ),
}

SETS: dict[str, str] = {
    "ports_any": "map ports_any { type inet_proto . inet_service : ipv4_addr . inet_service; }",
    "ports_ip": (
        "map ports_ip { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; }"
    ),
    "net_subnets": "set net_subnets { type ipv4_addr; flags interval; }",
    "net_bridges": "set net_bridges { type ifname; }",
    "same_bridge": "set same_bridge { type ifname . ifname; }",
    "internal": "set internal { type ipv4_addr; }",
}

# ``ip6 nyx``: the same layout for dual-stack networks. ``::1`` needs no guard of its own
# (the kernel drops it on any link but lo), but gets one anyway, and is never DNAT'd: a
# packet from ::1 cannot leave through a bridge, so ``[::1]:PORT`` is the loopback proxy's.
# No route_localnet, no 127/8-style masquerade.
CHAINS6: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "guard": (
        CHAINS["guard"][0],
        [("nyx:localnet6", 'iifname != "lo" ip6 daddr ::1 drop')],
    ),
    "ports": (
        "",
        [
            ("nyx:ports-ip", "dnat ip6 to ip6 daddr . meta l4proto . th dport map @ports_ip"),
            ("nyx:ports-any", "dnat ip6 to meta l4proto . th dport map @ports_any"),
        ],
    ),
    "prerouting": (
        CHAINS["prerouting"][0],
        [("nyx:pre", "fib daddr type local ip6 daddr != ::1 jump ports")],
    ),
    "output": (
        CHAINS["output"][0],
        [("nyx:out", "fib daddr type local ip6 daddr != ::1 jump ports")],
    ),
    "postrouting": (
        CHAINS["postrouting"][0],
        [
            (
                "nyx:masq",
                'ip6 saddr @net_subnets oifname != @net_bridges oifname != "lo" masquerade',
            ),
            (
                "nyx:hairpin",
                "ct status dnat ip6 saddr @net_subnets oifname @net_bridges masquerade",
            ),
        ],
    ),
    "forward": (
        CHAINS["forward"][0],
        [
            (
                name,
                # neighbour discovery between the containers of an internal network goes to
                # multicast addresses (bridged, never routed): spared
                "ip6 saddr @internal ip6 daddr != @net_subnets ip6 daddr != ff00::/8 drop"
                if name == "nyx:internal"
                else rule,
            )
            for name, rule in CHAINS["forward"][1]
        ],
    ),
}

SETS6: dict[str, str] = {
    name: decl.replace("ipv4_addr", "ipv6_addr") for name, decl in SETS.items()
}

LAYOUTS: dict[str, tuple[dict[str, tuple[str, list[tuple[str, str]]]], dict[str, str]]] = {
    FAMILY: (CHAINS, SETS),
    FAMILY6: (CHAINS6, SETS6),
}


def rule_comment(name: str, rule: str) -> str:
    """``<name>:<6 hex digits of the rule's text>``: the comment ``ensure`` recognises."""
    return f"{name}:{hashlib.sha1(rule.encode()).hexdigest()[:6]}"


@dataclass
class TableState:
    """What ``list table ip nyx`` shows: its sets and maps, and per chain its rules' comments
    with their handles, in order."""

    sets: list[str] = field(default_factory=list)
    chains: dict[str, list[tuple[str, int]]] = field(default_factory=dict)


def ensure_batch(existing: TableState | None, family: str = FAMILY) -> str:
    """The nft script that creates the table, or brings a present one to this layout.

    A chain whose rules are not exactly this version's (one missing, one of an older
    version, an extra one) gets all its rules deleted and written again, in order, in the
    same atomic batch: traffic never sees a half-written chain. Chains of an older layout
    are deleted. Sets and maps (the per-container elements) are only ever added.

    :param existing: the table as listed (:func:`parse_table`), None when it is absent.
    :param family: ``ip`` or ``ip6`` (:data:`LAYOUTS`).
    :returns: an empty string when everything is present (a second ensure changes nothing).
    """
    chains, sets = LAYOUTS[family]
    lines: list[str] = []
    t = f"{family} {TABLE}"
    if existing is None:
        lines.append(f"add table {t}")
    have = existing or TableState()
    for name, decl in sets.items():
        if name not in have.sets:
            kind, rest = decl.split(" ", 1)
            lines.append(f"add {kind} {t} {rest}")
    stale: list[str] = []
    for chain, handles in have.chains.items():
        if chain not in chains:
            lines += [f"delete rule {t} {chain} handle {h}" for _c, h in handles]
            stale.append(f"delete chain {t} {chain}")
    for chain, (base, rules) in chains.items():
        wanted = [rule_comment(name, rule) for name, rule in rules]
        present = have.chains.get(chain)
        if present is None:
            lines.append(f"add chain {t} {chain}" + (f" {{ {base} }}" if base else ""))
            present = []
        if [c for c, _h in present] == wanted:
            continue
        lines += [f"delete rule {t} {chain} handle {h}" for _c, h in present]
        for comment, (_name, rule) in zip(wanted, rules, strict=True):
            lines.append(f'add rule {t} {chain} {rule} comment "{comment}"')
    lines += stale  # after the rules that may jump to them are gone
    return "\n".join(lines) + ("\n" if lines else "")


def parse_table(listing: Any) -> TableState:
    """Turn ``list table`` JSON output into the ``existing`` argument of :func:`ensure_batch`."""
    out = TableState()
    for item in (listing or {}).get("nftables", []):
        if "chain" in item:
            out.chains.setdefault(item["chain"]["name"], [])
        elif "rule" in item:
            rule = item["rule"]
            out.chains.setdefault(rule["chain"], []).append(
                (rule.get("comment", ""), int(rule["handle"]))
            )
        elif "set" in item or "map" in item:
            out.sets.append((item.get("set") or item["map"])["name"])
    return out


def _elem(verb: str, name: str, elems: list[Any], family: str = FAMILY) -> Cmd:
    return {verb: {"element": {"family": family, "table": TABLE, "name": name, "elem": elems}}}


LOOPBACK6 = "::1"


@dataclass(frozen=True)
class PortElement:
    """One published host port: a key of ``ports_any`` or ``ports_ip`` of the table of the
    container address's family, or (``host_ip`` ``::1``) a port of the loopback proxy only.

    ``host_ip`` None means every host address *of the container address's family*.
    """

    host_ip: str | None
    protocol: str
    host_port: int
    container_ip: str
    container_port: int

    @property
    def map_name(self) -> str:
        return "ports_any" if self.host_ip is None else "ports_ip"

    @property
    def family(self) -> str:
        """The nft family of its element: ``ip6`` for an IPv6 container address."""
        return FAMILY6 if ":" in self.container_ip else FAMILY

    @property
    def v6(self) -> bool:
        """Whether the host side (the reserved socket) is IPv6."""
        if self.host_ip is not None:
            return ":" in self.host_ip
        return self.family == FAMILY6

    @property
    def in_nft(self) -> bool:
        """Whether it is a map element (``::1`` is the proxy's alone: no DNAT from ::1)."""
        return self.host_ip != LOOPBACK6

    @property
    def proxied(self) -> bool:
        """Whether its reserved socket answers ``[::1]:PORT`` through the loopback proxy:
        one bound to ``::1``, or to ``::`` (every other address is DNAT'd before a packet
        reaches it)."""
        return self.v6 and self.host_ip in (None, LOOPBACK6)

    def key(self) -> dict[str, Any]:
        parts: list[Any] = [self.protocol, self.host_port]
        if self.host_ip is not None:
            parts.insert(0, self.host_ip)
        return {"concat": parts}

    def element(self) -> list[Any]:
        return [self.key(), {"concat": [self.container_ip, self.container_port]}]


def port_elements(
    ports: Iterable[Any], container_ip: str, container_ip6: str | None = None
) -> list[PortElement]:
    """Expand :class:`~nyx_core.PortMapping` objects (ranges) into map elements.

    No host address: every host address of both families (an IPv6 element only when the
    container has an IPv6 address); ``0.0.0.0``: every IPv4 address; ``::``: every IPv6
    address; ``::1``: the loopback proxy, to the container's IPv6 address or else its IPv4
    one; another address: that one, in its family.

    :raises ConfigError: an IPv6 host address for a container without an IPv6 address.
    """
    out: list[PortElement] = []
    for pm in ports:
        ip = pm.host_ip
        targets: list[tuple[str | None, str]]
        if ip is None:
            targets = [(None, container_ip)]
            if container_ip6:
                targets.append((None, container_ip6))
        elif ip.version == 4:
            targets = [(None if ip.is_unspecified else str(ip), container_ip)]
        elif ip.is_loopback:
            targets = [(LOOPBACK6, container_ip6 or container_ip)]
        elif container_ip6 is None:
            raise ConfigError(
                f"port mapping {pm}: host_ip {ip} is IPv6 but the container has no IPv6 "
                "address (its network is IPv4-only; publish on [::1] or an IPv4 address)"
            )
        else:
            targets = [(None if ip.is_unspecified else str(ip), container_ip6)]
        for host_ip, target in targets:
            for i in range(pm.range):
                out.append(
                    PortElement(
                        host_ip, pm.protocol, pm.host_port + i, target, pm.container_port + i
                    )
                )
    return out


def container_batch(
    verb: str,
    ports: Sequence[PortElement],
    internal_ip: str | None,
    internal_ip6: str | None = None,
) -> list[Cmd]:
    """One container's elements (both tables, one batch): ``verb`` is ``add`` at setup and
    ``delete`` at teardown."""
    cmds: list[Cmd] = []
    by_map: dict[tuple[str, str], list[Any]] = {}
    for p in ports:
        if p.in_nft:
            elem = p.element() if verb == "add" else p.key()
            by_map.setdefault((p.family, p.map_name), []).append(elem)
    for family, name in sorted(by_map):
        cmds.append(_elem(verb, name, by_map[family, name], family))
    for family, ip in ((FAMILY, internal_ip), (FAMILY6, internal_ip6)):
        if ip is not None:
            cmds.append(_elem(verb, "internal", [ip], family))
    return cmds


def network_elements(
    verb: str,
    bridge: str,
    subnet: ipaddress.IPv4Network,
    subnet6: ipaddress.IPv6Network | None = None,
) -> list[Cmd]:
    """A network's elements (subnet, bridge, its same-bridge pair); a dual-stack network's
    in both tables."""
    cmds: list[Cmd] = []
    for family, net in ((FAMILY, subnet), (FAMILY6, subnet6)):
        if net is None:
            continue
        prefix = {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}
        cmds += [
            _elem(verb, "net_subnets", [prefix], family),
            _elem(verb, "net_bridges", [bridge], family),
            _elem(verb, "same_bridge", [{"concat": [bridge, bridge]}], family),
        ]
    return cmds


def _nft_value(value: Any, quoted: bool) -> str:
    """One element key or value of our JSON commands in nft's own syntax."""
    if isinstance(value, dict) and "concat" in value:
        return " . ".join(_nft_value(v, quoted) for v in value["concat"])
    if isinstance(value, dict) and "prefix" in value:
        return f"{value['prefix']['addr']}/{int(value['prefix']['len'])}"
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"element value {value!r} has no nft spelling here")
    if isinstance(value, int):
        return str(value)
    if not re.fullmatch(r"[A-Za-z0-9_.:-]+", value):  # addresses, protocols, bridge names
        raise ValueError(f"element value {value!r} has no nft spelling here")
    return f'"{value}"' if quoted else value


def element_text(cmd: Cmd) -> str:
    """An ``add element`` command of ours (:func:`_elem`) as one line of nft's language."""
    ((verb, body),) = cmd.items()
    el = body["element"]
    quoted = el["name"] in ("net_bridges", "same_bridge")  # interface names are strings
    items = []
    for e in el["elem"]:
        if isinstance(e, list):  # a map element: [key, value]
            items.append(f"{_nft_value(e[0], quoted)} : {_nft_value(e[1], False)}")
        else:
            items.append(_nft_value(e, quoted))
    return f"{verb} element {el['family']} {el['table']} {el['name']} {{ {', '.join(items)} }}"


def rebuild_script(
    families: Sequence[str],
    networks: Iterable[tuple[str, ipaddress.IPv4Network, ipaddress.IPv6Network | None]],
    containers: Iterable[tuple[Sequence[PortElement], str | None, str | None]],
) -> str:
    """One nft transaction that replaces nyx's tables with their whole state.

    What a firewall reload left of the tables (nothing, a part, or a foreign change) is
    deleted, and the fixed layout is written again with every element the records account
    for: the networks' subnets and bridges, every container's published ports and internal
    addresses. Atomic: traffic sees the old table until the new one is complete, and
    connections survive (conntrack is not in the table).

    :param families: the tables to write (``ip``, and ``ip6`` with a kernel with IPv6).
    :param networks: (bridge, subnet, subnet6) of every network.
    :param containers: (port elements, internal address, internal IPv6 address) of every
        attachment; the addresses only for containers on an internal network.
    """
    lines: list[str] = []
    for family in families:
        t = f"{family} {TABLE}"
        lines += [f"add table {t}", f"delete table {t}"]  # deletes whatever is there
        lines.append(ensure_batch(None, family).rstrip("\n"))
    cmds: list[Cmd] = []
    for bridge, subnet, subnet6 in networks:
        cmds += network_elements("add", bridge, subnet, subnet6)
    for ports, ip, ip6 in containers:
        cmds += container_batch("add", ports, ip, ip6)
    lines += [element_text(c) for c in cmds if c["add"]["element"]["family"] in families]
    return "\n".join(lines) + "\n"


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _in(addr: object, subnets: Sequence[IPNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(str(addr))
    except ValueError:
        return False
    return any(ip.version == net.version and ip in net for net in subnets)


def stale_elements(
    elements: Mapping[str, list[Any]],
    leased: Collection[str],
    subnets: Sequence[IPNetwork],
    family: str = FAMILY,
) -> list[Cmd]:
    """Delete commands for the per-container elements no lease explains (garbage collection).

    :param elements: the listed elements of ``ports_any``, ``ports_ip`` and ``internal``
        (:meth:`Firewall.elements`).
    :param leased: the addresses the driver's leases hold.
    :param subnets: the driver's networks: an element pointing elsewhere is not nyx's to
        judge and is left alone.
    :param family: the table the elements were listed from.
    """
    cmds: list[Cmd] = []
    for name in ("ports_any", "ports_ip"):
        keys = []
        for elem in elements.get(name, []):
            try:
                key, value = elem
                target = value["concat"][0]
            except (TypeError, ValueError, KeyError, IndexError):
                continue
            if target not in leased and _in(target, subnets):
                keys.append(key)
        if keys:
            cmds.append(_elem("delete", name, keys, family))
    ips = [e for e in elements.get("internal", []) if isinstance(e, str) and e not in leased]
    ips = [e for e in ips if _in(e, subnets)]
    if ips:
        cmds.append(_elem("delete", "internal", ips, family))
    return cmds


class Firewall:
    """Runs the batches in the calling thread's network namespace."""

    def list_table(self, family: str = FAMILY) -> TableState | None:
        ctx = nft_context()
        with ctx.lock:
            rc, out, _err = ctx.nft.cmd(f"list table {family} {TABLE}")
        if rc != 0:
            return None
        return parse_table(json.loads(out) if out else None)

    def ensure(self, ipv6: bool = True) -> None:
        """Both tables (``ip6 nyx`` only with ``ipv6``: a kernel with IPv6), in one atomic
        batch."""
        families = FAMILIES if ipv6 else (FAMILY,)
        script = "".join(ensure_batch(self.list_table(f), f) for f in families)
        if script:
            tables = " and ".join(f"{f} {TABLE}" for f in families)
            nft_context().run_text(script, f"ensure of table {tables}")

    def run(self, cmds: list[Cmd], what: str) -> None:
        nft_context().run(cmds, what)

    def elements(self, name: str, family: str = FAMILY) -> list[Any]:
        """Elements of one set or map (for checks and tests)."""
        kind = "map" if name.startswith("ports_") else "set"
        out = nft_context().run_text(f"list {kind} {family} {TABLE} {name}", f"list {name}")
        for item in (out or {}).get("nftables", []):
            obj = item.get("set") or item.get("map")
            if obj:
                return list(obj.get("elem", []))
        return []


def pel_from_list(p: list[Any]) -> PortElement:
    """A lease's recorded port element (a JSON list) as a :class:`PortElement`."""
    return PortElement(p[0], p[1], p[2], p[3], p[4])


def pel_to_list(p: PortElement) -> list[Any]:
    """The list a lease records for a port element."""
    return [p.host_ip, p.protocol, p.host_port, p.container_ip, p.container_port]
