"""A compose service's networking keys (issue 14): parsed and checked as nyxd will check
them, and what they say about the other services of the file.

``container_name``, ``domainname``, ``dns``, ``dns_search``, ``dns_opt``, ``extra_hosts``,
``expose``, ``mac_address``, ``network_mode``, ``links`` and ``sysctls`` of a service
(:class:`ServiceNet`, :func:`service_net`), ``ipv4_address``/``ipv6_address``/``mac_address``
of its networks (:func:`checked`, :func:`inside`), ``external`` networks (:func:`external`),
and the checks across services (:func:`cross_checked`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from nyx_core.errors import ConfigError

from ..daemon._models import ContainerSpec, NetworkAttachment
from ._checks import alias as _alias
from ._checks import bad as _bad
from ._checks import check_keys as _check_keys
from ._checks import join as _join
from ._checks import mapping as _mapping
from ._checks import scalar_text as _scalar_text
from ._checks import string as _str
from ._checks import strings as _strings

if TYPE_CHECKING:
    from ._project import ComposeService

__all__ = [
    "SERVICE_NETWORK_KEYS",
    "SERVICE_NET_KEYS",
    "ServiceNet",
    "checked",
    "cross_checked",
    "external",
    "inside",
    "net_keys",
    "service_net",
]

SERVICE_NET_KEYS = {
    "container_name",
    "domainname",
    "dns",
    "dns_search",
    "dns_opt",
    "extra_hosts",
    "expose",
    "mac_address",
    "network_mode",
    "links",
    "sysctls",
}
"""The networking keys of a service that :func:`service_net` reads."""
SERVICE_NETWORK_KEYS = {"aliases", "ipv4_address", "ipv6_address", "mac_address"}
"""The keys of ``services.<s>.networks.<n>`` nyx reads."""


@dataclass(frozen=True)
class ServiceNet:
    """A service's networking keys besides ``networks``/``ports``/``hostname``."""

    container_name: str | None = None
    domainname: str | None = None
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    dns_opt: tuple[str, ...] = ()
    extra_hosts: tuple[str, ...] = ()
    expose: tuple[str, ...] = ()
    mac_address: str | None = None
    network_mode: str | None = None
    links: tuple[tuple[str, str], ...] = ()
    sysctls: Mapping[str, str] = field(default_factory=dict)
    hostname_given: bool = False

    def spec_fields(self) -> dict[str, Any]:
        """The ContainerSpec fields these become (network_mode still compose's)."""
        return {
            "domainname": self.domainname,
            "dns_servers": list(self.dns),
            "dns_search": list(self.dns_search),
            "dns_options": list(self.dns_opt),
            "extra_hosts": list(self.extra_hosts),
            "expose": list(self.expose),
            "sysctls": dict(self.sysctls),
        }

    @property
    def shares_names(self) -> bool:
        """In another container's netns (``service:``/``container:``): its names too."""
        return bool(self.network_mode) and ":" in (self.network_mode or "")

    @property
    def service_of(self) -> str | None:
        """``network_mode: service:NAME``'s NAME."""
        if self.network_mode and self.network_mode.startswith("service:"):
            return self.network_mode.partition(":")[2]
        return None


def checked(field_name: str, value: Any, path: str, *, attachment: bool = False) -> Any:
    """``value`` as nyxd's request model (:class:`ContainerSpec` or, with ``attachment``,
    :class:`NetworkAttachment`) validates and normalises its ``field_name``; its error
    named by the compose key ``path``. One validation, the daemon's."""
    try:
        if attachment:
            return getattr(NetworkAttachment.model_validate({field_name: value}), field_name)
        spec = ContainerSpec.model_validate({"image": "x", field_name: value})
        return getattr(spec, field_name)
    except ValidationError as exc:
        msg = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{path}: {msg}") from exc


def inside(address: str, key: str, subnet: str | None, path: str) -> None:
    """A static address must be in network ``key``'s ``subnet`` when the file gives one."""
    if subnet is None:
        return
    try:
        ok = ipaddress.ip_address(address) in ipaddress.ip_network(subnet, strict=False)
    except ValueError:
        return  # the subnet itself is checked by nyxd
    if not ok:
        raise _bad(path, address, f"is outside network {key}'s subnet {subnet}")


