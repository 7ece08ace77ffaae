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
import threading
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


class _Tracked(dict[str, Any]):
    """The attachments dict, remembering which keys a block set or deleted."""

    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__(data)
        self.changed: set[str] = set()

    def __setitem__(self, key: str, value: Any) -> None:
        self.changed.add(key)
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self.changed.add(key)
        super().__delitem__(key)

    def pop(self, key: str, *default: Any) -> Any:
        self.changed.add(key)
        return super().pop(key, *default)


def _parse_head(raw: bytes) -> dict[str, Any]:
    try:
        head = json.loads(raw) if raw.strip() else {}
        gen, cursor = int(head["g"]), dict(head["c"])
    except (ValueError, KeyError, TypeError):
        return {"g": 0, "c": {}}  # unknown generation: the state is read again
    return {"g": gen, "c": cursor}


class StateStore:
    """``networks``, ``cursor`` and ``attachments`` (keyed ``<container>/<network>``) on disk.

    Layout under ``<state_dir>/native/``: ``state.lock`` (the flock; its content is a generation
    number bumped by every change and the IPAM cursors), ``networks.json`` (small) and
    ``attachments/<container>@<network>.json``, one file per attachment, so a setup or
    teardown writes one small file whatever the number of containers. The parsed state is
    cached in memory and reused while the generation is unchanged; another process's change
    bumps it and the directory is read again.
    """

    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir) / "native"
        self.adir = self.dir / "attachments"
        self.netfile = self.dir / "networks.json"
        self.lockfile = self.dir / "state.lock"
        self._cache: tuple[int, dict[str, Any]] | None = None
        self._mem_lock = threading.Lock()  # the cache is shared by this process's threads

    @staticmethod
    def _fname(key: str) -> str:
        return key.replace("/", "@", 1) + ".json"

    def _load(self) -> dict[str, Any]:
        data: dict[str, Any] = {"version": 2, "networks": {}, "attachments": {}, "cursor": {}}
        try:
            text = self.netfile.read_text()
        except FileNotFoundError:
            text = ""
        path = self.netfile
        try:
            if text:
                top = json.loads(text)
                data["networks"] = dict(top["networks"])
            try:
                names = os.listdir(self.adir)
            except FileNotFoundError:
                names = []
            for name in names:
                if not name.endswith(".json"):
                    continue
                path = self.adir / name
                rec = json.loads(path.read_text())
                data["attachments"][f"{rec['container']}/{rec['network']}"] = rec
        except (ValueError, KeyError, TypeError) as exc:
            raise IpamError(
                f"lease file {path} is corrupt ({exc!r}); move it away and restart nyxd"
            ) from exc
        except OSError as exc:
            raise IpamError(f"cannot read lease file {path}: {exc.strerror}") from exc
        return data

    def _atomic_write(self, path: Path, text: str) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)

    def _store(self, changed: set[str], attachments: dict[str, Any], top: str | None) -> None:
        for key in changed:
            rec = attachments.get(key)
            path = self.adir / self._fname(key)
            if rec is None:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
            else:
                self.adir.mkdir(parents=True, exist_ok=True)
                self._atomic_write(path, json.dumps(rec))
        if top is not None:
            self._atomic_write(self.netfile, top)

    @contextmanager
    def locked(self, write: bool = True) -> Iterator[dict[str, Any]]:
        """The state under an exclusive lock, written back when the block ends normally.

        Treat attachment records as immutable: replace a record, never edit it in place.
        With ``write=False`` the block must not change anything. A block that raises writes
        nothing.
        """
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lockfile, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise IpamError(f"cannot open lease lock {self.lockfile}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with self._mem_lock:
                # the lock file holds the generation and the IPAM cursors (a hint only)
                head = _parse_head(os.pread(fd, 65536, 0))
                if self._cache is not None and self._cache[0] == head["g"] and head["g"]:
                    work = self._cache[1]
                else:
                    work = self._load()
                self._cache = None  # until the block ends well: it edits ``work`` in place
                attachments = work["attachments"]
                if not isinstance(attachments, _Tracked):
                    attachments = work["attachments"] = _Tracked(attachments)
                attachments.changed = set()
                work["cursor"] = dict(head["c"])
                old_top = json.dumps({"networks": work["networks"]}, sort_keys=True)
                yield work
                gen = head["g"]
                if write:
                    top = json.dumps({"networks": work["networks"]}, sort_keys=True)
                    self._store(attachments.changed, attachments, None if top == old_top else top)
                    gen += 1
                    raw = json.dumps({"g": gen, "c": work["cursor"]}).encode()
                    os.ftruncate(fd, len(raw))
                    os.pwrite(fd, raw, 0)
                self._cache = (gen, work)
        finally:
            os.close(fd)  # closing releases the flock

    def snapshot(self) -> dict[str, Any]:
        with self.locked(write=False) as data:
            copy: dict[str, Any] = json.loads(json.dumps(data))
            return copy
