"""The CNI driver: ADD/DEL/CHECK/GC/STATUS over a network configuration, per the CNI spec."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loguru import logger
from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from nyx_core import (
    BackendError,
    CniPluginError,
    ConfigError,
    NyxError,
    NyxSettings,
    PluginSettings,
    PortConflictError,
    PortMapping,
    SetupResult,
    TeardownError,
    plugin_settings_config,
)

from ._cache import CacheEntry, ResultCache
from ._conf import (
    LOOPBACK_NETWORK,
    NYX_SUPPORTED_VERSIONS,
    NetworkConfig,
    default_conflist,
    find_network,
    loopback_network,
    parse_network,
    parse_version,
)
from ._exec import DEFAULT_TIMEOUT, PluginExec, PluginRequest
from ._netns import scratch_netns
from ._result import port_mappings, request_config, to_setup_result

__all__ = ["CniDriver", "CniSettings", "GcReport"]

_ID_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_PRIME_PORT = 65535


class CniSettings(PluginSettings):
    """The CNI driver's own settings (env ``NYXD_CNI_*``; nyxd adds their flags).

    ``--cni-bin-dir``, ``--cni-conf-dir`` and ``--bridge`` are the spec's flags.
    """

    model_config = SettingsConfigDict(**plugin_settings_config("cni"), populate_by_name=True)

    bin_dir: Path = Field(
        default=Path("/opt/cni/bin"), description="directory with the CNI plugin executables"
    )
    conf_dir: Path = Field(
        default=Path("/etc/cni/net.d"), description="directory with CNI network configurations"
    )
    bridge: str = Field(
        default="nyx0",
        pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,14}$",
        description="bridge of the default conflist nyx writes when none exists",
        validation_alias=AliasChoices("NYXD_CNI_BRIDGE", "NYXD_BRIDGE"),
        json_schema_extra={"flags": ["--bridge", "--cni-bridge"]},
    )

    timeout: float = Field(
        default=DEFAULT_TIMEOUT, gt=0, description="seconds one plugin execution may take"
    )
    loopback: bool = Field(
        default=True, description="bring up the container's lo with the loopback plugin"
    )
    prime: bool = Field(
        default=True,
        description="at ensure_network, add and delete one scratch attachment so the bridge "
        "and the plugins' shared firewall chains exist before the first container",
    )


@dataclass
class GcReport:
    """What :meth:`CniDriver.gc` did."""

    removed: list[str] = field(default_factory=list)
    """Container ids whose stale attachments were deleted (DEL with the cached result)."""
    gc_plugins: list[str] = field(default_factory=list)
    """Plugins that got a spec 1.1 ``GC`` command."""
    errors: list[NyxError] = field(default_factory=list)


@dataclass
class _Attachment:
    keys: list[tuple[str, str | None, int]]
    pairs: list[tuple[str, str]]  # (network, ifname)
    fd: int | None = None


@dataclass
class _Progress:
    net: NetworkConfig
    version: str
    ifname: str
    entry: CacheEntry
    tried: int = 0
    prev: dict[str, Any] | None = None


def _ver(v: str) -> tuple[int, int, int]:
    return parse_version(v)


def cni_args(container_id: str) -> list[list[str]]:
    """The ``CNI_ARGS`` pairs nyx passes: podman's convention, the container id as pod name
    (dnsname registers that name)."""
    return [["IgnoreUnknown", "1"], ["K8S_POD_NAME", container_id]]


def _port_keys(mappings: Iterable[Mapping[str, Any]]) -> list[tuple[str, str | None, int]]:
    keys = []
    for m in mappings:
        ip = m.get("hostIP") or None
        if ip in ("0.0.0.0", "::"):
            ip = None
        keys.append((str(m.get("protocol", "tcp")).lower(), ip, int(m["hostPort"])))
    return keys


class CniDriver:
    """Runs one CNI network (``settings.network``) for containers, like libcni.

    Build it, call :meth:`ensure_network` once, then :meth:`setup` / :meth:`teardown` per
    container; :meth:`gc` at start with the ids of the containers that still exist.
    """

    def __init__(self, settings: NyxSettings, options: CniSettings | None = None) -> None:
        self.settings = settings
        self.options = options or settings.plugin(CniSettings)
        self.exec = PluginExec(self.options.bin_dir, self.options.timeout)
        self.cache = ResultCache(settings.state_dir)
        self.network: NetworkConfig | None = None
        self.version = ""
        self.loopback: NetworkConfig | None = None
        self.loopback_version = ""
        self.plugin_versions: dict[str, list[str]] = {}
        self.written: Path | None = None
        self._lock = threading.Lock()
        self._attached: dict[str, _Attachment] = {}
        self._inflight: dict[str, _Attachment] = {}

    # ------------------------------------------------------------------ network

    def load_network(self) -> NetworkConfig:
        """Find (or write the default) network configuration and validate it."""
        s = self.settings
        o = self.options
        net = find_network(o.conf_dir, s.network, o.bin_dir)
        if net is None:
            path = o.conf_dir / f"{s.network}.conflist"
            net = parse_network(default_conflist(s, o.bridge), str(path), o.bin_dir)  # first
            try:
                o.conf_dir.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                tmp.write_text(json.dumps(default_conflist(s, o.bridge), indent=2) + "\n")
                os.replace(tmp, path)
            except OSError as exc:
                raise ConfigError(
                    f"cni conf_dir {str(o.conf_dir)!r}: cannot write the default conflist "
                    f"{path}: {exc.strerror or exc}"
                ) from exc
            logger.info("wrote default CNI conflist {}", path)
            self.written = path
        return net

    def negotiate(self, net: NetworkConfig) -> str:
        """The highest version of the config that nyx and every plugin support (VERSION)."""
        offered = sorted(
            (v for v in set(net.versions) if v in NYX_SUPPORTED_VERSIONS), key=_ver, reverse=True
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
        """Load, validate and negotiate the network; prime it; load the result cache.

        Idempotent: a second call re-validates and changes nothing on the host.
        """
        net = self.load_network()
        self.plugin_versions.clear()  # binaries may have been upgraded since the last call
        version = self.negotiate(net)
        self.network, self.version = net, version
        lo_exe = self.options.bin_dir / "loopback"
        if self.options.loopback and os.access(lo_exe, os.X_OK):
            lo = loopback_network()
            self.loopback, self.loopback_version = lo, self.negotiate(lo)
        else:
            self.loopback = None
        with self._lock:
            self._load_index()
        try:
            status = self.status()
        except CniPluginError as exc:  # informational (spec): ADD may still work
            logger.warning("CNI STATUS of network {}: {}", net.name, exc)
            status = {exc.plugin: f"error: {exc}"}
        if self.options.prime:
            self._prime()
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

    def _require(self) -> NetworkConfig:
        if self.network is None:
            raise BackendError("CNI driver: ensure_network was not called")
        return self.network

    def _load_index(self) -> None:
        for entry in self.cache.entries():
            if entry.network not in (self.settings.network, LOOPBACK_NETWORK):
                continue
            att = self._attached.setdefault(entry.container_id, _Attachment([], []))
            pair = (entry.network, entry.ifname)
            if pair not in att.pairs:
                att.pairs.append(pair)
                att.keys.extend(_port_keys(entry.capability_args.get("portMappings") or []))

    def _prime(self) -> None:
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
                self.setup(cid, path, ports, loopback=False)
            except PortConflictError:
                self.setup(cid, path, [], loopback=False)
            self.teardown(cid, path)

    # -------------------------------------------------------------------- setup

    def setup(
        self,
        container_id: str,
        netns_path: str,
        ports: Sequence[PortMapping] = (),
        *,
        ifname: str = "eth0",
        capability_args: Mapping[str, Any] | None = None,
        loopback: bool = True,
    ) -> SetupResult:
        """ADD ``lo`` (loopback network) and ``ifname`` (the network) for a container.

        ``capability_args`` adds runtime config (``ipRanges``, ``dns``, ``ips``, ``mac``,
        ``bandwidth``...) for plugins declaring that capability; ``ports`` become
        ``portMappings``. On failure every plugin already run gets a DEL, in reverse order.
        """
        net = self._require()
        if not isinstance(container_id, str) or not _ID_RE.match(container_id):
            raise ConfigError(
                f"container_id {container_id!r}: must be letters, digits, '_', '.', '-'"
            )
        if not isinstance(netns_path, str) or not os.path.exists(netns_path):
            raise ConfigError(f"netns_path {netns_path!r}: no such network namespace")
        if not re.match(r"^[^/\s:]{1,15}$", ifname) or ifname in (".", ".."):
            raise ConfigError(f"ifname {ifname!r}: not a valid interface name")
        caps = dict(capability_args or {})
        if ports:
            if not any((p.get("capabilities") or {}).get("portMappings") for p in net.plugins):
                raise ConfigError(
                    f"ports {[str(p) for p in ports]}: no plugin of CNI network {net.name!r} "
                    f"({net.source}) has the portMappings capability"
                )
            caps["portMappings"] = port_mappings(ports)
        keys = _port_keys(caps.get("portMappings") or [])
        pairs = [(net.name, ifname)]
        if loopback and self.loopback is not None:
            pairs.insert(0, (LOOPBACK_NETWORK, "lo"))
        try:
            fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise ConfigError(f"netns_path {netns_path!r}: cannot open: {exc.strerror}") from exc
        att = _Attachment(keys, pairs, fd)
        try:
            with self._lock:
                if container_id in self._attached or container_id in self._inflight:
                    raise BackendError(
                        f"container {container_id!r} is already set up on CNI network "
                        f"{net.name!r} (the CNI driver attaches each container to that one "
                        "network; extra networks need the native driver)"
                    )
                self._check_ports(container_id, keys)
                self._inflight[container_id] = att
        except BaseException:
            os.close(fd)
            raise
        try:
            result = self._add(container_id, netns_path, att, caps)
        except BaseException:
            with self._lock:
                self._inflight.pop(container_id, None)
            os.close(fd)
            raise
        with self._lock:
            self._inflight.pop(container_id, None)
            self._attached[container_id] = att
        try:
            return to_setup_result(
                result,
                container_id=container_id,
                network=net.name,
                netns=netns_path,
                ifname=ifname,
            )
        except NyxError as exc:
            try:  # a result nyx cannot use: undo the attachment like any failed setup
                self.teardown(container_id, netns_path)
            except NyxError as undo:
                exc.add_note(f"rollback: {undo}")
            raise

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

    def _add(self, cid: str, netns: str, att: _Attachment, caps: dict[str, Any]) -> dict[str, Any]:
        net = self._require()
        steps: list[_Progress] = []
        try:
            result: dict[str, Any] | None = None
            for name, ifname in att.pairs:
                if name == LOOPBACK_NETWORK:
                    assert self.loopback is not None
                    cfg, ver, args = self.loopback, self.loopback_version, {}
                else:
                    cfg, ver, args = net, self.version, caps
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
                step = _Progress(cfg, ver, ifname, entry)
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
            return result
        except BaseException as exc:
            failures = self._rollback(steps, att)
            for f in failures:
                exc.add_note(f"rollback: {f}")
            if failures:
                logger.error("CNI rollback of {} left errors: {}", cid, failures)
            raise

    def _rollback(self, steps: list[_Progress], att: _Attachment) -> list[NyxError]:
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
        return failures

    # ----------------------------------------------------------------- teardown

    @staticmethod
    def _netns_for(path: str, att: _Attachment | None) -> str:
        if path and os.path.exists(path):
            return path
        if att is not None and att.fd is not None:
            # the bind mount is gone but nyx still holds the namespace open: DEL there, so
            # plugins remove the interface and what they keyed to its addresses
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
        if _ver(version) < (0, 4, 0):
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
        """DEL every attachment of the container (reverse order, cached result). Idempotent.

        Goes on after a failing plugin and raises one :class:`~nyx_core.TeardownError` at the
        end; a failed attachment keeps its cache entry so a later teardown or GC retries.
        """
        net = self._require()
        with self._lock:
            att = self._attached.pop(container_id, None)
        pairs = att.pairs if att else [(LOOPBACK_NETWORK, "lo"), (net.name, "eth0")]
        errors: list[NyxError] = []
        try:
            for name, ifname in reversed(pairs):
                entry = self.cache.get(name, container_id, ifname)
                if entry is None:
                    continue
                errors.extend(self._del_entry(entry, netns_path, att))
        finally:
            if att is not None and att.fd is not None:
                os.close(att.fd)
                att.fd = None
        if errors:
            raise TeardownError(
                f"container {container_id!r} on CNI network {net.name!r}",
                list[BaseException](errors),
            )

    def _del_entry(
        self, entry: CacheEntry, netns_path: str, att: _Attachment | None
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

    # ----------------------------------------------------------- CHECK, GC, STATUS

    def check(self, container_id: str) -> None:
        """CHECK every attachment of the container with its cached ADD result.

        Skipped for networks with ``disableCheck`` or a version below 0.4.0. Raises
        :class:`~nyx_core.CniPluginError` for the first plugin that reports a problem.
        """
        net = self._require()
        found = False
        for name, ifname in ((LOOPBACK_NETWORK, "lo"), (net.name, "eth0")):
            entry = self.cache.get(name, container_id, ifname)
            if entry is None:
                continue
            found = True
            cfg = parse_network(entry.config, f"cache entry of {container_id}")
            if cfg.disable_check or _ver(cfg.cni_version) < (0, 4, 0):
                continue
            if entry.result is None:
                raise BackendError(f"container {container_id!r}: ADD on {name!r} did not finish")
            req = PluginRequest("CHECK", container_id, entry.netns, ifname, entry.cni_args_text)
            for plugin in cfg.plugins:
                conf = request_config(
                    plugin,
                    name=cfg.name,
                    cni_version=cfg.cni_version,
                    prev_result=entry.result,
                    capability_args=entry.capability_args,
                )
                self.exec.run(str(plugin["type"]), req, conf)
        if not found:
            raise BackendError(f"container {container_id!r} is not set up on CNI network")

    def _supports_11(self, plugin: Mapping[str, Any]) -> bool:
        return "1.1.0" in self.plugin_versions.get(str(plugin["type"]), [])

    def gc(self, valid_container_ids: Iterable[str]) -> GcReport:
        """Garbage-collect the network: nyxd calls it at start, before any setup.

        1. DEL (with the cached config and result) every cached attachment whose container
           id is not in ``valid_container_ids`` (also attachments a crash left half-added);
        2. send spec 1.1 ``GC`` with ``cni.dev/valid-attachments`` to every plugin that
           supports 1.1.0 (older plugins only get step 1).

        Nothing happens for a network with ``disableGC``. Goes on after errors and raises
        one :class:`~nyx_core.TeardownError` at the end.
        """
        net = self._require()
        report = GcReport()
        if net.disable_gc:
            return report
        valid = set(valid_container_ids)
        with self._lock:
            busy = set(self._inflight)
        stale: dict[str, list[CacheEntry]] = {}
        for e in self.cache.entries():
            if (
                e.network in (net.name, LOOPBACK_NETWORK)
                and e.container_id not in valid
                and e.container_id not in busy
            ):
                stale.setdefault(e.container_id, []).append(e)
        for cid in sorted(stale):
            with self._lock:
                att = self._attached.pop(cid, None)
            errs: list[NyxError] = []
            # the reverse of setup: the network first, the loopback attachment last
            for e in sorted(stale[cid], key=lambda e: e.network == LOOPBACK_NETWORK):
                errs.extend(self._del_entry(e, "", att))
            if att is not None and att.fd is not None:
                os.close(att.fd)
            report.errors.extend(errs)
            if not errs:
                report.removed.append(cid)
        remaining = self.cache.entries()
        for cfg in (net, self.loopback):
            if cfg is None:
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
            raise TeardownError(f"GC of CNI network {net.name!r}", list(report.errors))
        return report

    def status(self) -> dict[str, str]:
        """STATUS of every plugin that supports spec 1.1.0.

        Returns ``{plugin: "ok" | "no STATUS (spec < 1.1.0)"}``; raises
        :class:`~nyx_core.CniPluginError` (code 50/51) for a plugin that cannot serve ADD.
        """
        net = self._require()
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

