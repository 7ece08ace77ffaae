"""The CNI driver: nyx networks as conflists; ADD/DEL/CHECK/GC/STATUS per attachment, per the
CNI spec. ADD and DEL are here; network create/remove come from :mod:`._lifecycle`, CHECK,
GC and STATUS from :mod:`._maintenance` (its bases)."""

from __future__ import annotations

import ipaddress
import os
import re
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from loguru import logger

from nyx_core import (
    BackendError,
    CniPluginError,
    ConfigError,
    NyxError,
    NyxSettings,
    PortConflictError,
    PortMapping,
    SetupResult,
    TeardownError,
)

from ._attach import (
    Attachment,
    GcReport,
    Progress,
    cni_args,
    is_netns,
    pair_order,
    port_keys,
    same_file,
    ver,
)
from ._cache import CacheEntry, ResultCache
from ._conf import (
    LOOPBACK_NETWORK,
    NYX_SUPPORTED_VERSIONS,
    NetworkConfig,
    addressing,
    bridge_of,
    default_conflist,
    find_network,
    loopback_network,
    parse_network,
    without_default_routes,
)
from ._exec import PluginExec, PluginRequest
from ._firewall import InternalFirewall, att_tag, att_tag_prefix, drop_rules
from ._lifecycle import NetworkLifecycle
from ._maintenance import Maintenance
from ._netns import scratch_netns
from ._networks import CniNetwork, ConflistRecords, HostLinks, write_conflist
from ._result import port_mappings, request_config, to_setup_result
from ._settings import CniSettings

__all__ = ["CniDriver", "GcReport"]

_ID_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_PRIME_PORT = 65535


