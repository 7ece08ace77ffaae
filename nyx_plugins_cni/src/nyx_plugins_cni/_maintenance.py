"""CHECK, GC and STATUS for the CNI driver (a part of :class:`~._driver.CniDriver`).

CHECK runs each attachment's plugins with its cached ADD result; GC deletes what containers
that no longer exist left (cached attachments, ``internal`` rules) and sends spec 1.1 ``GC``
to the plugins that speak it; STATUS asks the default network's plugins whether they can
serve ADD. See docs/cni.md.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from nyx_core import BackendError, NyxError, TeardownError

from ._attach import Attachment, GcReport, pair_order, ver
from ._cache import CacheEntry, ResultCache
from ._conf import NetworkConfig, parse_network
from ._exec import PluginExec, PluginRequest
from ._firewall import InternalFirewall, att_tag_prefix
from ._networks import CniNetwork
from ._result import request_config

__all__ = ["Maintenance"]


class Maintenance:
    """CHECK, GC and STATUS; :class:`~._driver.CniDriver` sets the attributes below."""

    cache: ResultCache
    exec: PluginExec
    firewall: InternalFirewall
    networks: dict[str, CniNetwork]
    loopback: NetworkConfig | None
    plugin_versions: dict[str, list[str]]
    _lock: threading.Lock
    _attached: dict[str, Attachment]
    _inflight: dict[str, Attachment]

    if TYPE_CHECKING:

        def _require(self) -> CniNetwork: ...

        def _del_entry(
            self, entry: CacheEntry, netns_path: str, att: Attachment | None
        ) -> list[NyxError]: ...

    def check(self, container_id: str) -> None:
        """CHECK every attachment of the container with its cached ADD result.

        Skipped for networks with ``disableCheck`` or a version below 0.4.0. Raises
        :class:`~nyx_core.CniPluginError` for the first plugin that reports a problem.
        """
        self._require()
        entries = sorted(
            self.cache.entries(container_id=container_id),
            key=lambda e: pair_order((e.network, e.ifname)),
        )
        if not entries:
            raise BackendError(f"container {container_id!r} is not set up on a CNI network")
        for entry in entries:
            cfg = parse_network(entry.config, f"cache entry of {container_id}")
            if cfg.disable_check or ver(cfg.cni_version) < (0, 4, 0):
                continue
            if entry.result is None:
                raise BackendError(
                    f"container {container_id!r}: ADD on {entry.network!r} did not finish"
                )
            req = PluginRequest(
                "CHECK", container_id, entry.netns, entry.ifname, entry.cni_args_text
            )
            for plugin in cfg.plugins:
                conf = request_config(
                    plugin,
                    name=cfg.name,
                    cni_version=cfg.cni_version,
                    prev_result=entry.result,
                    capability_args=entry.capability_args,
                )
                self.exec.run(str(plugin["type"]), req, conf)

    def _supports_11(self, plugin: Mapping[str, Any]) -> bool:
        return "1.1.0" in self.plugin_versions.get(str(plugin["type"]), [])

    def gc(self, valid_container_ids: Iterable[str]) -> GcReport:
        """Garbage-collect every network: nyxd calls it at start, before any setup.

        1. DEL (with the cached config and result) every cached attachment, of any network,
           whose container id is not in ``valid_container_ids`` (also attachments a crash
           left half-added), except on networks with ``disableGC``;
        2. delete the ``internal`` rules of those containers from ``inet nyx-cni``;
        3. send spec 1.1 ``GC`` with ``cni.dev/valid-attachments`` to every plugin, of every
           network the driver knows, that supports 1.1.0 (older plugins only get step 1).

        Goes on after errors and raises one :class:`~nyx_core.TeardownError` at the end.
        """
        self._require()
        report = GcReport()
        valid = set(valid_container_ids)
        with self._lock:
            busy = set(self._inflight)
        stale: dict[str, list[CacheEntry]] = {}
        for e in self.cache.entries():
            if e.container_id in valid or e.container_id in busy:
                continue
            if e.config.get("disableGC") is True:
                continue
            stale.setdefault(e.container_id, []).append(e)
        for cid in sorted(stale):
            with self._lock:
                att = self._attached.pop(cid, None)
            errs: list[NyxError] = []
            # the reverse of setup: the last network first, the loopback attachment last
            for e in sorted(stale[cid], key=lambda e: pair_order((e.network, e.ifname)))[::-1]:
                errs.extend(self._del_entry(e, "", att))
            if att is not None and att.fd is not None:
                os.close(att.fd)
            report.errors.extend(errs)
            if not errs:
                report.removed.append(cid)
        self._gc_rules(valid | busy, report)
        remaining = self.cache.entries()
        with self._lock:
            configs = [cn.config for cn in self.networks.values()]
        for cfg in [*configs, self.loopback]:
            if cfg is None or cfg.disable_gc:
                continue
            attachments = [
                {"containerID": e.container_id, "ifname": e.ifname}
                for e in remaining
                if e.network == cfg.name
            ]
            for plugin in cfg.plugins:
                if not self._supports_11(plugin):
                    continue
                conf = request_config(
                    plugin,
                    name=cfg.name,
                    cni_version="1.1.0",
                    extra={"cni.dev/valid-attachments": attachments},
                )
                try:
                    self.exec.run(str(plugin["type"]), PluginRequest("GC"), conf)
                    report.gc_plugins.append(str(plugin["type"]))
                except NyxError as exc:
                    report.errors.append(exc)
        if report.errors:
            raise TeardownError("GC of the CNI networks", list(report.errors))
        return report

    def _gc_rules(self, keep: set[str], report: GcReport) -> None:
        """Delete ``att:`` rules of containers not in ``keep`` (a crash between ADD and
        teardown leaves them)."""
        if not self.firewall.available():
            return
        kept = {att_tag_prefix(c) for c in keep}

        def stale(tag: str) -> bool:
            return tag.startswith("att:") and not any(tag.startswith(k) for k in kept)

        try:
            report.rules.extend(self.firewall.delete(stale))
        except NyxError as exc:
            report.errors.append(exc)

    def status(self) -> dict[str, str]:
        """STATUS of every plugin of the default network that supports spec 1.1.0.

        Returns ``{plugin: "ok" | "no STATUS (spec < 1.1.0)"}``; raises
        :class:`~nyx_core.CniPluginError` (code 50/51) for a plugin that cannot serve ADD.
        """
        net = self._require().config
        report: dict[str, str] = {}
        for plugin in net.plugins:
            kind = str(plugin["type"])
            if not self._supports_11(plugin):
                report[kind] = "no STATUS (spec < 1.1.0)"
                continue
            conf = request_config(plugin, name=net.name, cni_version="1.1.0")
            self.exec.run(kind, PluginRequest("STATUS"), conf)
            report[kind] = "ok"
        return report
