"""CNI network configurations: load, validate, and write the default one.

A network configuration ("conflist") is found by its ``name`` in the conf dir, among
``*.conflist`` files first and then single-plugin ``*.conf`` / ``*.json`` files (as libcni
does). Every error names the file and the field.
"""

from __future__ import annotations

import copy
import dataclasses
import ipaddress
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nyx_core import ConfigError, NyxSettings

__all__ = [
    "LOOPBACK_NETWORK",
    "NYX_SUPPORTED_VERSIONS",
    "Addressing",
    "NetworkConfig",
    "addressing",
    "bridge_of",
    "conflists",
    "default_conflist",
    "find_network",
    "loopback_network",
    "network_conflist",
    "parse_network",
    "parse_version",
    "without_default_routes",
]

NYX_SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
"""Spec versions nyx speaks (conflists, ``prevResult`` chaining and the result type)."""

LOOPBACK_NETWORK = "cni-loopback"
"""Name of the built-in network that brings up the container's ``lo``."""

_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_VERSION_RE = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
_RESERVED_KEYS = ("runtimeConfig", "prevResult")


def parse_version(text: str) -> tuple[int, int, int]:
    """``"1.0.0"`` -> ``(1, 0, 0)``; raises ValueError for anything else."""
    m = _VERSION_RE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a version like 1.0.0")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


@dataclass
class NetworkConfig:
    """One validated network configuration (a list of plugin configurations)."""

    name: str
    cni_version: str
    versions: list[str]
    plugins: list[dict[str, Any]]
    source: str
    disable_check: bool = False
    disable_gc: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self, version: str | None = None) -> dict[str, Any]:
        """The conflist as a JSON object (with ``version`` as ``cniVersion`` if given)."""
        obj: dict[str, Any] = dict(self.extra)
        obj.update(
            cniVersion=version or self.cni_version,
            name=self.name,
            plugins=copy.deepcopy(self.plugins),
        )
        if self.versions != [self.cni_version]:
            obj["cniVersions"] = list(self.versions)
        if self.disable_check:
            obj["disableCheck"] = True
        if self.disable_gc:
            obj["disableGC"] = True
        return obj


def _check_type(source: str, where: str, value: Any, bin_dir: Path | None) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{source}: {where} must be a non-empty string, got {value!r}")
    if "/" in value or "\\" in value or value in (".", "..") or "\0" in value:
        raise ConfigError(
            f"{source}: {where} {value!r} must be a plain file name (no path separators)"
        )
    if bin_dir is not None:
        exe = bin_dir / value
        if not exe.is_file() or not os.access(exe, os.X_OK):
            raise ConfigError(f"{source}: {where} {value!r}: no executable {exe}")
    return value


