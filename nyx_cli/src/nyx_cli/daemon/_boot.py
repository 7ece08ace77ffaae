"""nyxd start-up: settings, logging, plugin loading."""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from loguru import logger

from nyx_core import (
    DnsFacade,
    NetworkBackend,
    NyxError,
    PluginSettings,
    installed_plugins,
    load_settings,
    make_plugin_manager,
)

from .._faults import FaultsRefused, arm, from_environ
from ._logging import configure_logging, enable_plugin_logging
from ._settings import DaemonSettings

__all__ = [
    "boot",
    "fail",
    "inherited_nofile",
    "limit_malloc_arenas",
    "load",
    "raise_nofile_limit",
    "trim_malloc",
]

logger.disable("nyx_cli")  # configure_logging() enables it for nyxd


def fail(message: str, code: int = 2) -> NoReturn:
    """One clear line on stderr, no traceback."""
    print(f"nyxd: {message}", file=sys.stderr)
    raise SystemExit(code)


PluginFlags = Sequence[tuple[type[PluginSettings], dict[str, Any]]]


def load(
    flags: dict[str, Any], plugin_flags: PluginFlags = ()
) -> tuple[DaemonSettings, NetworkBackend, DnsFacade | None]:
    """Settings from flags/env (nyxd's and its plugins'), then the selected driver and
    (unless ``off``/``cni``) the DNS provider."""
    try:
        settings = load_settings(DaemonSettings, **flags)
        mine = [load_settings(cls, **values) for cls, values in plugin_flags]
        settings = settings.with_plugins(*mine)
    except NyxError as exc:
        fail(str(exc))
    configure_logging(settings.log_level)
    pm = make_plugin_manager()
    try:
        backend = NetworkBackend.load(settings.net_driver, pm)
        enable_plugin_logging(pm)
        versions = {p.name: p.version for p in installed_plugins("nyx.net_drivers")}
        caps = backend.capabilities()
        logger.bind(
            driver=settings.net_driver,
            version=versions.get(settings.net_driver),
            capabilities=caps.model_dump(),
            subnet=str(settings.container_subnet),
            gateway=str(settings.gateway_ip),
        ).info("network backend")
        dns = None
        if settings.dns not in ("off", "cni"):
            try:
                dns = DnsFacade.load(settings.dns_provider, make_plugin_manager())
                enable_plugin_logging(dns.pm)
            except NyxError as exc:
                # under --dns auto a driver with its own DNS (external_dns) runs without one
                if settings.dns == "embedded" or not caps.external_dns:
                    raise
                logger.bind(dns=settings.dns, provider=settings.dns_provider).info(
                    f"DNS provider unavailable: {exc}"
                )
            else:
                logger.bind(provider=settings.dns_provider).info("dns provider")
    except NyxError as exc:
        fail(str(exc))
    return settings, backend, dns


M_ARENA_MAX = -8  # glibc's mallopt parameter
MALLOC_ARENAS = 2


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas (``mallopt(M_ARENA_MAX)``), before nyxd starts threads.

    glibc gives threads arenas of their own, up to 8 per core, and what a thread frees
    stays in its arena: nyxd's API answers each connection in a thread of its own and
    watches each container from one, so with a thousand containers their garbage ends up
    spread over 16 arenas (about 100 KiB of resident memory per container instead of 45,
    measured with bench/bench_scale.py). Python allocates under its GIL anyway: more
    arenas buy nyxd nothing. False where there is no glibc ``mallopt`` (musl).
    """
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False


_INHERITED_NOFILE: tuple[int, int] | None = None


def raise_nofile_limit() -> tuple[int, int] | None:
    """Raise nyxd's soft ``RLIMIT_NOFILE`` to its hard limit, as the Go runtime does for
    dockerd, containerd, podman and netavark; returns the limits nyxd was started with
    (None when they could not be read), which its containers keep (:func:`inherited_nofile`).

    nyxd holds a few descriptors per running container (a pidfd of its init and of its
    monitor, a socket per published port): with a shell's usual soft limit of 1,024 it
    would run short at a few hundred containers.
    """
    global _INHERITED_NOFILE
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return None
    _INHERITED_NOFILE = (soft, hard)
    if soft != hard:
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return _INHERITED_NOFILE


def inherited_nofile() -> tuple[int, int] | None:
    """The ``RLIMIT_NOFILE`` nyxd was started with, once :func:`raise_nofile_limit` raised
    it: what containers get (RLIM_INFINITY as the hard limit is no limit for them)."""
    if _INHERITED_NOFILE is None:
        return None
    soft, hard = _INHERITED_NOFILE
    if hard == resource.RLIM_INFINITY or hard < 0:
        return None  # nothing to cap: runc's own (nyxd's) limits are as good
    return soft, hard


def trim_malloc() -> None:
    """Give the memory malloc holds free back to the kernel (``malloc_trim``; glibc)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


def boot(flags: dict[str, Any], plugin_flags: PluginFlags = ()) -> None:
    """Load everything, then serve until SIGTERM/SIGINT (see :func:`._serve.serve`)."""
    limit_malloc_arenas()
    raise_nofile_limit()
    try:
        points = from_environ(os.environ)
    except FaultsRefused as exc:
        fail(str(exc))
    settings, backend, dns = load(flags, plugin_flags)
    if points:
        arm(points)
        logger.bind(points=sorted(points)).warning("test fault points armed")
    from ._serve import serve

    try:
        code = serve(settings, backend, dns)
    except NyxError as exc:
        logger.bind(error=str(exc)).error("nyxd failed")
        fail(str(exc), 1)
    except PermissionError as exc:
        fail(f"{exc} (nyxd needs root)", 1)
    raise SystemExit(code)
