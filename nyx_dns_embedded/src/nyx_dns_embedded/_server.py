"""The DNS server: UDP on a thread of its own, TCP on an asyncio loop on another.

The address is IPv4 or IPv6 (the provider runs one server per gateway: ``gateway_ip``,
and ``gateway_ip6`` on a dual-stack host). An IPv6 listener is IPv6-only and binds with
``IPV6_FREEBIND``: the gateway may still be tentative (DAD) or not be on its bridge yet
(a CNI bridge gets it at the first container) when the server starts.

Sockets are created by :meth:`DnsServer.start` in the *calling* thread, so they live in
the caller's network namespace (the threads started there inherit it too).

UDP (``nyx-dns-udp``): one datagram at a time (``recvfrom``/``sendto``) while queries come
one by one; in bursts the listening socket is read with ``recvmmsg`` and answered with
``sendmmsg`` (:mod:`._mmsg`): up to ``udp_batch`` datagrams per system call, replies
addressed with the very ``sockaddr`` they came from (``sockaddr_in`` or ``sockaddr_in6``).
A registered client's scope is one dict lookup (in a batch on the IPv4 server, by its
address bytes) and its repeats are answered inline. Any source that is not in the
snapshot's clients, every IPv6 address of the host among them, is looked up with
``Resolver.scope(ip, udp=True)`` in both modes: over UDP an IPv6 address of the host gets
the TC scope, never the host's scope, its inline repeats or the forward cache. While no
forwarded query is pending the thread simply blocks in ``recvfrom``/``recvmmsg``; while
some are, it waits with epoll on the listening socket and the upstream sockets, with the
forwarder's next timeout. Every answer the resolver, its templates or the forward cache
give is computed on this thread.

TCP (``nyx-dns``): asyncio streams with a read timeout per message, a connection cap and
a cap per client address; unknown clients are dropped as soon as they are accepted. TCP
queries that must go upstream are forwarded over TCP from this loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import struct
import threading
from dataclasses import dataclass
from time import monotonic as _monotonic

from loguru import logger

from nyx_core import DnsError

from ._cache import ForwardCache
from ._forwarder import Forwarder
from ._mmsg import MSG_WAITFORONE, NAME_SLOT, Address, UdpBatch
from ._records import Scope
from ._resolver import Resolver
from ._upstream import Upstreams

__all__ = ["DnsServer", "ServerOptions"]

_UDP_RECV = 4096
_RCVBUF = 4 << 20
_SO_RCVBUFFORCE = 33  # Linux; not exported by the socket module
_IPV6_FREEBIND = 78  # Linux >= 4.15; not exported by the socket module
_IP_FREEBIND = 15  # <linux/in.h>; not every Python's socket module names it
_WAKE = struct.pack("ll", 1, 0)  # the UDP thread looks at its stop flag at least every 1 s
_DONTWAIT = socket.MSG_DONTWAIT
_BURST_GAP = 100e-6  # this many datagrams in a row closer than this: switch to batches
_BURST_STREAK = 8
_CALM_BATCHES = 16  # batches of one in a row: back to one datagram at a time


@dataclass(frozen=True)
class ServerOptions:
    """Tunables of one server (see :class:`~nyx_dns_embedded.EmbeddedDnsSettings`)."""

    forward_timeout: float = 1.5
    max_inflight: int = 1024
    tcp_max_connections: int = 64
    tcp_max_connections_per_client: int = 8
    tcp_idle_timeout: float = 5.0
    upstream_port: int = 53
    udp_batch: int = 64
    upstream_sockets: int = 4


def host_port(host: str, port: int) -> str:
    """``10.88.0.1:53``, ``[fd00::1]:53``."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen_family(host: str) -> int:
    """``AF_INET6`` for an IPv6 literal, else ``AF_INET``."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _listen_options(sock: socket.socket) -> None:
    """IPv6 listeners: IPv6 only (no v4-mapped clients), and bindable before the gateway
    address is usable (DAD) or present (see the module doc)."""
    if sock.family != socket.AF_INET6:
        return
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_FREEBIND, 1)
    except OSError:  # kernels before 4.15: IP_FREEBIND covers IPv6 sockets there
        sock.setsockopt(socket.SOL_IP, _IP_FREEBIND, 1)


def _udp_socket(family: int, addr: tuple[str, int], *, listen: bool = False) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if listen:
            _listen_options(sock)
        sock.setblocking(False)
        try:  # root may go past net.core.rmem_max for this one socket
            sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, _RCVBUF)
        except OSError:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
        sock.bind(addr)
    except BaseException:
        sock.close()
        raise
    return sock


class DnsServer:
    """Serve ``resolver`` on ``host:port`` (UDP and TCP) from threads of its own.

    ``cache``: the forward cache the resolver reads (the forwarder fills it).
    """

    def __init__(
        self,
        resolver: Resolver,
        upstreams: Upstreams,
        host: str,
        port: int,
        options: ServerOptions | None = None,
        cache: ForwardCache | None = None,
    ) -> None:
        self.resolver = resolver
        self.upstreams = upstreams
        self.host = host
        self.port = port
        self.options = options or ServerOptions()
        self.cache = cache
        self.loop: asyncio.AbstractEventLoop | None = None
        self.forwarder: Forwarder | None = None
        self._thread: threading.Thread | None = None
        self._udp_thread: threading.Thread | None = None
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._batch: UdpBatch | None = None
        self._epoll: select.epoll | None = None
        self._stopping = False
        self._socks: list[socket.socket] = []
        self._tcp_server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self._per_client: dict[str, int] = {}
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.stats = {
            "udp": 0,
            "udp_batches": 0,
            "tcp": 0,
            "tcp_refused": 0,
            "tcp_unknown": 0,
            "errors": 0,
        }
        self.burst_gap = _BURST_GAP
        """Datagrams closer than this many seconds, several in a row, switch the UDP
        thread to batches (0: never; ``inf``: after the first few)."""

    @property
    def running(self) -> bool:
        return (
            self._thread is not None
            and self._thread.is_alive()
            and self._udp_thread is not None
            and self._udp_thread.is_alive()
        )

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)``."""
        if self._udp is None:
            raise DnsError("embedded DNS server is not running")
        addr = self._udp.getsockname()
        return addr[0], addr[1]

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Bind the sockets here (caller's netns), then serve from two new threads."""
        if self.running:
            return
        opts = self.options
        socks: list[socket.socket] = []
        try:
            family = listen_family(self.host)
            udp = _udp_socket(family, (self.host, self.port), listen=True)
            socks.append(udp)
            udp.setblocking(True)  # the UDP thread blocks in recvmmsg; sends never block
            udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _WAKE)
            tcp = socket.socket(family, socket.SOCK_STREAM)
            socks.append(tcp)
            _listen_options(tcp)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((self.host, udp.getsockname()[1]))
            tcp.listen(128)
            tcp.setblocking(False)
            up4 = [
                _udp_socket(socket.AF_INET, ("0.0.0.0", 0)) for _ in range(opts.upstream_sockets)
            ]
            socks += up4
            up6: list[socket.socket] = []
            with contextlib.suppress(OSError):
                for _ in range(opts.upstream_sockets):
                    up6.append(_udp_socket(socket.AF_INET6, ("::", 0)))
            socks += up6
            batch = UdpBatch(udp, slots=opts.udp_batch, size=_UDP_RECV)
        except OSError as exc:
            for s in socks:
                s.close()
            what = "gateway_ip6" if ":" in self.host else "gateway_ip"
            raise DnsError(
                f"embedded DNS cannot listen on {host_port(self.host, self.port)} ({what}, "
                "dns_port): "
                f"{exc.strerror or exc}"
            ) from exc
        self._udp, self._tcp, self._socks, self._batch = udp, tcp, socks, batch
        forwarder = Forwarder(
            self.upstreams,
            udp,
            up4,
            up6,
            timeout=opts.forward_timeout,
            max_inflight=opts.max_inflight,
            port=opts.upstream_port,
            cache=self.cache,
        )
        self.forwarder = forwarder
        epoll = select.epoll()
        epoll.register(udp.fileno(), select.EPOLLIN)
        for fd in forwarder.socks:
            epoll.register(fd, select.EPOLLIN)
        self._epoll = epoll
        self._stopping = False
        self.loop = asyncio.new_event_loop()
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=self._run, name="nyx-dns", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is None and self._ready.is_set():
            self._udp_thread = threading.Thread(
                target=self._run_udp, name="nyx-dns-udp", daemon=True
            )
            self._udp_thread.start()
        if self._error is not None or not self.running:
            err = self._error
            self.stop()
            raise DnsError(f"embedded DNS server failed to start: {err!r}") from err
        logger.info("embedded DNS listening on {} (udp, tcp)", host_port(*self.address))

    def _run(self) -> None:
        loop = self.loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            self._tcp_server = loop.run_until_complete(
                asyncio.start_server(self._on_tcp, sock=self._tcp)
            )
            self._ready.set()
            loop.run_forever()
        except BaseException as exc:  # pragma: no cover - reported to start()
            self._error = exc
            self._ready.set()
        finally:
            try:
                loop.run_until_complete(self._cleanup(loop))
            finally:
                loop.close()

    async def _cleanup(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._tcp_server is not None:
            self._tcp_server.close()
        for task in list(self._conns):
            task.cancel()
        if self._conns:
            await asyncio.gather(*self._conns, return_exceptions=True)
        if self._tcp_server is not None:
            with contextlib.suppress(Exception):
                await self._tcp_server.wait_closed()
        await loop.shutdown_asyncgens()

    def stop(self) -> None:
        """Stop both threads, close every socket. Idempotent."""
        self._stopping = True
        udp_thread, thread, loop = self._udp_thread, self._thread, self.loop
        if udp_thread is not None and udp_thread.is_alive():
            if self._udp is not None:
                with contextlib.suppress(OSError):  # wakes recvmmsg (ENOTCONN is expected)
                    self._udp.shutdown(socket.SHUT_RD)
            udp_thread.join(10)
        if thread is not None and loop is not None and thread.is_alive():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
        elif loop is not None and not loop.is_closed():
            loop.close()
        if self._epoll is not None:
            self._epoll.close()
        for s in self._socks:
            s.close()
        self._socks = []
        self._epoll = None
        self._batch = None
        self._thread = self._udp_thread = None
        self.loop = None
        self._udp = self._tcp = None
        self._tcp_server = None

    # ------------------------------------------------------------------ UDP

    def _run_udp(self) -> None:
        """The UDP thread: one datagram at a time while queries come one by one (lowest
        latency: ``recvfrom`` blocks, the answer goes out at once), batches while they
        come in bursts (fewest system calls), epoll while forwarded queries are pending."""
        fwd, epoll, batch, udp = self.forwarder, self._epoll, self._batch, self._udp
        assert fwd is not None and epoll is not None and batch is not None and udp is not None
        ufd = udp.fileno()
        socks = fwd.socks
        serve = self._serve_batch
        recvfrom, sendto = udp.recvfrom, udp.sendto
        resolver = self.resolver
        registry = resolver.registry
        answer_one = self._answer_one
        stats = self.stats
        slots = batch.slots
        burst = False
        calm = streak = 0
        last = 0.0
        while not self._stopping:
            try:
                if fwd.pending:
                    for fd, _ in epoll.poll(fwd.next_timeout()):
                        if fd == ufd:
                            while serve(_DONTWAIT) == slots and not self._stopping:
                                pass
                        else:
                            sock = socks.get(fd)
                            if sock is not None:
                                fwd.on_reply(sock)
                    fwd.sweep()
                    continue
                if burst:
                    if serve(MSG_WAITFORONE) > 1:
                        calm = 0
                    else:
                        calm += 1
                        burst = calm < _CALM_BATCHES
                        streak = 0
                    continue
                data, addr = recvfrom(_UDP_RECV)
                if addr is None:
                    continue  # shut down (stop)
                # the shortest way first: a registered client asking what it asked before
                snap = resolver.snap
                if snap.generation != registry.generation:
                    snap = resolver.refresh()
                scope = snap.clients.get(addr[0])
                hit = None if scope is None else scope.exact.get(data[2:])
                if type(hit) is bytes:
                    sendto(data[:2] + hit, _DONTWAIT, addr)
                elif hit is not None and (tail := hit.get(_monotonic())) is not None:  # type: ignore[union-attr]
                    sendto(data[:2] + tail, _DONTWAIT, addr)  # a replay of the forward cache
                else:
                    answer_one(data, addr, scope)
                # bookkeeping once the answer is out
                now = _monotonic()
                streak = streak + 1 if now - last < self.burst_gap else 0
                burst = streak >= _BURST_STREAK
                last = now
                calm = 0
                stats["udp"] += 1
            except (InterruptedError, BlockingIOError):
                continue  # the receive timeout: look at the stop flag
            except OSError:
                continue  # a reply could not be sent (buffer full, unreachable): dropped
            except Exception as exc:  # never let one bad packet or moment end the thread
                if self._stopping:
                    break
                stats["errors"] += 1
                logger.debug("embedded DNS: UDP error: {!r}", exc)

    def _answer_one(self, data: bytes, addr: Address, scope: Scope | None) -> None:
        """One datagram that is not a repeat answered from its scope: the resolver (and
        the forward cache, and maybe the forwarder). ``scope`` None: the source is not
        in the snapshot's clients, and the resolver decides (over UDP: an IPv6 address of
        the host gets TC, never the host's scope or its cached answers)."""
        resolver = self.resolver
        if scope is None:
            scope = resolver.scope(addr[0], udp=True)
        out = resolver.answer(data, scope)
        if out is None:
            return
        if isinstance(out, int):
            self.forwarder.forward_udp(data, addr, out)  # type: ignore[union-attr]
        else:
            self._udp.sendto(out, _DONTWAIT, addr)  # type: ignore[union-attr]

    def _serve_batch(self, flags: int) -> int:
        """Receive one batch, answer what can be answered here, forward the rest."""
        batch = self._batch
        fwd = self.forwarder
        assert batch is not None and fwd is not None
        k = batch.recv(flags)
        if not k:
            return 0
        now = _monotonic()
        resolver = self.resolver
        snap = resolver.snap
        if snap.generation != resolver.registry.generation:
            snap = resolver.refresh()
        scopes = snap.clients4 if batch.namelen == 16 else {}
        answer = resolver.answer
        data, lengths, names32 = batch.data, batch.lengths, batch.names32
        send_data, send_lengths, send_names = batch.send_data, batch.send_lengths, batch.send_names
        name_base = batch.name_base
        size = batch.size
        j = 0
        for i in range(k):
            o = i * size
            query = data[o : o + lengths[i * 16 + 14]].tobytes()
            scope = scopes.get(names32[i * 7 + 1])
            try:
                out: bytes | int | None
                if scope is None:  # not a registered IPv4 client (or IPv6): the slow way
                    out = answer(query, resolver.scope(batch.source(i)[0], udp=True))
                else:  # what it asked before (the same bytes), else the resolver
                    hit = scope.exact.get(query[2:])
                    if type(hit) is bytes:
                        out = query[:2] + hit
                    elif hit is not None and (tail := hit.get(now)) is not None:  # type: ignore[union-attr]
                        out = query[:2] + tail
                    else:
                        out = answer(query, scope)
                if out is None:
                    continue
                if isinstance(out, int):
                    fwd.forward_udp(query, batch.source(i), out)
                    continue
                n = len(out)
                if n <= size:  # queued in slot j, to the sockaddr message i came from
                    so = j * size
                    send_data[so : so + n] = out
                    send_lengths[j * 2 + 1] = n
                    send_names[j * 8] = name_base + i * NAME_SLOT
                    j += 1
                else:
                    self._udp.sendto(out, _DONTWAIT, batch.source(i))  # type: ignore[union-attr]
            except OSError:
                pass  # the reply could not be sent (buffer full, unreachable): dropped
            except Exception as exc:  # never let one packet stop the batch
                self.stats["errors"] += 1
                logger.debug("embedded DNS: query from {} failed: {!r}", batch.source(i), exc)
        if j:
            batch.queued = j
            batch.flush()
        self.stats["udp"] += k
        self.stats["udp_batches"] += 1
        return k

    # ------------------------------------------------------------------ TCP

    async def _on_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One TCP client. Refused at once, before it holds a slot or a read timeout, when
        it is unknown (it would get REFUSED anyway), when its address already holds
        ``tcp_max_connections_per_client`` connections, or when all slots are taken."""
        opts = self.options
        task = asyncio.current_task()
        peer = writer.get_extra_info("peername")
        client = peer[0] if peer else ""
        if not self.resolver.scope(client, udp=False).known:
            self.stats["tcp_unknown"] += 1
            writer.transport.abort()
            return
        held = self._per_client.get(client, 0)
        if (
            held >= opts.tcp_max_connections_per_client
            or len(self._conns) >= opts.tcp_max_connections
            or task is None
        ):
            self.stats["tcp_refused"] += 1
            writer.transport.abort()
            return
        self._conns.add(task)
        self._per_client[client] = held + 1
        fwd = self.forwarder
        assert fwd is not None
        try:
            while True:
                head = await asyncio.wait_for(reader.readexactly(2), opts.tcp_idle_timeout)
                size = int.from_bytes(head, "big")
                data = await asyncio.wait_for(reader.readexactly(size), opts.tcp_idle_timeout)
                self.stats["tcp"] += 1
                try:
                    out = self.resolver.resolve(data, client, udp=False)
                except Exception as exc:
                    self.stats["errors"] += 1
                    logger.debug("embedded DNS: TCP query from {} failed: {!r}", client, exc)
                    break
                if out is None:
                    break
                if isinstance(out, int):
                    out = await fwd.forward_tcp(data, out)
                writer.write(len(out).to_bytes(2, "big") + out)
                await asyncio.wait_for(writer.drain(), opts.tcp_idle_timeout)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._conns.discard(task)
            left = self._per_client.get(client, 1) - 1
            if left > 0:
                self._per_client[client] = left
            else:
                self._per_client.pop(client, None)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
