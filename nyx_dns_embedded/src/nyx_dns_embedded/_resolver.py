"""Answering one query: a byte-level hot path in front of a dnslib slow path.

:meth:`Resolver.resolve` takes the raw query and the client's address and returns

* ``bytes``: the response to send back,
* an ``int``: "forward this query upstream" (the value is where the question ends),
* ``None``: drop it (not a query at all, e.g. a response or a runt).

Hot path, in the client's scope: first the whole query but its ID (``Scope.exact``): a
query asked before gets the answer it got, ID patched in (for an answer of the forward
cache, a :class:`~._cache.Replay` that is used only while that answer is unchanged).
Then a query that is exactly a 12-byte header, one question and optionally one plain OPT
record is looked up by its lower-cased question bytes. A hit is a response template
computed earlier by the slow path; only the ID, the RD bit and the question (to echo its
case) are patched in; or the FORWARD mark, and then the forward cache (:mod:`._cache`)
is asked before the query goes upstream. Everything else, and every first query for a
name, goes through dnslib; the slow path fills the templates with what it answered when
the answer is local, complete and fits 512 bytes. These caches live in the registry
snapshot, so any register/deregister drops them; the forward cache does not (it only
holds upstream answers and is only asked where the query would be forwarded).

The client's scope is one dict lookup by source address (registered containers and the
fixed host addresses). Only a source missing there is checked against the host's own
addresses (:mod:`._local`, cached): the host sees every name, anyone else is refused.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from time import monotonic as _monotonic
from typing import TYPE_CHECKING

from dnslib import AAAA, EDNS0, PTR, QTYPE, RCODE, RR, SOA, A, DNSHeader, DNSQuestion, DNSRecord

from ._local import LocalSources
from ._records import DOMAIN, DOMAIN_WIRE, NameRecord, Registry, Scope, Snapshot, Template

if TYPE_CHECKING:
    from ._cache import ForwardCache, Replay

__all__ = ["FLAG_KEYS", "FORWARD", "Resolver", "forward_key", "question_shape"]

FORWARD: Template = (b"", b"", b"")
"""Cache marker (compared by identity): names of this scope that go upstream."""

_Q0 = b"\x00\x01\x00\x00\x00\x00\x00\x00"  # qdcount 1, no other records
_Q1 = b"\x00\x01\x00\x00\x00\x00\x00\x01"  # qdcount 1, one additional (OPT)
_DOMAIN_SUFFIX = b"\x04nyxd\x05local\x00"
_V4_REVERSE = b"\x07in-addr\x04arpa\x00"
_V6_REVERSE = b"\x03ip6\x04arpa\x00"
_EDNS_SIZE = 1232
_NEG_TTL = 5
_CACHE_MAX = 2048
_T_A, _T_AAAA, _T_PTR, _T_SOA, _T_ANY, _T_OPT = 1, 28, 12, 6, 255, 41
FLAG_KEYS = tuple(bytes((i,)) for i in range(64))
"""Suffixes of forward-cache keys: bit 1 the query has an OPT record, 2 its DO bit, 0x10
the CD and 0x20 the AD header bits (each can change what an upstream answers)."""


def question_end(data: bytes, n: int) -> int:
    """Offset just past the first question's qtype/qclass, or -1 (compressed or bad)."""
    i = 12
    while i < n:
        length = data[i]
        if length == 0:
            end = i + 5
            return end if end <= n else -1
        if length > 63:
            return -1
        i += length + 1
    return -1


def question_shape(data: bytes) -> tuple[int, bytes, int] | None:
    """``(has_opt, key, qend)`` for a hot-path shaped query, else None.

    Shaped: QR=0, opcode QUERY, one question with an uncompressed name, and either nothing
    after it or exactly one OPT record (root owner, EDNS version 0). ``key`` is the
    question with the name lower-cased.
    """
    n = len(data)
    if n < 17 or data[2] & 0xF8:
        return None
    hdr = data[4:12]
    if hdr == _Q0:
        qend = question_end(data, n)
        if qend != n:
            return None
        return 0, data[12 : n - 4].lower() + data[n - 4 :], n
    if hdr == _Q1:
        qend = question_end(data, n)
        if qend < 0 or qend + 11 > n:
            return None
        if data[qend : qend + 3] != b"\x00\x00\x29" or data[qend + 6] != 0:
            return None
        if qend + 11 + int.from_bytes(data[qend + 9 : qend + 11], "big") != n:
            return None
        return 1, data[12 : qend - 4].lower() + data[qend - 4 : qend], qend
    return None


