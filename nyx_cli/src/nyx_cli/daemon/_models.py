"""The daemon's request models: a container to run and the networks it joins.

The API, the supervisor, the state store and compose share them; drivers never see them
(they get :class:`nyx_core.SetupOptions`).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from nyx_core import PortMapping

from ._models_runtime import FileMount, Mount, normalize_capabilities, parse_signal
from ._restart import RestartPolicy

__all__ = [
    "HOST_GATEWAY",
    "ContainerSpec",
    "FileMount",
    "Healthcheck",
    "Mount",
    "NetworkAttachment",
    "StackService",
    "joined_container",
]

HOST_GATEWAY = "host-gateway"
"""The address of an ``extra_hosts`` entry that means "the container's network gateway"."""

_DNS_NAME_RE = re.compile(
    r"^(?=.{1,253}$)[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
    r"(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$"
)
_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_SYSCTL_RE = re.compile(r"^net(\.[A-Za-z0-9_-]+)+$")
_EXPOSE_RE = re.compile(r"^(\d{1,5})(?:-(\d{1,5}))?(?:/(tcp|udp))?$")
_DNS_OPTION_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_-]*(:[0-9]{1,5})?$")
_CONTAINER_REF_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$")


def _ipv4(value: str | None, field: str) -> str | None:
    if value is None:
        return None
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError as exc:
        raise ValueError(f"{field} {value!r} is not an IPv4 address") from exc


def _ipv6(value: str | None, field: str) -> str | None:
    if value is None:
        return None
    try:
        ip = ipaddress.ip_address(value)
    except ValueError as exc:
        raise ValueError(f"{field} {value!r} is not an IPv6 address") from exc
    if ip.version != 6:
        raise ValueError(
            f"{field} {value!r} is an IPv4 address, not IPv6 (give it as ipv4_address)"
        )
    return str(ip)


def _mac(value: str | None, field: str) -> str | None:
    if value is None:
        return None
    if not _MAC_RE.match(value):
        raise ValueError(f"{field} {value!r} is not a MAC address (aa:bb:cc:dd:ee:ff)")
    if int(value[:2], 16) & 1:
        raise ValueError(f"{field} {value!r} is a multicast address (first octet odd)")
    return value.lower()


_STATIC_CHECKS = {"ipv4_address": _ipv4, "ipv6_address": _ipv6, "mac_address": _mac}


def _static_address(cls: type, value: str | None, info: ValidationInfo) -> str | None:
    """The validator of ``ipv4_address``, ``ipv6_address`` and ``mac_address``, shared by a
    container's spec and its network attachments."""
    assert info.field_name is not None
    return _STATIC_CHECKS[info.field_name](value, info.field_name)


def joined_container(network_mode: str | None) -> str | None:
    """The container named by ``network_mode: container:<ref>``, else None."""
    if network_mode and network_mode.startswith("container:"):
        return network_mode.partition(":")[2]
    return None


_TEST_KINDS = ("CMD", "CMD-SHELL", "NONE")
_MIN_DURATION = 0.001  # docker's minimum for every healthcheck duration (1 ms)


