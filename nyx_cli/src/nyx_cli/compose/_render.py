"""``nyx compose config``: the validated file rendered back as nyx understood it, itself a
valid compose file (services in start order, the names nyxd gets, long syntax)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from ..daemon._models import NetworkAttachment
from ._plan import ComposePlan
from ._project import ComposeNetwork, ComposeService
from ._service_runtime import ServiceRuntime

__all__: list[str] = []


class _Dumper(yaml.SafeDumper):
    """Output that reads back as the same compose file: ``$`` escaped as ``$$`` (values are
    already interpolated), multi-line strings as ``|`` blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    value = value.replace("$", "$$")
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def _normalized(plan: ComposePlan) -> dict[str, Any]:
    """The validated file as nyx understood it (``config``), itself a valid compose file:
    services in start order, the names nyxd gets as ``name``/``x-nyx-container-name``."""
    services: dict[str, Any] = {}
    for name in plan.order:
        svc = plan.project.services[name]
        entry: dict[str, Any] = {"image": svc.image}
        if not svc.net.shares_names:
            entry["hostname"] = svc.hostname
        if svc.entrypoint is not None:
            entry["entrypoint"] = list(svc.entrypoint)
        if svc.command is not None:
            entry["command"] = list(svc.command)
        if svc.environment:
            entry["environment"] = dict(svc.environment)
        if svc.ports:
            entry["ports"] = [str(p) for p in svc.ports]
        key_of = {n.name: n.key for n in plan.project.networks.values()}
        if svc.networks:
            entry["networks"] = {
                key_of[a.name]: _attachment_entry(a, svc, name, plan)
                for a in plan.attachments(name)
            }
        entry.update(_net_entry(svc))
        if svc.depends_on:
            entry["depends_on"] = {dep: {"condition": svc.condition(dep)} for dep in svc.depends_on}
        entry["restart"] = svc.restart_policy
        if svc.healthcheck is not None:
            entry["healthcheck"] = _healthcheck_entry(svc.healthcheck.model_dump())
        entry["x-nyx-container-name"] = plan.container_name(name)
        entry.update(_runtime_entry(plan, svc.runtime))
        services[name] = entry
    networks = {n.key: _network_entry(n) for n in plan.networks()}
    out: dict[str, Any] = {"name": plan.name, "services": services, "networks": networks}
    out.update(_runtime_top(plan))
    return out


def _runtime_entry(plan: ComposePlan, rt: ServiceRuntime) -> dict[str, Any]:
    """A service's mounts and process keys as ``config`` prints them (long syntax)."""
    key_of = {v.name: v.key for v in plan.project.volumes.values()}
    entry: dict[str, Any] = {}
    volumes: list[dict[str, Any]] = []
    tmpfs: list[str] = []
    for m in rt.mounts:
        if m.type == "tmpfs":
            opts = [f"size={m.tmpfs_size}"] if m.tmpfs_size else []
            opts += [f"mode={m.tmpfs_mode:o}"] if m.tmpfs_mode is not None else []
            opts += ["exec"] if m.tmpfs_exec else []
            opts += ["ro"] if m.readonly else []
            tmpfs.append(m.target + (":" + ",".join(opts) if opts else ""))
            continue
        v: dict[str, Any] = {"type": m.type, "target": m.target}
        if m.source is not None:
            v["source"] = key_of.get(m.source, m.source) if m.type == "volume" else m.source
        if m.readonly:
            v["read_only"] = True
        if m.nocopy:
            v["volume"] = {"nocopy": True}
        if m.type == "bind" and m.source in rt.create_paths:
            v["bind"] = {"create_host_path": True}
        volumes.append(v)
    if volumes:
        entry["volumes"] = volumes
    if tmpfs:
        entry["tmpfs"] = tmpfs
    for key, refs in (("secrets", rt.secrets), ("configs", rt.configs)):
        if refs:
            entry[key] = [
                {
                    "source": r.source,
                    "target": r.target,
                    "uid": str(r.uid),
                    "gid": str(r.gid),
                    "mode": f"0{r.mode:o}",
                }
                for r in refs
            ]
    if rt.env_files:
        entry["env_file"] = [{"path": e.path, "required": e.required} for e in rt.env_files]
    plain: dict[str, Any] = {
        "working_dir": rt.workdir,
        "user": rt.user,
        "stop_signal": rt.stop_signal,
        "stop_grace_period": f"{rt.stop_timeout:g}s" if rt.stop_timeout is not None else None,
        "cap_add": [c.removeprefix("CAP_") for c in rt.cap_add] or None,
        "cap_drop": [c.removeprefix("CAP_") for c in rt.cap_drop] or None,
        "labels": dict(rt.labels) or None,
        "init": rt.init or None,
    }
    entry.update({k: v for k, v in plain.items() if v is not None})
    return entry


