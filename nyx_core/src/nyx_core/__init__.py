"""nyx-core: the contract between nyxd and its network drivers and DNS providers.

Hookspecs and markers (:mod:`nyx_core.hookspecs`), the shared models, the error hierarchy
(:mod:`nyx_core.errors`), the base settings and plugin settings, plugin discovery and the
typed facades nyxd calls hooks through, the DNS policy, and helpers for driver authors
(IPAM leases, port intervals, host-route checks). The test kit for driver and DNS-provider
authors is :mod:`nyx_core.testing`. The daemon itself (supervisor, API, images, registry,
runtime, compose) lives in the ``nyx-cli`` distribution.
"""

from __future__ import annotations

from loguru import logger

from ._hostnet import HostView, check_subnet_on_host, read_host_view, subnet_host_conflict
from ._ipam import LeaseState, LeaseStore, UsedAddresses, allocate
from ._markers import hookimpl, hookspec
from ._models import (
    BackendCapabilities,
    InterfaceResult,
    NetworkInfo,
    NetworkSpec,
    PortMapping,
    SetupOptions,
    SetupResult,
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
    clash_message,
    find_port_clash,
    port_ranges,
    published_count,
    runs_of_ports,
)
from ._settings import (
    DnsMode,
    LogLevel,
    NyxSettings,
    PluginSettings,
    load_settings,
    parse_options,
    plugin_settings_config,
)
from .errors import (
    AddressInUseError,
    BackendError,
    CniPluginError,
    ConfigError,
    DnsError,
    FirewallError,
    IpamError,
    NetlinkError,
    NyxError,
    PluginError,
    PluginLoadError,
    PluginNotFoundError,
    PortConflictError,
    TeardownError,
)

__version__ = "0.1.0"

logger.disable("nyx_core")

__all__ = [
    "DNS_GROUP",
    "DRIVER_GROUP",
    "AddressInUseError",
    "BackendCapabilities",
    "BackendError",
    "CniPluginError",
    "ConfigError",
    "DnsDecision",
    "DnsError",
    "DnsFacade",
    "DnsMode",
    "FirewallError",
    "HostView",
    "InstalledPlugin",
    "InterfaceResult",
    "IpamError",
    "LeaseState",
    "LeaseStore",
    "LogLevel",
    "NetlinkError",
    "NetworkBackend",
    "NetworkInfo",
    "NetworkSpec",
    "NyxError",
    "NyxSettings",
    "PluginError",
    "PluginLoadError",
    "PluginNotFoundError",
    "PluginSettings",
    "PortConflictError",
    "PortMapping",
    "PortRange",
    "SetupOptions",
    "SetupResult",
    "StackNetwork",
    "TeardownError",
    "UsedAddresses",
    "__version__",
    "allocate",
    "check_port_clash",
    "check_subnet_on_host",
    "clash_message",
    "dns_policy",
    "find_port_clash",
    "hookimpl",
    "hookspec",
    "installed_plugins",
    "load_plugin",
    "load_settings",
    "make_plugin_manager",
    "parse_options",
    "plugin_class",
    "plugin_settings_class",
    "plugin_settings_config",
    "port_ranges",
    "published_count",
    "read_host_view",
    "runs_of_ports",
    "subnet_host_conflict",
]