class NetworkAttachment(BaseModel):
    """One network a container joins (compose services may join several).

    The network must exist (the default one, or one made by ``POST /v1/networks``, which
    is where a subnet is chosen and checked): a container cannot bring its own subnet.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="nyx", pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
    aliases: list[str] = Field(default_factory=list)
    internal: bool = False
    ipv4_address: str | None = Field(
        default=None,
        description="the address to give the container on this network (the driver honours "
        "it or refuses it; needs the static_addresses capability)",
    )
    ipv6_address: str | None = Field(
        default=None,
        description="the IPv6 address to give the container on this dual-stack network "
        "(inside its subnet6; needs the static_addresses capability)",
    )
    mac_address: str | None = Field(
        default=None, description="the MAC address of its interface on this network"
    )

    _static = field_validator("ipv4_address", "ipv6_address", "mac_address")(_static_address)

    @model_validator(mode="before")
    @classmethod
    def _no_subnet(cls, data: Any) -> Any:
        """Refuse a ``subnet`` (older nyxd took it unchecked); drop a stored ``null``."""
        if isinstance(data, dict) and "subnet" in data:
            if data["subnet"] is not None:
                raise ValueError(
                    f"subnet {data['subnet']!r}: a container joins existing networks only; "
                    "create the network with its subnet first (POST /v1/networks, "
                    "nyx network create --subnet)"
                )
            data = {k: v for k, v in data.items() if k != "subnet"}
        return data


class StackService(BaseModel):
    """For the DNS policy: the networks (name, internal) one compose service is attached to."""

    networks: list[NetworkAttachment] = Field(default_factory=list)


class Healthcheck(BaseModel):
    """How nyxd checks a running container's health (docker's ``HEALTHCHECK``, compose's
    ``healthcheck:``); what is left unset comes from the image's ``Healthcheck``, then from
    docker's defaults (30 s interval and timeout, 3 retries, no start period).

    Durations are seconds. ``test``: ``["CMD", "prog", "arg"...]`` runs ``prog`` in the
    container, ``["CMD-SHELL", "command line"]`` runs it with ``/bin/sh -c``, ``["NONE"]``
    turns the image's healthcheck off. Exit 0 is healthy, anything else a failure.
    """

    model_config = ConfigDict(extra="forbid")

    test: list[str] | None = Field(
        default=None,
        description='["CMD", prog, args...], ["CMD-SHELL", "command"] or ["NONE"]; '
        "null: the image's",
        examples=[["CMD-SHELL", "wget -q -O /dev/null http://localhost/ || exit 1"]],
    )
    interval: float | None = Field(
        default=None, ge=_MIN_DURATION, description="seconds between probes (default 30)"
    )
    timeout: float | None = Field(
        default=None,
        ge=_MIN_DURATION,
        description="seconds a probe may take before it counts as failed (default 30)",
    )
    retries: int | None = Field(
        default=None, ge=1, description="consecutive failures that make it unhealthy (default 3)"
    )
    start_period: float | None = Field(
        default=None,
        ge=0,
        description="seconds after the start during which failures do not count (default 0)",
    )
    start_interval: float | None = Field(
        default=None,
        ge=_MIN_DURATION,
        description="seconds between probes during the start period (default: interval)",
    )

    @field_validator("test")
    @classmethod
    def _check_test(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value or value[0] not in _TEST_KINDS:
            raise ValueError(
                f"healthcheck test {value!r} must start with CMD, CMD-SHELL or NONE "
                '(["CMD", "prog", "arg"], ["CMD-SHELL", "command"], ["NONE"])'
            )
        if any("\0" in v for v in value):
            raise ValueError(f"healthcheck test {value!r} contains a NUL character")
        kind, rest = value[0], value[1:]
        if kind == "NONE" and rest:
            raise ValueError(f'healthcheck test {value!r}: ["NONE"] takes no arguments')
        if kind == "CMD" and (not rest or not rest[0]):
            raise ValueError(f"healthcheck test {value!r}: CMD needs a program to run")
        if kind == "CMD-SHELL" and (len(rest) != 1 or not rest[0].strip()):
            raise ValueError(
                f"healthcheck test {value!r}: CMD-SHELL takes one command line "
                '(["CMD-SHELL", "curl -f http://localhost/ || exit 1"])'
            )
        return value


class ContainerSpec(BaseModel):
    """A request to run one container (API, supervisor and CLI share it)."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field(min_length=1)
    name: str | None = Field(default=None, pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")
    hostname: str | None = Field(
        default=None, pattern=r"^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$"
    )
    command: list[str] | None = None
    entrypoint: list[str] | None = None
    env: dict[str, str] = Field(default_factory=dict)
    workdir: str | None = None
    user: str | None = None
    ports: list[PortMapping] = Field(default_factory=list)
    aliases: list[str] = Field(default_factory=list)
    network: str = "nyx"
    internal: bool = False
    networks: list[NetworkAttachment] = Field(
        default_factory=list,
        description="networks to join; empty means the default network (network/internal)",
    )
    stack: str | None = Field(default=None, description="compose project name, if any")
    stack_services: dict[str, StackService] | None = Field(
        default=None, description="every service of the stack with its networks (DNS policy)"
    )
    dns: bool | None = Field(default=None, description="None: follow the daemon's DNS policy")
    rm: bool = False
    labels: dict[str, str] = Field(default_factory=dict)
    # -- networking keys (docker run's --network MODE, --ip, --add-host, --dns...)
    network_mode: str | None = Field(
        default=None,
        description="None: the container's own netns on its networks; 'host': the host's "
        "network namespace; 'none': a netns with lo only; 'container:<name or id>': join "
        "that running container's network namespace",
    )
    domainname: str | None = Field(default=None, description="NIS domain name (UTS)")
    ipv4_address: str | None = Field(
        default=None, description="address on the default network (--ip); see networks[]"
    )
    ipv6_address: str | None = Field(
        default=None,
        description="IPv6 address on the default network (--ip6; it must be dual stack); "
        "see networks[]",
    )
    mac_address: str | None = Field(
        default=None, description="MAC address on the default network (--mac-address)"
    )
    extra_hosts: list[str] = Field(
        default_factory=list,
        description="NAME:ADDRESS lines added to /etc/hosts; ADDRESS 'host-gateway' is the "
        "gateway of the container's first network",
    )
    dns_servers: list[str] = Field(
        default_factory=list,
        description="nameservers for resolv.conf (after embedded DNS when it serves the "
        "container, else instead of the driver's or host's)",
    )
    dns_search: list[str] = Field(default_factory=list, description="resolv.conf search domains")
    dns_options: list[str] = Field(default_factory=list, description="resolv.conf options")
    expose: list[str] = Field(
        default_factory=list, description="ports the container says it listens on (metadata)"
    )
    sysctls: dict[str, str] = Field(
        default_factory=dict,
        description="net.* sysctls set in the container's network namespace",
    )

    @field_validator("domainname")
    @classmethod
    def _domainname(cls, value: str | None) -> str | None:
        if value is not None and not _DNS_NAME_RE.match(value):
            raise ValueError(f"domainname {value!r} is not a valid domain name")
        return value

    @field_validator("network_mode")
    @classmethod
    def _network_mode(cls, value: str | None) -> str | None:
        if value in (None, "bridge"):
            return None
        if value in ("host", "none"):
            return value
        ref = joined_container(value)
        if ref is not None and _CONTAINER_REF_RE.match(ref):
            return value
        raise ValueError(
            f"network_mode {value!r}: must be 'host', 'none', 'bridge' or 'container:<name or id>'"
        )

    _static = field_validator("ipv4_address", "ipv6_address", "mac_address")(_static_address)

    @field_validator("extra_hosts")
    @classmethod
    def _extra_hosts(cls, value: list[str]) -> list[str]:
        out = []
        for item in value:
            sep = "=" if "=" in item else ":"
            name, found, addr = item.partition(sep)
            if not found or not _DNS_NAME_RE.match(name):
                raise ValueError(f"extra_hosts {item!r}: must be NAME:ADDRESS (or NAME=ADDRESS)")
            addr = addr.strip("[]") if sep == "=" else addr
            if addr != HOST_GATEWAY:
                try:
                    addr = str(ipaddress.ip_address(addr))
                except ValueError as exc:
                    raise ValueError(
                        f"extra_hosts {item!r}: {addr!r} is not an IP address or {HOST_GATEWAY}"
                    ) from exc
            out.append(f"{name}:{addr}")
        return out

    @field_validator("dns_servers")
    @classmethod
    def _dns_servers(cls, value: list[str]) -> list[str]:
        out = []
        for item in value:
            try:
                out.append(str(ipaddress.ip_address(item)))
            except ValueError as exc:
                raise ValueError(f"dns_servers {item!r} is not an IP address") from exc
        return out

    @field_validator("dns_search")
    @classmethod
    def _dns_search(cls, value: list[str]) -> list[str]:
        for item in value:
            if item != "." and not _DNS_NAME_RE.match(item.rstrip(".")):
                raise ValueError(f"dns_search {item!r} is not a domain name")
        if len(value) > 1 and "." in value:
            raise ValueError(f"dns_search {value!r}: '.' (no search domains) stands alone")
        return value

    @field_validator("dns_options")
    @classmethod
    def _dns_options(cls, value: list[str]) -> list[str]:
        for item in value:
            if not _DNS_OPTION_RE.match(item):
                raise ValueError(f"dns_options {item!r} is not a resolv.conf option (ndots:2)")
        return value

    @field_validator("expose")
    @classmethod
    def _expose(cls, value: list[str]) -> list[str]:
        out = []
        for item in value:
            m = _EXPOSE_RE.match(item)
            lo = int(m.group(1)) if m else 0
            hi = int(m.group(2) or lo) if m else 0
            if not m or not 1 <= lo <= hi <= 65535:
                raise ValueError(f"expose {item!r}: must be PORT[-PORT][/tcp|udp], 1-65535")
            proto = (m.group(3) or "tcp") if m else "tcp"
            out.append(f"{lo}{f'-{hi}' if hi != lo else ''}/{proto}")
        return list(dict.fromkeys(out))

    @field_validator("sysctls")
    @classmethod
    def _sysctls(cls, value: dict[str, str]) -> dict[str, str]:
        for key, val in value.items():
            if not _SYSCTL_RE.match(key):
                why = "only net.* sysctls (the container's network namespace) can be set"
                if key.startswith("net."):
                    why = "components are letters, digits, '_' and '-'"
                raise ValueError(f"sysctls {key!r}: {why}")
            if "\n" in val or "\0" in val or len(val) > 4096:
                raise ValueError(f"sysctls {key!r}: bad value {val!r}")
        return value

    @model_validator(mode="after")
    def _network_mode_conflicts(self) -> Self:
        """What a container without a network of its own cannot have (docker's rules)."""
        if self.networks:
            for f in ("ipv4_address", "ipv6_address", "mac_address"):
                if getattr(self, f) is not None:
                    raise ValueError(
                        f"{f} {getattr(self, f)!r}: with networks[], give it on the network "
                        f"(networks[].{f})"
                    )
        mode = self.network_mode
        if mode is None:
            return self
        refused = ["networks", "aliases", "internal", "ports", "ipv4_address", "mac_address"]
        refused += ["ipv6_address"]
        if mode == "host":
            refused += ["sysctls"]
        elif mode != "none":  # container:<ref> shares the other's names and files too
            refused += ["hostname", "domainname", "extra_hosts", "dns_servers", "dns_search"]
            refused += ["dns_options", "expose", "sysctls"]
        for f in refused:
            value = getattr(self, f)
            if value:
                raise ValueError(
                    f"{f} {_short(value)}: not with network_mode {mode!r} (the container has "
                    "no network of its own)"
                )
        if "network" in self.model_fields_set and self.network != "nyx":
            raise ValueError(f"network {self.network!r}: not with network_mode {mode!r}")
        return self

    # -- mounts, capabilities, init, stop (see _models_runtime)
    mounts: list[Mount] = Field(
        default_factory=list, description="bind mounts, named or anonymous volumes, tmpfs"
    )
    files: list[FileMount] = Field(
        default_factory=list,
        description="files written by nyxd and mounted read-only (compose secrets, configs)",
    )
    cap_add: list[str] = Field(
        default_factory=list, description="capabilities added to docker's 14 (or ALL)"
    )
    cap_drop: list[str] = Field(default_factory=list, description="capabilities dropped (or ALL)")
    init: bool = Field(default=False, description="run a tiny init (tini) as PID 1")
    stop_signal: str | None = Field(
        default=None, description="signal that stops it (default: the image's, else SIGTERM)"
    )
    stop_timeout: float | None = Field(
        default=None, ge=0, le=86400, description="grace seconds before SIGKILL (default 10)"
    )

    @field_validator("cap_add", "cap_drop")
    @classmethod
    def _caps(cls, value: list[str], info: ValidationInfo) -> list[str]:
        return normalize_capabilities(value, info.field_name or "capabilities")

    @field_validator("stop_signal")
    @classmethod
    def _signal(cls, value: str | None) -> str | None:
        if value is not None:
            parse_signal(value)
        return value

    @model_validator(mode="after")
    def _one_mount_per_target(self) -> ContainerSpec:
        seen: dict[str, str] = {}
        for i, target in [(f"mounts[{i}]", m.target) for i, m in enumerate(self.mounts)] + [
            (f"files[{i}]", f.target) for i, f in enumerate(self.files)
        ]:
            if target in seen:
                raise ValueError(f"{i}: target {target!r} is also the target of {seen[target]}")
            seen[target] = i
        return self

    restart: str = Field(
        default="no",
        description="restart policy: no, on-failure[:N], always, unless-stopped",
        examples=["unless-stopped"],
    )
    healthcheck: Healthcheck | None = Field(
        default=None, description="null: the image's HEALTHCHECK, if any"
    )

    @field_validator("restart")
    @classmethod
    def _check_restart(cls, value: str) -> str:
        return str(RestartPolicy.parse(value))

    @model_validator(mode="after")
    def _restart_without_rm(self) -> ContainerSpec:
        if self.rm and self.restart != "no":
            raise ValueError(
                f"restart {self.restart!r} and rm: a container removed when it exits cannot "
                "be restarted; choose one"
            )
        return self

    def restart_policy(self) -> RestartPolicy:
        """The parsed ``restart``."""
        return RestartPolicy.parse(self.restart)

    def attachments(self) -> list[NetworkAttachment]:
        """The networks to join, the default network when none is listed; none for a
        container with a ``network_mode`` (host, none, another container's)."""
        if self.network_mode is not None:
            return []
        if self.networks:
            return list(self.networks)
        return [
            NetworkAttachment(
                name=self.network,
                aliases=self.aliases,
                internal=self.internal,
                ipv4_address=self.ipv4_address,
                ipv6_address=self.ipv6_address,
                mac_address=self.mac_address,
            )
        ]


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
