"""A cache of forwarded answers: upstream responses replayed with the client's ID and
their TTLs counted down.

Keyed by the question (name lower-cased, type, class) and the query bits that change an
answer: whether the query has an OPT record, its DO bit, and the AD and CD header bits.
Only queries the resolver's hot path understands (one question, at most one plain OPT
record; no TSIG) are cached, and only upstream answers that are

* NOERROR or NXDOMAIN, not truncated, with the question asked, well-formed to the last
  byte, no SIG(0)/TSIG, any OPT record last (it is replaced by nyx's own: no options, so
  no cookie of one client is replayed to another);
* positive: kept for the smallest TTL of all their records (at most ``max_ttl``);
* negative (NXDOMAIN, or NOERROR with no answer): kept for min(SOA TTL, SOA MINIMUM)
  (RFC 2308), at most ``max_negative_ttl``; a negative answer without an SOA is not kept.

SERVFAIL, REFUSED, FORMERR, truncated answers, TTL 0 and anything malformed are never kept.
An answer is never served once its smallest TTL has run out; every TTL in it is served
minus the whole seconds it has been cached. The cache is bounded in entries and in bytes
(second-chance eviction in insertion order: an entry hit since the last pass is kept
once more) and emptied when the upstream servers change.

Only the forwarder stores into it (answers from upstream); the resolver reads it only for
queries it would otherwise forward, after container names, reverse names of the container
subnets and the client's right to forward have been decided: it can never answer a
container name, and an internal-only or unknown client never reaches it.

Reads happen on the server's UDP and TCP threads without a lock (a dict lookup and
attribute writes, atomic under the GIL); changes take a lock. On a dual-stack host one
cache serves both servers (``gateway_ip``'s and ``gateway_ip6``'s: four threads), so
whichever thread sees the upstreams change flushes it for both, and a store checks the
upstreams it was sent to again under the lock: an answer from the old upstreams cannot
slip in after another thread's flush.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from ._resolver import forward_key, question_shape

__all__ = ["CacheEntry", "ForwardCache", "Replay", "cache_key", "parse_answer"]

_OPT_HEAD = b"\x00\x00\x29\x04\xd0\x00\x00"  # root, OPT, 1232, ext-rcode 0, version 0
_T_SOA, _T_SIG, _T_OPT, _T_TSIG = 6, 24, 41, 250
_TTL_MAX = 0x7FFFFFFF
_ENTRY_OVERHEAD = 256


def cache_key(query: bytes) -> tuple[bytes, int] | None:
    """``(key, qend)`` of a cacheable query, else None."""
    shape = question_shape(query)
    if shape is None:
        return None
    has_opt, key, qend = shape
    return forward_key(query, has_opt, key, qend), qend


def _skip_name(data: bytes, off: int, n: int) -> int:
    """Offset after the (possibly compressed) name at ``off``, or -1."""
    for _ in range(128):
        if off >= n:
            return -1
        length = data[off]
        if length == 0:
            return off + 1
        if length & 0xC0 == 0xC0:
            return off + 2 if off + 2 <= n else -1
        if length > 63:
            return -1
        off += length + 1
    return -1


def parse_answer(
    resp: bytes, qend: int, has_opt: bool, max_ttl: int, max_negative_ttl: int
) -> tuple[bytearray, tuple[int, ...], tuple[int, ...], int] | None:
    """Check an upstream answer to a cacheable query whose question ends at ``qend``.

    Returns ``(wire, ttl_offsets, ttls, lifetime)``: the answer with ID 0, TTLs clamped
    and any OPT record replaced by nyx's; where each TTL sits and its value; how many
    seconds it may be served. None when the answer must not be cached.
    """
    n = len(resp)
    if n < qend or qend < 17:
        return None
    if resp[2] & 0xFA != 0x80:  # QR set, opcode QUERY, not truncated
        return None
    rcode = resp[3] & 0x0F
    if rcode not in (0, 3) or resp[4:6] != b"\x00\x01":
        return None
    an = int.from_bytes(resp[6:8], "big")
    ns = int.from_bytes(resp[8:10], "big")
    ar = int.from_bytes(resp[10:12], "big")
    offsets: list[int] = []
    ttls: list[int] = []
    soa_minimum = -1
    opt_at = opt_end = -1
    opt_do = 0
    lowest = _TTL_MAX
    off = qend
    for idx in range(an + ns + ar):
        start = off
        off = _skip_name(resp, off, n)
        if off < 0 or off + 10 > n:
            return None
        rtype = int.from_bytes(resp[off : off + 2], "big")
        end = off + 10 + int.from_bytes(resp[off + 8 : off + 10], "big")
        if end > n:
            return None
        if rtype == _T_OPT:
            if idx < an + ns or opt_at >= 0 or resp[off + 4] or resp[off + 5]:
                return None  # misplaced, repeated, an extended rcode or another version
            opt_at, opt_end, opt_do = start, end, resp[off + 6] & 0x80
        elif rtype in (_T_SIG, _T_TSIG):
            return None  # signs this one message
        else:
            ttl = int.from_bytes(resp[off + 4 : off + 8], "big")
            if ttl > _TTL_MAX:
                return None  # RFC 2181: treat as 0
            offsets.append(off + 4)
            ttls.append(ttl)
            lowest = min(lowest, ttl)
            if rtype == _T_SOA and an <= idx < an + ns and end - off - 10 >= 22:
                soa_minimum = int.from_bytes(resp[end - 4 : end], "big")
        off = end
    if off != n:
        return None
    if opt_at >= 0 and (not has_opt or opt_end != n):
        return None  # an OPT nobody asked for, or one we could not replace in place
    if rcode == 3 or an == 0:
        if soa_minimum < 0:
            return None  # RFC 2308: no SOA, no negative caching
        lifetime = min(lowest, soa_minimum, max_negative_ttl)
        cap = lifetime
    else:
        lifetime = min(lowest, max_ttl)
        cap = max_ttl
    if lifetime <= 0:
        return None
    wire = bytearray(resp if opt_at < 0 else resp[:opt_at])
    wire[0:2] = b"\x00\x00"
    if opt_at >= 0:
        wire += _OPT_HEAD + bytes((opt_do, 0)) + b"\x00\x00"
    for i, (at, ttl) in enumerate(zip(offsets, ttls, strict=True)):
        if ttl > cap:
            ttls[i] = cap
            wire[at : at + 4] = cap.to_bytes(4, "big")
    return wire, tuple(offsets), tuple(ttls), lifetime


class CacheEntry:
    """One cached answer; :attr:`view` is what it is served as at age :attr:`view`\\[0]."""

    __slots__ = (
        "born",
        "cost",
        "expires",
        "offsets",
        "qend",
        "ref",
        "size",
        "ttls",
        "view",
        "wire",
    )

    def __init__(
        self,
        wire: bytearray,
        qend: int,
        offsets: tuple[int, ...],
        ttls: tuple[int, ...],
        born: float,
        lifetime: int,
    ) -> None:
        self.wire = bytes(wire)
        self.qend = qend
        self.offsets = offsets
        self.ttls = ttls
        self.born = born
        self.expires = born + lifetime
        self.size = len(wire)
        self.cost = 2 * self.size + _ENTRY_OVERHEAD
        self.ref = False
        self.view: tuple[int, bytes, bytes, bytes] = self.render(0)

    def render(self, age: int) -> tuple[int, bytes, bytes, bytes]:
        """``(age, header bytes 2-12 with RD clear, the same with RD set, what follows
        the question)`` with every TTL minus ``age``; remembered in :attr:`view`."""
        wire = self.wire
        if age:
            buf = bytearray(wire)
            for at, ttl in zip(self.offsets, self.ttls, strict=True):
                buf[at : at + 4] = max(0, ttl - age).to_bytes(4, "big")
            wire = bytes(buf)
        head = wire[3:12]
        view = (
            age,
            bytes((wire[2] & 0xFE,)) + head,
            bytes((wire[2] | 1,)) + head,
            wire[self.qend :],
        )
        self.view = view
        return view


class Replay:
    """A cached answer as served to one exact query (all but its ID): what a client scope
    keeps to answer the same bytes again without a lookup. Valid while its entry is in
    the cache (an evicted, replaced or flushed entry gets ``expires = -1``); when the age
    in whole seconds turns, the TTLs are patched again here, and when a look at the
    upstreams is due it is taken here (a stat of the resolver file): a steady stream of
    repeats never leaves the UDP thread's shortest path, so none of them pays a full
    lookup once a second (which showed as a p99 of 2x dnsmasq's)."""

    __slots__ = ("age", "cache", "entry", "question", "rd", "tail")

    def __init__(
        self,
        cache: ForwardCache,
        entry: CacheEntry,
        age: int,
        tail: bytes,
        rd: bool = False,
        question: bytes = b"",
    ) -> None:
        self.cache = cache
        self.entry = entry
        self.age = age
        self.tail = tail
        self.rd = rd
        self.question = question

    def get(self, now: float) -> bytes | None:
        """The answer but its ID, or None when this replay is stale (the entry expired or
        left the cache: the caller then asks the cache)."""
        entry = self.entry
        if now >= self.cache.next_check:
            self.cache.check_upstreams(now)  # a flush marks the entry expired
        if now >= entry.expires:
            return None
        age = int(now - entry.born)
        if age != self.age:
            view = entry.view
            if view[0] != age:
                view = entry.render(age)
            self.tail = (view[2] if self.rd else view[1]) + self.question + view[3]
            self.age = age
        entry.ref = True
        return self.tail


class ForwardCache:
    """Upstream answers by question, bounded, with TTLs (see the module docstring).

    ``servers``: the current upstreams (``Upstreams.servers``); looked at every
    ``check_interval`` seconds, and the cache is emptied when they changed. ``clock`` is
    injectable for tests; a running server reads replays with ``time.monotonic``.
    """

    def __init__(
        self,
        *,
        max_entries: int = 4096,
        max_bytes: int = 4 << 20,
        max_ttl: int = 86400,
        max_negative_ttl: int = 3600,
        servers: Callable[[], tuple[str, ...]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        check_interval: float = 1.0,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_ttl = max_ttl
        self.max_negative_ttl = max_negative_ttl
        self.clock = clock
        self.check_interval = check_interval
        self.entries: OrderedDict[bytes, CacheEntry] = OrderedDict()
        self.bytes = 0
        self._servers_of = servers
        self._servers: tuple[str, ...] = servers() if servers is not None else ()
        self.next_check = clock() + check_interval
        self._lock = threading.Lock()
        self.stats = {"stored": 0, "evicted": 0, "flushes": 0, "uncacheable": 0}

    def __len__(self) -> int:
        return len(self.entries)

    # ------------------------------------------------------------------ reads

    def answer(self, key: bytes, query: bytes, qend: int, udp: bool = True) -> bytes | None:
        """The cached answer to ``query`` (cache key ``key``, question ending at ``qend``)
        with its ID, RD bit and question, or None (not cached, expired, too big for the
        client's UDP buffer)."""
        got = self.lookup(key, query, qend, udp)
        return None if got is None else got[0]

    def lookup(
        self, key: bytes, query: bytes, qend: int, udp: bool = True
    ) -> tuple[bytes, Replay] | None:
        """:meth:`answer`, and a :class:`Replay` of it for this exact query."""
        entry = self.entries.get(key)
        if entry is None:
            return None
        now = self.clock()
        if now >= self.next_check:
            self.check_upstreams(now)
            if self.entries.get(key) is not entry:
                return None
        if now >= entry.expires:
            return None
        if udp and entry.size > 512 and entry.size > _udp_limit(query, qend):
            return None
        view = entry.view
        age = int(now - entry.born)
        if view[0] != age:
            view = entry.render(age)
        entry.ref = True
        rd = bool(query[2] & 1)
        question = query[12:qend]
        out = query[:2] + (view[2] if rd else view[1]) + question + view[3]
        return out, Replay(self, entry, age, out[2:], rd, question)

    # ------------------------------------------------------------------ changes

    def check_upstreams(self, now: float | None = None) -> None:
        """Empty the cache when the upstream servers changed since the last look."""
        if self._servers_of is None:
            return
        self.next_check = (self.clock() if now is None else now) + self.check_interval
        current = self._servers_of()
        if current != self._servers:
            with self._lock:
                self._servers = current
                self._flush_locked()

    def store(self, query: bytes, response: bytes, servers: tuple[str, ...] | None = None) -> bool:
        """Keep ``response`` (from upstream, any ID) as the answer to ``query`` if it may
        be cached. ``servers``: the upstreams the query was sent to; an answer from before
        an upstream change is not kept. Returns whether it was kept."""
        if self.max_entries <= 0:
            return False
        ck = cache_key(query)
        if ck is None:
            self.stats["uncacheable"] += 1
            return False
        key, qend = ck
        if response[12:qend].lower() != query[12:qend].lower():
            self.stats["uncacheable"] += 1
            return False
        parsed = parse_answer(
            response, qend, query[10:12] != b"\x00\x00", self.max_ttl, self.max_negative_ttl
        )
        if parsed is None:
            self.stats["uncacheable"] += 1
            return False
        wire, offsets, ttls, lifetime = parsed
        now = self.clock()
        if servers is not None and servers != self._servers and self._servers_of is not None:
            self.check_upstreams(now)  # the upstreams changed since the last look, or
            if servers != self._servers:  # the answer is from the old ones
                return False
        entry = CacheEntry(wire, qend, offsets, ttls, now, lifetime)
        if entry.cost > self.max_bytes:
            return False
        with self._lock:
            if servers is not None and servers != self._servers and self._servers_of is not None:
                return False  # another thread saw the upstreams change (and flushed) meanwhile
            old = self.entries.pop(key, None)
            if old is not None:
                old.expires = -1.0
                self.bytes -= old.cost
            self.entries[key] = entry
            self.bytes += entry.cost
            self.stats["stored"] += 1
            self._evict_locked(now)
        return True

    def flush(self) -> None:
        """Forget every answer."""
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        for entry in self.entries.values():
            entry.expires = -1.0  # and every Replay of it
        self.entries.clear()
        self.bytes = 0
        self.stats["flushes"] += 1

    def _evict_locked(self, now: float) -> None:
        entries = self.entries
        chances = len(entries)
        while entries and (len(entries) > self.max_entries or self.bytes > self.max_bytes):
            key, entry = entries.popitem(last=False)
            if entry.ref and chances > 0 and now < entry.expires:
                entry.ref = False  # hit since the last pass: once more to the back
                entries[key] = entry
                chances -= 1
                continue
            entry.expires = -1.0
            self.bytes -= entry.cost
            self.stats["evicted"] += 1


def _udp_limit(query: bytes, qend: int) -> int:
    """The largest UDP answer the client takes: 512, or its EDNS buffer (<= 4096)."""
    if query[10:12] == b"\x00\x00" or len(query) < qend + 5:
        return 512
    return max(512, min(int.from_bytes(query[qend + 3 : qend + 5], "big"), 4096))