def _key(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _check_plugin(source: str, where: str, conf: Any, bin_dir: Path | None) -> dict[str, Any]:
    if not isinstance(conf, dict):
        raise ConfigError(f"{source}: {where} must be a JSON object, got {type(conf).__name__}")
    _check_type(source, _key(where, "type"), conf.get("type"), bin_dir)
    caps = conf.get("capabilities")
    if caps is not None and (
        not isinstance(caps, dict) or not all(isinstance(v, bool) for v in caps.values())
    ):
        raise ConfigError(f"{source}: {_key(where, 'capabilities')} must map names to true/false")
    ipam = conf.get("ipam")
    if ipam is not None:
        if not isinstance(ipam, dict):
            raise ConfigError(f"{source}: {_key(where, 'ipam')} must be a JSON object")
        if ipam:  # an empty ipam object means "no IPAM" to most plugins
            _check_type(source, _key(where, "ipam.type"), ipam.get("type"), bin_dir)
    for key in _RESERVED_KEYS:
        if key in conf:
            raise ConfigError(f"{source}: {_key(where, key)} is set by the runtime, remove it")
    return conf


def _check_version(source: str, where: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f'{source}: {where} must be a string like "1.0.0", got {value!r}')
    try:
        parse_version(value)
    except ValueError as exc:
        raise ConfigError(f"{source}: {where} {exc}") from exc
    return value


def parse_network(
    obj: Any,
    source: str,
    bin_dir: Path | None = None,
    *,
    conflist: bool | None = None,
    aggregated: Sequence[tuple[Path, Any]] = (),
) -> NetworkConfig:
    """Validate a parsed conflist (or single plugin ``.conf``) object.

    ``bin_dir`` given: every plugin ``type`` (and ``ipam.type``) must be an executable there.
    ``conflist`` None: a conflist when it has ``plugins``. ``aggregated``: plugin objects
    from ``<conf dir>/<name>/*.conf`` (spec 1.1), appended after the inlined ones.
    """
    if not isinstance(obj, dict):
        raise ConfigError(f"{source}: must be a JSON object, got {type(obj).__name__}")
    name = obj.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(
            f"{source}: name {name!r} must start with a letter or digit, then letters, digits, "
            "'_', '.' or '-'"
        )
    version = _check_version(source, "cniVersion", obj.get("cniVersion"))
    versions = obj.get("cniVersions")
    if versions is None:
        versions = [version]
    elif not isinstance(versions, list):
        raise ConfigError(f"{source}: cniVersions must be a list of versions")
    else:
        versions = [_check_version(source, f"cniVersions[{i}]", v) for i, v in enumerate(versions)]
        if version not in versions:
            versions.append(version)
    for key in ("disableCheck", "disableGC", "loadOnlyInlinedPlugins"):
        if key in obj and not isinstance(obj[key], bool):
            raise ConfigError(f"{source}: {key} must be true or false, got {obj[key]!r}")
    if conflist is None:
        conflist = "plugins" in obj
    if conflist:
        plugins = obj.get("plugins")
        if plugins is None and obj.get("loadOnlyInlinedPlugins") is True:
            raise ConfigError(f"{source}: loadOnlyInlinedPlugins is true but plugins is missing")
        if plugins is None and aggregated:
            plugins = []
        if not isinstance(plugins, list) or not (plugins or aggregated):
            raise ConfigError(f"{source}: plugins must be a non-empty list of plugin objects")
        checked = [
            _check_plugin(source, f"plugins[{i}]", p, bin_dir) for i, p in enumerate(plugins)
        ]
        for path, conf in aggregated:
            checked.append(_check_plugin(str(path), "", conf, bin_dir))
        known = {
            "name",
            "cniVersion",
            "cniVersions",
            "plugins",
            "disableCheck",
            "disableGC",
            "loadOnlyInlinedPlugins",
        }
        extra = {k: v for k, v in obj.items() if k not in known}
    else:
        # a single-plugin .conf: the whole object is the plugin configuration
        if "type" not in obj:
            raise ConfigError(f"{source}: has neither plugins (conflist) nor type (single conf)")
        single = {k: v for k, v in obj.items() if k not in ("name", "cniVersion", "cniVersions")}
        checked = [_check_plugin(source, "", single, bin_dir)]
        extra = {}
    return NetworkConfig(
        name=name,
        cni_version=version,
        versions=list(versions),
        plugins=copy.deepcopy(checked),
        source=source,
        disable_check=bool(obj.get("disableCheck", False)),
        disable_gc=bool(obj.get("disableGC", False)),
        extra=extra,
    )


def _load_json(path: Path) -> Any:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc


def find_network(conf_dir: Path, name: str, bin_dir: Path | None = None) -> NetworkConfig | None:
    """The network ``name`` from ``conf_dir``, or None when no file defines it.

    ``.conflist`` files win over ``.conf``/``.json``; within a kind files are tried in
    lexical order (libcni's rule). A conflist without ``loadOnlyInlinedPlugins: true`` also
    gets the plugin objects of ``<conf_dir>/<name>/*.conf`` appended (spec 1.1). A file that
    is not valid JSON is an error naming it.
    """
    if not conf_dir.is_dir():
        return None
    entries = sorted(p for p in conf_dir.iterdir() if p.is_file())
    for path in (p for p in entries if p.suffix == ".conflist"):
        obj = _load_json(path)
        if isinstance(obj, dict) and obj.get("name") == name:
            aggregated = []
            sub = conf_dir / name
            if obj.get("loadOnlyInlinedPlugins") is not True and sub.is_dir():
                aggregated = [
                    (p, _load_json(p)) for p in sorted(sub.iterdir()) if p.suffix == ".conf"
                ]
            return parse_network(obj, str(path), bin_dir, conflist=True, aggregated=aggregated)
    for path in (p for p in entries if p.suffix in (".conf", ".json")):
        obj = _load_json(path)
        if isinstance(obj, dict) and obj.get("name") == name:
            return parse_network(obj, str(path), bin_dir)
    return None


def network_conflist(
    name: str,
    subnet: ipaddress.IPv4Network,
    gateway: ipaddress.IPv4Address,
    bridge: str,
    data_dir: Path,
    *,
    internal: bool = False,
    host_dns: ipaddress.IPv4Address | None = None,
    mtu: int | None = None,
    subnet6: ipaddress.IPv6Network | None = None,
    gateway6: ipaddress.IPv6Address | None = None,
    host_dns6: ipaddress.IPv6Address | None = None,
) -> dict[str, Any]:
    """The conflist template nyx generates for a network: bridge (gateway on ``bridge``,
    masquerade unless ``internal``) with host-local IPAM (leases under ``data_dir``), then
    portmap for published ports.

    Dual stack when ``subnet6`` is given: a second ``ranges`` entry (``gateway6``, default
    the subnet's first address), so host-local hands out one address of each family, and a
    default route ``::/0`` besides ``0.0.0.0/0``; the bridge plugin puts both gateways on
    the bridge and masquerades both families (ip6tables for IPv6).

    An internal network gives its containers no default route, only one to ``host_dns``
    (nyxd's address, where embedded DNS listens; ``host_dns6`` for IPv6) through its
    gateway; nyx's ``inet nyx-cni`` table drops whatever would still leave the subnet.
    """
    bridge_conf: dict[str, Any] = {
        "type": "bridge",
        "bridge": bridge,
        "isGateway": True,
        "ipMasq": not internal,
        "hairpinMode": True,
    }
    if mtu is not None:
        bridge_conf["mtu"] = mtu
    routes: list[dict[str, str]] = [{"dst": "0.0.0.0/0"}]
    if internal:
        routes = [] if host_dns is None or host_dns in subnet else [{"dst": f"{host_dns}/32"}]
    ranges = [[{"subnet": str(subnet), "gateway": str(gateway)}]]
    if subnet6 is not None:
        gw6 = gateway6 or subnet6.network_address + 1
        ranges.append([{"subnet": str(subnet6), "gateway": str(gw6)}])
        if not internal:
            routes.append({"dst": "::/0"})
        elif host_dns6 is not None and host_dns6 not in subnet6:
            routes.append({"dst": f"{host_dns6}/128"})
    bridge_conf["ipam"] = {
        "type": "host-local",
        "ranges": ranges,
        "routes": routes,
        "dataDir": str(data_dir),
    }
    return {
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [bridge_conf, {"type": "portmap", "capabilities": {"portMappings": True}}],
    }


DEFAULT_ROUTES = ("0.0.0.0/0", "::/0")


def without_default_routes(net: NetworkConfig) -> NetworkConfig:
    """``net`` with the default routes taken out of every plugin's IPAM ``routes``: what a
    container's second (third...) generated network gets, so its default route stays the
    first network's (as with the native driver and Docker)."""
    plugins = copy.deepcopy(net.plugins)
    for plugin in plugins:
        ipam = plugin.get("ipam")
        if isinstance(ipam, dict) and isinstance(ipam.get("routes"), list):
            ipam["routes"] = [
                r
                for r in ipam["routes"]
                if not (isinstance(r, dict) and r.get("dst") in DEFAULT_ROUTES)
            ]
    return dataclasses.replace(net, plugins=plugins)


def default_conflist(settings: NyxSettings, bridge: str = "nyx0") -> dict[str, Any]:
    """The conflist nyx writes when ``-network`` names no existing configuration.

    :func:`network_conflist` for ``NYXD_CONTAINER_SUBNET`` / ``NYXD_GATEWAY_IP`` (and
    ``NYXD_CONTAINER_SUBNET6`` / ``NYXD_GATEWAY_IP6``: dual stack) on ``bridge``, leases
    under ``<state dir>/cni/networks``.
    """
    return network_conflist(
        settings.network,
        settings.container_subnet,
        settings.gateway_ip,
        bridge,
        settings.state_dir / "cni" / "networks",
        subnet6=settings.container_subnet6,
        gateway6=settings.gateway6,
    )


Subnet = ipaddress.IPv4Network | ipaddress.IPv6Network
Gateway = ipaddress.IPv4Address | ipaddress.IPv6Address | None


@dataclass
class Addressing:
    """What a conflist's IPAM says about its addresses (:func:`addressing`)."""

    subnets: list[Subnet] = field(default_factory=list)
    gateways: list[Gateway] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    """IPAM types whose addresses nyx cannot read from the configuration (dhcp...)."""

    def one(self, version: int) -> tuple[Subnet, Gateway] | None:
        """The one subnet of IP ``version`` and its gateway, when there is exactly one."""
        found = [
            (s, g) for s, g in zip(self.subnets, self.gateways, strict=True) if s.version == version
        ]
        return found[0] if len(found) == 1 else None


def _add_subnet(out: Addressing, source: str, where: str, subnet: Any, gateway: Any) -> None:
    try:
        net = ipaddress.ip_network(str(subnet), strict=False)
        gw = ipaddress.ip_address(str(gateway)) if gateway else None
    except ValueError as exc:
        raise ConfigError(f"{source}: {where}: {exc}") from exc
    if net not in out.subnets:
        out.subnets.append(net)
        out.gateways.append(gw)


def addressing(net: NetworkConfig) -> Addressing:
    """The subnets a network's IPAM hands out: host-local ``ranges`` (or its older
    ``subnet``), static ``addresses``; any other IPAM type is listed in ``unknown``."""
    out = Addressing()
    for i, plugin in enumerate(net.plugins):
        ipam = plugin.get("ipam")
        if not isinstance(ipam, dict) or not ipam:
            continue
        kind = str(ipam.get("type"))
        where = f"plugins[{i}].ipam"
        if kind == "host-local":
            ranges = ipam.get("ranges")
            if isinstance(ranges, list):
                for j, rset in enumerate(ranges):
                    for k, rng in enumerate(rset if isinstance(rset, list) else []):
                        if isinstance(rng, dict) and rng.get("subnet"):
                            _add_subnet(
                                out,
                                net.source,
                                f"{where}.ranges[{j}][{k}].subnet",
                                rng["subnet"],
                                rng.get("gateway"),
                            )
            elif ipam.get("subnet"):
                _add_subnet(out, net.source, f"{where}.subnet", ipam["subnet"], ipam.get("gateway"))
        elif kind == "static":
            for j, addr in enumerate(ipam.get("addresses") or []):
                if isinstance(addr, dict) and addr.get("address"):
                    try:
                        itf = ipaddress.ip_interface(str(addr["address"]))
                    except ValueError as exc:
                        raise ConfigError(
                            f"{net.source}: {where}.addresses[{j}].address: {exc}"
                        ) from exc
                    _add_subnet(
                        out, net.source, f"{where}.addresses[{j}]", itf.network, addr.get("gateway")
                    )
        else:
            out.unknown.append(kind)
    return out


def conflists(conf_dir: Path) -> list[NetworkConfig]:
    """Every network configuration of ``conf_dir`` that parses (others are skipped), for
    questions about the whole directory (which bridges are taken)."""
    out = []
    try:
        entries = sorted(p for p in conf_dir.iterdir() if p.is_file())
    except OSError:
        return []
    for path in entries:
        if path.suffix not in (".conflist", ".conf", ".json"):
            continue
        try:
            out.append(parse_network(_load_json(path), str(path)))
        except ConfigError:
            continue
    return out


def bridge_of(net: NetworkConfig) -> str | None:
    """The bridge a conflist's ``bridge`` plugin uses (the plugin's default ``cni0``)."""
    for plugin in net.plugins:
        if plugin.get("type") == "bridge":
            return str(plugin.get("bridge") or "cni0")
    return None


def loopback_network() -> NetworkConfig:
    """The built-in network that brings up ``lo`` in every container (``CNI_IFNAME=lo``)."""
    return NetworkConfig(
        name=LOOPBACK_NETWORK,
        cni_version="1.0.0",
        versions=["0.3.1", "0.4.0", "1.0.0"],
        plugins=[{"type": "loopback"}],
        source="(built-in loopback network)",
    )
