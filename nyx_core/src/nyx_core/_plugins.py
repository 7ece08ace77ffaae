"""Entry-point discovery and the typed facades nyxd calls hooks through."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, ClassVar, Self, cast

import pluggy

from . import hookspecs
from ._markers import PROJECT_NAME
from ._models import PortMapping, SetupOptions, SetupResult
from ._settings import NyxSettings
from .errors import BackendError, DnsError, NyxError, PluginLoadError, PluginNotFoundError
from .hookspecs import IPAddress

__all__ = [
    "DNS_GROUP",
    "DRIVER_GROUP",
    "DnsFacade",
    "InstalledPlugin",
    "NetworkBackend",
    "installed_plugins",
    "load_plugin",
    "make_plugin_manager",
]

DRIVER_GROUP = "nyx.net_drivers"
DNS_GROUP = "nyx.dns_providers"
_KINDS = {DRIVER_GROUP: "net driver", DNS_GROUP: "DNS provider"}


@dataclass(frozen=True)
class InstalledPlugin:
    """One entry point found in a nyx group."""

    group: str
    name: str
    value: str
    distribution: str
    version: str


def _entry_points(group: str) -> list[EntryPoint]:
    return sorted(entry_points(group=group), key=lambda ep: ep.name)


def installed_plugins(group: str | None = None) -> list[InstalledPlugin]:
    """List installed nyx plugins (both groups unless ``group`` is given), without importing."""
    groups = [group] if group else [DRIVER_GROUP, DNS_GROUP]
    found = []
    for g in groups:
        for ep in _entry_points(g):
            dist = ep.dist
            found.append(
                InstalledPlugin(
                    group=g,
                    name=ep.name,
                    value=ep.value,
                    distribution=dist.name if dist else "?",
                    version=dist.version if dist else "?",
                )
            )
    return found


def make_plugin_manager() -> pluggy.PluginManager:
    """A plugin manager with nyx's hookspecs and nothing registered."""
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    return pm


def load_plugin(pm: pluggy.PluginManager, group: str, name: str) -> object:
    """Import and register only the entry point ``name`` of ``group``.

    Raises :class:`PluginNotFoundError` listing the installed names when there is none,
    :class:`PluginLoadError` when it fails to import or its hookimpls do not match a spec.
    """
    kind = _KINDS.get(group, "plugin")
    matches = [ep for ep in _entry_points(group) if ep.name == name]
    if not matches:
        raise PluginNotFoundError(kind, name, group, {ep.name for ep in _entry_points(group)})
    ep = matches[0]
    try:
        plugin = ep.load()
    except Exception as exc:
        raise PluginLoadError(f"{kind} {name!r} ({ep.value}) failed to import: {exc}") from exc
    try:
        pm.register(plugin, name=f"{group}:{name}")
        pm.check_pending()
    except Exception as exc:
        raise PluginLoadError(f"{kind} {name!r} ({ep.value}) is not a valid plugin: {exc}") from exc
    return plugin


def _require(pm: pluggy.PluginManager, names: Sequence[str], what: str) -> None:
    missing = [n for n in names if not getattr(pm.hook, n).get_hookimpls()]
    if missing:
        raise PluginLoadError(f"{what} does not implement: {', '.join(missing)}")


class _Facade:
    """A loaded plugin's hooks behind typed methods; errors become ``error`` naming it."""

    group: ClassVar[str]
    kind: ClassVar[str]
    hooks: ClassVar[Sequence[str]]
    error: ClassVar[type[NyxError]]

    def __init__(self, pm: pluggy.PluginManager, name: str) -> None:
        self.pm = pm
        self.name = name
        _require(pm, self.hooks, f"{self.kind} {name!r}")

    @classmethod
    def load(cls, name: str, pm: pluggy.PluginManager | None = None) -> Self:
        """Load entry point ``name`` of the facade's group into ``pm`` (or a new one)."""
        pm = pm or make_plugin_manager()
        load_plugin(pm, cls.group, name)
        return cls(pm, name)

    def _call(self, hook: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.pm.hook, hook)(**kwargs)
        except NyxError:
            raise
        except Exception as exc:
            raise self.error(f"{self.kind} {self.name!r} {hook} failed: {exc!r}") from exc


class NetworkBackend(_Facade):
    """The one typed facade nyxd uses to call the loaded driver's hooks."""

    group = DRIVER_GROUP
    kind = "net driver"
    hooks = hookspecs.BACKEND_HOOKS
    error = BackendError

    def ensure_network(self, settings: NyxSettings) -> object | None:
        return cast(object | None, self._call("nyx_backend_ensure_network", settings=settings))

    def setup(
        self,
        container_id: str,
        netns_path: str,
        ports: Sequence[PortMapping],
        opts: SetupOptions,
    ) -> SetupResult:
        result = self._call(
            "nyx_backend_setup",
            container_id=container_id,
            netns_path=netns_path,
            ports=list(ports),
            opts=opts,
        )
        if not isinstance(result, SetupResult):
            raise BackendError(
                f"net driver {self.name!r} nyx_backend_setup returned {type(result).__name__}, "
                "not SetupResult"
            )
        return result

    def teardown(self, container_id: str, netns_path: str) -> None:
        self._call("nyx_backend_teardown", container_id=container_id, netns_path=netns_path)


class DnsFacade(_Facade):
    """The one typed facade nyxd uses to call the loaded DNS provider's hooks."""

    group = DNS_GROUP
    kind = "DNS provider"
    hooks = hookspecs.DNS_HOOKS
    error = DnsError

    def start(self, settings: NyxSettings) -> None:
        self._call("nyx_dns_start", settings=settings)

    def stop(self) -> None:
        self._call("nyx_dns_stop")

    def register(
        self,
        container_id: str,
        hostname: str,
        ips: Sequence[IPAddress],
        aliases: Sequence[str] = (),
        networks: Sequence[str] = (),
        internal_networks: Sequence[str] = (),
    ) -> None:
        self._call(
            "nyx_dns_register",
            container_id=container_id,
            hostname=hostname,
            ips=list(ips),
            aliases=list(aliases),
            networks=list(networks),
            internal_networks=list(internal_networks),
        )

    def deregister(self, container_id: str) -> None:
        self._call("nyx_dns_deregister", container_id=container_id)

    def resolv_conf(self, container_id: str) -> str:
        text = self._call("nyx_dns_resolv_conf", container_id=container_id)
        if not isinstance(text, str):
            raise DnsError(f"DNS provider {self.name!r} nyx_dns_resolv_conf returned no text")
        return text
