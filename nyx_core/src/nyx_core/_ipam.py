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
  cursors. In memory, the records are indexed (addresses per network, keys per owner, and
  whatever tokens the driver's ``index`` function names), kept in step with every change:
  a setup or teardown costs the same with 1 or 1,000 leases.

Typical use in a driver::

    store = LeaseStore(settings.state_dir / "mydriver")
    ip = store.lease("ctr1", "nyx", subnet, gateway)          # setup
    store.release("ctr1")                                       # teardown (idempotent)

or, to decide more under the same lock, ``with store.locked() as st: ...`` (``st.pick``
allocates from the index and moves the cursor, ``st.owned`` and ``st.find`` look records up).
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import socket
import threading
from collections.abc import Callable, Collection, Hashable, Iterable, Iterator, Mapping, Set
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import AddressInUseError, IpamError

__all__ = ["LeaseState", "LeaseStore", "UsedAddresses", "allocate"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _addr_int(text: str) -> tuple[int, int] | None:
    """``(version, address as an integer)`` of an address in any spelling; None if none."""
    v6 = ":" in text
    try:
        raw = socket.inet_pton(socket.AF_INET6 if v6 else socket.AF_INET, text)
    except OSError:
        return None
    return (6 if v6 else 4), int.from_bytes(raw, "big")


class UsedAddresses(Collection[str]):
    """The addresses leased on one network: a live view of a :class:`LeaseState`'s index
    (valid inside the ``locked`` block that made it). Iterating yields them as strings;
    :func:`allocate` reads the index itself, so an allocation does not touch every lease.
    """

    __slots__ = ("_v4", "_v6")

    def __init__(self, v4: Set[int], v6: Set[int]) -> None:
        self._v4, self._v6 = v4, v6

    def ints(self, version: int) -> Set[int]:
        """The addresses of one family (4 or 6) as integers."""
        return self._v4 if version == 4 else self._v6

    def __len__(self) -> int:
        return len(self._v4) + len(self._v6)

    def __iter__(self) -> Iterator[str]:
        for n in self._v4:
            yield str(ipaddress.IPv4Address(n))
        for n in self._v6:
            yield str(ipaddress.IPv6Address(n))

    def __contains__(self, item: object) -> bool:
        got = _addr_int(str(item))
        return got is not None and got[1] in self.ints(got[0])


def _ints(used: Iterable[object], v4: bool) -> Set[int]:
    """The addresses of one family in ``used``, as integers (the other family's skipped).

    ``inet_pton`` parses any spelling (``fd00:0::5`` is ``fd00::5``) ten times faster than
    :mod:`ipaddress`; a :class:`UsedAddresses` is read as it is, without parsing.
    """
    if isinstance(used, UsedAddresses):
        return used.ints(4 if v4 else 6)
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
    :param used: the addresses already leased (as strings), or a :class:`UsedAddresses`.
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


#: A driver's own index of its records: the tokens of one record (its published ports...),
#: looked up with :meth:`LeaseState.find`.
Index = Callable[[Mapping[str, Any]], Iterable[Hashable]]


def _owner(rec: Mapping[str, Any]) -> str:
    # ``container``: the owner's key in records of the native driver's older store
    return str(rec.get("owner", rec.get("container")))


class _Tracked(dict[str, Any]):
    """The records dict, remembering which keys a block set or deleted, and indexing them:
    addresses per (network, family), keys per owner, keys per token of the store's ``index``
    function. Change it by item assignment, ``del`` or ``pop`` only."""

    def __init__(self, data: Mapping[str, Any], index: Index | None = None) -> None:
        super().__init__()
        self.index = index
        # (network, 4 or 6) -> address -> number of records holding it
        self.addrs: dict[tuple[str, int], dict[int, int]] = {}
        self.owners: dict[str, set[str]] = {}
        self.tokens: dict[Hashable, set[str]] = {}
        self._entries: dict[str, tuple[str, list[tuple[str, int, int]], list[Hashable]]] = {}
        self.changed: set[str] = set()
        for key, rec in data.items():
            self[key] = rec
        self.changed = set()

    def _enter(self, key: str, rec: Mapping[str, Any]) -> None:
        # everything computed first: a record the index cannot read changes nothing
        net = str(rec.get("network"))
        addrs = []
        for name in ("ip", "ip6"):
            text = rec.get(name)
            got = _addr_int(str(text)) if text else None
            if got is not None:
                addrs.append((net, *got))
        tokens = list(dict.fromkeys(self.index(rec))) if self.index is not None else []
        own = _owner(rec)
        self._leave(key)
        self._entries[key] = (own, addrs, tokens)
        for net, version, n in addrs:
            counts = self.addrs.setdefault((net, version), {})
            counts[n] = counts.get(n, 0) + 1
        self.owners.setdefault(own, set()).add(key)
        for token in tokens:
            self.tokens.setdefault(token, set()).add(key)

    def _leave(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        own, addrs, tokens = entry
        for net, version, n in addrs:
            counts = self.addrs[(net, version)]  # kept when empty: live views hold it
            if counts[n] <= 1:
                del counts[n]
            else:
                counts[n] -= 1
        keys = self.owners[own]
        keys.discard(key)
        if not keys:
            del self.owners[own]
        for token in tokens:
            keys = self.tokens[token]
            keys.discard(key)
            if not keys:
                del self.tokens[token]

    def addresses(self, network: str, version: int) -> Set[int]:
        return self.addrs.setdefault((network, version), {}).keys()

    def __setitem__(self, key: str, value: Any) -> None:
        self._enter(key, value)
        self.changed.add(key)
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self.changed.add(key)
        super().__delitem__(key)
        self._leave(key)

    def pop(self, key: str, *default: Any) -> Any:
        self.changed.add(key)
        self._leave(key)
        return super().pop(key, *default)


@dataclass
class LeaseState:
    """What :meth:`LeaseStore.locked` yields: edit it inside the block.

    ``records`` maps ``"<owner>/<network>"`` to a JSON object with at least ``owner``,
    ``network`` and ``ip``; treat records as immutable (replace one, never edit it in
    place; change the dict by item assignment, ``del`` or ``pop``). ``meta`` is one free
    JSON object; ``cursor`` maps a network to the last address handed out.
    """

    records: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    cursor: dict[str, str] = field(default_factory=dict)
    # re-reads the files (set by ``locked`` when the state came from its cache)
    _reload: Callable[[], LeaseState] | None = field(default=None, repr=False, compare=False)

    def _tracked(self) -> _Tracked:
        recs = self.records
        if not isinstance(recs, _Tracked):  # made by a caller from a plain dict
            recs = self.records = _Tracked(recs)
        return recs

    def used(self, network: str) -> UsedAddresses:
        """Addresses leased on ``network`` (the ``ip`` and ``ip6`` of its records): a view
        of the index, for :func:`allocate`."""
        recs = self._tracked()
        return UsedAddresses(recs.addresses(network, 4), recs.addresses(network, 6))

    def owned(self, owner: str) -> dict[str, Any]:
        """``owner``'s records (key -> record), from the index."""
        recs = self._tracked()
        return {key: recs[key] for key in recs.owners.get(owner, ())}

    def find(self, token: Hashable) -> frozenset[str]:
        """Keys of the records the store's ``index`` function gave ``token``."""
        return frozenset(self._tracked().tokens.get(token, ()))

    def pick(
        self,
        network: str,
        subnet: IPNetwork,
        gateway: IPAddress | None,
        static: IPAddress | None = None,
        *,
        cursor: str | None = None,
        field: str = "static_ip",
    ) -> IPAddress:
        """:func:`allocate` an address of ``subnet`` for a record on ``network``, after the
        round-robin cursor ``cursor`` (default: ``network``), which it moves to the address
        (a static one leaves it).

        A refusal (static address leased, pool exhausted) made from the store's cache is
        checked against the files first (once, before the block changed any record): a
        lease file removed behind the store's back is free again.
        """
        key = network if cursor is None else cursor
        try:
            ip = allocate(
                subnet, gateway, self.used(network), static, self.cursor.get(key), field=field
            )
        except IpamError:
            reload, self._reload = self._reload, None
            if reload is None or self._tracked().changed:
                raise
            fresh = reload()._tracked()
            fresh.changed = set()
            self.records = fresh
            ip = allocate(
                subnet, gateway, self.used(network), static, self.cursor.get(key), field=field
            )
        if static is None:
            self.cursor[key] = str(ip)
        return ip


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
    ``<records_dir>/<owner>@<network>.json``. The parsed and indexed state is cached in
    memory while the generation and the records directory's modification time are
    unchanged: another process's change bumps the generation, a file added or removed
    behind the store's back changes the directory, and the files are read again. Files
    are private to root (0600, directory 0700).

    ``index``: a function giving the tokens of a record (any hashable values) under which
    :meth:`LeaseState.find` finds it, e.g. its published ports.
    """

    def __init__(
        self,
        directory: Path,
        *,
        records_dir: str = "leases",
        meta_file: str = "meta.json",
        meta_key: str = "meta",
        index: Index | None = None,
    ) -> None:
        self.dir = Path(directory)
        self.rdir = self.dir / records_dir
        self.metafile = self.dir / meta_file
        self.meta_key = meta_key
        self.lockfile = self.dir / "state.lock"
        self.index = index
        # (generation, records directory stamp, state)
        self._cache: tuple[int, int, LeaseState] | None = None
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
            ip = st.pick(network, subnet, gateway, static)
            st.records[key] = {**extra, "owner": owner, "network": network, "ip": str(ip)}
        return ip

    def release(self, owner: str, network: str | None = None) -> list[str]:
        """Drop ``owner``'s leases (on ``network`` only, if given); returns their addresses.

        Idempotent: an owner without leases is no error.
        """
        freed: list[str] = []
        with self.locked() as st:
            for key, rec in sorted(st.owned(owner).items()):
                if network in (None, rec.get("network")):
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

    def _stamp(self) -> int:
        """The records directory's modification time (0 when it does not exist)."""
        try:
            return os.stat(self.rdir).st_mtime_ns
        except FileNotFoundError:
            return 0

    def _load(self) -> LeaseState:
        state = LeaseState(records=_Tracked({}, self.index))
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
                state.records[self.key(_owner(rec), str(rec["network"]))] = rec
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
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
                stamp = self._stamp()
                cache, self._cache = self._cache, None  # until the block ends well: it
                # edits the state in place
                if cache is not None and gen and cache[:2] == (gen, stamp):
                    work = cache[2]
                    work._reload = self._load
                else:
                    work = self._load()
                work._tracked().changed = set()
                work.cursor = dict(cursor)
                old_meta = json.dumps({self.meta_key: work.meta}, sort_keys=True)
                yield work
                work._reload = None
                if write:
                    records = work._tracked()  # ``pick`` may have read the files again
                    meta = json.dumps({self.meta_key: work.meta}, sort_keys=True)
                    self._store(records.changed, records, None if meta == old_meta else meta)
                    gen += 1
                    raw = json.dumps({"g": gen, "c": work.cursor}).encode()
                    os.ftruncate(fd, len(raw))
                    os.pwrite(fd, raw, 0)
                    if records.changed:
                        stamp = self._stamp()
                self._cache = (gen, stamp, work)
        finally:
            os.close(fd)  # closing releases the flock
