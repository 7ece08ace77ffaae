"""Entry-point discovery and the typed facades nyxd calls hooks through.

One way to hold a plugin: the entry point names a **class** whose methods are the
``@hookimpl`` functions; :func:`load_plugin` instantiates it once (no arguments) and
registers the instance, so every load gets fresh state. A class may name its own settings
in ``settings_class`` (a :class:`~nyx_core.PluginSettings` subclass). Modules with loose
hookimpls are accepted too (pluggy's own way), but the first-party plugins and the
examples are classes.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, ClassVar, Self, cast

import pluggy

from . import hookspecs
from ._markers import PROJECT_NAME
from ._models import (
    BackendCapabilities,
    NetworkInfo,
    NetworkSpec,
    PortMapping,
    SetupOptions,
    SetupResult,
)
from ._settings import NyxSettings, PluginSettings
from .errors import (
    BackendError,
    ConfigError,
    DnsError,
    NyxError,
    PluginLoadError,
    PluginNotFoundError,
)
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
    "plugin_class",
    "plugin_settings_class",
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


def _entry_point(group: str, name: str) -> EntryPoint:
    matches = [ep for ep in _entry_points(group) if ep.name == name]
    if not matches:
        kind = _KINDS.get(group, "plugin")
        raise PluginNotFoundError(kind, name, group, {ep.name for ep in _entry_points(group)})
    return matches[0]


def plugin_class(group: str, name: str) -> object:
    """Import entry point ``name`` of ``group`` (a class, or a module) without registering.

    :raises PluginNotFoundError: listing the installed names.
    :raises PluginLoadError: when it fails to import.
    """
    ep = _entry_point(group, name)
    try:
        return ep.load()
    except Exception as exc:
        kind = _KINDS.get(group, "plugin")
        raise PluginLoadError(f"{kind} {name!r} ({ep.value}) failed to import: {exc}") from exc


def plugin_settings_class(group: str, name: str) -> type[PluginSettings] | None:
    """The ``settings_class`` of plugin ``name`` (None when it has none)."""
    obj = plugin_class(group, name)
    cls = getattr(obj, "settings_class", None)
    if cls is None:
        return None
    if not (isinstance(cls, type) and issubclass(cls, PluginSettings)):
        kind = _KINDS.get(group, "plugin")
        raise PluginLoadError(
            f"{kind} {name!r}: settings_class {cls!r} is not a nyx_core.PluginSettings subclass"
        )
    return cls


def load_plugin(pm: pluggy.PluginManager, group: str, name: str) -> object:
    """Import entry point ``name`` of ``group``, instantiate it if it is a class, register it.

    Only that entry point is imported (``--net-driver=cni`` never imports pyroute2).

    :raises PluginNotFoundError: listing the installed names when there is none.
    :raises PluginLoadError: when it fails to import or instantiate, or its hookimpls do
        not match a spec.
    """
    kind = _KINDS.get(group, "plugin")
    obj = plugin_class(group, name)
    value = _entry_point(group, name).value
    plugin: object = obj
    if inspect.isclass(obj):
        try:
            plugin = obj()
        except Exception as exc:
            raise PluginLoadError(f"{kind} {name!r} ({value}) failed to start: {exc}") from exc
    try:
        pm.register(plugin, name=f"{group}:{name}")
        pm.check_pending()
    except Exception as exc:
        raise PluginLoadError(f"{kind} {name!r} ({value}) is not a valid plugin: {exc}") from exc
    return plugin


def _implemented(pm: pluggy.PluginManager, hook: str) -> bool:
    return bool(getattr(pm.hook, hook).get_hookimpls())


class _Facade:
    """A loaded plugin's hooks behind typed methods; errors become ``error`` naming it."""

    group: ClassVar[str]
    kind: ClassVar[str]
    required: ClassVar[Sequence[str]]
    error: ClassVar[type[NyxError]]

    def __init__(self, pm: pluggy.PluginManager, name: str) -> None:
        self.pm = pm
        self.name = name
        missing = [h for h in self.required if not _implemented(pm, h)]
        if missing:
            raise PluginLoadError(f"{self.kind} {name!r} does not implement: {', '.join(missing)}")

    @classmethod
    def load(cls, name: str, pm: pluggy.PluginManager | None = None) -> Self:
        """Load entry point ``name`` of the facade's group into ``pm`` (or a new one)."""
        pm = pm or make_plugin_manager()
        load_plugin(pm, cls.group, name)
        return cls(pm, name)

    def implements(self, hook: str) -> bool:
        """Whether the loaded plugin implements ``hook`` (for optional hooks)."""
        return _implemented(self.pm, hook)

    def _call(self, hook: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.pm.hook, hook)(**kwargs)
        except NyxError:
            raise
        except Exception as exc:
            raise self.error(f"{self.kind} {self.name!r} {hook} failed: {exc!r}") from exc