def forward_key(data: bytes, has_opt: int, key: bytes, qend: int) -> bytes:
    """The forward-cache key of a hot-path shaped query (``question_shape``'s parts)."""
    bits = data[3] & 0x30
    if has_opt:
        bits |= 3 if data[qend + 7] & 0x80 else 1
    return key + FLAG_KEYS[bits]


def _keep(exact: dict[bytes, bytes | Replay], key: bytes, value: bytes | Replay) -> None:
    if len(exact) >= _CACHE_MAX:
        exact.clear()
    exact[key] = value


def _formerr(data: bytes) -> bytes | None:
    if len(data) < 12 or data[2] & 0x80:
        return None
    flags = (data[2] & 0x79) | 0x80  # QR, echo opcode and RD
    return data[:2] + bytes((flags, RCODE.FORMERR)) + b"\x00" * 8


def _reverse_ip(labels: tuple[bytes, ...]) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address of a full-length reverse name, or None."""
    try:
        text = [label.decode("ascii") for label in labels]
    except UnicodeDecodeError:
        return None
    try:
        if len(text) == 6 and text[4:] == ["in-addr", "arpa"]:
            if not all(t.isdigit() and len(t) <= 3 for t in text[:4]):
                return None
            return ipaddress.IPv4Address(".".join(reversed(text[:4])))
        if len(text) == 34 and text[32:] == ["ip6", "arpa"]:
            nibbles = "".join(reversed(text[:32]))
            return ipaddress.IPv6Address(int(nibbles, 16))
    except ValueError:
        return None
    return None


class Resolver:
    """Resolves queries against the registry; used by the server's UDP and TCP threads
    (the views are replaced whole and the per-scope caches are plain dicts, so a race
    costs at most a recomputed answer, under the GIL)."""

    def __init__(
        self,
        registry: Registry,
        *,
        ttl: int = 60,
        is_local: Callable[[str], bool] | None = None,
        cache: ForwardCache | None = None,
    ) -> None:
        self.registry = registry
        self.ttl = ttl
        self.cache = cache
        """Answers of upstreams, asked only for queries this resolver would forward."""
        self.clock: Callable[[], float] = cache.clock if cache is not None else _monotonic
        self.snap: Snapshot = registry.snapshot()
        self.is_local: Callable[[str], bool] = is_local or LocalSources()
        """Asked only about sources that are neither registered nor fixed host clients:
        True when the source is an address of the host (it then sees every name)."""

    def refresh(self) -> Snapshot:
        if self.snap.generation != self.registry.generation:
            self.snap = self.registry.snapshot()
        return self.snap

    def scope(self, client_ip: str, *, udp: bool) -> Scope:
        """The scope of ``client_ip`` for a query over UDP (``udp``) or TCP: every caller
        says which, because an IPv6 address of the host is only the host over TCP (see
        :meth:`unlisted`)."""
        snap = self.snap
        if snap.generation != self.registry.generation:
            snap = self.refresh()
        scope = snap.clients.get(client_ip)
        if scope is None:
            scope = self.unlisted(client_ip, udp)
        return scope

    def unlisted(self, client_ip: str, udp: bool) -> Scope:
        """The scope of a source that is neither registered nor a fixed host client: the
        host's (an address of the host, :mod:`._local`), else unknown (refused). An IPv6
        address of the host over UDP gets :attr:`~._records.Snapshot.host6_udp` (TC)
        instead: IPv6 has no martian-source check, only TCP proves such a source."""
        snap = self.snap
        if not self.is_local(client_ip):
            return snap.unknown
        if udp and ":" in client_ip:
            return snap.host6_udp
        return snap.local

    # ------------------------------------------------------------------ hot path

    def resolve(self, data: bytes, client_ip: str, udp: bool = True) -> bytes | int | None:
        """Answer one query from ``client_ip`` (see the module docstring for the result)."""
        snap = self.snap
        if snap.generation != self.registry.generation:
            snap = self.refresh()
        scope = snap.clients.get(client_ip)
        if scope is None:  # neither registered nor a fixed host client: off the hot path
            scope = self.unlisted(client_ip, udp)
        return self.answer(data, scope, udp)

    def answer(self, data: bytes, scope: Scope, udp: bool = True) -> bytes | int | None:
        """Answer one query from a client whose scope is ``scope``."""
        hit = scope.exact.get(data[2:])
        if hit is not None:
            if type(hit) is bytes:
                return data[:2] + hit
            tail = hit.get(self.clock())  # type: ignore[union-attr]
            if tail is not None:
                return data[:2] + tail
        n = len(data)
        if n > 16 and not data[2] & 0xF8:
            hdr = data[4:12]
            t: Template | None = None
            if hdr == _Q0:
                key = data[12 : n - 4].lower() + data[n - 4 :]
                t = scope.cache0.get(key)
                qend = n
                bits = data[3] & 0x30
            elif hdr == _Q1:
                shape = question_shape(data)
                if shape is not None:
                    key, qend = shape[1], shape[2]
                    t = scope.cache1.get(key)
                    bits = (data[3] & 0x30) | (3 if data[qend + 7] & 0x80 else 1)
            if t is not None:
                if t is FORWARD:
                    cache = self.cache
                    if cache is not None:
                        got = cache.lookup(key + FLAG_KEYS[bits], data, qend, udp)
                        if got is not None:
                            if udp:  # (a replay must fit any UDP client that sends these bytes)
                                _keep(scope.exact, data[2:], got[1])
                            return got[0]
                    return qend
                h0, h1, tail = t
                out = data[:2] + (h1 if data[2] & 1 else h0) + data[12:qend] + tail
                _keep(scope.exact, data[2:], out[2:])
                return out
        return self.slow(data, scope, udp)

    # ------------------------------------------------------------------ slow path

    def slow(self, data: bytes, scope: Scope, udp: bool = True) -> bytes | int | None:
        try:
            req = DNSRecord.parse(data)
        except Exception:
            return _formerr(data)
        try:
            out = self._answer(req, scope, udp)
        except Exception:
            return _formerr(data)
        if isinstance(out, int):
            self._remember(data, scope, FORWARD, None)
            if self.cache is not None:
                return self.cached(data, udp) or out
            return out
        packed, cacheable = out
        if cacheable:
            self._remember(data, scope, None, packed)
        return packed

    def cached(self, data: bytes, udp: bool = True) -> bytes | None:
        """The forward cache's answer to ``data``, if it has one."""
        cache = self.cache
        if cache is None:
            return None
        shape = question_shape(data)
        if shape is None:
            return None
        has_opt, key, qend = shape
        return cache.answer(forward_key(data, has_opt, key, qend), data, qend, udp)

    def _remember(
        self, data: bytes, scope: Scope, marker: Template | None, resp: bytes | None
    ) -> None:
        shape = question_shape(data)
        if shape is None:
            return
        has_opt, key, qend = shape
        value: Template
        if resp is None:
            if marker is None:
                return
            value = marker
        else:
            if len(resp) > 512 or resp[12:qend].lower() != data[12:qend].lower():
                return
            head = bytes((resp[2] & 0xFE,)) + resp[3:12]
            value = (head, bytes((resp[2] | 1,)) + resp[3:12], resp[qend:])
        cache = scope.cache1 if has_opt else scope.cache0
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        cache[key] = value

    def _answer(self, req: DNSRecord, scope: Scope, udp: bool) -> tuple[bytes, bool] | int:
        """The packed response and whether it may be cached, or the qend to forward."""
        h = req.header
        if h.qr:
            raise ValueError("response")
        opts = [r for r in req.ar if r.rtype == _T_OPT]
        reply = DNSRecord(DNSHeader(id=h.id, qr=1, opcode=h.opcode, rd=h.rd, ra=int(scope.forward)))
        if opts:
            reply.add_ar(EDNS0(udp_len=_EDNS_SIZE))
        limit = 65535
        if udp:
            limit = max(512, min(int(opts[0].rclass), 4096)) if opts else 512
        if h.opcode != 0:
            reply.header.rcode = RCODE.NOTIMP
            return bytes(reply.pack()), False
        if len(req.questions) != 1 or len(opts) > 1:
            reply.header.rcode = RCODE.FORMERR
            return bytes(reply.pack()), False
        q: DNSQuestion = req.questions[0]
        reply.add_question(q)
        if opts and (int(opts[0].ttl) >> 16) & 0xFF != 0:
            reply.ar = [EDNS0(udp_len=_EDNS_SIZE, ext_rcode=1)]  # BADVERS
            return bytes(reply.pack()), False
        if scope.tcp_only:
            reply.header.tc = 1  # "ask again over TCP": only a handshake proves the source
            return bytes(reply.pack()), True
        if not scope.known:
            reply.header.rcode = RCODE.REFUSED
            return bytes(reply.pack()), True
        labels = tuple(label.lower() for label in q.qname.label)
        wire = b"".join(bytes((len(label),)) + label for label in labels) + b"\x00"
        rec = scope.names.get(wire)
        local_class = q.qclass in (1, _T_ANY)
        if rec is not None or wire.endswith(_DOMAIN_SUFFIX):
            if not local_class:
                reply.header.rcode = RCODE.REFUSED
                return bytes(reply.pack()), True
            reply.header.aa = 1
            if rec is not None:
                self._add_addresses(reply, q, rec)
            elif wire == DOMAIN_WIRE and q.qtype in (_T_SOA, _T_ANY):
                reply.add_answer(self._soa())
            elif wire != DOMAIN_WIRE:
                reply.header.rcode = RCODE.NXDOMAIN
            if not reply.rr:
                reply.add_auth(self._soa())
            return self._fit(reply, limit)
        if wire.endswith(_V4_REVERSE) or wire.endswith(_V6_REVERSE):
            target = scope.ptrs.get(wire)
            ip = _reverse_ip(labels) if target is None else None
            if target is not None or (ip is not None and self.snap.is_ours(ip)):
                reply.header.aa = 1
                if target is None:
                    reply.header.rcode = RCODE.NXDOMAIN
                elif q.qtype in (_T_PTR, _T_ANY) and local_class:
                    reply.add_answer(RR(q.qname, QTYPE.PTR, ttl=self.ttl, rdata=PTR(target)))
                return self._fit(reply, limit)
        if not scope.forward:
            reply.header.rcode = RCODE.REFUSED
            return bytes(reply.pack()), True
        return 12 + len(wire) + 4

    def _add_addresses(self, reply: DNSRecord, q: DNSQuestion, rec: NameRecord) -> None:
        if q.qtype in (_T_A, _T_ANY):
            for ip in rec.v4:
                reply.add_answer(RR(q.qname, QTYPE.A, ttl=self.ttl, rdata=A(ip)))
        if q.qtype in (_T_AAAA, _T_ANY):
            for ip in rec.v6:
                reply.add_answer(RR(q.qname, QTYPE.AAAA, ttl=self.ttl, rdata=AAAA(ip)))

    def _soa(self) -> RR:
        return RR(
            DOMAIN + ".",
            QTYPE.SOA,
            ttl=_NEG_TTL,
            rdata=SOA(f"ns.{DOMAIN}.", f"hostmaster.{DOMAIN}.", (1, 3600, 600, 86400, _NEG_TTL)),
        )

    @staticmethod
    def _fit(reply: DNSRecord, limit: int) -> tuple[bytes, bool]:
        """Pack; over ``limit`` (UDP), send the header and question with TC set instead."""
        packed = bytes(reply.pack())
        if len(packed) <= limit:
            return packed, True
        reply.rr = []
        reply.auth = []
        reply.ar = [r for r in reply.ar if r.rtype == _T_OPT]
        reply.header.tc = 1
        return bytes(reply.pack()), False
