"""Shared types: one struct for the API, the supervisor and every driver."""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyAddress,
    IPvAnyInterface,
    field_validator,
    model_validator,
)

from .errors import ConfigError

__all__ = [
    "BackendCapabilities",
    "InterfaceResult",
    "NetworkInfo",
    "NetworkSpec",
    "PortMapping",
    "SetupOptions",
    "SetupResult",
]

Protocol = Literal["tcp", "udp"]

_PORT_RE = re.compile(r"^(\d+)(?:-(\d+))?$")


def _port_range(text: str, field: str, spec: str) -> tuple[int, int]:
    m = _PORT_RE.match(text)
    if not m:
        raise ConfigError(f"port mapping {spec!r}: {field} {text!r} is not a port or range")
    lo = int(m.group(1))
    hi = int(m.group(2)) if m.group(2) else lo
    for p in (lo, hi):
        if not 1 <= p <= 65535:
            raise ConfigError(f"port mapping {spec!r}: {field} {p} is outside 1-65535")
    if hi < lo:
        raise ConfigError(f"port mapping {spec!r}: {field} range {text!r} is reversed")
    return lo, hi


class PortMapping(BaseModel):
    """One published port (or range of ``range`` consecutive ports).

    ``host_ip`` ``None`` means every host address. ``host_port..host_port+range-1`` maps to
    ``container_port..container_port+range-1``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    host_ip: IPvAnyAddress | None = None
    host_port: int = Field(ge=1, le=65535)
    container_port: int = Field(ge=1, le=65535)
    protocol: Protocol = "tcp"
    range: int = Field(default=1, ge=1, le=65535)

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        """Accept the docker-style string anywhere a PortMapping is expected (API, compose)."""
        if isinstance(data, str):
            return cls.parse(data).model_dump()
        return data

    @model_validator(mode="after")
    def _check_range(self) -> Self:
        for name, start in (("host_port", self.host_port), ("container_port", self.container_port)):
            if start + self.range - 1 > 65535:
                raise ValueError(f"{name} {start} with range {self.range} goes past 65535")
        return self

    @classmethod
    def parse(cls, spec: str) -> PortMapping:
        """Parse a docker-style ``-p`` value.

        Accepted: ``8080:80``, ``127.0.0.1:8080:80/udp``, ``[::1]:8080:80``,
        ``8000-8005:8000-8005``, ``0.0.0.0:53:53/udp``. A bare container port (docker's
        random host port) is refused: nyx publishes only ports you name.
        """
        if not isinstance(spec, str) or not spec.strip():
            raise ConfigError(f"port mapping {spec!r}: empty")
        text = spec.strip()
        proto: str = "tcp"
        if "/" in text:
            text, proto = text.rsplit("/", 1)
            proto = proto.lower()
            if proto not in ("tcp", "udp"):
                raise ConfigError(f"port mapping {spec!r}: protocol {proto!r} is not tcp or udp")
        host_ip: str | None = None
        if text.startswith("["):
            end = text.find("]")
            if end < 0 or text[end + 1 : end + 2] != ":":
                raise ConfigError(f"port mapping {spec!r}: bad bracketed IPv6 host address")
            host_ip = text[1:end]
            rest = text[end + 2 :].split(":")
        else:
            parts = text.split(":")
            if len(parts) == 3:
                host_ip, rest = parts[0], parts[1:]
            else:
                rest = parts
        if len(rest) == 1:
            raise ConfigError(
                f"port mapping {spec!r}: host port missing (use HOST_PORT:CONTAINER_PORT)"
            )
        if len(rest) != 2:
            raise ConfigError(
                f"port mapping {spec!r}: expected [HOST_IP:]HOST_PORT:CONTAINER_PORT[/PROTO]"
            )
        hlo, hhi = _port_range(rest[0], "host port", spec)
        clo, chi = _port_range(rest[1], "container port", spec)
        if hhi - hlo != chi - clo:
            raise ConfigError(
                f"port mapping {spec!r}: host range {rest[0]} and container range {rest[1]} "
                "differ in length"
            )
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
        if host_ip not in (None, ""):
            try:
                ip = ipaddress.ip_address(host_ip)
            except ValueError as exc:
                raise ConfigError(
                    f"port mapping {spec!r}: host_ip {host_ip!r} is not an IP address"
                ) from exc
        return cls(
            host_ip=ip,
            host_port=hlo,
            container_port=clo,
            protocol=proto,
            range=hhi - hlo + 1,
        )

    def __str__(self) -> str:
        def rng(p: int) -> str:
            return f"{p}-{p + self.range - 1}" if self.range > 1 else str(p)

        ip = ""
        if self.host_ip is not None:
            ip = f"[{self.host_ip}]:" if self.host_ip.version == 6 else f"{self.host_ip}:"
        return f"{ip}{rng(self.host_port)}:{rng(self.container_port)}/{self.protocol}"


class SetupOptions(BaseModel):
    """Per-container network options handed to ``nyx_backend_setup``.

    Drivers ignore what they cannot honour and document it. ``static_ip``, ``static_ip6``
    and ``mac`` are only ever set for a driver declaring ``static_addresses`` (nyxd refuses
    them before setup otherwise); such a driver honours them or refuses them.

    ``static_ip6`` is the IPv6 address asked for; ``static_ip`` stays the IPv4 one, and for
    older callers may hold the IPv6 one instead. A request naming an IPv6 address in both
    is refused. Drivers read :attr:`static_v4` and :attr:`static_v6`, which sort that out.
    """

    model_config = ConfigDict(extra="forbid")

    hostname: str | None = None
    aliases: list[str] = Field(default_factory=list)
    network: str = "nyx"
    internal: bool = False
    interface: str = "eth0"
    static_ip: IPvAnyAddress | None = Field(
        default=None,
        description="the IPv4 address asked for (an IPv6 one is accepted too: older callers)",
    )
    static_ip6: ipaddress.IPv6Address | None = Field(
        default=None, description="the IPv6 address asked for (dual-stack networks)"
    )
    mac: str | None = None
    subnet: IPvAnyInterface | None = Field(
        default=None,
        description="for extra networks (compose): the network's gateway/prefix; None = default",
    )
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("static_ip6", mode="before")
    @classmethod
    def _static_ip6_is_ipv6(cls, value: Any) -> Any:
        if value is None or isinstance(value, ipaddress.IPv6Address):
            return value
        try:
            if not isinstance(value, str | ipaddress.IPv4Address):
                raise TypeError(type(value).__name__)
            ip = ipaddress.ip_address(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"static_ip6 {str(value)!r} is not an IPv6 address") from exc
        if not isinstance(ip, ipaddress.IPv6Address):
            raise ValueError(
                f"static_ip6 {str(value)!r} is an IPv4 address, not IPv6 (give it as static_ip)"
            )
        return ip

    @model_validator(mode="after")
    def _one_ipv6_address(self) -> Self:
        if self.static_ip6 is not None and isinstance(self.static_ip, ipaddress.IPv6Address):
            raise ValueError(
                f"static_ip {self.static_ip} and static_ip6 {self.static_ip6} both ask for "
                "an IPv6 address: give it once, as static_ip6 (static_ip is the IPv4 one)"
            )
        return self

    @property
    def static_v4(self) -> ipaddress.IPv4Address | None:
        """The IPv4 address asked for (``static_ip`` when it is IPv4), or None."""
        ip = self.static_ip
        return ip if isinstance(ip, ipaddress.IPv4Address) else None

    @property
    def static_v6(self) -> ipaddress.IPv6Address | None:
        """The IPv6 address asked for (``static_ip6``, or an IPv6 ``static_ip``), or None."""
        if self.static_ip6 is not None:
            return self.static_ip6
        ip = self.static_ip
        return ip if isinstance(ip, ipaddress.IPv6Address) else None

    @property
    def static_v6_field(self) -> str:
        """The field :attr:`static_v6` came from, for error messages."""
        return "static_ip6" if self.static_ip6 is not None else "static_ip"


class InterfaceResult(BaseModel):
    """One interface a driver created in the container's netns."""

    name: str
    mac: str | None = None
    addresses: list[IPvAnyInterface] = Field(default_factory=list)


