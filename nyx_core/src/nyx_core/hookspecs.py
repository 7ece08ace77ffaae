"""Hook specifications of nyx (pluggy project name ``"nyx"``).

Two families, each with exactly one implementation loaded at a time by nyxd:

* **Backend** (``nyx_backend_*``): the network driver chosen by ``--net-driver``, found in
  the entry point group ``nyx.net_drivers``.
* **DnsProvider** (``nyx_dns_*``): the DNS provider chosen by ``--dns-provider`` (used
  under the ``--dns`` policy), found in the entry point group ``nyx.dns_providers``.

All hooks are called with keyword arguments only. Every hook here is ``firstresult``:
nyxd registers one driver and one provider, so the first implementation that returns a
non-None value answers. Hooks listed in :data:`OPTIONAL_BACKEND_HOOKS` may be left out by a
driver; every other hook is required. nyxd calls them through the typed facades of
:mod:`nyx_core` (:class:`~nyx_core.NetworkBackend`, :class:`~nyx_core.DnsFacade`), whose
methods mirror these signatures (``tests/nyx_core/unit/test_contract.py`` compares them
argument by argument).

Call order in nyxd: ``nyx_backend_capabilities`` → ``nyx_backend_ensure_network`` →
``nyx_backend_network_create`` for the default network and every recorded network →
``nyx_dns_start`` → reconciliation of recorded containers (``nyx_backend_teardown`` of the
dead, ``nyx_dns_register`` of the re-adopted) → ``nyx_backend_gc`` → serve
(``nyx_backend_setup`` / ``nyx_dns_register`` / ``nyx_dns_resolv_conf`` per container,
``nyx_backend_teardown`` / ``nyx_dns_deregister`` when it ends) → ``nyx_dns_stop``.

``docs/hooks.md`` documents each hook under a heading that is its signature;
``tests/nyx_core/unit/test_docs.py`` fails when one is missing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from ._markers import hookspec

if TYPE_CHECKING:
    from ._models import (
        BackendCapabilities,
        NetworkInfo,
        NetworkSpec,
        PortMapping,
        SetupOptions,
        SetupResult,
    )
    from ._settings import NyxSettings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# --------------------------------------------------------------------------- Backend


@hookspec(firstresult=True)
def nyx_backend_capabilities() -> BackendCapabilities | None:
    """Say what the driver can do.

    Called by nyxd right after loading the driver, before anything else, and read by the
    DNS policy, compose and the API (``GET /v1/info``). Optional: a driver without it has
    every capability ``False``.

    :returns: a :class:`~nyx_core.BackendCapabilities`; it must not change while the
        process runs.

    Pure: no side effect, answers the same every time.

    Stops at first non-None result.
    """


@hookspec(firstresult=True)
def nyx_backend_ensure_network(settings: NyxSettings, options: Mapping[str, str]) -> object | None:
    """Prepare host-wide networking (firewall table, sysctls, plugin directories, ...).

    Called once by nyxd at start, after the driver is loaded and before any network is
    created or container set up (and before reconciliation of a previous nyxd's
    containers); the conformance suite calls it twice in a row.

    :param settings: the daemon's :class:`~nyx_core.NyxSettings` (default network's name,
        subnet and gateway, state and run dirs); the driver's own settings class, when it
        has one, is ``settings.plugin(MySettings)``.
    :param options: driver options from ``nyxd --driver-opt key=value`` (repeatable) and
        ``NYXD_DRIVER_OPTS`` (``k=v,k2=v2``). A driver refuses keys it does not know with a
        :class:`~nyx_core.ConfigError` naming the key.
    :returns: anything non-None to report success (e.g. a dict describing the host setup),
        or None.

    Idempotent: a second call changes nothing; a half-present setup is completed, never
    duplicated. Must not touch host state the driver does not own. Raises
    :class:`~nyx_core.NyxError` naming what is missing (kernel module, binary, file).

    Stops at first non-None result.
    """


@hookspec(firstresult=True)
def nyx_backend_network_create(network: NetworkSpec) -> NetworkInfo | None:
    """Create a network (bridge, firewall elements, conflist, ... whatever the driver needs).

    Called by nyxd for ``nyx network create`` and compose networks, and at start (after
    ``nyx_backend_ensure_network``) for the default network and every network nyxd has
    recorded. Optional: only drivers declaring ``network_lifecycle`` implement it.

    :param network: the :class:`~nyx_core.NetworkSpec`: name, subnet and gateway (the
        user's or a free one from nyxd's pool), ``internal``, driver ``options``, labels,
        ``default``.
    :returns: the :class:`~nyx_core.NetworkInfo` nyxd records; a driver whose addressing
        is its own (a user's CNI conflist) reports its real subnet there.

    Validates everything before changing anything and refuses what it cannot honour
    (unknown option, subnet overlapping a host route, ``internal`` without
    ``enforces_internal``) with a :class:`~nyx_core.ConfigError` naming the field and the
    value. Idempotent for an identical spec (returns the same info, changes nothing); a
    different spec under an existing name is refused.

    Stops at first non-None result.
    """


@hookspec(firstresult=True)
def nyx_backend_network_remove(name: str) -> object | None:
    """Remove a network and everything the driver made for it.

    Called by nyxd for ``nyx network rm`` and compose ``down``, once no container is
    attached (nyxd checks). Optional: only drivers declaring ``network_lifecycle``.

    :param name: the network's name.
    :returns: anything non-None on success.

    Best-effort and idempotent: an unknown name is no error. Raises one
    :class:`~nyx_core.TeardownError` listing every failed step after doing the rest.

    Stops at first non-None result.
    """


@hookspec(firstresult=True)
def nyx_backend_setup(
    container_id: str,
    netns_path: str,
    ports: Sequence[PortMapping],
    opts: SetupOptions,
) -> SetupResult | None:
    """Join one container's network namespace to one network.

    Called by the supervisor after it created the container's netns and before the
    container process starts, once per network the container joins (``opts.network``,
    ``opts.interface`` = ``eth0``, ``eth1``...).

    :param container_id: the container's id (stable, unique, ``[a-zA-Z0-9_.-]``).
    :param netns_path: path of the container's network namespace (a bind mount such as
        ``/run/nyx/netns/<id>``).
    :param ports: the :class:`~nyx_core.PortMapping` list to publish (only with the first
        network, and only for drivers declaring ``publishes_ports``).
    :param opts: :class:`~nyx_core.SetupOptions` (hostname, aliases, network name,
        ``internal``, interface, static address, MAC...).
    :returns: a :class:`~nyx_core.SetupResult` with the interfaces, addresses with prefix,
        gateway and what DNS needs.

    Validates everything before changing anything. A failure half-way undoes the steps
    already applied (no link, lease or firewall entry is left), then raises a
    :class:`~nyx_core.NyxError`. A setup for a container/network already set up is an error.

    Stops at first non-None result.
    """


@hookspec(firstresult=True)
def nyx_backend_teardown(container_id: str, netns_path: str) -> object | None:
    """Remove everything ``nyx_backend_setup`` did for one container (all its networks).

    Called by the supervisor when the container stops, and by reconciliation after a
    crash.

    :param container_id: the container's id.
    :param netns_path: the container's netns path; it may no longer exist, or be a plain
        file that is no longer a namespace (after a host crash).
    :returns: None (or anything; the value is ignored).

    Best-effort and idempotent: works twice in a row, for a container never set up, and
    when the netns is gone. Never stops at the first failure: it goes on and raises one
    :class:`~nyx_core.TeardownError` listing every failed step at the end.

    Stops at first non-None result.
    """


@hookspec(firstresult=True)
def nyx_backend_gc(container_ids: Sequence[str]) -> object | None:
    """Release everything held for containers nyxd no longer knows.

    Called by nyxd once at start, after reconciliation and before it serves requests.
    Optional.

    :param container_ids: every container nyxd still has set up (running or re-adopted);
        links, addresses, firewall elements, leases and cached results of any other
        container are leaked leftovers of a crash.
    :returns: anything non-None (e.g. a report of what was released).

    Best-effort: releases what it can and raises one :class:`~nyx_core.TeardownError`
    listing the failures at the end. Never touches the containers listed.

    Stops at first non-None result.
    """


@hookspec(firstresult=True)
def nyx_backend_reload() -> object | None:
    """Re-apply everything the driver keeps on the host from its own records.

    Called by nyxd for ``nyx network reload`` (``POST /v1/networks/reload``), the manual
    counterpart of a driver's own recovery: after a firewall reload (``nft flush ruleset``,
    firewalld or ufw restarting) or a deleted bridge, published ports, masquerade and
    isolation work again without restarting nyxd or its containers. Optional: nyxd
    answers that the driver cannot reload when it is absent.

    :returns: anything non-None, e.g. a report of what was re-applied (shown to the user).

    Idempotent and safe while containers run: a second call changes nothing visible. Never
    touches host state the driver does not own (other tables, other links). Raises a
    :class:`~nyx_core.NyxError` naming what could not be re-applied.

    Stops at first non-None result.
    """


# ----------------------------------------------------------------------- DnsProvider


@hookspec(firstresult=True)
def nyx_dns_start(settings: NyxSettings) -> object | None:
    """Start the DNS server.

    Called once by nyxd at start when the DNS policy can need the provider (``--dns`` is
    not ``off`` or ``cni``), after the default network exists (the gateway address is on
    a host link).

    :param settings: the daemon's settings (``gateway_ip``, ``dns_port``, ``run_dir``);
        the provider's own settings class, when it has one, is
        ``settings.plugin(MySettings)``.
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
    container uses embedded DNS, and again for containers re-adopted after a restart.

    :param container_id: the container's id; records are keyed by it.
    :param hostname: answered as ``<hostname>`` and ``<hostname>.nyxd.local``.
    :param ips: the container's addresses (A for IPv4, AAAA for IPv6, PTR for both).
    :param aliases: extra names (compose service names, ``--network-alias``).
    :param networks: the networks the container is on; a container only resolves names of
        containers sharing one of them.
    :param internal_networks: those of ``networks`` that are internal *for this
        container* (the network was created internal, or the container asked for it):
        a container whose networks are all internal gets container names only, never
        forwarding to upstream resolvers, exactly as its traffic never leaves the subnet.
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


BACKEND_HOOKS = (
    "nyx_backend_capabilities",
    "nyx_backend_ensure_network",
    "nyx_backend_network_create",
    "nyx_backend_network_remove",
    "nyx_backend_setup",
    "nyx_backend_teardown",
    "nyx_backend_gc",
    "nyx_backend_reload",
)
REQUIRED_BACKEND_HOOKS = ("nyx_backend_ensure_network", "nyx_backend_setup", "nyx_backend_teardown")
OPTIONAL_BACKEND_HOOKS = tuple(h for h in BACKEND_HOOKS if h not in REQUIRED_BACKEND_HOOKS)
DNS_HOOKS = (
    "nyx_dns_start",
    "nyx_dns_stop",
    "nyx_dns_register",
    "nyx_dns_deregister",
    "nyx_dns_resolv_conf",
)
