"""Compose files: validate the Compose Specification subset nyx runs, and plan a stack.

Pure logic, no I/O: :func:`load_compose` takes an already-parsed mapping (the CLI reads the
YAML), returns a :class:`ComposeProject` with the warnings it found, or raises
:class:`~nyx_core.errors.ConfigError` naming the key path and the value
(``services.web.ports[0]: ...``). :func:`topological` orders the services (``depends_on``,
a cycle is an error); :mod:`._plan` builds the requests nyxd receives from the project.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from nyx_core import PortMapping
from nyx_core.errors import ConfigError

from ..daemon._models import Healthcheck
from ..daemon._restart import RestartPolicy
from ._checks import HOSTNAME_RE as _HOSTNAME_RE
from ._checks import alias as _alias
from ._checks import bad as _bad
from ._checks import boolean as _bool
from ._checks import check_keys as _check_keys
from ._checks import join as _join
from ._checks import mapping as _mapping
from ._checks import scalar_text as _scalar_text
from ._checks import string as _str
from ._netkeys import SERVICE_NET_KEYS as _SERVICE_NET_KEYS
from ._netkeys import SERVICE_NETWORK_KEYS as _SERVICE_NETWORK_KEYS
from ._netkeys import ServiceNet, checked, cross_checked, inside, service_net
from ._netkeys import external as _external
from ._service_runtime import (
    SERVICE_KEYS,
    ComposeFileSource,
    ComposeVolume,
    ServiceRuntime,
    file_sources,
    service_runtime,
    volume_decl,
)
from ._values import RestartName
from ._values import argv as _argv
from ._values import environment as _environment
from ._values import healthcheck as _healthcheck
from ._values import labels as _labels
from ._values import port as _port
from ._values import restart as _restart

__all__ = [
    "COMPOSE_FILENAMES",
    "CONDITIONS",
    "CONFIG_HASH_LABEL",
    "DEFAULT_NETWORK",
    "KNOWN_KEYS",
    "PROJECT_LABEL",
    "SERVICE_LABEL",
    "ComposeNetwork",
    "ComposeProject",
    "ComposeService",
    "ComposeVolume",
    "ServiceNet",
    "ServiceNetwork",
    "check_project_name",
    "interpolate",
    "load_compose",
    "normalize_project_name",
]

COMPOSE_FILENAMES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
PROJECT_LABEL = "com.nyx.compose.project"
SERVICE_LABEL = "com.nyx.compose.service"
CONFIG_HASH_LABEL = "com.nyx.compose.config-hash"
DEFAULT_NETWORK = "default"

Condition = Literal["service_started", "service_healthy", "service_completed_successfully"]
CONDITIONS: tuple[Condition, ...] = (
    "service_started",
    "service_healthy",
    "service_completed_successfully",
)

_PROJECT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_SERVICE_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_NETNAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_CONTAINER_NAME_MAX = 63

# the keys nyx implements, per place (every other one: see ._keys and _check_keys)
_TOP_KEYS = {"name", "services", "networks", "volumes", "secrets", "configs"}
_SERVICE_KEYS = {
    "image",
    "command",
    "entrypoint",
    "environment",
    "ports",
    "networks",
    "hostname",
    "depends_on",
    "restart",
    "healthcheck",
}
_SERVICE_KEYS |= SERVICE_KEYS  # mounts and process settings: ._service_runtime
_NETWORK_KEYS = {
    "internal",
    "name",
    "driver",
    "labels",
    "driver_opts",
    "ipam",
    "external",
    "enable_ipv6",
}
_IPAM_KEYS = {"driver", "config"}
_IPAM_CONFIG_KEYS = {"subnet", "gateway"}
KNOWN_KEYS: dict[str, set[str]] = {
    "top": _TOP_KEYS,
    "service": _SERVICE_KEYS | _SERVICE_NET_KEYS,
    "service_network": _SERVICE_NETWORK_KEYS,
    "network": _NETWORK_KEYS,
    "ipam": _IPAM_KEYS,
    "ipam_config": _IPAM_CONFIG_KEYS,
}
"""What :func:`load_compose` reads, per scope of :data:`._keys.SCOPES` (docs/compose.md's
"done" rows)."""
_DEPENDS_KEYS = {"condition", "required", "restart"}


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class ComposeNetwork:
    """A network of the stack: ``key`` in the file, ``name`` nyxd knows it by."""

    key: str
    name: str
    internal: bool = False
    options: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    subnet: str | None = None
    gateway: str | None = None
    external: bool = False
    driver: str | None = None
    ipv6: bool = False
    subnet6: str | None = None
    gateway6: str | None = None

    def request(self) -> dict[str, Any]:
        """The body of ``POST /v1/networks`` that creates it."""
        body: dict[str, Any] = {"name": self.name, "internal": self.internal}
        if self.options:
            body["options"] = dict(self.options)
        if self.labels:
            body["labels"] = dict(self.labels)
        if self.subnet is not None:
            body["subnet"] = self.subnet
        if self.gateway is not None:
            body["gateway"] = self.gateway
        if self.ipv6:
            body["ipv6"] = True
        if self.subnet6 is not None:
            body["subnet6"] = self.subnet6
        if self.gateway6 is not None:
            body["gateway6"] = self.gateway6
        return body


@dataclass(frozen=True)
class ServiceNetwork:
    """One network a service joins, with its extra DNS aliases (and address, MAC)."""

    key: str
    aliases: tuple[str, ...] = ()
    ipv4_address: str | None = None
    mac_address: str | None = None
    ipv6_address: str | None = None


@dataclass(frozen=True)
class ComposeService:
    """One validated service."""

    name: str
    image: str
    hostname: str
    command: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    environment: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[PortMapping, ...] = ()
    networks: tuple[ServiceNetwork, ...] = ()
    depends_on: tuple[str, ...] = ()
    restart: RestartName = "no"
    restart_max_retries: int | None = None
    net: ServiceNet = field(default_factory=lambda: ServiceNet())
    runtime: ServiceRuntime = field(default_factory=ServiceRuntime)
    conditions: Mapping[str, Condition] = field(default_factory=dict)
    healthcheck: Healthcheck | None = None

    @property
    def restart_policy(self) -> str:
        """``restart`` as nyxd takes it: ``no``, ``always``, ``on-failure:3``..."""
        return str(RestartPolicy(self.restart, self.restart_max_retries))

    def condition(self, dependency: str) -> Condition:
        """What ``up`` waits for before starting this service: ``depends_on`` long form's
        ``condition`` (``service_started`` for the short form)."""
        return self.conditions.get(dependency, "service_started")


@dataclass(frozen=True)
class ComposeProject:
    """A validated compose file: services and networks in file order, plus warnings."""

    name: str
    services: Mapping[str, ComposeService]
    networks: Mapping[str, ComposeNetwork]
    warnings: tuple[str, ...] = ()
    volumes: Mapping[str, ComposeVolume] = field(default_factory=dict)
    secrets: Mapping[str, ComposeFileSource] = field(default_factory=dict)
    configs: Mapping[str, ComposeFileSource] = field(default_factory=dict)
    environ: Mapping[str, str] = field(default_factory=dict)


# ------------------------------------------------------------------ project name


def normalize_project_name(name: str) -> str:
    """Derive a project name from a directory name the way Compose does.

    Lower-case, keep ``a-z 0-9 _ -``, drop leading ``_``/``-``. Raises ``ConfigError`` when
    nothing usable is left.
    """
    kept = "".join(re.findall(r"[a-z0-9_-]", name.lower())).lstrip("_-")
    if not kept:
        raise ConfigError(f"project name: cannot derive one from {name!r}; pass -p/--project-name")
    return kept


def check_project_name(name: str) -> str:
    """Validate an explicit project name (``-p`` or the file's ``name:``) like Compose."""
    if not isinstance(name, str) or not _PROJECT_RE.match(name):
        raise ConfigError(
            f"project name {name!r}: must contain only lowercase letters, digits, '-' and '_' "
            "and start with a letter or digit"
        )
    return name


# ------------------------------------------------------------------ interpolation

_VAR_RE = re.compile(
    r"\$(?:(?P<esc>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*)|(?P<bad>\{[^}]*\}?))"
)


def interpolate(
    value: str, environ: Mapping[str, str], path: str, warnings: list[str] | None = None
) -> str:
    """Substitute ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
    ``${VAR:?error}``, ``${VAR?error}``, ``${VAR:+alt}``, ``${VAR+alt}``; ``$$`` is ``$``.

    An unset variable without a default becomes ``""`` with a warning, as in Compose.
    """

    def repl(m: re.Match[str]) -> str:
        if m.group("esc"):
            return "$"
        if m.group("bad") is not None:
            raise ConfigError(f"{path}: invalid interpolation {m.group(0)!r} in {value!r}")
        var = m.group("braced") or m.group("named")
        op = m.group("op") or ""
        arg = m.group("arg") or ""
        is_set = var in environ
        non_empty = bool(environ.get(var, ""))
        present = non_empty if op.startswith(":") else is_set
        kind = op[-1:] if op else ""
        if kind == "-":
            return environ[var] if present else arg
        if kind == "?":
            if not present:
                raise ConfigError(f"{path}: required variable {var} is missing: {arg or 'unset'}")
            return environ[var]
        if kind == "+":
            return arg if present else ""
        if not is_set:
            if warnings is not None:
                warnings.append(f"{path}: variable {var} is not set, using an empty string")
            return ""
        return environ[var]

    return _VAR_RE.sub(repl, value)


def _interpolate_tree(node: object, environ: Mapping[str, str], path: str, w: list[str]) -> object:
    if isinstance(node, str):
        return interpolate(node, environ, path, w)
    if isinstance(node, Mapping):
        return {k: _interpolate_tree(v, environ, _join(path, str(k)), w) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate_tree(v, environ, f"{path}[{i}]", w) for i, v in enumerate(node)]
    return node


# ------------------------------------------------------------------ helpers


def _service_networks(
    value: object, path: str, declared: Mapping[str, ComposeNetwork], warnings: list[str]
) -> tuple[ServiceNetwork, ...]:
    if value is None:
        return (ServiceNetwork(DEFAULT_NETWORK),)
    out: list[ServiceNetwork] = []
    if isinstance(value, list):
        for i, item in enumerate(value):
            ipath = f"{path}[{i}]"
            out.append(ServiceNetwork(_str(item, ipath)))
            _declared(out[-1].key, ipath, declared)
    elif isinstance(value, Mapping):
        for key, conf in _mapping(value, path).items():
            kpath = _join(path, key)
            _declared(key, kpath, declared)
            aliases: tuple[str, ...] = ()
            ipv4 = mac = ipv6 = None
            if conf is not None:
                node = _mapping(conf, kpath)
                _check_keys(node, _SERVICE_NETWORK_KEYS, kpath, warnings, "service_network")
                raw = node.get("aliases", [])
                apath = _join(kpath, "aliases")
                if raw is None:
                    raw = []
                if not isinstance(raw, list):
                    raise _bad(apath, raw, "must be a list of names")
                aliases = tuple(_alias(a, f"{apath}[{i}]") for i, a in enumerate(raw))
                if node.get("ipv4_address") is not None:
                    ipath = _join(kpath, "ipv4_address")
                    text = _str(node["ipv4_address"], ipath)
                    ipv4 = checked("ipv4_address", text, ipath, attachment=True)
                    inside(ipv4, key, getattr(declared.get(key), "subnet", None), ipath)
                if node.get("ipv6_address") is not None:
                    ipv6 = _ipv6_address(node["ipv6_address"], key, declared.get(key), kpath)
                if node.get("mac_address") is not None:
                    mpath = _join(kpath, "mac_address")
                    text = _str(node["mac_address"], mpath)
                    mac = checked("mac_address", text, mpath, attachment=True)
            out.append(ServiceNetwork(key, aliases, ipv4, mac, ipv6))
    else:
        raise _bad(path, value, "must be a list of network names or a mapping")
    seen: set[str] = set()
    for sn in out:
        if sn.key in seen:
            raise _bad(path, sn.key, "lists the same network twice")
        seen.add(sn.key)
    if not out:
        raise _bad(path, value, "must name at least one network")
    return tuple(out)


def _ipv6_address(value: object, key: str, net: ComposeNetwork | None, path: str) -> str:
    """``services.<s>.networks.<key>.ipv6_address``: an IPv6 address, on a network of the
    file with ``enable_ipv6: true`` (inside its IPv6 subnet when the file gives one); an
    external network's IPv6 is nyxd's to check."""
    ipath = _join(path, "ipv6_address")
    address = str(checked("ipv6_address", _str(value, ipath), ipath, attachment=True))
    if net is not None and net.external:
        return address
    if net is None or not net.ipv6:
        raise _bad(
            ipath,
            address,
            f"network {key} has no IPv6: declare it with enable_ipv6: true (and an IPv6 "
            "subnet in ipam.config, or nyxd picks one)",
        )
    inside(address, key, net.subnet6, ipath)
    return address


def _declared(key: str, path: str, declared: Mapping[str, ComposeNetwork]) -> None:
    if key not in declared and key != DEFAULT_NETWORK:
        names = ", ".join(sorted(declared)) or "none"
        raise _bad(path, key, f"network is not declared in the top-level networks ({names})")


def _depends_on(
    value: object, path: str, warnings: list[str]
) -> tuple[tuple[str, ...], dict[str, Condition]]:
    """The services depended on, in file order, and the long form's conditions."""
    if value is None:
        return (), {}
    if isinstance(value, list):
        return tuple(_str(v, f"{path}[{i}]") for i, v in enumerate(value)), {}
    if isinstance(value, Mapping):
        names: list[str] = []
        conditions: dict[str, Condition] = {}
        for dep, conf in _mapping(value, path).items():
            dpath = _join(path, dep)
            names.append(dep)
            if conf is None:
                continue
            node = _mapping(conf, dpath)
            _check_keys(node, _DEPENDS_KEYS, dpath, warnings)
            cond = node.get("condition", "service_started")
            if cond not in CONDITIONS:
                raise _bad(_join(dpath, "condition"), cond, "is not a Compose condition")
            conditions[dep] = cond
            for flag in ("required", "restart"):
                if flag in node:
                    _bool(node[flag], _join(dpath, flag))
            if node.get("restart") is True:
                warnings.append(f"{_join(dpath, 'restart')}: not supported, ignored")
        return tuple(names), conditions
    raise _bad(path, value, "must be a list of service names or a mapping")


def _network_decl(
    key: str, value: object, path: str, project: str, warnings: list[str]
) -> ComposeNetwork:
    if not _NETNAME_RE.match(key):
        raise _bad(path, key, "network key must be letters, digits, '_', '.', '-'")
    internal = False
    name = f"{project}_{key}"
    options: dict[str, str] = {}
    labels: dict[str, str] = {}
    subnet = gateway = subnet6 = gateway6 = None
    ipv6 = False
    external = False
    driver: str | None = None
    if value is not None:
        node = dict(_mapping(value, path))
        # the defaults, said out loud, are accepted (the other values are refused)
        for flag, default in (("enable_ipv4", True),):
            if node.get(flag) is default:
                del node[flag]
        _check_keys(node, _NETWORK_KEYS, path, warnings, "network")
        if "external" in node:
            external, ext_name = _external(node["external"], _join(path, "external"))
            if external:
                name = ext_name or key
                others = sorted(k for k in node if k not in ("external", "name") and k[:2] != "x-")
                if others:
                    raise _bad(
                        _join(path, others[0]),
                        node[others[0]],
                        "an external network is used as it is: only 'name' goes with "
                        "'external: true'",
                    )
        if "internal" in node:
            internal = _bool(node["internal"], _join(path, "internal"))
        if "name" in node:
            name = _str(node["name"], _join(path, "name"))
            if not _NETNAME_RE.match(name):
                raise _bad(_join(path, "name"), name, "must be letters, digits, '_', '.', '-'")
        if node.get("driver") is not None:
            # checked against nyxd's driver by `up` (it must be "bridge" or its name)
            driver = _str(node["driver"], _join(path, "driver"))
        if node.get("driver_opts") is not None:
            opath = _join(path, "driver_opts")
            options = {
                k: _scalar_text(v, _join(opath, k))
                for k, v in _mapping(node["driver_opts"], opath).items()
            }
        if node.get("labels") is not None:
            labels = _labels(node["labels"], _join(path, "labels"))
        if node.get("enable_ipv6") is not None:
            ipv6 = _bool(node["enable_ipv6"], _join(path, "enable_ipv6"))
        if node.get("ipam") is not None:
            (subnet, gateway), (subnet6, gateway6) = _ipam(
                node["ipam"], _join(path, "ipam"), warnings
            )
            if subnet6 is not None and not ipv6:
                raise _bad(
                    _join(path, "ipam.config"),
                    subnet6,
                    "an IPv6 subnet needs enable_ipv6: true on the network",
                )
    return ComposeNetwork(
        key=key,
        name=name,
        internal=internal,
        options=options,
        labels=labels,
        subnet=subnet,
        gateway=gateway,
        external=external,
        driver=driver,
        ipv6=ipv6,
        subnet6=subnet6,
        gateway6=gateway6,
    )


_Pair = tuple[str | None, str | None]


def _ipam(value: object, path: str, warnings: list[str]) -> tuple[_Pair, _Pair]:
    """``ipam.config``'s (subnet, gateway) of each family, IPv4 then IPv6: at most one
    config per family (the default IPAM driver); an IPv6 one is told by the ``:`` of its
    subnet."""
    node = _mapping(value, path)
    _check_keys(node, _IPAM_KEYS, path, warnings, "ipam")
    driver = node.get("driver", "default")
    if driver != "default":
        raise _bad(_join(path, "driver"), driver, "only the default IPAM driver is supported")
    configs = node.get("config") or []
    cpath = _join(path, "config")
    if not isinstance(configs, list):
        raise _bad(cpath, configs, "must be a list")
    out: dict[bool, _Pair] = {}
    for i, item in enumerate(configs):
        epath = f"{cpath}[{i}]"
        entry = _mapping(item, epath)
        _check_keys(entry, _IPAM_CONFIG_KEYS, epath, warnings, "ipam_config")
        subnet = gateway = None
        if entry.get("subnet") is not None:
            subnet = _str(entry["subnet"], f"{epath}.subnet")
        if entry.get("gateway") is not None:
            gateway = _str(entry["gateway"], f"{epath}.gateway")
            if subnet is None:
                raise _bad(f"{epath}.gateway", gateway, "needs the subnet")
        if subnet is None:
            continue
        v6 = ":" in subnet
        if v6 in out:
            family = "IPv6" if v6 else "IPv4"
            raise _bad(cpath, configs, f"one {family} subnet per network is supported")
        out[v6] = (subnet, gateway)
    return out.get(False, (None, None)), out.get(True, (None, None))


def _service(
    name: str,
    value: object,
    path: str,
    project: str,
    networks: Mapping[str, ComposeNetwork],
    environ: Mapping[str, str],
    warnings: list[str],
    top: Mapping[str, Mapping[str, Any]] | None = None,
    project_dir: str | None = None,
) -> ComposeService:
    if not _SERVICE_RE.match(name):
        raise _bad(path, name, "service name must be letters, digits, '_', '.', '-'")
    node = _mapping(value, path)
    _check_keys(node, _SERVICE_KEYS | _SERVICE_NET_KEYS, path, warnings, "service")
    if "image" not in node:
        raise _bad(path, name, "needs 'image'")
    image = _str(node["image"], _join(path, "image"))
    if not image.strip():
        raise _bad(_join(path, "image"), image, "must not be empty")
    net = service_net(node, path)
    if "hostname" in node:
        hostname = _str(node["hostname"], _join(path, "hostname"))
        if not _HOSTNAME_RE.match(hostname):
            raise _bad(_join(path, "hostname"), hostname, "is not a valid hostname")
    elif _HOSTNAME_RE.match(name) or net.shares_names:
        hostname = name  # unused by a service in another's netns: it has that one's names
    else:
        raise _bad(path, name, "service name is not a valid hostname; set 'hostname'")
    container = net.container_name or f"{project}-{name}-1"
    if len(container) > _CONTAINER_NAME_MAX:
        raise _bad(path, container, f"container name is longer than {_CONTAINER_NAME_MAX}")
    ports_raw = node.get("ports", [])
    if ports_raw is None:
        ports_raw = []
    if not isinstance(ports_raw, list):
        raise _bad(_join(path, "ports"), ports_raw, "must be a list")
    ports = tuple(
        _port(p, f"{_join(path, 'ports')}[{i}]", warnings) for i, p in enumerate(ports_raw)
    )
    restart, retries = _restart(node.get("restart"), _join(path, "restart"))
    if net.network_mode is not None:
        for key in ("networks", "ports"):
            if node.get(key):
                raise _bad(
                    _join(path, key),
                    node[key],
                    f"not with network_mode {net.network_mode!r} (the service has no network "
                    "of its own)",
                )
    depends_on, conditions = _depends_on(
        node.get("depends_on"), _join(path, "depends_on"), warnings
    )
    return ComposeService(
        name=name,
        image=image,
        hostname=hostname,
        command=_argv(node.get("command"), _join(path, "command")),
        entrypoint=_argv(node.get("entrypoint"), _join(path, "entrypoint")),
        environment=_environment(node.get("environment"), _join(path, "environment"), environ),
        ports=ports,
        networks=()
        if net.network_mode is not None
        else _service_networks(node.get("networks"), _join(path, "networks"), networks, warnings),
        depends_on=depends_on,
        restart=restart,
        restart_max_retries=retries,
        net=net,
        runtime=service_runtime(
            node,
            path,
            volumes=(top or {}).get("volumes", {}),
            secrets=(top or {}).get("secrets", {}),
            configs=(top or {}).get("configs", {}),
            project_dir=project_dir,
        ),
        conditions=conditions,
        healthcheck=_healthcheck(node.get("healthcheck"), _join(path, "healthcheck"), warnings),
    )


# ------------------------------------------------------------------ loading


def load_compose(
    data: object,
    project_name: str | None = None,
    *,
    default_project: str | None = None,
    environ: Mapping[str, str] | None = None,
    project_dir: str | Path | None = None,
) -> ComposeProject:
    """Validate a parsed compose file.

    :param data: the parsed YAML document.
    :param project_name: an explicit name (``-p``); beats the file's ``name:``, which beats
        ``default_project`` (normally the directory name, already normalised).
    :param environ: variables for ``${VAR}`` interpolation and bare ``environment`` keys;
        ``None`` disables interpolation.
    :param project_dir: what relative host paths (binds, ``env_file``, secret and config
        files) are relative to; nothing is read here.
    :returns: the project; its ``warnings`` list unsupported keys by path.
    :raises ConfigError: naming the key path and the value of the first invalid entry.
    """
    warnings: list[str] = []
    if data is None:
        raise ConfigError("compose file is empty")
    if environ is not None:
        data = _interpolate_tree(data, environ, "", warnings)
    env: Mapping[str, str] = environ if environ is not None else {}
    top = _mapping(data, "(top level)")
    _check_keys(top, _TOP_KEYS, "", warnings, "top")
    if project_name is not None:
        name = check_project_name(project_name)
    elif "name" in top:
        name = check_project_name(_str(top["name"], "name"))
    elif default_project is not None:
        name = check_project_name(default_project)
    else:
        raise ConfigError("project name: none given (-p), none in the file (name:)")
    nets_raw = top.get("networks") or {}
    nets_node = _mapping(nets_raw, "networks")
    networks: dict[str, ComposeNetwork] = {}
    for key, value in nets_node.items():
        networks[key] = _network_decl(key, value, _join("networks", key), name, warnings)
    services_raw = top.get("services")
    if services_raw is None:
        raise ConfigError("services: missing; a compose file needs at least one service")
    services_node = _mapping(services_raw, "services")
    if not services_node:
        raise _bad("services", dict(services_node), "must define at least one service")
    pdir = str(project_dir) if project_dir is not None else None
    volumes = {
        key: volume_decl(key, value, _join("volumes", key), name)
        for key, value in _mapping(top.get("volumes") or {}, "volumes").items()
    }
    top_decls: dict[str, Mapping[str, Any]] = {
        "volumes": volumes,
        "secrets": file_sources(top.get("secrets"), "secrets", pdir),
        "configs": file_sources(top.get("configs"), "configs", pdir),
    }
    services: dict[str, ComposeService] = {}
    for sname, value in services_node.items():
        services[sname] = _service(
            sname, value, _join("services", sname), name, networks, env, warnings, top_decls, pdir
        )
    used_volumes = {
        m.source for s in services.values() for m in s.runtime.mounts if m.type == "volume"
    }
    for key, vol in volumes.items():
        if vol.name not in used_volumes:
            warnings.append(f"volumes.{key}: not used by any service, not created")
    for svc in services.values():
        for i, dep in enumerate(svc.depends_on):
            if dep not in services:
                raise _bad(f"services.{svc.name}.depends_on[{i}]", dep, "no such service")
    services = cross_checked(services, name)
    if any(sn.key == DEFAULT_NETWORK for s in services.values() for sn in s.networks):
        networks.setdefault(DEFAULT_NETWORK, ComposeNetwork(DEFAULT_NETWORK, f"{name}_default"))
    for svc in services.values():
        if svc.ports and svc.networks and all(networks[sn.key].internal for sn in svc.networks):
            warnings.append(
                f"services.{svc.name}.ports: the service is only on internal networks, "
                "its published ports cannot be reached from outside"
            )
    used = {sn.key for s in services.values() for sn in s.networks}
    for key in networks:
        if key not in used:
            warnings.append(f"networks.{key}: not used by any service, not created")
    by_name: dict[str, str] = {}
    for key, net in networks.items():
        if net.name in by_name:
            raise _bad(f"networks.{key}.name", net.name, f"also the name of {by_name[net.name]}")
        by_name[net.name] = key
    return ComposeProject(
        name=name,
        services=services,
        networks=networks,
        warnings=tuple(warnings),
        volumes=volumes,
        secrets=top_decls["secrets"],
        configs=top_decls["configs"],
        environ=dict(env),
    )


# ------------------------------------------------------------------ planning


def topological(services: Mapping[str, ComposeService]) -> tuple[str, ...]:
    order: list[str] = []
    state: dict[str, int] = {}  # 1 = visiting, 2 = done

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = [*trail[trail.index(name) :], name]
            raise ConfigError(f"services.{name}.depends_on: dependency cycle {' -> '.join(cycle)}")
        state[name] = 1
        for dep in services[name].depends_on:
            visit(dep, [*trail, name])
        state[name] = 2
        order.append(name)

    for name in services:
        visit(name, [])
    return tuple(order)
