"""Hook specifications of nyx (pluggy project name ``"nyx"``).

Two families, each with exactly one implementation loaded at a time by nyxd:

* **Backend** (``nyx_backend_*``): the network driver chosen by ``--net-driver``, found in
  the entry point group ``nyx.net_drivers``.
* **DnsProvider** (``nyx_dns_*``): the DNS provider chosen by ``--dns``, found in the
  entry point group ``nyx.dns_providers``.

All hooks are called with keyword arguments only. Every hook here is ``firstresult``:
nyxd registers one driver and one provider, so the first implementation that returns a
non-None value answers. ``docs/hooks.md`` documents each hook under a heading that is its
signature; ``tests/nyx_core/unit/test_docs.py`` fails when one is missing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._markers import hookspec

if TYPE_CHECKING:
    from ._models import PortMapping, SetupOptions, SetupResult
    from ._settings import NyxSettings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# --------------------------------------------------------------------------- Backend


@hookspec(firstresult=True)
def nyx_backend_ensure_network(settings: NyxSettings) -> object | None:
    """Prepare host-wide networking (bridge, firewall table, CNI conflist, ...).

    Called once by nyxd at start, after the driver is loaded and before any container is
    set up; the conformance suite calls it twice in a row.

    :param settings: the daemon's :class:`~nyx_core.NyxSettings` (subnet, gateway, dirs).
    :returns: anything non-None to report success (e.g. a dict describing the network),
        or None.

    Idempotent: a second call changes nothing; a half-present setup is completed, never
    duplicated. Must not touch host state the driver does not own. Raises
    :class:`~nyx_core.NyxError` naming what is missing (kernel module, binary, file).

    Stops at first non-None result.
    """


@hookspec(firstresult=True)
def nyx_backend_setup(
    container_id: str,
    netns_path: str,
    ports: Sequence[PortMapping],
    opts: SetupOptions,
) -> SetupResult | None:
    """Join one container's network namespace to the network.

    Called by the supervisor after it created the container's netns and before the
    container process starts.

    :param container_id: the container's id (stable, unique, ``[a-zA-Z0-9_.-]``).
    :param netns_path: path of the container's network namespace (a bind mount such as
        ``/run/nyx/netns/<id>``).
    :param ports: the :class:`~nyx_core.PortMapping` list to publish.
    :param opts: :class:`~nyx_core.SetupOptions` (hostname, aliases, network name,
        ``internal``, static address...). Options a driver cannot honour are ignored and
        documented.
    :returns: a :class:`~nyx_core.SetupResult` with the interfaces, addresses with prefix,
        gateway and what DNS needs.

    Validates everything before changing anything. A failure half-way undoes the steps
    already applied (no link, lease or firewall entry is left), then raises a
    :class:`~nyx_core.NyxError`. A setup for a container/network already set up is an error.

    Stops at first non-None result.
    """


@hookspec(firstresult=True)
def nyx_backend_teardown(container_id: str, netns_path: str) -> object | None:
    """Remove everything ``nyx_backend_setup`` did for one container.

    Called by the supervisor when the container stops, and by reconciliation after a
    crash.

    :param container_id: the container's id.
    :param netns_path: the container's netns path; it may no longer exist.
    :returns: None (or anything; the value is ignored).

    Best-effort and idempotent: works twice in a row, for a container never set up, and
    when the netns is gone. Never stops at the first failure: it goes on and raises one
    :class:`~nyx_core.TeardownError` listing every failed step at the end.

    Stops at first non-None result.
    """


# ----------------------------------------------------------------------- DnsProvider


@hookspec(firstresult=True)
def nyx_dns_start(settings: NyxSettings) -> object | None:
    """Start the DNS server.

    Called once by nyxd at start when the DNS policy can need the provider (``--dns`` is
    not ``off``), after ``nyx_backend_ensure_network`` (the gateway address exists).

    :param settings: the daemon's settings (``gateway_ip``, ``dns_port``, ``run_dir``).
    :returns: anything non-None on success.

    Idempotent: a second call while running changes nothing.

    Stops at first non-None result.
    """


@hookspec(firstresult=True)
def nyx_dns_stop() -> object | None:
    """Stop the DNS server and close its sockets.

    Called once by nyxd at shutdown. Idempotent; safe when never started.

    :returns: None.

    Stops at first non-None result.
    """


@hookspec(firstresult=True)
def nyx_dns_register(
    container_id: str,
    hostname: str,
    ips: Sequence[IPAddress],
    aliases: Sequence[str],
    networks: Sequence[str],
    internal_networks: Sequence[str],
) -> object | None:
    """Publish a container's names.

    Called by the supervisor after ``nyx_backend_setup`` when the DNS policy says the
    container uses embedded DNS.

    :param container_id: the container's id; records are keyed by it.
    :param hostname: answered as ``<hostname>`` and ``<hostname>.nyxd.local``.
    :param ips: the container's addresses (A for IPv4, AAAA for IPv6, PTR for both).
    :param aliases: extra names (compose service names, ``--network-alias``).
    :param networks: the networks the container is on; a container only resolves names of
        containers sharing one of them.
    :param internal_networks: those of ``networks`` declared ``internal`` (compose
        ``internal: true``): a container whose networks are all internal gets container
        names only, no forwarding to upstream resolvers. Added after 0.1's first cut: an
        implementation may leave it out of its signature (pluggy passes only what it asks).
    :returns: anything non-None on success.

    Takes effect immediately. Registering the same ``container_id`` again replaces its
    records.

    Stops at first non-None result.
    """


@hookspec(firstresult=True)
def nyx_dns_deregister(container_id: str) -> object | None:
    """Remove a container's records.

    Called by the supervisor at teardown. Idempotent: unknown ids are ignored.

    :param container_id: the container's id.
    :returns: None.

    Stops at first non-None result.
    """


@hookspec(firstresult=True)
def nyx_dns_resolv_conf(container_id: str) -> str | None:
    """Return the ``resolv.conf`` text the container should get.

    Called by the supervisor after ``nyx_dns_register``; nyxd writes the text under its run
    dir and bind-mounts it at ``/etc/resolv.conf`` in the container.

    :param container_id: a registered container's id.
    :returns: the file's content (``nameserver <gateway>``, ``search nyxd.local ...``).

    Stops at first non-None result.
    """


BACKEND_HOOKS = ("nyx_backend_ensure_network", "nyx_backend_setup", "nyx_backend_teardown")
DNS_HOOKS = (
    "nyx_dns_start",
    "nyx_dns_stop",
    "nyx_dns_register",
    "nyx_dns_deregister",
    "nyx_dns_resolv_conf",
)
