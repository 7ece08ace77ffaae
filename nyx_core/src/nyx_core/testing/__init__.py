"""nyx_core.testing: the test kit for nyx drivers (opt in with
``pytest_plugins = ["nyx_core.testing"]``).

Fixtures (see :mod:`nyx_core.testing._pytest_plugin`):

* ``nyx_host_ns``: a throwaway "host" network namespace that looks like a real host; the
  driver under test runs there. It is part of ``nyx_topology`` (:class:`HostTopology`):
  ``uplink0`` 203.0.113.2/24 with the default route via the "internet" namespace
  (``nyx_internet_ns``: 203.0.113.1 and an outside server 198.18.0.10), ``lan0``
  198.51.100.1/24 to a LAN neighbour (``nyx_lan_ns``: 198.51.100.2, a :class:`Neighbour`
  that can route the container subnet or ``127.0.0.1`` to the host). Every link is dual
  stack (``*_IP6``: 2001:db8:113::2 on the uplink, 2001:db8:100::1 on the LAN, the outside
  server 2001:db8:18::10).
* ``nyx_container_ns``: a factory of container namespaces.
* ``nyx_in_host``: the test thread switched into ``nyx_host_ns`` for the test's duration.
* ``nyx_unprivileged``: :class:`Unprivileged`, runs commands as ``nobody`` in a namespace.
* ``nyx_settings``: :class:`~nyx_core.NyxSettings` with state/run dirs under ``tmp_path``.
* ``nyx_hook_recorder``: records every hook call made through a plugin manager.

Two conformance suites (docs/writing-a-driver.md lists every check):

* :class:`BackendConformance` for network drivers: subclass it and provide the
  ``nyx_driver_name`` fixture (override ``nyx_make_backend`` when the driver needs more
  setup; its own settings go in ``nyx_plugin_settings``).
* :class:`DnsProviderConformance` for DNS providers: provide ``nyx_dns_provider_name`` and
  ``nyx_dns_upstream`` (how to make it forward to the kit's fake upstream, or None). It
  needs dnspython (``pip install nyx-core[testing]``).
"""

from __future__ import annotations

from ._conformance import BackendConformance, snapshot_diff
from ._dns_conformance import DnsProviderConformance, UpstreamConfig
from ._dnsnet import NETWORK_A, NETWORK_B, UPSTREAM_ANSWER, DnsClient, DnsNetworks, FakeUpstream
from ._netns import Netns, entered, snapshot
from ._probe import TcpServer, reach, tcp_server
from ._pytest_plugin import *  # noqa: F403  (fixtures are found by pytest through this module)
from ._recorder import HookRecorder
from ._topology import (
    HOST_LINKS,
    INTERNET_SERVER_IP,
    INTERNET_SERVER_IP6,
    LAN_HOST_IP,
    LAN_HOST_IP6,
    LAN_NEIGHBOUR_IP,
    LAN_NEIGHBOUR_IP6,
    UNPRIVILEGED_UID,
    UPLINK_GATEWAY_IP,
    UPLINK_GATEWAY_IP6,
    UPLINK_HOST_IP,
    UPLINK_HOST_IP6,
    HostTopology,
    Neighbour,
    Unprivileged,
    route_localhost_via,
)

__all__ = [
    "HOST_LINKS",
    "INTERNET_SERVER_IP",
    "INTERNET_SERVER_IP6",
    "LAN_HOST_IP",
    "LAN_HOST_IP6",
    "LAN_NEIGHBOUR_IP",
    "LAN_NEIGHBOUR_IP6",
    "NETWORK_A",
    "NETWORK_B",
    "UNPRIVILEGED_UID",
    "UPLINK_GATEWAY_IP",
    "UPLINK_GATEWAY_IP6",
    "UPLINK_HOST_IP",
    "UPLINK_HOST_IP6",
    "UPSTREAM_ANSWER",
    "BackendConformance",
    "DnsClient",
    "DnsNetworks",
    "DnsProviderConformance",
    "FakeUpstream",
    "HookRecorder",
    "HostTopology",
    "Neighbour",
    "Netns",
    "TcpServer",
    "Unprivileged",
    "UpstreamConfig",
    "entered",
    "reach",
    "route_localhost_via",
    "snapshot",
    "snapshot_diff",
    "tcp_server",
]
