"""Forwarding queries for non-container names to the host's upstream resolvers.

UDP forwarding belongs to the server's UDP thread: it calls :meth:`Forwarder.forward_udp`,
waits on :attr:`Forwarder.socks` while queries are pending, calls
:meth:`Forwarder.on_reply` when one is readable and :meth:`Forwarder.sweep` at
:meth:`Forwarder.next_timeout`. Queries go out, unparsed, through a small pool of
non-blocking sockets with a fresh random query ID; a reply is accepted only from the
server it was sent to, on the socket it was sent from, with the pending ID and the same
question. Each attempt times out after ``timeout`` seconds and moves to the next
upstream; after the last one the client gets SERVFAIL. At most ``max_inflight`` queries
(UDP and TCP together) are pending; over that, clients get SERVFAIL at once. Queries that
arrived over TCP are forwarded over TCP (:meth:`Forwarder.forward_tcp`, on the server's
asyncio loop). Every accepted answer is offered to the forward cache, which keeps only
what may be kept (see :mod:`._cache`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from loguru import logger

from ._mmsg import Address
from ._upstream import Upstreams, sockaddr

if TYPE_CHECKING:
    from ._cache import ForwardCache

__all__ = ["Forwarder", "error_response"]

_OPT = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"  # root, OPT, 1232, v0, no options
_DONTWAIT = socket.MSG_DONTWAIT


def error_response(query: bytes, qend: int, rcode: int) -> bytes:
    """A response to ``query`` (question ends at ``qend``) with ``rcode`` and no records."""
    has_opt = query[10:12] != b"\x00\x00"
    flags = (query[2] & 0x79) | 0x80
    counts = b"\x00\x01\x00\x00\x00\x00\x00\x01" if has_opt else b"\x00\x01\x00\x00\x00\x00\x00\x00"
    return (
        query[:2]
        + bytes((flags, 0x80 | rcode))
        + counts
        + query[12:qend]
        + (_OPT if has_opt else b"")
    )


def _truncated(resp: bytes, qend: int) -> bytes:
    """Header and question of ``resp`` with TC set (for a non-EDNS client)."""
    return resp[:2] + bytes((resp[2] | 0x02, resp[3])) + b"\x00\x01" + b"\x00" * 6 + resp[12:qend]


@dataclass(slots=True)
class _Pending:
    client: Address
    client_id: bytes
    query: bytes
    qend: int
    servers: tuple[str, ...]
    attempt: int
    deadline: float
    sock: socket.socket | None = None
    server: str = ""


class Forwarder:
    """UDP and TCP forwarding with timeouts and a bound on in-flight queries."""

    def __init__(
        self,
        upstreams: Upstreams,
        reply_sock: socket.socket,
        socks4: list[socket.socket],
        socks6: list[socket.socket],
        *,
        timeout: float,
        max_inflight: int,
        port: int = 53,
        cache: ForwardCache | None = None,
    ) -> None:
        self.upstreams = upstreams
        self.reply_sock = reply_sock
        self.socks4 = socks4
        self.socks6 = socks6
        self.socks: dict[int, socket.socket] = {s.fileno(): s for s in (*socks4, *socks6)}
        """The upstream sockets by file descriptor, for the UDP thread to wait on."""
        self.timeout = timeout
        self.max_inflight = max_inflight
        self.port = port
        self.cache = cache
        self.pending: dict[int, _Pending] = {}
        self.tcp_inflight = 0
        self._rand = random.SystemRandom()
        self.stats = {"forwarded": 0, "timeouts": 0, "overload": 0, "servfail": 0}

    @property
    def inflight(self) -> int:
        return len(self.pending) + self.tcp_inflight

    # ------------------------------------------------------------------ UDP

    def forward_udp(self, query: bytes, client: Address, qend: int) -> None:
        """Send ``query`` upstream; the reply goes to ``client`` through the reply socket."""
        if len(self.pending) + self.tcp_inflight >= self.max_inflight:
            self.stats["overload"] += 1
            self._reply(error_response(query, qend, 2), client)
            return
        servers = self.upstreams.servers()
        if not servers:
            self.stats["servfail"] += 1
            self._reply(error_response(query, qend, 2), client)
            return
        p = _Pending(
            client=client,
            client_id=query[:2],
            query=query,
            qend=qend,
            servers=servers,
            attempt=0,
            deadline=0.0,
        )
        self.stats["forwarded"] += 1
        self._send(p)

    def _new_id(self) -> int:
        while True:
            qid = self._rand.getrandbits(16)
            if qid not in self.pending:
                return qid

    def _send(self, p: _Pending) -> None:
        """Send attempt ``p.attempt`` (failing over at once when a send fails)."""
        while p.attempt < len(p.servers):
            server = p.servers[p.attempt]
            socks = self.socks6 if ":" in server else self.socks4
            if socks:
                qid = self._new_id()
                sock = socks[qid % len(socks)]
                try:
                    sock.sendto(qid.to_bytes(2, "big") + p.query[2:], sockaddr(server, self.port))
                except OSError:
                    p.attempt += 1
                    continue
                p.sock = sock
                p.server = server.partition("%")[0]  # as recvfrom shows it (no zone)
                p.deadline = time.monotonic() + self.timeout
                self.pending[qid] = p
                return
            p.attempt += 1
        self.stats["servfail"] += 1
        self._reply(error_response(p.query, p.qend, 2), p.client)

    def on_reply(self, sock: socket.socket) -> None:
        """Read what ``sock`` has (without blocking) and answer the clients it is for."""
        pending = self.pending
        cache = self.cache
        for _ in range(256):
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # ICMP errors surface here on some kernels; the sweep fails over
            if len(data) < 12 or not data[2] & 0x80:
                continue
            qid = int.from_bytes(data[:2], "big")
            p = pending.get(qid)
            if p is None or p.sock is not sock or addr[0] != p.server or addr[1] != self.port:
                continue
            qend = p.qend
            if data[4:6] != b"\x00\x00" and data[12:qend].lower() != p.query[12:qend].lower():
                continue
            del pending[qid]
            resp = p.client_id + data[2:]
            if len(resp) > 512 and p.query[10:12] == b"\x00\x00":
                resp = _truncated(resp, qend)
            if cache is not None:  # kept before the client has it: its next query, on
                try:  # either gateway's server, finds it
                    cache.store(p.query, data, p.servers)
                except Exception as exc:  # never let one answer stop the others
                    logger.debug("DNS cache: answer from {} not kept: {!r}", p.server, exc)
            self._reply(resp, p.client)

    def _reply(self, resp: bytes, client: Address) -> None:
        with contextlib.suppress(OSError):
            self.reply_sock.sendto(resp, _DONTWAIT, client)

    def next_timeout(self) -> float:
        """Seconds until the oldest pending attempt times out (0 when it has; 1 when
        nothing is pending)."""
        for p in self.pending.values():  # insertion order is deadline order
            return max(0.0, p.deadline - time.monotonic())
        return 1.0

    def sweep(self) -> None:
        """Fail over or SERVFAIL the attempts whose time is up."""
        now = time.monotonic()
        expired = []
        for qid, p in self.pending.items():
            if p.deadline > now:
                break
            expired.append(qid)
        for qid in expired:
            p = self.pending.pop(qid)
            self.stats["timeouts"] += 1
            p.attempt += 1
            self._send(p)

    # ------------------------------------------------------------------ TCP

    async def forward_tcp(self, query: bytes, qend: int) -> bytes:
        """Forward over TCP to each upstream in turn; SERVFAIL when none answers."""
        if self.inflight >= self.max_inflight:
            self.stats["overload"] += 1
            return error_response(query, qend, 2)
        self.tcp_inflight += 1
        try:
            servers = self.upstreams.servers()
            for server in servers:
                try:
                    resp = await asyncio.wait_for(self._tcp_once(server, query), self.timeout)
                except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                    logger.debug("DNS TCP forward to {} failed: {!r}", server, exc)
                    self.stats["timeouts"] += 1
                    continue
                if self.cache is not None:
                    try:
                        self.cache.store(query, resp, servers)
                    except Exception as exc:
                        logger.debug("DNS cache: answer from {} not kept: {!r}", server, exc)
                return resp
            self.stats["servfail"] += 1
            return error_response(query, qend, 2)
        finally:
            self.tcp_inflight -= 1

    async def _tcp_once(self, server: str, query: bytes) -> bytes:
        qid = self._rand.getrandbits(16).to_bytes(2, "big")
        reader, writer = await asyncio.open_connection(server, self.port)
        try:
            writer.write(len(query).to_bytes(2, "big") + qid + query[2:])
            await writer.drain()
            size = int.from_bytes(await reader.readexactly(2), "big")
            resp = await reader.readexactly(size)
            if len(resp) < 12 or resp[:2] != qid:
                raise ValueError("reply does not match the query")
            return query[:2] + resp[2:]
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
