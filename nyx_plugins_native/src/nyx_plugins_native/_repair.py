"""Host-state repair for the native driver (a part of :class:`~._driver.NativeDriver`).

A netlink watch (:mod:`._watch`) reports nftables changes nyx did not make and deleted
bridges; :meth:`Repair.reload` (also ``nyx network reload``) re-applies the whole state from
the lease store in one nft transaction, recreates missing bridges and re-attaches veths.
See docs/native.md, "Firewall reloads".
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from loguru import logger

from nyx_core import LeaseStore

from . import _netlink as nl
from ._firewall import FAMILY6, TABLE, pel_from_list, rebuild_script
from ._gate import Gate
from ._network import Network, networks_of
from ._nft import current_netns_id, nft_context
from ._watch import HostWatch

__all__ = ["Repair"]


class Repair:
    """Watch and repair; :class:`~._driver.NativeDriver` sets the attributes below."""

    _watch: HostWatch | None
    _watch_ns: int
    _families: tuple[str, ...]
    _lock: threading.Lock
    _bridges: set[str]
    _gate: Gate

    if TYPE_CHECKING:

        @property
        def store(self) -> LeaseStore: ...

        def _bring_up(self, net: Network) -> None: ...

    def _start_watch(self) -> None:
        """Watch nftables and links of this namespace (once per namespace)."""
        ns = current_netns_id()
        if self._watch is not None:
            if self._watch.alive and self._watch_ns == ns:
                return
            self._watch.stop()
        me = weakref.ref(self)  # the watch must not keep a dropped driver alive

        def tables() -> set[tuple[str, str]]:
            d = me()
            return set() if d is None else {(f, TABLE) for f in d._families}

        def bridges() -> set[str]:
            d = me()
            if d is None:
                return set()
            with d._lock:
                return set(d._bridges)

        def on_ruleset(why: str) -> None:
            d = me()
            if d is not None:
                d.reload(f"nftables changed under nyx ({why})")

        def on_link_gone(name: str) -> None:
            d = me()
            if d is not None:
                d.reload(f"bridge {name!r} was deleted", bridge=name)

        watch = HostWatch(tables, bridges, on_ruleset, on_link_gone)
        watch.start()
        weakref.finalize(self, watch.stop)
        self._watch, self._watch_ns = watch, ns

    def close(self) -> None:
        """Stop watching the host (nyxd exits without it; tests call it)."""
        if self._watch is not None:
            self._watch.stop()
            self._watch = None

    @property
    def watching(self) -> HostWatch | None:
        return self._watch

    def reload(self, why: str = "nyx network reload", bridge: str | None = None) -> dict[str, Any]:
        """Re-apply the whole host state from the records, in one nft transaction: both
        tables with every network's and container's elements, then each network's bridge
        (recreated with its gateways when it is gone) and its containers' veths.

        ``bridge``: a deleted bridge the watch saw; nothing is done when it is no nyx
        network's any more (nyx removed it itself).
        """
        with self._gate.exclusive():
            with self.store.locked(write=False) as st:
                nets = networks_of(st.meta)
                recs = [dict(a) for a in st.records.values()]
            if bridge is not None and all(n.bridge != bridge for n in nets.values()):
                return {}
            families = self._families
            v6 = FAMILY6 in families
            script = rebuild_script(
                families,
                [(n.bridge, n.subnet, n.subnet6 if v6 else None) for n in nets.values()],
                [
                    (
                        [pel_from_list(p) for p in r.get("ports", [])],
                        r["ip"] if r.get("internal") else None,
                        r.get("ip6") if r.get("internal") else None,
                    )
                    for r in recs
                ],
            )
            tables = " and ".join(f"{f} {TABLE}" for f in families)
            nft_context().run_text(script, f"re-apply of table {tables}")
            rebuilt, attached = self._repair_links(nets, recs)
        report: dict[str, Any] = {
            "tables": [f"{f} {TABLE}" for f in families],
            "networks": sorted(nets),
            "attachments": len(recs),
            "ports": sum(len(r.get("ports", [])) for r in recs),
            "bridges_recreated": rebuilt,
            "veths_attached": attached,
        }
        if why == "nyx network reload":
            logger.info("host state re-applied", **report)
        else:
            logger.warning("host state changed under nyx: re-applied", why=why, **report)
        return report

    def _repair_links(
        self, nets: Mapping[str, Network], recs: Sequence[Mapping[str, Any]]
    ) -> tuple[list[str], int]:
        """Bridges that are gone made again; veths off their bridge attached again."""
        rebuilt: list[str] = []
        for net in nets.values():
            with nl.host_rtnl() as rt:
                present = nl.get_link(rt, net.bridge) is not None
            if not present:
                self._bring_up(net)
                rebuilt.append(net.bridge)
        bridges = {n.bridge for n in nets.values()}
        ports = nl.bridge_ports(bridges)
        attached = 0
        with nl.host_rtnl() as rt:
            for rec in recs:
                home = nets.get(rec.get("network", ""))
                veth = rec.get("veth")
                if home is None or not veth or ports.get(veth) == home.bridge:
                    continue
                br = nl.get_link(rt, home.bridge)
                if br is not None and nl.attach_port(rt, veth, br.index):
                    attached += 1
        return rebuilt, attached
