"""The nftables layout of nyx and the JSON batches that change it.

nyx owns exactly one table, ``ip nyx``. Its rules are fixed and written once by
``ensure``; containers and networks only add or delete *elements* of its maps and sets, so a
setup or teardown is one small batch whose cost does not grow with the number of containers.

* ``ports_any`` (``inet_proto . inet_service : ipv4_addr . inet_service``): ports published on
  every host address; ``ports_ip`` adds the host address to the key.
* ``net_subnets`` / ``net_bridges`` / ``same_bridge``: the subnets and bridges of nyx networks.
* ``internal``: addresses of containers on an ``internal`` network.

Besides NAT, the fixed rules keep out what a real host's neighbours would try: ``guard``
drops ``127.0.0.0/8`` arriving on any link but ``lo`` (route_localnet is on for the bridges),
the masquerade spares the host's own packets through ``lo``, and the forward chain lets
traffic from outside into a bridge only through published ports (docs/native.md).

The builders here are pure functions (unit-tested without root); :class:`Firewall` runs them.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._nft import nft_context

__all__ = [
    "FAMILY",
    "TABLE",
    "Firewall",
    "PortElement",
    "TableState",
    "ensure_batch",
    "network_elements",
    "port_elements",
    "stale_elements",
]

FAMILY = "ip"
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


def rule_comment(name: str, rule: str) -> str:
    """``<name>:<6 hex digits of the rule's text>``: the comment ``ensure`` recognises."""
    return f"{name}:{hashlib.sha1(rule.encode()).hexdigest()[:6]}"


@dataclass
class TableState:
    """What ``list table ip nyx`` shows: its sets and maps, and per chain its rules' comments
    with their handles, in order."""

    sets: list[str] = field(default_factory=list)
    chains: dict[str, list[tuple[str, int]]] = field(default_factory=dict)


def ensure_batch(existing: TableState | None) -> str:
    """The nft script that creates the table, or brings a present one to this layout.

    A chain whose rules are not exactly this version's (one missing, one of an older
    version, an extra one) gets all its rules deleted and written again, in order, in the
    same atomic batch: traffic never sees a half-written chain. Chains of an older layout
    are deleted. Sets and maps (the per-container elements) are only ever added.

    :param existing: the table as listed (:func:`parse_table`), None when it is absent.
    :returns: an empty string when everything is present (a second ensure changes nothing).
    """
    lines: list[str] = []
    t = f"{FAMILY} {TABLE}"
    if existing is None:
        lines.append(f"add table {t}")
    have = existing or TableState()
    for name, decl in SETS.items():
        if name not in have.sets:
            kind, rest = decl.split(" ", 1)
            lines.append(f"add {kind} {t} {rest}")
    stale: list[str] = []
    for chain, rules in have.chains.items():
        if chain not in CHAINS:
            lines += [f"delete rule {t} {chain} handle {h}" for _c, h in rules]
            stale.append(f"delete chain {t} {chain}")
    for chain, (base, rules) in CHAINS.items():
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


def _elem(verb: str, name: str, elems: list[Any]) -> Cmd:
    return {verb: {"element": {"family": FAMILY, "table": TABLE, "name": name, "elem": elems}}}


@dataclass(frozen=True)
class PortElement:
    """One published host port: a key of ``ports_any`` or ``ports_ip``."""

    host_ip: str | None
    protocol: str
    host_port: int
    container_ip: str
    container_port: int

    @property
    def map_name(self) -> str:
        return "ports_any" if self.host_ip is None else "ports_ip"

    def key(self) -> dict[str, Any]:
        parts: list[Any] = [self.protocol, self.host_port]
        if self.host_ip is not None:
            parts.insert(0, self.host_ip)
        return {"concat": parts}

    def element(self) -> list[Any]:
        return [self.key(), {"concat": [self.container_ip, self.container_port]}]


def port_elements(ports: Iterable[Any], container_ip: str) -> list[PortElement]:
    """Expand :class:`~nyx_core.PortMapping` objects (ranges) into map elements (IPv4 only)."""
    out: list[PortElement] = []
    for pm in ports:
        host_ip = None if pm.host_ip is None or pm.host_ip.is_unspecified else str(pm.host_ip)
        for i in range(pm.range):
            out.append(
                PortElement(
                    host_ip, pm.protocol, pm.host_port + i, container_ip, pm.container_port + i
                )
            )
    return out


def container_batch(verb: str, ports: Sequence[PortElement], internal_ip: str | None) -> list[Cmd]:
    """One container's elements: ``verb`` is ``add`` at setup and ``delete`` at teardown."""
    cmds: list[Cmd] = []
    by_map: dict[str, list[Any]] = {}
    for p in ports:
        by_map.setdefault(p.map_name, []).append(p.element() if verb == "add" else p.key())
    for name in sorted(by_map):
        cmds.append(_elem(verb, name, by_map[name]))
    if internal_ip is not None:
        cmds.append(_elem(verb, "internal", [internal_ip]))
    return cmds


def network_elements(verb: str, bridge: str, subnet: ipaddress.IPv4Network) -> list[Cmd]:
    """A network's elements (subnet, bridge, its same-bridge pair)."""
    return [
        _elem(
            verb,
            "net_subnets",
            [{"prefix": {"addr": str(subnet.network_address), "len": subnet.prefixlen}}],
        ),
        _elem(verb, "net_bridges", [bridge]),
        _elem(verb, "same_bridge", [{"concat": [bridge, bridge]}]),
    ]


def _in(addr: object, subnets: Sequence[ipaddress.IPv4Network]) -> bool:
    try:
        ip = ipaddress.IPv4Address(str(addr))
    except ValueError:
        return False
    return any(ip in net for net in subnets)


def stale_elements(
    elements: Mapping[str, list[Any]],
    leased: Collection[str],
    subnets: Sequence[ipaddress.IPv4Network],
) -> list[Cmd]:
    """Delete commands for the per-container elements no lease explains (garbage collection).

    :param elements: the listed elements of ``ports_any``, ``ports_ip`` and ``internal``
        (:meth:`Firewall.elements`).
    :param leased: the addresses the driver's leases hold.
    :param subnets: the driver's networks: an element pointing elsewhere is not nyx's to
        judge and is left alone.
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
            cmds.append(_elem("delete", name, keys))
    ips = [e for e in elements.get("internal", []) if isinstance(e, str) and e not in leased]
    ips = [e for e in ips if _in(e, subnets)]
    if ips:
        cmds.append(_elem("delete", "internal", ips))
    return cmds


class Firewall:
    """Runs the batches in the calling thread's network namespace."""

    def list_table(self) -> TableState | None:
        ctx = nft_context()
        with ctx.lock:
            rc, out, _err = ctx.nft.cmd(f"list table {FAMILY} {TABLE}")
        if rc != 0:
            return None
        return parse_table(json.loads(out) if out else None)

    def ensure(self) -> None:
        script = ensure_batch(self.list_table())
        if script:
            nft_context().run_text(script, f"ensure of table {FAMILY} {TABLE}")

    def run(self, cmds: list[Cmd], what: str) -> None:
        nft_context().run(cmds, what)

    def elements(self, name: str) -> list[Any]:
        """Elements of one set or map (for checks and tests)."""
        kind = "map" if name.startswith("ports_") else "set"
        out = nft_context().run_text(f"list {kind} {FAMILY} {TABLE} {name}", f"list {name}")
        for item in (out or {}).get("nftables", []):
            obj = item.get("set") or item.get("map")
            if obj:
                return list(obj.get("elem", []))
        return []