class CniDriver(NetworkLifecycle, Maintenance):
    """Runs CNI networks for containers, like libcni.

    Build it and call :meth:`ensure_network` once (it loads the default network,
    ``settings.network``); :meth:`network_create` / :meth:`network_remove` per network;
    :meth:`setup` once per (container, network), :meth:`teardown` per container (every
    network); :meth:`gc` at start with the ids of the containers that still exist.
    """

    def __init__(
        self,
        settings: NyxSettings,
        options: CniSettings | None = None,
        firewall: InternalFirewall | None = None,
        links: HostLinks | None = None,
    ) -> None:
        self.settings = settings
        self.options = options or settings.plugin(CniSettings)
        self.exec = PluginExec(self.options.bin_dir, self.options.timeout)
        self.cache = ResultCache(settings.state_dir)
        self.records = ConflistRecords(settings.state_dir)
        self.firewall = firewall or InternalFirewall()
        self.links = links or HostLinks()
        self.networks: dict[str, CniNetwork] = {}
        self.loopback: NetworkConfig | None = None
        self.loopback_version = ""
        self.plugin_versions: dict[str, list[str]] = {}
        self.written: Path | None = None
        self._lock = threading.Lock()
        self._netlock = threading.RLock()  # network create/remove, one at a time
        self._attached: dict[str, Attachment] = {}
        self._inflight: dict[str, Attachment] = {}

    @property
    def network(self) -> NetworkConfig | None:
        """The default network's configuration (None before :meth:`ensure_network`)."""
        cn = self.networks.get(self.settings.network)
        return cn.config if cn else None

    @property
    def version(self) -> str:
        """The spec version the default network runs at."""
        cn = self.networks.get(self.settings.network)
        return cn.version if cn else ""

    # ------------------------------------------------------------------ network

    def load_network(self) -> NetworkConfig:
        """Find (or write the default) network configuration and validate it.

        A conflist that is nyx's own default for other IPv6 settings (written before
        ``NYXD_CONTAINER_SUBNET6`` was set, changed or unset) is rewritten for the current
        ones; any other conflist is used as it is."""
        s = self.settings
        o = self.options
        net = find_network(o.conf_dir, s.network, o.bin_dir)
        path = o.conf_dir / f"{s.network}.conflist"
        if net is not None and self._earlier_default(net):
            logger.info("default CNI conflist {} follows the new IPv6 settings", net.source)
            path, net = Path(net.source), None  # replaced in place (atomically)
        if net is None:
            net = parse_network(default_conflist(s, o.bridge), str(path), o.bin_dir)  # first
            try:
                write_conflist(path, default_conflist(s, o.bridge))
            except OSError as exc:
                raise ConfigError(
                    f"cni conf_dir {str(o.conf_dir)!r}: cannot write the default conflist "
                    f"{path}: {exc.strerror or exc}"
                ) from exc
            logger.info("wrote default CNI conflist {}", path)
            self.written = path
        return net

    def _earlier_default(self, net: NetworkConfig) -> bool:
        """``net`` is not the current default conflist but the one nyx writes for the same
        settings with another IPv6 part (none, or the subnet it has)."""
        s, bridge = self.settings, self.options.bridge
        current = parse_network(default_conflist(s, bridge), net.source).to_json()
        if net.to_json() == current or not net.source.endswith(".conflist"):
            return False
        v6 = addressing(net).one(6)
        others = [s.model_copy(update={"container_subnet6": None, "gateway_ip6": None})]
        if v6 is not None and isinstance(v6[0], ipaddress.IPv6Network):
            others.append(s.model_copy(update={"container_subnet6": v6[0], "gateway_ip6": v6[1]}))
        return any(
            net.to_json() == parse_network(default_conflist(o, bridge), net.source).to_json()
            for o in others
        )

    def negotiate(self, net: NetworkConfig) -> str:
        """The highest version of the config that nyx and every plugin support (VERSION)."""
        offered = sorted(
            (v for v in set(net.versions) if v in NYX_SUPPORTED_VERSIONS), key=ver, reverse=True
        )
        if not offered:
            raise ConfigError(
                f"{net.source}: cniVersion {net.cni_version!r}"
                f" (cniVersions {net.versions}) is not supported; nyx supports "
                + ", ".join(NYX_SUPPORTED_VERSIONS)
            )
        for p in net.plugins:
            kind = str(p["type"])
            if kind not in self.plugin_versions:
                self.plugin_versions[kind] = self.exec.version(kind, net.cni_version)
        for v in offered:
            if all(v in self.plugin_versions[str(p["type"])] for p in net.plugins):
                return v
        detail = "; ".join(
            f"{p['type']} supports {', '.join(self.plugin_versions[str(p['type'])])}"
            for p in net.plugins
        )
        raise ConfigError(
            f"{net.source}: cniVersion: no version of {', '.join(offered)} is supported by "
            f"every plugin ({detail})"
        )

    def ensure_network(self) -> dict[str, Any]:
        """Load, validate and negotiate the default network; prime it; load the result cache.

        Idempotent: a second call re-validates and changes nothing on the host.
        """
        net = self.load_network()
        self.plugin_versions.clear()  # binaries may have been upgraded since the last call
        version = self.negotiate(net)
        template = parse_network(default_conflist(self.settings, self.options.bridge), net.source)
        with self._lock:
            old = self.networks.get(net.name)
            cn = CniNetwork(net, version, template=net.to_json() == template.to_json())
            if old is not None and old.config.to_json() == net.to_json():
                cn.info, cn.spec, cn.internal_subnets = old.info, old.spec, old.internal_subnets
            self.networks[net.name] = cn
        lo_exe = self.options.bin_dir / "loopback"
        if self.options.loopback and os.access(lo_exe, os.X_OK):
            lo = loopback_network()
            self.loopback, self.loopback_version = lo, self.negotiate(lo)
        else:
            self.loopback = None
        with self._lock:
            self._load_index()
        self._load_firewall_marks()
        try:
            status = self.status()
        except CniPluginError as exc:  # informational (spec): ADD may still work
            logger.warning("CNI STATUS of network {}: {}", net.name, exc)
            status = {exc.plugin: f"error: {exc}"}
        if self.options.prime:
            self._prime(net.name)
        return {
            "driver": "cni",
            "network": net.name,
            "conflist": net.source,
            "cniVersion": version,
            "plugins": [p["type"] for p in net.plugins],
            "written": str(self.written) if self.written else None,
            "loopback": self.loopback is not None,
            "status": status,
        }

    def _require(self) -> CniNetwork:
        cn = self.networks.get(self.settings.network)
        if cn is None:
            raise BackendError("CNI driver: ensure_network was not called")
        return cn

    def network_for(self, name: str) -> CniNetwork:
        """The network ``name``: created before, or a conflist of that name in the conf dir
        (used as is, the way nyx used its one ``-network`` before networks had a lifecycle).
        """
        self._require()
        with self._lock:
            cn = self.networks.get(name)
        if cn is not None:
            return cn
        net = find_network(self.options.conf_dir, name, self.options.bin_dir)
        if net is None:
            raise ConfigError(
                f"network {name!r}: not created on the cni driver (nyx_backend_network_create) "
                f"and {self.options.conf_dir} has no conflist named {name!r}"
            )
        cn = CniNetwork(net, self.negotiate(net))
        with self._lock:
            return self.networks.setdefault(name, cn)

    def _load_index(self) -> None:
        for entry in self.cache.entries():
            att = self._attached.setdefault(entry.container_id, Attachment([], []))
            pair = (entry.network, entry.ifname)
            if pair not in att.pairs:
                att.pairs.append(pair)
                att.pairs.sort(key=pair_order)
                att.keys.extend(port_keys(entry.capability_args.get("portMappings") or []))

    def _load_firewall_marks(self) -> None:
        """Which attached containers have rules of their own in ``inet nyx-cni`` (teardown
        then deletes them). Asks nft only when something is attached."""
        with self._lock:
            if not self._attached:
                return
        if not self.firewall.available():
            return
        try:
            tags = self.firewall.tags()
        except NyxError as exc:
            logger.warning("cannot list nft table inet nyx-cni: {}", exc)
            return
        with self._lock:
            for cid, att in self._attached.items():
                prefix = att_tag_prefix(cid)
                att.fw = att.fw or any(t.startswith(prefix) for t in tags)

    def _prime(self, network: str) -> None:
        """One scratch ADD+DEL: creates what plugins share (bridge, top-level chains)."""
        cid = f"nyx-prime-{os.getpid()}"
        ports = [
            PortMapping(
                host_ip=ipaddress.ip_address("127.0.0.1"),
                host_port=_PRIME_PORT,
                container_port=_PRIME_PORT,
            )
        ]
        if cid in self.attached():  # left by a crashed nyxd that had the same pid
            self.teardown(cid, "")
        with scratch_netns() as path:
            try:
                self.setup(cid, path, ports, network=network, loopback=False)
            except PortConflictError:
                self.setup(cid, path, [], network=network, loopback=False)
            self.teardown(cid, path)

    # -------------------------------------------------------------------- setup

    def setup(
        self,
        container_id: str,
        netns_path: str,
        ports: Sequence[PortMapping] = (),
        *,
        network: str | None = None,
        ifname: str = "eth0",
        internal: bool = False,
        capability_args: Mapping[str, Any] | None = None,
        loopback: bool = True,
    ) -> SetupResult:
        """ADD the container to ``network`` (default: the default network) as ``ifname``;
        its first attachment also ADDs ``lo`` (the loopback network) before.

        ``internal``: the attachment's traffic must not leave its subnet (a rule in
        ``inet nyx-cni``; a network created internal has one for all its containers).
        ``capability_args`` adds runtime config (``ipRanges``, ``dns``, ``ips``, ``mac``,
        ``bandwidth``...) for plugins declaring that capability; ``ports`` become
        ``portMappings``. On failure every plugin this call ran gets a DEL, in reverse
        order; the container's other networks are untouched.
        """
        self._require()
        if not isinstance(container_id, str) or not _ID_RE.match(container_id):
            raise ConfigError(
                f"container_id {container_id!r}: must be letters, digits, '_', '.', '-'"
            )
        if not isinstance(netns_path, str) or not os.path.exists(netns_path):
            raise ConfigError(f"netns_path {netns_path!r}: no such network namespace")
        if not is_netns(netns_path):
            raise ConfigError(
                f"netns_path {netns_path!r}: not a network namespace (a stale file left "
                "where one was mounted?)"
            )
        if not re.match(r"^[^/\s:]{1,15}$", ifname) or ifname in (".", "..", "lo"):
            raise ConfigError(f"ifname {ifname!r}: not a valid interface name")
        cn = self.network_for(network or self.settings.network)
        net = cn.config
        confine = internal and not cn.internal_subnets  # the network's own rule covers it
        if confine:
            self.firewall.binary()  # missing nft: refused before anything changes
        caps = dict(capability_args or {})
        if ports:
            if not any((p.get("capabilities") or {}).get("portMappings") for p in net.plugins):
                raise ConfigError(
                    f"ports {[str(p) for p in ports]}: no plugin of CNI network {net.name!r} "
                    f"({net.source}) has the portMappings capability"
                )
            caps["portMappings"] = port_mappings(ports)
        keys = port_keys(caps.get("portMappings") or [])
        try:
            fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise ConfigError(f"netns_path {netns_path!r}: cannot open: {exc.strerror}") from exc
        try:
            with self._lock:
                prev = self._claim(container_id, net.name, ifname, fd)
                pairs = [(net.name, ifname)]
                if loopback and self.loopback is not None and prev is None:
                    pairs.insert(0, (LOOPBACK_NETWORK, "lo"))
                att = Attachment(keys, pairs, fd)
                if prev is not None and cn.template:  # the first network's default route stays
                    att.configs[net.name] = without_default_routes(net)
                self._check_ports(container_id, keys)
                self._inflight[container_id] = att
        except BaseException:
            os.close(fd)
            raise
        try:
            raw, steps = self._add(container_id, netns_path, att, caps)
            try:
                result = to_setup_result(
                    raw,
                    container_id=container_id,
                    network=net.name,
                    netns=netns_path,
                    ifname=ifname,
                )
                if confine:
                    addrs = [a for i in result.interfaces for a in i.addresses]
                    if not addrs:
                        raise BackendError(
                            f"container {container_id!r} on CNI network {net.name!r}: "
                            "internal, but the CNI result has no address to confine"
                        )
                    self.firewall.set(att_tag(container_id, ifname), drop_rules(addrs))
                    att.fw = True
            except BaseException as exc:
                # a result nyx cannot use, or no rule: undo this attachment like any failure
                for f in self._rollback(steps, att):
                    exc.add_note(f"rollback: {f}")
                raise
        except BaseException:
            with self._lock:
                self._inflight.pop(container_id, None)
            os.close(fd)
            raise
        with self._lock:
            self._inflight.pop(container_id, None)
            prev = self._attached.get(container_id)
            if prev is None:
                self._attached[container_id] = att
            else:
                prev.pairs.extend(att.pairs)
                prev.keys.extend(att.keys)
                prev.fw = prev.fw or att.fw
                if prev.fd is None:
                    prev.fd = fd
                else:
                    os.close(fd)
        result.internal = internal or bool(cn.internal_subnets)
        result.extra["bridge"] = bridge_of(net)
        if cn.template and not cn.settled6 and any(ip.version == 6 for ip in result.ips):
            self._settle_gateways6(cn)
        return result

    def _settle_gateways6(self, cn: CniNetwork) -> None:
        """Once per network nyx templated (the default one, generated ones), after its
        first IPv6 attachment (priming's, usually): its bridge's IPv6 gateway usable at once
        (:meth:`~._networks.HostLinks.settle_gateways6`). A failure is logged: the gateway
        then becomes usable when the kernel's duplicate address detection ends."""
        cn.settled6 = True
        bridge = bridge_of(cn.config)
        addr = addressing(cn.config)
        gws = [
            ipaddress.IPv6Interface(f"{gw}/{net.prefixlen}")
            for net, gw in zip(addr.subnets, addr.gateways, strict=True)
            if net.version == 6 and gw is not None
        ]
        if bridge is None or not gws:
            return
        try:
            self.links.settle_gateways6(bridge, gws)
        except NyxError as exc:
            logger.warning("network {}: IPv6 gateway of bridge {}: {}", cn.name, bridge, exc)

    def _claim(self, cid: str, network: str, ifname: str, fd: int) -> Attachment | None:
        """Refuse a second attachment of ``cid`` to ``network`` or as ``ifname`` (caller
        holds the lock); returns the container's attachments so far."""
        if cid in self._inflight:
            raise BackendError(f"container {cid!r}: another CNI setup of it is in progress")
        prev = self._attached.get(cid)
        if prev is None:
            return None
        for name, itf in prev.pairs:
            if name == network:
                raise BackendError(
                    f"container {cid!r} is already set up on CNI network {network!r} (as {itf})"
                )
            if itf == ifname:
                raise BackendError(
                    f"container {cid!r} already has interface {ifname!r} (on CNI network {name!r})"
                )
        if prev.fd is not None and not same_file(prev.fd, fd):
            raise BackendError(
                f"container {cid!r} is attached in another network namespace than this one"
            )
        return prev

    def _check_ports(self, cid: str, keys: list[tuple[str, str | None, int]]) -> None:
        taken: dict[tuple[str, int], list[tuple[str | None, str]]] = {}
        for owner, att in (*self._attached.items(), *self._inflight.items()):
            for proto, ip, port in att.keys:
                taken.setdefault((proto, port), []).append((ip, owner))
        for proto, ip, port in keys:
            for other_ip, owner in taken.get((proto, port), []):
                if ip is None or other_ip is None or ip == other_ip:
                    shown = f"{ip}:" if ip else ""
                    raise PortConflictError(
                        f"host port {shown}{port}/{proto} for container {cid!r} is already "
                        f"published by container {owner!r}"
                    )
            taken.setdefault((proto, port), []).append((ip, cid))

    def _config_of(self, name: str) -> tuple[NetworkConfig, str]:
        if name == LOOPBACK_NETWORK:
            assert self.loopback is not None
            return self.loopback, self.loopback_version
        cn = self.networks[name]
        return cn.config, cn.version

    def _add(
        self, cid: str, netns: str, att: Attachment, caps: dict[str, Any]
    ) -> tuple[dict[str, Any], list[Progress]]:
        steps: list[Progress] = []
        try:
            result: dict[str, Any] | None = None
            for name, ifname in att.pairs:
                cfg, ver = self._config_of(name)
                cfg = att.configs.get(name, cfg)
                args = {} if name == LOOPBACK_NETWORK else caps
                entry = CacheEntry(
                    network=cfg.name,
                    container_id=cid,
                    ifname=ifname,
                    config=cfg.to_json(ver),
                    netns=netns,
                    capability_args=args,
                    cni_args=cni_args(cid),
                )
                self.cache.put(entry)  # pending: a crash from here on is found by GC
                step = Progress(cfg, ver, ifname, entry)
                steps.append(step)
                req = PluginRequest("ADD", cid, netns, ifname, entry.cni_args_text)
                for plugin in cfg.plugins:
                    step.tried += 1
                    conf = request_config(
                        plugin,
                        name=cfg.name,
                        cni_version=ver,
                        prev_result=step.prev,
                        capability_args=args,
                    )
                    out = self.exec.run(str(plugin["type"]), req, conf)
                    if out is None:
                        raise CniPluginError(str(plugin["type"]), "ADD: printed no result")
                    step.prev = out
                entry.result = step.prev
                self.cache.put(entry)
                result = step.prev
            assert result is not None
            return result, steps
        except BaseException as exc:
            failures = self._rollback(steps, att)
            for f in failures:
                exc.add_note(f"rollback: {f}")
            raise

    def _rollback(self, steps: list[Progress], att: Attachment) -> list[NyxError]:
        failures: list[NyxError] = []
        for step in reversed(steps):
            cid = step.entry.container_id
            netns = self._netns_for(step.entry.netns, att)
            errs = self._del_plugins(
                step.net,
                step.version,
                step.net.plugins[: step.tried],
                PluginRequest("DEL", cid, netns, step.ifname, step.entry.cni_args_text),
                step.prev,
                step.entry.capability_args,
            )
            if errs:
                failures.extend(errs)
                # keep the entry, with what was added so far, for a later teardown or GC
                step.entry.result = step.prev
                self.cache.put(step.entry)
            else:
                self.cache.delete(step.net.name, step.entry.container_id, step.ifname)
        if failures:
            cid = steps[0].entry.container_id
            logger.error("CNI rollback of {} left errors: {}", cid, failures)
        return failures

    # ----------------------------------------------------------------- teardown

    @staticmethod
    def _netns_for(path: str, att: Attachment | None) -> str:
        if path and is_netns(path):
            return path
        if att is not None and att.fd is not None:
            # the bind mount is gone (or a stale file is left) but nyx still holds the
            # namespace open: DEL there, so plugins remove the interface and what they keyed
            # to its addresses
            return f"/proc/{os.getpid()}/fd/{att.fd}"
        return ""

    def _del_plugins(
        self,
        net: NetworkConfig,
        version: str,
        plugins: Sequence[Mapping[str, Any]],
        req: PluginRequest,
        prev: Mapping[str, Any] | None,
        caps: Mapping[str, Any],
    ) -> list[NyxError]:
        errors: list[NyxError] = []
        if ver(version) < (0, 4, 0):
            prev = None  # prevResult on DEL exists since 0.4.0
        for plugin in reversed(plugins):
            conf = request_config(
                plugin, name=net.name, cni_version=version, prev_result=prev, capability_args=caps
            )
            try:
                self.exec.run(str(plugin["type"]), req, conf)
            except NyxError as exc:
                errors.append(exc)
        return errors

    def teardown(self, container_id: str, netns_path: str) -> None:
        """DEL every attachment of the container, the reverse of the order they were added
        (cached config and result), then its own ``internal`` rules. Idempotent.

        Goes on after a failing plugin and raises one :class:`~nyx_core.TeardownError` at the
        end; a failed attachment keeps its cache entry so a later teardown or GC retries.
        """
        self._require()
        with self._lock:
            att = self._attached.pop(container_id, None)
        if att is not None:
            pairs = att.pairs
        else:  # e.g. entries another process wrote: a cheap scan of the cache
            found = self.cache.entries(container_id=container_id)
            pairs = sorted({(e.network, e.ifname) for e in found}, key=pair_order)
        errors: list[NyxError] = []
        try:
            for name, ifname in reversed(pairs):
                entry = self.cache.get(name, container_id, ifname)
                if entry is None:
                    continue
                errors.extend(self._del_entry(entry, netns_path, att))
            if att is not None and att.fw:
                prefix = att_tag_prefix(container_id)
                try:
                    self.firewall.delete(lambda t: t.startswith(prefix))
                except NyxError as exc:
                    errors.append(exc)
        finally:
            if att is not None and att.fd is not None:
                os.close(att.fd)
                att.fd = None
        if errors:
            names = ", ".join(repr(n) for n, _ in pairs if n != LOOPBACK_NETWORK)
            raise TeardownError(
                f"container {container_id!r} on CNI network(s) {names}",
                list[BaseException](errors),
            )

    def _del_entry(
        self, entry: CacheEntry, netns_path: str, att: Attachment | None
    ) -> list[NyxError]:
        where = str(self.cache.path(entry.network, entry.container_id, entry.ifname))
        try:
            cfg = parse_network(entry.config, f"cache entry {where}")
        except ConfigError as exc:
            return [exc]
        netns = self._netns_for(netns_path or entry.netns, att)
        req = PluginRequest("DEL", entry.container_id, netns, entry.ifname, entry.cni_args_text)
        errs = self._del_plugins(
            cfg, cfg.cni_version, cfg.plugins, req, entry.result, entry.capability_args
        )
        if not errs:
            self.cache.delete(entry.network, entry.container_id, entry.ifname)
        return errs

    def attached(self) -> list[str]:
        """Container ids this driver has attached (from memory and the cache)."""
        with self._lock:
            return sorted(self._attached)

    def close(self) -> None:
        """Release the namespaces held open for attached containers."""
        with self._lock:
            for att in self._attached.values():
                if att.fd is not None:
                    os.close(att.fd)
                    att.fd = None
