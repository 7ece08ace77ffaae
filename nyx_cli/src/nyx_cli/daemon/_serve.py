"""nyxd's main loop: ensure the network, start DNS, reconcile, serve, stop cleanly.

:func:`serve` is called by the ``nyxd`` command once settings are loaded, logging is
configured and the plugins are loaded. It returns after SIGTERM/SIGINT, when every
container has been stopped and torn down, DNS stopped and the socket removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loguru import logger

from nyx_core import DnsFacade, NetworkBackend

from ._api import ApiServer
from ._boot import trim_malloc
from ._networks import NetworkRegistry
from ._settings import DaemonSettings
from ._state import StateStore
from ._supervisor import Host, Supervisor

__all__ = ["sd_notify", "serve", "should_start_dns"]


def sd_notify(message: str) -> bool:
    """Send ``message`` to systemd's ``NOTIFY_SOCKET`` (no-op without it)."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    addr = "\0" + path[1:] if path.startswith("@") else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(addr)
            s.sendall(message.encode())
    except OSError as exc:
        logger.bind(error=str(exc)).warning("sd_notify failed")
        return False
    return True


def should_start_dns(settings: DaemonSettings, dns: DnsFacade | None) -> bool:
    """Start the embedded provider when it is loaded and ``--dns`` is not ``off``/``cni``.

    With ``--net-driver=cni --dns auto`` it is started too (when installed): a compose stack
    on internal-only networks needs it, and an idle server costs nothing.
    """
    return dns is not None and settings.dns not in ("off", "cni")


def _gc(backend: NetworkBackend, sup: Supervisor) -> None:
    """Tell the driver which containers are still set up: it releases everything else."""
    valid = [c["id"] for c in sup.list_containers(all=False)]
    try:
        report = backend.gc(valid)
        if report is not None:
            logger.bind(report=str(report)).info("network garbage collection")
    except Exception as exc:
        logger.bind(error=str(exc)).warning("network garbage collection failed")


def _private_state_dir(state_dir: Path) -> None:
    """Make ``state_dir`` root's alone (0700) and empty its ``tmp/``.

    Nothing under it is meant for other users: image content (set-uid files), container
    records with their environment, logs, leases. ``tmp/`` holds half-finished pulls and
    uploads; after a crash nothing else will remove them. Docker makes ``/var/lib/docker``
    0710 the same way (CVE-2021-41091).
    """
    os.chmod(state_dir, 0o700)
    tmp = state_dir / "tmp"
    if tmp.is_dir() and not tmp.is_symlink():
        for stale in tmp.iterdir():
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)


def serve(
    settings: DaemonSettings,
    backend: NetworkBackend,
    dns: DnsFacade | None,
    *,
    host: Host | None = None,
    ready: Callable[[Supervisor], Any] | None = None,
    stop_event: threading.Event | None = None,
) -> int:
    """Run nyxd until SIGTERM/SIGINT (or ``stop_event``); returns the exit status."""
    for d in (settings.state_dir, settings.run_dir, settings.socket.parent):
        d.mkdir(parents=True, exist_ok=True)
    _private_state_dir(settings.state_dir)
    host = host or Host.default(settings)
    reaper = host.extra.get("become_subreaper")
    if callable(reaper):
        reaper()
    backend.ensure_network(settings)
    # the default network and every recorded one, through the driver (bridges do not
    # survive a reboot); a recorded one the driver refuses now is marked, nyxd still starts
    networks = NetworkRegistry(settings, StateStore(settings.state_dir), backend)
    refused = networks.bring_up()
    logger.bind(driver=backend.name, refused=sorted(refused)).info("network ready")
    dns_started = False
    if should_start_dns(settings, dns):
        assert dns is not None
        dns.start(settings)
        dns_started = True
        logger.bind(provider=dns.name, port=settings.dns_port).info("dns started")
    sup = Supervisor(settings, backend, dns if dns_started else None, host, networks=networks)
    stop = stop_event or threading.Event()
    api: ApiServer | None = None
    previous: dict[int, Any] = {}

    def on_signal(signum: int, frame: Any) -> None:
        logger.bind(signal=signal.Signals(signum).name).info("shutting down")
        stop.set()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        sup.reconcile()
        _gc(backend, sup)
        trim_malloc()  # what reading every record left behind
        api = ApiServer(settings.socket, sup)
        api.start()
        logger.bind(socket=str(settings.socket)).info("listening")
        sd_notify("READY=1\nSTATUS=serving")
        if ready is not None:
            ready(sup)
        while not stop.wait(1.0):
            pass
        sd_notify("STOPPING=1")
    finally:
        if api is not None:
            api.close()
        sup.shutdown()
        close_runtime = getattr(host.runtime, "close", None)  # its monitors' fork server
        if callable(close_runtime):
            close_runtime()
        # the runtime's cgroup parent (/nyx) is left in place: another nyxd on the host may
        # be creating a container under it right now (removing it races with runc's mkdir)
        if dns_started and dns is not None:
            with contextlib.suppress(Exception):
                dns.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        logger.info("stopped")
    return 0