def external(value: object, path: str) -> tuple[bool, str | None]:
    """``external: true|false``, or the legacy ``external: {name: NAME}``."""
    if isinstance(value, bool):
        return value, None
    node = _mapping(value, path)
    _check_keys(node, {"name"}, path, [])
    return True, _str(node["name"], _join(path, "name")) if "name" in node else None


_CONTAINER_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")
_MODE_RE = re.compile(r"^(host|none|bridge|(service|container):[a-zA-Z0-9][a-zA-Z0-9_.-]*)$")


def service_net(node: Mapping[str, Any], path: str) -> ServiceNet:
    """The networking keys of a service, each checked as nyxd will check it."""

    def valid(key: str, field_name: str, value: Any) -> Any:
        return checked(field_name, value, _join(path, key))

    kw: dict[str, Any] = {"hostname_given": "hostname" in node}
    if node.get("container_name") is not None:
        cname = _str(node["container_name"], _join(path, "container_name"))
        if not _CONTAINER_NAME_RE.match(cname):
            raise _bad(
                _join(path, "container_name"), cname, "must be letters, digits, '_', '.', '-'"
            )
        kw["container_name"] = cname
    if node.get("domainname") is not None:
        kw["domainname"] = valid(
            "domainname", "domainname", _str(node["domainname"], _join(path, "domainname"))
        )
    for key, field_name in (
        ("dns", "dns_servers"),
        ("dns_search", "dns_search"),
        ("dns_opt", "dns_options"),
        ("expose", "expose"),
    ):
        values = _strings(node.get(key), _join(path, key))
        kw[key] = tuple(valid(key, field_name, list(values)))
    kw["extra_hosts"] = tuple(valid("extra_hosts", "extra_hosts", _extra_hosts(node, path)))
    if node.get("mac_address") is not None:
        mpath = _join(path, "mac_address")
        kw["mac_address"] = checked(
            "mac_address", _str(node["mac_address"], mpath), mpath, attachment=True
        )
    if node.get("sysctls") is not None:
        spath = _join(path, "sysctls")
        raw = node["sysctls"]
        if isinstance(raw, list):
            pairs = {}
            for i, item in enumerate(raw):
                k, sep, v = _str(item, f"{spath}[{i}]").partition("=")
                if not k or not sep:
                    raise _bad(f"{spath}[{i}]", item, "must be KEY=VALUE")
                pairs[k] = v
        else:
            pairs = {k: _scalar_text(v, _join(spath, k)) for k, v in _mapping(raw, spath).items()}
        kw["sysctls"] = valid("sysctls", "sysctls", pairs)
    mode = node.get("network_mode")
    if mode is not None:
        mpath = _join(path, "network_mode")
        if not isinstance(mode, str) or not _MODE_RE.match(mode):
            raise _bad(mpath, mode, "must be host, none, bridge, service:NAME or container:NAME")
        kw["network_mode"] = mode
        if mode == "host" and kw.get("sysctls"):
            raise _bad(_join(path, "sysctls"), kw["sysctls"], "not with network_mode host")
        if mode.startswith(("service:", "container:")):
            for key in ("hostname", "domainname", "dns", "dns_search", "dns_opt"):
                if node.get(key):
                    raise _bad(
                        _join(path, key),
                        node[key],
                        f"not with network_mode {mode!r}: the service shares that "
                        "container's names and files",
                    )
            for key in ("extra_hosts", "expose", "sysctls", "mac_address"):
                if node.get(key):
                    raise _bad(_join(path, key), node[key], f"not with network_mode {mode!r}")
        elif mode in ("host", "none") and node.get("mac_address"):
            why = f"not with network_mode {mode}"
            raise _bad(_join(path, "mac_address"), node["mac_address"], why)
    kw["links"] = _links(node.get("links"), _join(path, "links"))
    if kw["links"] and mode not in (None, "bridge"):
        raise _bad(_join(path, "links"), node["links"], f"not with network_mode {mode!r}")
    return ServiceNet(**kw)


