"""nyx-core: the contract between nyxd and its network drivers and DNS providers."""

from __future__ import annotations

from loguru import logger

from ._hostnet import HostView, check_subnet_on_host, read_host_view
from ._ipam import LeaseState, LeaseStore, allocate
from ._markers import hookimpl, hookspec
from ._models import (
    BackendCapabilities,
    ContainerSpec,
    InterfaceResult,
    NetworkAttachment,
    NetworkInfo,
    NetworkSpec,
    PortMapping,
    SetupOptions,
    SetupResult,
    StackService,
)
from ._plugins import (
    DNS_GROUP,
    DRIVER_GROUP,
    DnsFacade,
    InstalledPlugin,
    NetworkBackend,
    installed_plugins,
    load_plugin,
    make_plugin_manager,
    plugin_class,
    plugin_settings_class,
)
from ._policy import DnsDecision, StackNetwork, dns_policy
from ._portset import (
    PortRange,
    check_port_clash,
    find_port_clash,
    port_ranges,
    published_count,
    runs_of_ports,
)
from ._protocols import Backend, DnsProvider, backend_plugin, dns_plugin
from ._reference import Reference, normalize_reference
from ._registry import ProgressEvent, PulledImage, login, pull_to_oci_layout
from ._settings import (
    DnsMode,
    NyxSettings,
    PluginSettings,
    load_settings,
    parse_options,
    plugin_settings_config,
)
from .errors import (
    BackendError,
    CniPluginError,
    ConfigError,
    DigestMismatchError,
    DnsError,
    FirewallError,
    ImageNotFoundError,
    InvalidReferenceError,
    IpamError,
    NetlinkError,
    NoMatchingPlatformError,
    NyxError,
    PluginError,
    PluginLoadError,
    PluginNotFoundError,
    PortConflictError,
    RegistryError,
    TeardownError,
    UnauthorizedError,
)

__version__ = "0.1.0"

logger.disable("nyx_core")

__all__ = [
    "DNS_GROUP",
    "DRIVER_GROUP",
    "Backend",
    "BackendCapabilities",
    "BackendError",
    "CniPluginError",
    "ConfigError",
    "ContainerSpec",
    "DigestMismatchError",
    "DnsDecision",
    "DnsError",
    "DnsFacade",
    "DnsMode",
    "DnsProvider",
    "FirewallError",
    "HostView",
    "ImageNotFoundError",
    "InstalledPlugin",
    "InterfaceResult",
    "InvalidReferenceError",
    "IpamError",
    "LeaseState",
    "LeaseStore",
    "NetlinkError",
    "NetworkAttachment",
    "NetworkBackend",
    "NetworkInfo",
    "NetworkSpec",
    "NoMatchingPlatformError",
    "NyxError",
    "NyxSettings",
    "PluginError",
    "PluginLoadError",
    "PluginNotFoundError",
    "PluginSettings",
    "PortConflictError",
    "PortMapping",
    "PortRange",
    "ProgressEvent",
    "PulledImage",
    "Reference",
    "RegistryError",
    "SetupOptions",
    "SetupResult",
    "StackNetwork",
    "StackService",
    "TeardownError",
    "UnauthorizedError",
    "__version__",
    "allocate",
    "backend_plugin",
    "check_port_clash",
    "check_subnet_on_host",
    "dns_plugin",
    "dns_policy",
    "find_port_clash",
    "hookimpl",
    "hookspec",
    "installed_plugins",
    "load_plugin",
    "load_settings",
    "login",
    "make_plugin_manager",
    "normalize_reference",
    "parse_options",
    "plugin_class",
    "plugin_settings_class",
    "plugin_settings_config",
    "port_ranges",
    "published_count",
    "pull_to_oci_layout",
    "read_host_view",
    "runs_of_ports",
]