def _runtime_top(plan: ComposePlan) -> dict[str, Any]:
    """The top-level volumes, secrets and configs as ``config`` prints them."""
    out: dict[str, Any] = {}
    volumes = {}
    for vol in plan.volumes():
        v: dict[str, Any] = {"name": vol.name}
        if vol.external:
            v["external"] = True
        if vol.labels:
            v["labels"] = dict(vol.labels)
        volumes[vol.key] = v
    if volumes:
        out["volumes"] = volumes
    for kind, sources in (("secrets", plan.project.secrets), ("configs", plan.project.configs)):
        entries = {}
        for key, src in sources.items():
            if src.file is not None:
                entries[key] = {"file": src.file}
            elif src.environment is not None:
                entries[key] = {"environment": src.environment}
            else:
                entries[key] = {"content": src.content or ""}
        if entries:
            out[kind] = entries
    return out


def _healthcheck_entry(hc: Mapping[str, Any]) -> dict[str, Any]:
    """A healthcheck as the file would say it (durations as seconds with a unit)."""
    if hc.get("test") == ["NONE"]:
        return {"disable": True}
    out: dict[str, Any] = {}
    for key, value in hc.items():
        if value is None:
            continue
        out[key] = f"{value:g}s" if isinstance(value, float) else value
    return out


def _attachment_entry(
    att: NetworkAttachment, svc: ComposeService, service: str, plan: ComposePlan
) -> dict[str, Any] | None:
    """A service's network as the file said it (link aliases and the service-level
    mac_address are the file's own keys, not repeated here)."""
    (sn,) = [n for n in svc.networks if plan.project.networks[n.key].name == att.name]
    out: dict[str, Any] = {}
    if sn.aliases:
        out["aliases"] = list(sn.aliases)
    for key in ("ipv4_address", "ipv6_address", "mac_address"):
        if getattr(sn, key) is not None:
            out[key] = getattr(sn, key)
    return out or None


def _net_entry(svc: ComposeService) -> dict[str, Any]:
    """The networking keys of a service as nyx understood them."""
    net = svc.net
    entry: dict[str, Any] = {}
    for key in ("container_name", "domainname", "mac_address", "network_mode"):
        if getattr(net, key) is not None:
            entry[key] = getattr(net, key)
    for key in ("dns", "dns_search", "dns_opt", "extra_hosts", "expose"):
        if getattr(net, key):
            entry[key] = list(getattr(net, key))
    if net.links:
        entry["links"] = [t if a == t else f"{t}:{a}" for t, a in net.links]
    if net.sysctls:
        entry["sysctls"] = dict(net.sysctls)
    return entry


def _network_entry(net: ComposeNetwork) -> dict[str, Any]:
    if net.external:
        return {"name": net.name, "external": True}
    entry: dict[str, Any] = {"name": net.name, "internal": net.internal}
    if net.driver is not None:
        entry["driver"] = net.driver
    if net.options:
        entry["driver_opts"] = dict(net.options)
    if net.labels:
        entry["labels"] = dict(net.labels)
    if net.ipv6:
        entry["enable_ipv6"] = True
    configs = [
        {"subnet": subnet, **({"gateway": gateway} if gateway else {})}
        for subnet, gateway in ((net.subnet, net.gateway), (net.subnet6, net.gateway6))
        if subnet is not None
    ]
    if configs:
        entry["ipam"] = {"config": configs}
    return entry