class SetupResult(BaseModel):
    """What ``nyx_backend_setup`` returns: interfaces, addresses, gateway and DNS facts.

    Drivers *return* what DNS needs (``dns_server``, ``dns_search``); they never call the
    DNS provider themselves.
    """

    container_id: str
    network: str = "nyx"
    interfaces: list[InterfaceResult] = Field(default_factory=list)
    gateway: IPvAnyAddress | None = None
    dns_server: IPvAnyAddress | None = None
    dns_search: list[str] = Field(default_factory=list)
    internal: bool = False
    extra: dict[str, Any] = Field(default_factory=dict)

    @property
    def ips(self) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        """Every address of every interface, without prefix."""
        return [a.ip for i in self.interfaces for a in i.addresses]


class BackendCapabilities(BaseModel):
    """What a network driver can do (``nyx_backend_capabilities``).

    nyxd, the DNS policy and compose read these, never a driver's name. Every field
    defaults to ``False``: a driver declares only what it really does (the conformance
    suite checks each claim).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    publishes_ports: bool = Field(
        default=False, description="honours the ports of nyx_backend_setup (-p HOST:CTR)"
    )
    multiple_networks: bool = Field(
        default=False, description="a container may join several networks (eth0, eth1...)"
    )
    enforces_internal: bool = Field(
        default=False,
        description="an internal network's containers cannot reach outside its subnet",
    )
    external_dns: bool = Field(
        default=False,
        description=(
            "the driver's own chain may serve DNS (as CNI's dnsname does): under --dns auto "
            "embedded DNS then serves only compose stacks on internal-only networks"
        ),
    )
    ipv6: bool = Field(default=False, description="IPv6 subnets, addresses and port maps")
    network_lifecycle: bool = Field(
        default=False,
        description=(
            "implements nyx_backend_network_create / nyx_backend_network_remove: "
            "nyx network create|rm ask the driver"
        ),
    )
    static_addresses: bool = Field(
        default=False,
        description=(
            "honours SetupOptions.static_ip, static_ip6 and mac (nyx run --ip/--ip6/"
            "--mac-address, compose ipv4_address/ipv6_address/mac_address): the address is "
            "given or refused, never ignored"
        ),
    )


class NetworkSpec(BaseModel):
    """A network nyxd asks a driver to create (``nyx_backend_network_create``).

    nyxd fills ``subnet``/``gateway`` from the user's request or from its pool of free
    subnets; ``options`` are driver options (``nyx network create -o key=value``, compose
    ``driver_opts``) that the driver validates and refuses when it cannot honour them.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")
    subnet: ipaddress.IPv4Network | None = None
    gateway: ipaddress.IPv4Address | None = None
    subnet6: ipaddress.IPv6Network | None = None
    gateway6: ipaddress.IPv6Address | None = None
    internal: bool = False
    default: bool = Field(default=False, description="nyxd's default network (from settings)")
    options: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _gateways_inside(self) -> Self:
        for net, gw, what in (
            (self.subnet, self.gateway, "gateway"),
            (self.subnet6, self.gateway6, "gateway6"),
        ):
            if gw is not None and net is None:
                raise ValueError(f"{what} {gw} given without its subnet")
            if gw is not None and net is not None and gw not in net:
                raise ValueError(f"{what} {gw} is not inside {net}")
        return self

    @property
    def gateway_interface(self) -> ipaddress.IPv4Interface | None:
        """``gateway/prefix`` (the subnet's first address when no gateway is given)."""
        if self.subnet is None:
            return None
        gw = self.gateway or self.subnet.network_address + 1
        return ipaddress.IPv4Interface(f"{gw}/{self.subnet.prefixlen}")

    @property
    def gateway_interface6(self) -> ipaddress.IPv6Interface | None:
        """IPv6 ``gateway6/prefix`` (the subnet's first address when no gateway6 is given);
        None for an IPv4-only network."""
        if self.subnet6 is None:
            return None
        gw = self.gateway6 or self.subnet6.network_address + 1
        return ipaddress.IPv6Interface(f"{gw}/{self.subnet6.prefixlen}")


class NetworkInfo(BaseModel):
    """What a driver made of a :class:`NetworkSpec`; nyxd records and shows it."""

    model_config = ConfigDict(extra="forbid")

    name: str
    subnet: ipaddress.IPv4Network | None = None
    gateway: ipaddress.IPv4Address | None = None
    subnet6: ipaddress.IPv6Network | None = None
    gateway6: ipaddress.IPv6Address | None = None
    internal: bool = False
    interface: str | None = Field(
        default=None, description="the host-side device (bridge) of the network, if any"
    )
    options: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    extra: dict[str, Any] = Field(default_factory=dict, description="driver-specific facts")
