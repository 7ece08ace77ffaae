"""IPAM for driver authors: address choice and file leases under a lock.

Two pieces, usable apart:

* :func:`allocate` picks a free address of a subnet (IPv4 or IPv6): never the network
  address, the IPv4 broadcast or the gateway; a static request is honoured or refused with
  an :class:`~nyx_core.IpamError` naming it; otherwise round-robin after the last address
  handed out (as CNI's host-local does), so a released address is not reused at once. It
  looks at no more candidates than there are leases (+2), so an IPv6 /64 costs the same as
  a /24.
* :class:`LeaseStore` keeps one JSON record per lease under a directory, guarded by an
  exclusive ``flock`` (threads and processes), written atomically (temporary file +
  rename), one small file per record so a change costs the same with 10 or 10,000 leases.
  Records may carry any extra JSON fields a driver needs (its veth, ports...); the store
  also keeps one small ``meta`` document (e.g. the driver's networks) and the round-robin
  cursors.

Typical use in a driver::

    store = LeaseStore(settings.state_dir / "mydriver")
    ip = store.lease("ctr1", "nyx", subnet, gateway)          # setup
    store.release("ctr1")                                       # teardown (idempotent)

or, to decide more under the same lock, ``with store.locked() as st: ...``.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import socket
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import AddressInUseError, IpamError

__all__ = ["LeaseState", "LeaseStore", "allocate"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _ints(used: Iterable[object], v4: bool) -> set[int]:
    """The addresses of one family in ``used``, as integers (the other family's skipped).

    ``inet_pton`` parses any spelling (``fd00:0::5`` is ``fd00::5``) ten times faster than
    :mod:`ipaddress`: a setup's cost must not grow with the leases of its network.
    """
    family = socket.AF_INET if v4 else socket.AF_INET6
    out: set[int] = set()
    for u in used:
        text = str(u)
        if (":" not in text) != v4:
            continue
        try:
            out.add(int.from_bytes(socket.inet_pton(family, text), "big"))
        except OSError as exc:
            raise ValueError(f"{text!r} does not appear to be an IPv4 or IPv6 address") from exc
    return out


def allocate(
    subnet: IPNetwork,
    gateway: IPAddress | None,
    used: Iterable[str],
    static: IPAddress | None = None,
    after: str | None = None,
    *,
    field: str = "static_ip",
) -> IPAddress:
    """Pick a free address of ``subnet`` (see the module docstring).

    :param subnet: the network.
    :param gateway: its gateway (never handed out), or None.
    :param used: the addresses already leased (as strings).
    :param static: the address asked for, honoured or refused.
    :param after: the last address handed out (round-robin cursor), or None.
    :param field: the request's name for ``static`` in error messages (``static_ip6``...).
    :raises IpamError: static address outside the subnet or reserved; pool exhausted.
    :raises AddressInUseError: static address already leased (an :class:`IpamError`).
    """
    v4 = subnet.version == 4
    taken = _ints(used, v4)
    first = int(subnet.network_address) + 1
    last = int(subnet.broadcast_address) - (1 if v4 else 0)
    if last < first:
        raise IpamError(f"subnet {subnet} has no address to hand out")
    if static is not None:
        if static.version != subnet.version or static not in subnet:
            raise IpamError(f"{field} {static} is outside the network's subnet {subnet}")
        if not first <= int(static) <= last:
            what = "network or broadcast" if v4 else "subnet-router anycast"
            raise IpamError(f"{field} {static} is the {what} address of {subnet}")
        if gateway is not None and static == gateway:
            raise IpamError(f"{field} {static} is the gateway of {subnet}")
        if int(static) in taken:
            raise AddressInUseError(f"{field} {static} is already leased to another container")
        return static
    size = last - first + 1
    start = first
    if after is not None:
        try:
            a = int(ipaddress.ip_address(after))
        except ValueError:
            a = first - 1
        if first <= a <= last:
            start = a + 1 if a < last else first
    gw = int(gateway) if gateway is not None else -1
    make = ipaddress.IPv4Address if v4 else ipaddress.IPv6Address
    for i in range(min(size, len(taken) + 2)):
        n = start + i
        if n > last:
            n -= size
        if n != gw and n not in taken:
            return make(n)
    raise IpamError(
        f"address pool of {subnet} is exhausted ({len(taken)} leases): "
        "remove containers or use a larger subnet"
    )


class _Tracked(dict[str, Any]):
    """The records dict, remembering which keys a block set or deleted."""

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


@dataclass
class LeaseState:
    """What :meth:`LeaseStore.locked` yields: edit it inside the block.

    ``records`` maps ``"<owner>/<network>"`` to a JSON object with at least ``owner``,
    ``network`` and ``ip``; treat records as immutable (replace one, never edit it in
    place). ``meta`` is one free JSON object; ``cursor`` maps a network to the last address
    handed out.
    """

    records: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    cursor: dict[str, str] = field(default_factory=dict)

    def used(self, network: str) -> list[str]:
        """Addresses leased on ``network`` (every address field of its records)."""
        out: list[str] = []
        for rec in self.records.values():  # every setup scans them all: kept plain
            if rec.get("network") == network:
                ip, ip6 = rec.get("ip"), rec.get("ip6")
                if ip:
                    out.append(ip)
                if ip6:
                    out.append(ip6)
        return out


def _parse_head(raw: bytes) -> tuple[int, dict[str, str]]:
    try:
        head = json.loads(raw) if raw.strip() else {}
        return int(head["g"]), dict(head["c"])
    except (ValueError, KeyError, TypeError):
        return 0, {}  # unknown generation: the records are read again


class LeaseStore:
    """Lease records on disk under ``directory`` (see the module docstring).

    Layout: ``<directory>/state.lock`` (the flock; its content is a generation number
    bumped by every change, and the cursors), ``<meta_file>`` and
    ``<records_dir>/<owner>@<network>.json``. The parsed state is cached in memory while
    the generation is unchanged; another process's change bumps it and the directory is
    read again. Files are private to root (0600, directory 0700).
    """

    def __init__(
        self,
        directory: Path,
        *,
        records_dir: str = "leases",
        meta_file: str = "meta.json",
        meta_key: str = "meta",
    ) -> None:
        self.dir = Path(directory)
        self.rdir = self.dir / records_dir
        self.metafile = self.dir / meta_file
        self.meta_key = meta_key
        self.lockfile = self.dir / "state.lock"
        self._cache: tuple[int, LeaseState] | None = None
        self._mem_lock = threading.Lock()

    # ------------------------------------------------------------------ convenience

    def lease(
        self,
        owner: str,
        network: str,
        subnet: IPNetwork,
        gateway: IPAddress | None,
        static: IPAddress | None = None,
        **extra: Any,
    ) -> IPAddress:
        """Lease an address of ``subnet`` to ``owner`` on ``network`` (one per pair).

        :raises IpamError: the pair already has a lease, or :func:`allocate` refuses.
        """
        key = self.key(owner, network)
        with self.locked() as st:
            if key in st.records:
                raise IpamError(f"{owner!r} already has a lease on network {network!r}")
            ip = allocate(subnet, gateway, st.used(network), static, st.cursor.get(network))
            st.records[key] = {**extra, "owner": owner, "network": network, "ip": str(ip)}
            if static is None:
                st.cursor[network] = str(ip)
        return ip

    def release(self, owner: str, network: str | None = None) -> list[str]:
        """Drop ``owner``'s leases (on ``network`` only, if given); returns their addresses.

        Idempotent: an owner without leases is no error.
        """
        freed: list[str] = []
        with self.locked() as st:
            for key, rec in list(st.records.items()):
                # ``container``: the owner's key in records of the native driver's older store
                who = rec.get("owner", rec.get("container"))
                if who == owner and network in (None, rec.get("network")):
                    freed.append(str(rec.get("ip")))
                    del st.records[key]
        return freed

    def leases(self, network: str | None = None) -> dict[str, dict[str, Any]]:
        """A copy of the records (of ``network`` only, if given)."""
        with self.locked(write=False) as st:
            return {
                k: dict(r)
                for k, r in st.records.items()
                if network is None or r.get("network") == network
            }

    @staticmethod
    def key(owner: str, network: str) -> str:
        return f"{owner}/{network}"

    # ------------------------------------------------------------------ storage

    @staticmethod
    def _fname(key: str) -> str:
        return key.replace("/", "@", 1) + ".json"

    def _load(self) -> LeaseState:
        state = LeaseState(records={})
        path = self.metafile
        try:
            try:
                text = self.metafile.read_text()
            except FileNotFoundError:
                text = ""
            if text:
                state.meta = dict(json.loads(text)[self.meta_key])
            try:
                names = os.listdir(self.rdir)
            except FileNotFoundError:
                names = []
            # a writer killed between writing a file and renaming it left its ``.*.tmp``:
            # stale, since every writer holds the flock this runs under
            for stale in self.dir.glob(f".{self.metafile.name}.*.tmp"):
                stale.unlink(missing_ok=True)
            for name in names:
                if name.startswith(".") and name.endswith(".tmp"):
                    (self.rdir / name).unlink(missing_ok=True)
                if not name.endswith(".json"):
                    continue
                path = self.rdir / name
                rec = json.loads(path.read_text())
                owner = rec.get("owner", rec.get("container"))
                state.records[self.key(str(owner), str(rec["network"]))] = rec
        except (ValueError, KeyError, TypeError) as exc:
            raise IpamError(
                f"lease file {path} is corrupt ({exc!r}); move it away and restart nyxd"
            ) from exc
        except OSError as exc:
            raise IpamError(f"cannot read lease file {path}: {exc.strerror}") from exc
        return state

    @staticmethod
    def _atomic_write(path: Path, text: str) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)

    def _store(self, changed: set[str], records: dict[str, Any], meta: str | None) -> None:
        for key in changed:
            rec = records.get(key)
            path = self.rdir / self._fname(key)
            if rec is None:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
            else:
                self.rdir.mkdir(mode=0o700, parents=True, exist_ok=True)
                self._atomic_write(path, json.dumps(rec))
        if meta is not None:
            self._atomic_write(self.metafile, meta)

    @contextmanager
    def locked(self, write: bool = True) -> Iterator[LeaseState]:
        """The state under the exclusive lock, written back when the block ends normally.

        With ``write=False`` the block must not change anything. A block that raises writes
        nothing (and the in-memory cache is dropped).
        """
        try:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.lockfile, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise IpamError(f"cannot open lease lock {self.lockfile}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with self._mem_lock:
                gen, cursor = _parse_head(os.pread(fd, 65536, 0))
                if self._cache is not None and self._cache[0] == gen and gen:
                    work = self._cache[1]
                else:
                    work = self._load()
                self._cache = None  # until the block ends well: it edits ``work`` in place
                records = work.records
                if not isinstance(records, _Tracked):
                    records = work.records = _Tracked(records)
                records.changed = set()
                work.cursor = dict(cursor)
                old_meta = json.dumps({self.meta_key: work.meta}, sort_keys=True)
                yield work
                if write:
                    meta = json.dumps({self.meta_key: work.meta}, sort_keys=True)
                    self._store(records.changed, records, None if meta == old_meta else meta)
                    gen += 1
                    raw = json.dumps({"g": gen, "c": work.cursor}).encode()
                    os.ftruncate(fd, len(raw))
                    os.pwrite(fd, raw, 0)
                self._cache = (gen, work)
        finally:
            os.close(fd)  # closing releases the flock
