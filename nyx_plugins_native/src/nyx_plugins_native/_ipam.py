"""IPAM and the driver's persistent state: one JSON file under the state dir, under flock.

Every setup and teardown reads and rewrites ``<state_dir>/native/state.json`` while holding
an exclusive ``flock`` on ``state.lock``: concurrent setups (threads or processes) never get
the same address, and the file is replaced atomically (write + rename), so a crash leaves
either the old or the new state. A lease is written *before* the address is used; a setup
that crashed half-way is cleaned by ``teardown(container_id)``, which nyxd runs when it
reconciles after a restart.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nyx_core.errors import IpamError

__all__ = ["StateStore", "allocate"]

IPv4 = ipaddress.IPv4Address


def allocate(
    subnet: ipaddress.IPv4Network,
    gateway: IPv4,
    used: Iterable[str],
    static: IPv4 | None = None,
    after: str | None = None,
) -> IPv4:
    """Pick a free address of ``subnet``.

    Never the network, broadcast or gateway address, nor one in ``used``. ``static`` is
    honoured or refused; otherwise the search starts after ``after`` (the last address
    handed out, round-robin like CNI host-local, so a released address is not reused at
    once) and wraps around.
    """
    taken = set(used)
    first = int(subnet.network_address) + 1
    last = int(subnet.broadcast_address) - 1
    if static is not None:
        if static not in subnet:
            raise IpamError(f"static_ip {static} is outside the network's subnet {subnet}")
        if int(static) < first or int(static) > last:
            raise IpamError(f"static_ip {static} is the network or broadcast address of {subnet}")
        if static == gateway:
            raise IpamError(f"static_ip {static} is the gateway of {subnet}")
        if str(static) in taken:
            raise IpamError(f"static_ip {static} is already leased to another container")
        return static
    size = last - first + 1
    start = first
    if after is not None:
        try:
            a = int(IPv4(after))
        except ValueError:
            a = first - 1
        if first <= a <= last:
            start = a + 1 if a < last else first
    gw = int(gateway)
    for i in range(size):
        n = start + i
        if n > last:
            n -= size
        if n == gw:
            continue
        ip = IPv4(n)
        if str(ip) not in taken:
            return ip
    raise IpamError(
        f"address pool of {subnet} is exhausted ({len(taken)} leases): "
        "tear down containers or use a larger subnet (NYXD_CONTAINER_SUBNET)"
    )


class StateStore:
    """``networks`` and ``attachments`` (keyed ``<container>/<network>``) on disk."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir) / "native"
        self.file = self.dir / "state.json"
        self.lockfile = self.dir / "state.lock"

    def _read(self) -> dict[str, Any]:
        try:
            text = self.file.read_text()
        except FileNotFoundError:
            return {"version": 1, "networks": {}, "attachments": {}, "cursor": {}}
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or not isinstance(data.get("attachments"), dict):
                raise ValueError("not a nyx state object")
        except ValueError as exc:
            raise IpamError(
                f"lease file {self.file} is corrupt ({exc}); move it away and restart nyxd"
            ) from exc
        data.setdefault("networks", {})
        data.setdefault("cursor", {})
        return data

    def _write(self, data: dict[str, Any]) -> None:
        tmp = self.file.with_name(f".state.{os.getpid()}.{id(data)}.tmp")
        tmp.write_text(json.dumps(data, sort_keys=True))
        os.replace(tmp, self.file)

    @contextmanager
    def locked(self) -> Iterator[dict[str, Any]]:
        """The state under an exclusive lock; written back when the block changed it."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lockfile, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise IpamError(f"cannot open lease lock {self.lockfile}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            data = self._read()
            before = json.dumps(data, sort_keys=True)
            yield data
            if json.dumps(data, sort_keys=True) != before:
                self._write(data)
        finally:
            os.close(fd)  # closing releases the flock

    def snapshot(self) -> dict[str, Any]:
        with self.locked() as data:
            copy: dict[str, Any] = json.loads(json.dumps(data))
            return copy
