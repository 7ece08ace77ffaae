"""The nyx error hierarchy.

Every error nyx raises on purpose is a :class:`NyxError`. Messages name the plugin, the hook
and the object involved, so one line is enough for a user to act on.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "AddressInUseError",
    "BackendError",
    "CniPluginError",
    "ConfigError",
    "DnsError",
    "FirewallError",
    "IpamError",
    "NetlinkError",
    "NyxError",
    "PluginError",
    "PluginLoadError",
    "PluginNotFoundError",
    "PortConflictError",
    "TeardownError",
]


class NyxError(Exception):
    """Base class of every error nyx raises on purpose."""


class ConfigError(NyxError, ValueError):
    """A setting, flag or request field has a bad value. The message names field and value."""


class PluginError(NyxError):
    """Base class for plugin discovery and loading problems."""


class PluginNotFoundError(PluginError):
    """No installed plugin has the requested name."""

    def __init__(self, kind: str, name: str, group: str, installed: Iterable[str]) -> None:
        self.kind = kind
        self.name = name
        self.group = group
        self.installed = sorted(installed)
        listed = ", ".join(self.installed) or "none"
        super().__init__(
            f"unknown {kind} {name!r} (entry point group {group!r}); installed: {listed}"
        )


class PluginLoadError(PluginError):
    """A plugin was found but could not be imported or registered."""


class BackendError(NyxError):
    """A network backend (driver) failed."""


class NetlinkError(BackendError):
    """A netlink operation (links, addresses, routes) failed."""


class FirewallError(BackendError):
    """An nftables (or other firewall) operation failed."""


class IpamError(BackendError):
    """Address allocation failed (exhausted pool, static address taken, bad lease file)."""


class AddressInUseError(IpamError):
    """A static address another container already holds on that network (a conflict:
    nyxd answers 409, as for a published port in use)."""


class PortConflictError(BackendError):
    """A host port is already published or in use."""


class CniPluginError(BackendError):
    """A CNI plugin failed; carries the CNI error object's fields."""

    def __init__(
        self, plugin: str, msg: str, *, code: int | None = None, details: str = ""
    ) -> None:
        self.plugin = plugin
        self.code = code
        self.msg = msg
        self.details = details
        text = f"CNI plugin {plugin!r} failed"
        if code is not None:
            text += f" (code {code})"
        text += f": {msg}"
        if details:
            text += f" ({details})"
        super().__init__(text)


class DnsError(NyxError):
    """The DNS provider failed."""


class TeardownError(NyxError):
    """Best-effort teardown finished but some steps failed; ``errors`` lists them all."""

    def __init__(self, what: str, errors: list[BaseException]) -> None:
        self.errors = list(errors)
        joined = "; ".join(str(e) for e in self.errors)
        super().__init__(f"teardown of {what}: {len(self.errors)} step(s) failed: {joined}")
