"""The nftables layout of nyx and the JSON batches that change it.

nyx owns exactly one table, ``ip nyx``. Its rules are fixed and written once by
``ensure``; containers and networks only add or delete *elements* of its maps and sets, so a
setup or teardown is one small batch whose cost does not grow with the number of containers.

* ``ports_any`` (``inet_proto . inet_service : ipv4_addr . inet_service``): ports published on
  every host address; ``ports_ip`` adds the host address to the key.
* ``net_subnets`` / ``net_bridges`` / ``same_bridge``: the subnets and bridges of nyx networks.
* ``internal``: addresses of containers on an ``internal`` network.

The builders here are pure functions (unit-tested without root); :class:`Firewall` runs them.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ._nft import nft_context

__all__ = [
    "FAMILY",
    "TABLE",
    "Firewall",
    "PortElement",
    "ensure_batch",
    "network_elements",
    "port_elements",
]

FAMILY = "ip"
TABLE = "nyx"

Cmd = dict[str, Any]


# The fixed rules, in nft syntax: libnftables 1.0.6's JSON parser crashes on a ``dnat`` to a
# concatenated map, so the (one-time) ensure batch is written in nft's own language; the
# per-container batches use the JSON API.
# chain name -> (base chain spec or "", [(comment, rule)])
CHAINS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "ports": (
        "",
        [
            ("nyx:ports-ip", "dnat ip to ip daddr . meta l4proto . th dport map @ports_ip"),
            ("nyx:ports-any", "dnat ip to meta l4proto . th dport map @ports_any"),
        ],
    ),
    "prerouting": (
        "type nat hook prerouting priority -100; policy accept;",
        [("nyx:pre", "fib daddr type local jump ports")],
    ),
    "output": (
        "type nat hook output priority -100; policy accept;",
        [("nyx:out", "fib daddr type local jump ports")],
    ),
    "postrouting": (
        "type nat hook postrouting priority 100; policy accept;",
        [
            # the subnets leaving through a non-bridge interface (never DNAT'd clients)
            ("nyx:masq", "ip saddr @net_subnets oifname != @net_bridges masquerade"),
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


def ensure_batch(existing: dict[str, list[str]] | None) -> str:
    """The nft script that creates the table, or completes a half-present one.

    :param existing: chain name -> rule comments present, None when the table is absent.
    :returns: an empty string when everything is present (a second ensure changes nothing).
    """
    lines: list[str] = []
    t = f"{FAMILY} {TABLE}"
    if existing is None:
        lines.append(f"add table {t}")
    have = existing or {}
    sets = set(have.get("\0sets", []))
    for name, decl in SETS.items():
        if name not in sets:
            kind, rest = decl.split(" ", 1)
            lines.append(f"add {kind} {t} {rest}")
    for chain, (base, rules) in CHAINS.items():
        if chain not in have:
            lines.append(f"add chain {t} {chain}" + (f" {{ {base} }}" if base else ""))
        present = set(have.get(chain, []))
        for comment, rule in rules:
            if comment not in present:
                lines.append(f'add rule {t} {chain} {rule} comment "{comment}"')
    return "\n".join(lines) + ("\n" if lines else "")


def parse_table(listing: Any) -> dict[str, list[str]]:
    """Turn ``list table`` JSON output into the ``existing`` argument of :func:`ensure_batch`."""
    out: dict[str, list[str]] = {"\0sets": []}
    for item in (listing or {}).get("nftables", []):
        if "chain" in item:
            out.setdefault(item["chain"]["name"], [])
        elif "rule" in item:
            out.setdefault(item["rule"]["chain"], []).append(item["rule"].get("comment", ""))
        elif "set" in item or "map" in item:
            out["\0sets"].append((item.get("set") or item["map"])["name"])
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


class Firewall:
    """Runs the batches in the calling thread's network namespace."""

    def list_table(self) -> dict[str, list[str]] | None:
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
