"""Example third-party nyx driver: containers get loopback only."""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct
import threading
from collections.abc import Mapping, Sequence

from nyx_core import (
    BackendCapabilities,
    ConfigError,
    InterfaceResult,
    NetlinkError,
    NyxSettings,
    PortMapping,
    SetupOptions,
    SetupResult,
    hookimpl,
)

__all__ = ["LoopbackPlugin"]

_CLONE_NEWNET = 0x40000000
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_libc = ctypes.CDLL(None, use_errno=True)


def _set_lo_up(netns_path: str) -> None:
    """Bring ``lo`` up inside ``netns_path`` from a short-lived thread (setns is per thread)."""
    errors: list[BaseException] = []

    def work() -> None:
        try:
            fd = os.open(netns_path, os.O_RDONLY)
            try:
                if _libc.setns(fd, _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, os.strerror(err))
            finally:
                os.close(fd)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                req = struct.pack("16sH", b"lo", 0)
                flags = struct.unpack("16sH", fcntl.ioctl(s, _SIOCGIFFLAGS, req))[1]
                fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | _IFF_UP))
        except BaseException as exc:
            errors.append(exc)

    # The thread's netns changed: it must end afterwards, never go back to a pool.
    t = threading.Thread(target=work, name="nyx-loopback-setns")
    t.start()
    t.join()
    if errors:
        raise NetlinkError(f"loopback driver: cannot bring lo up in {netns_path}: {errors[0]}")


class LoopbackPlugin:
    """A nyx network driver: no host-side state, only which attachments exist.

    The entry point names this class; nyxd makes one instance when it loads the driver.
    """

    def __init__(self) -> None:
        self._attached: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    @hookimpl
    def nyx_backend_capabilities(self) -> BackendCapabilities:
        return BackendCapabilities()  # no ports, one network, nothing else

    @hookimpl
    def nyx_backend_ensure_network(
        self, settings: NyxSettings, options: Mapping[str, str]
    ) -> object:
        if options:
            raise ConfigError(f"loopback driver: unknown option(s) {', '.join(sorted(options))}")
        return True

    @hookimpl
    def nyx_backend_setup(
        self,
        container_id: str,
        netns_path: str,
        ports: Sequence[PortMapping],
        opts: SetupOptions,
    ) -> SetupResult:
        if ports:
            raise ConfigError(
                f"loopback driver: ports {', '.join(map(str, ports))} cannot be published "
                "(containers have no external network)"
            )
        if not os.path.exists(netns_path):
            raise NetlinkError(f"loopback driver: netns {netns_path!r} does not exist")
        key = (container_id, opts.network)
        with self._lock:
            if key in self._attached:
                raise ConfigError(
                    f"loopback driver: container {container_id!r} is already set up on "
                    f"network {opts.network!r}"
                )
            _set_lo_up(netns_path)
            self._attached.add(key)
        return SetupResult(
            container_id=container_id,
            network=opts.network,
            interfaces=[InterfaceResult(name="lo", addresses=["127.0.0.1/8"])],  # type: ignore[list-item]
        )

    @hookimpl
    def nyx_backend_teardown(self, container_id: str, netns_path: str) -> object:
        # nothing on the host; the netns goes away with the container
        with self._lock:
            self._attached = {k for k in self._attached if k[0] != container_id}
        return True
