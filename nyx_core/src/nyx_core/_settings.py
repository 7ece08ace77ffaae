"""nyxd settings: flags beat ``NYXD_*`` environment variables beat defaults."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar, cast

from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .errors import ConfigError

__all__ = [
    "DnsMode",
    "LogLevel",
    "NyxSettings",
    "PluginSettings",
    "load_settings",
    "parse_options",
    "plugin_settings_config",
]

DnsMode = Literal["auto", "embedded", "cni", "off"]
LogLevel = Literal["trace", "debug", "info", "warning", "error", "critical"]


_OPT_KEY = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$"


def parse_options(value: Any, what: str = "driver option") -> dict[str, str]:
    """``k=v`` options from a mapping, a list of ``k=v`` strings or ``"k=v,k2=v2"``.

    :raises ValueError: naming the bad item (not ``k=v``, bad key, key given twice).
    """
    import re

    if value is None:
        return {}
    if isinstance(value, dict):
        items = [(str(k), str(v)) for k, v in value.items()]
    else:
        parts = value.split(",") if isinstance(value, str) else list(value)
        items = []
        for part in parts:
            text = str(part).strip()
            if not text:
                continue
            key, sep, val = text.partition("=")
            if not sep:
                raise ValueError(f"{what} {text!r} is not key=value")
            items.append((key.strip(), val.strip()))
    out: dict[str, str] = {}
    for key, val in items:
        if not re.match(_OPT_KEY, key):
            raise ValueError(f"{what} key {key!r} is not valid ([a-zA-Z0-9][a-zA-Z0-9_.-]*)")
        if key in out:
            raise ValueError(f"{what} {key!r} is given twice")
        out[key] = val
    return out


class PluginSettings(BaseSettings):
    """Base class of a plugin's own settings (its bridge name, binary dirs, tunables...).

    A plugin class names it in its ``settings_class`` attribute; nyxd then adds one flag
    per field (``--<plugin>-<field>``, or the field's ``json_schema_extra={"flag": ...}``)
    to ``nyxd --help``, builds the instance from flags, ``NYXD_<PLUGIN>_<FIELD>`` env vars
    and defaults, and hands it over inside the core settings: the plugin reads it with
    ``settings.plugin(MySettings)``. Use :func:`plugin_settings_config` for the config.
    """

    model_config = SettingsConfigDict(extra="forbid", frozen=True, validate_default=True)


def plugin_settings_config(name: str) -> SettingsConfigDict:
    """The model config of plugin ``name``'s settings: env prefix ``NYXD_<NAME>_``."""
    prefix = "NYXD_" + name.upper().replace("-", "_") + "_"
    return SettingsConfigDict(env_prefix=prefix, extra="forbid", frozen=True, validate_default=True)


P = TypeVar("P", bound=PluginSettings)


class NyxSettings(BaseSettings):
    """Every nyxd setting. Each field's ``description`` is also its ``--help`` text."""

    model_config = SettingsConfigDict(
        env_prefix="NYXD_", extra="forbid", validate_default=True, frozen=True
    )

    net_driver: str = Field(
        default="native",
        min_length=1,
        description="network driver: entry point name in group nyx.net_drivers",
    )
    dns: DnsMode = Field(
        default="auto", description="DNS mode: auto, embedded, cni or off (see docs/networking.md)"
    )
    dns_provider: str = Field(
        default="embedded",
        min_length=1,
        description="DNS provider: entry point name in group nyx.dns_providers",
    )
    driver_opts: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description="options for the network driver (key=value, repeatable; env: k=v,k2=v2)",
        json_schema_extra={"flags": ["--driver-opt"]},
    )
    gateway_ip: ipaddress.IPv4Address = Field(
        default=ipaddress.IPv4Address("10.88.0.1"),
        description="bridge gateway address; the embedded DNS server listens here",
    )
    container_subnet: ipaddress.IPv4Network = Field(
        default=ipaddress.IPv4Network("10.88.0.0/16"),
        description="subnet containers get addresses from; must contain the gateway",
    )
    container_subnet6: ipaddress.IPv6Network | None = Field(
        default=None,
        description="IPv6 subnet of the default network (dual stack; /64 or larger); "
        "unset: IPv4 only",
    )
    gateway_ip6: ipaddress.IPv6Address | None = Field(
        default=None,
        description="IPv6 gateway of the default network (default: the subnet's first address)",
    )
    network: str = Field(
        default="nyx",
        pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$",
        description="the default network's name (for the CNI driver: its conflist's name)",
    )
    log_level: LogLevel = Field(default="info", description="log level")
    state_dir: Path = Field(
        default=Path("/var/lib/nyx"), description="persistent state (leases, images, containers)"
    )
    run_dir: Path = Field(
        default=Path("/run/nyx"), description="runtime state (netns mounts, resolv.conf, bundles)"
    )
    dns_port: int = Field(
        default=53, ge=1, le=65535, description="port of the embedded DNS server (tests move it)"
    )
    max_published_ports: int = Field(
        default=1024,
        ge=1,
        le=131070,
        description="most host ports one container may publish (each port of a range counts; "
        "each is one reserved socket and one nftables element)",
    )
    _plugins: dict[type[PluginSettings], PluginSettings] = PrivateAttr(default_factory=dict)

    @field_validator("driver_opts", mode="before")
    @classmethod
    def _parse_driver_opts(cls, value: Any) -> dict[str, str]:
        return parse_options(value)

    def plugin(self, cls: type[P]) -> P:
        """The plugin settings of class ``cls`` nyxd built from flags (else env + defaults)."""
        found = self._plugins.get(cls)
        if found is None:
            found = cls()
            self._plugins[cls] = found
        assert isinstance(found, cls)
        return found

    def with_plugins(self, *plugin_settings: PluginSettings) -> Self:
        """A copy carrying ``plugin_settings`` (what :meth:`plugin` returns for their classes)."""
        copy = self.model_copy()
        copy._plugins = {**self._plugins, **{type(p): p for p in plugin_settings}}
        return copy

    @model_validator(mode="after")
    def _gateway_inside_subnet(self) -> Self:
        net = self.container_subnet
        gw = self.gateway_ip
        if net.prefixlen > 30:
            raise ValueError(f"container_subnet {net} is too small (need /30 or larger)")
        if gw not in net:
            raise ValueError(f"gateway_ip {gw} is not inside container_subnet {net}")
        if gw in (net.network_address, net.broadcast_address):
            raise ValueError(f"gateway_ip {gw} is the network or broadcast address of {net}")
        net6, gw6 = self.container_subnet6, self.gateway_ip6
        if net6 is None:
            if gw6 is not None:
                raise ValueError(f"gateway_ip6 {gw6} is set but container_subnet6 is not")
            return self
        if net6.prefixlen > 64:
            raise ValueError(f"container_subnet6 {net6} is too small (need /64 or larger)")
        if gw6 is not None and gw6 not in net6:
            raise ValueError(f"gateway_ip6 {gw6} is not inside container_subnet6 {net6}")
        if gw6 is not None and gw6 == net6.network_address:
            raise ValueError(f"gateway_ip6 {gw6} is the subnet-router anycast address of {net6}")
        return self

    @property
    def gateway_interface(self) -> ipaddress.IPv4Interface:
        """The gateway with the subnet's prefix, e.g. ``10.88.0.1/16``."""
        return ipaddress.IPv4Interface(f"{self.gateway_ip}/{self.container_subnet.prefixlen}")

    @property
    def gateway6(self) -> ipaddress.IPv6Address | None:
        """The IPv6 gateway: ``gateway_ip6``, else the subnet's first address; None: IPv4 only."""
        if self.container_subnet6 is None:
            return None
        return self.gateway_ip6 or self.container_subnet6.network_address + 1

    @property
    def gateway_interface6(self) -> ipaddress.IPv6Interface | None:
        """The IPv6 gateway with its prefix, e.g. ``fd00:88::1/64``; None: IPv4 only."""
        gw, net = self.gateway6, self.container_subnet6
        return (
            None if gw is None or net is None else ipaddress.IPv6Interface(f"{gw}/{net.prefixlen}")
        )


S = TypeVar("S", bound=BaseSettings)


def load_settings(settings_class: type[S] | None = None, /, **overrides: Any) -> S:
    """Build settings from overrides (flags), the environment and defaults.

    :param settings_class: :class:`NyxSettings` (the default) or a subclass (nyxd's).
    Overrides whose value is ``None`` are ignored (an unset flag). A bad value raises one
    :class:`ConfigError` naming the setting, its env var and the value.
    """
    cls: type[Any] = settings_class or NyxSettings
    given = {k: v for k, v in overrides.items() if v is not None}
    prefix = str(cls.model_config.get("env_prefix", "NYXD_"))
    try:
        return cast(S, cls(**given))
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            value = err.get("input")
            env = f"{prefix}{loc.upper()}" if loc in cls.model_fields else ""
            where = f"{loc} ({env})" if env else loc
            msg = err["msg"].removeprefix("Value error, ")
            if not loc:
                lines.append(msg)
            elif isinstance(value, dict) or not env:
                lines.append(f"{where}: {msg}")
            else:
                lines.append(f"{where}={value!r}: {msg}")
        raise ConfigError("invalid setting: " + "; ".join(lines)) from exc