def _extra_hosts(node: Mapping[str, Any], path: str) -> list[str]:
    """``extra_hosts`` as ``NAME:ADDRESS`` lines: a list (``NAME:ADDR`` or ``NAME=ADDR``) or
    a mapping of a name to an address or a list of addresses."""
    raw = node.get("extra_hosts")
    hpath = _join(path, "extra_hosts")
    if raw is None:
        return []
    if isinstance(raw, list):
        return [_str(item, f"{hpath}[{i}]") for i, item in enumerate(raw)]
    out = []
    for name, addrs in _mapping(raw, hpath).items():
        for addr in _strings(addrs, _join(hpath, name)):
            out.append(f"{name}={addr}")
    return out


def _links(value: object, path: str) -> tuple[tuple[str, str], ...]:
    """``links: [SERVICE, SERVICE:ALIAS]`` as (service, alias) pairs."""
    out = []
    for i, item in enumerate(_strings(value, path)):
        service, _, alias = item.partition(":")
        if not service:
            raise _bad(f"{path}[{i}]", item, "must be SERVICE or SERVICE:ALIAS")
        out.append((service, _alias(alias or service, f"{path}[{i}]")))
    return tuple(out)


def cross_checked(services: dict[str, ComposeService], project: str) -> dict[str, ComposeService]:
    """What the services' networking keys say about each other: ``network_mode:
    service:NAME`` and ``links`` name services of the file (and start after them),
    container names and static addresses are unique."""
    out = dict(services)
    names: dict[str, str] = {}
    for svc in services.values():
        cname = svc.net.container_name or f"{project}-{svc.name}-1"
        if cname in names:
            why = f"also the container of {names[cname]}"
            raise _bad(f"services.{svc.name}.container_name", cname, why)
        names[cname] = svc.name
    addresses: dict[tuple[str, str], str] = {}
    for svc in services.values():
        path = f"services.{svc.name}"
        extra: list[str] = []
        owner = svc.net.service_of
        if owner is not None:
            mpath = f"{path}.network_mode"
            if owner not in services or owner == svc.name:
                raise _bad(mpath, svc.net.network_mode, "no such (other) service")
            if services[owner].net.network_mode == "host":
                raise _bad(mpath, svc.net.network_mode, f"{owner} uses network_mode host")
            extra.append(owner)
        for i, (target, _alias_name) in enumerate(svc.net.links):
            lpath = f"{path}.links[{i}]"
            other = services.get(target)
            if other is None or target == svc.name:
                raise _bad(lpath, target, "no such (other) service")
            if not set(net_keys(svc)) & set(net_keys(other)):
                raise _bad(lpath, target, f"{target} shares no network with {svc.name}")
            extra.append(target)
        for sn in svc.networks:
            for key, address in (
                ("ipv4_address", sn.ipv4_address),
                ("ipv6_address", sn.ipv6_address),
            ):
                if address is None:
                    continue
                taken = addresses.setdefault((sn.key, address), svc.name)
                if taken != svc.name:
                    raise _bad(
                        f"{path}.networks.{sn.key}.{key}",
                        address,
                        f"is also the address of {taken}",
                    )
        if svc.net.mac_address is not None and svc.networks and svc.networks[0].mac_address:
            raise _bad(
                f"{path}.mac_address",
                svc.net.mac_address,
                f"networks.{svc.networks[0].key}.mac_address says another one",
            )
        deps = tuple(dict.fromkeys([*svc.depends_on, *extra]))
        if deps != svc.depends_on:
            out[svc.name] = replace(svc, depends_on=deps)
    return out


def net_keys(svc: ComposeService) -> tuple[str, ...]:
    """The networks a service is on (``bridge`` mode: nyxd's default network)."""
    if svc.net.network_mode == "bridge":
        return ("(bridge)",)
    return tuple(sn.key for sn in svc.networks)