class NetworkBackend(_Facade):
    """The one typed facade nyxd uses to call the loaded driver's hooks.

    Its methods mirror the ``nyx_backend_*`` hookspecs argument by argument (a test
    compares them). Optional hooks a driver does not implement answer with defaults:
    no capabilities, and ``network_create``/``network_remove`` refuse clearly.
    """

    group = DRIVER_GROUP
    kind = "net driver"
    required = hookspecs.REQUIRED_BACKEND_HOOKS
    error = BackendError

    def __init__(self, pm: pluggy.PluginManager, name: str) -> None:
        super().__init__(pm, name)
        self._caps: BackendCapabilities | None = None
        caps = self.capabilities()
        lifecycle = ("nyx_backend_network_create", "nyx_backend_network_remove")
        if caps.network_lifecycle and not all(self.implements(h) for h in lifecycle):
            raise PluginLoadError(
                f"net driver {name!r} declares network_lifecycle but does not implement "
                "nyx_backend_network_create and nyx_backend_network_remove"
            )

    def capabilities(self) -> BackendCapabilities:
        if self._caps is None:
            if not self.implements("nyx_backend_capabilities"):
                self._caps = BackendCapabilities()
            else:
                caps = self._call("nyx_backend_capabilities")
                if not isinstance(caps, BackendCapabilities):
                    raise PluginLoadError(
                        f"net driver {self.name!r} nyx_backend_capabilities returned "
                        f"{type(caps).__name__}, not BackendCapabilities"
                    )
                self._caps = caps
        return self._caps

    def ensure_network(
        self, settings: NyxSettings, options: Mapping[str, str] | None = None
    ) -> object | None:
        opts = dict(settings.driver_opts if options is None else options)
        if settings.container_subnet6 is not None and not self.capabilities().ipv6:
            raise ConfigError(
                f"container_subnet6 {settings.container_subnet6} (NYXD_CONTAINER_SUBNET6): "
                f"net driver {self.name!r} is IPv4-only (it does not declare the ipv6 capability)"
            )
        return cast(
            object | None,
            self._call("nyx_backend_ensure_network", settings=settings, options=opts),
        )

    def network_create(self, network: NetworkSpec) -> NetworkInfo:
        if not self.capabilities().network_lifecycle:
            raise ConfigError(
                f"net driver {self.name!r} cannot create networks (network {network.name!r}): "
                "it does not declare the network_lifecycle capability"
            )
        if network.subnet6 is not None and not self.capabilities().ipv6:
            raise ConfigError(
                f"network {network.name!r}: subnet6 {network.subnet6}: net driver "
                f"{self.name!r} is IPv4-only (it does not declare the ipv6 capability)"
            )
        info = self._call("nyx_backend_network_create", network=network)
        if not isinstance(info, NetworkInfo):
            raise BackendError(
                f"net driver {self.name!r} nyx_backend_network_create returned "
                f"{type(info).__name__}, not NetworkInfo"
            )
        return info

    def network_remove(self, name: str) -> None:
        if not self.capabilities().network_lifecycle:
            return
        self._call("nyx_backend_network_remove", name=name)

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

    def gc(self, container_ids: Sequence[str]) -> object | None:
        if not self.implements("nyx_backend_gc"):
            return None
        return cast(object | None, self._call("nyx_backend_gc", container_ids=list(container_ids)))

    def reload(self) -> object | None:
        """Re-apply the driver's host state; ``None`` when the driver has no such hook."""
        if not self.implements("nyx_backend_reload"):
            return None
        return cast(object | None, self._call("nyx_backend_reload"))


class DnsFacade(_Facade):
    """The one typed facade nyxd uses to call the loaded DNS provider's hooks.

    Its methods mirror the ``nyx_dns_*`` hookspecs argument by argument (a test compares
    them).
    """

    group = DNS_GROUP
    kind = "DNS provider"
    required = hookspecs.DNS_HOOKS
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
        aliases: Sequence[str],
        networks: Sequence[str],
        internal_networks: Sequence[str],
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
