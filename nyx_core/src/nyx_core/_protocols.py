"""The spec's ``Backend`` and ``DnsProvider`` interfaces, and adapters to hookimpls.

A driver author may write loose ``@hookimpl`` functions in a module, or a class that
satisfies :class:`Backend` wrapped by :func:`backend_plugin`::

    class LoopbackBackend:
        def ensure_network(self, settings): ...
        def setup(self, container_id, netns_path, ports, opts): ...
        def teardown(self, container_id, netns_path): ...

    plugin = backend_plugin(LoopbackBackend)   # entry point: "lo = pkg.mod:plugin"
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar, runtime_checkable

from ._markers import hookimpl
from ._models import PortMapping, SetupOptions, SetupResult
from ._settings import NyxSettings
from .hookspecs import IPAddress

__all__ = ["Backend", "DnsProvider", "backend_plugin", "dns_plugin"]


@runtime_checkable
class Backend(Protocol):
    """What a network driver does (the spec's ``network.Backend``)."""

    def ensure_network(self, settings: NyxSettings) -> object | None: ...

    def setup(
        self,
        container_id: str,
        netns_path: str,
        ports: Sequence[PortMapping],
        opts: SetupOptions,
    ) -> SetupResult: ...

    def teardown(self, container_id: str, netns_path: str) -> object | None: ...


@runtime_checkable
class DnsProvider(Protocol):
    """What a DNS provider does."""

    def start(self, settings: NyxSettings) -> object | None: ...

    def stop(self) -> object | None: ...

    def register(
        self,
        container_id: str,
        hostname: str,
        ips: Sequence[IPAddress],
        aliases: Sequence[str],
        networks: Sequence[str],
    ) -> object | None: ...

    def deregister(self, container_id: str) -> object | None: ...

    def resolv_conf(self, container_id: str) -> str: ...

    # Optional (not part of the Protocol check): ``set_network_internal(name, internal)``
    # is called by the adapter for every name of ``internal_networks`` before register.


T = TypeVar("T")
BackendFactory = Callable[[], Backend]
DnsFactory = Callable[[], DnsProvider]


def _done(result: object | None) -> object:
    """firstresult hooks need a non-None answer; methods may return None for "done"."""
    return True if result is None else result


class _Lazy(Generic[T]):
    """Builds the wrapped instance on first use, so importing an entry point stays cheap."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._impl: T | None = None

    @property
    def impl(self) -> T:
        if self._impl is None:
            self._impl = self._factory()
        return self._impl


class _BackendPlugin(_Lazy[Backend]):
    """Hookimpls delegating to one lazily built :class:`Backend` instance."""

    @hookimpl
    def nyx_backend_ensure_network(self, settings: NyxSettings) -> object:
        return _done(self.impl.ensure_network(settings))

    @hookimpl
    def nyx_backend_setup(
        self,
        container_id: str,
        netns_path: str,
        ports: Sequence[PortMapping],
        opts: SetupOptions,
    ) -> SetupResult:
        return self.impl.setup(container_id, netns_path, ports, opts)

    @hookimpl
    def nyx_backend_teardown(self, container_id: str, netns_path: str) -> object:
        return _done(self.impl.teardown(container_id, netns_path))


class _DnsPlugin(_Lazy[DnsProvider]):
    """Hookimpls delegating to one lazily built :class:`DnsProvider` instance."""

    @hookimpl
    def nyx_dns_start(self, settings: NyxSettings) -> object:
        return _done(self.impl.start(settings))

    @hookimpl
    def nyx_dns_stop(self) -> object:
        return _done(self.impl.stop())

    @hookimpl
    def nyx_dns_register(
        self,
        container_id: str,
        hostname: str,
        ips: Sequence[IPAddress],
        aliases: Sequence[str],
        networks: Sequence[str],
        internal_networks: Sequence[str] = (),
    ) -> object:
        # optional extra of a provider class: told which networks are internal
        mark = getattr(self.impl, "set_network_internal", None)
        if callable(mark):
            for name in internal_networks:
                mark(name, True)
        return _done(self.impl.register(container_id, hostname, ips, aliases, networks))

    @hookimpl
    def nyx_dns_deregister(self, container_id: str) -> object:
        return _done(self.impl.deregister(container_id))

    @hookimpl
    def nyx_dns_resolv_conf(self, container_id: str) -> str:
        return self.impl.resolv_conf(container_id)


def backend_plugin(factory: BackendFactory) -> object:
    """Wrap a :class:`Backend` class (or zero-argument factory) as a pluggy plugin.

    The instance is built on first use, so importing the entry point stays cheap.
    """
    return _BackendPlugin(factory)


def dns_plugin(factory: DnsFactory) -> object:
    """Wrap a :class:`DnsProvider` class (or zero-argument factory) as a pluggy plugin."""
    return _DnsPlugin(factory)
