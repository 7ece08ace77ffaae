"""The DNS server: one asyncio loop on one dedicated thread, UDP and TCP on one address.

The address is IPv4 or IPv6 (the provider runs one server per gateway: ``gateway_ip``,
and ``gateway_ip6`` on a dual-stack host). An IPv6 listener is IPv6-only and binds with
``IPV6_FREEBIND``: the gateway may still be tentative (DAD) or not be on its bridge yet
(a CNI bridge gets it at the first container) when the server starts.

Sockets are created by :meth:`DnsServer.start` in the *calling* thread, so they live in
the caller's network namespace (the thread started there inherits it too). UDP is a raw
non-blocking socket watched with ``loop.add_reader``: each wakeup drains up to
``udp_batch`` datagrams with ``recvfrom``/``sendto``, no transport or protocol objects in
between. TCP uses asyncio streams with a read timeout per message, a connection cap and
a cap per client address; unknown clients are dropped as soon as they are accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from dataclasses import dataclass

from loguru import logger

from nyx_core import DnsError

from ._forwarder import Forwarder
from ._resolver import Resolver
from ._upstream import Upstreams

__all__ = ["DnsServer", "ServerOptions"]

_UDP_RECV = 4096
_RCVBUF = 4 << 20
_SO_RCVBUFFORCE = 33  # Linux; not exported by the socket module
_IPV6_FREEBIND = 78  # Linux >= 4.15; not exported by the socket module


@dataclass(frozen=True)
class ServerOptions:
    """Tunables of one server (see :class:`~nyx_dns_embedded.EmbeddedDnsSettings`)."""

    forward_timeout: float = 1.5
    max_inflight: int = 1024
    tcp_max_connections: int = 64
    tcp_max_connections_per_client: int = 8
    tcp_idle_timeout: float = 5.0
    upstream_port: int = 53
    udp_batch: int = 256
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
        sock.setsockopt(socket.SOL_IP, socket.IP_FREEBIND, 1)


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
    """Serve ``resolver`` on ``host:port`` (UDP and TCP) from a thread of its own."""

    def __init__(
        self,
        resolver: Resolver,
        upstreams: Upstreams,
        host: str,
        port: int,
        options: ServerOptions | None = None,
    ) -> None:
        self.resolver = resolver
        self.upstreams = upstreams
        self.host = host
        self.port = port
        self.options = options or ServerOptions()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.forwarder: Forwarder | None = None
        self._thread: threading.Thread | None = None
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._socks: list[socket.socket] = []
        self._tcp_server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self._per_client: dict[str, int] = {}
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.stats = {"udp": 0, "tcp": 0, "tcp_refused": 0, "tcp_unknown": 0, "errors": 0}

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)``."""
        if self._udp is None:
            raise DnsError("embedded DNS server is not running")
        addr = self._udp.getsockname()
        return addr[0], addr[1]

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Bind the sockets here (caller's netns), then run the loop on a new thread."""
        if self.running:
            return
        opts = self.options
        socks: list[socket.socket] = []
        try:
            family = listen_family(self.host)
            udp = _udp_socket(family, (self.host, self.port), listen=True)
            socks.append(udp)
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
        except OSError as exc:
            for s in socks:
                s.close()
            what = "gateway_ip6" if ":" in self.host else "gateway_ip"
            raise DnsError(
                f"embedded DNS cannot listen on {host_port(self.host, self.port)} ({what}, "
                "dns_port): "
                f"{exc.strerror or exc}"
            ) from exc
        self._udp, self._tcp, self._socks = udp, tcp, socks
        loop = asyncio.new_event_loop()
        self.loop = loop
        self.forwarder = Forwarder(
            loop,
            self.upstreams,
            udp,
            up4,
            up6,
            timeout=opts.forward_timeout,
            max_inflight=opts.max_inflight,
            port=opts.upstream_port,
        )
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=self._run, name="nyx-dns", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None or not self._ready.is_set():
            err = self._error
            self.stop()
            raise DnsError(f"embedded DNS server failed to start: {err!r}") from err
        logger.info("embedded DNS listening on {} (udp, tcp)", host_port(*self.address))

    def _run(self) -> None:
        loop = self.loop
        assert loop is not None and self.forwarder is not None and self._udp is not None
        asyncio.set_event_loop(loop)
        try:
            loop.add_reader(self._udp.fileno(), self._on_udp)
            self.forwarder.attach()
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
                for s in self._socks:
                    s.close()
                self._socks = []

    async def _cleanup(self, loop: asyncio.AbstractEventLoop) -> None:
        with contextlib.suppress(Exception):
            if self._udp is not None:
                loop.remove_reader(self._udp.fileno())
        if self.forwarder is not None:
            self.forwarder.detach()
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
        """Stop the loop, close every socket, join the thread. Idempotent."""
        thread, loop = self._thread, self.loop
        if thread is not None and loop is not None and thread.is_alive():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
        elif loop is not None and not loop.is_closed():
            loop.close()
            for s in self._socks:
                s.close()
            self._socks = []
        self._thread = None
        self.loop = None
        self._udp = self._tcp = None
        self._tcp_server = None

    # ------------------------------------------------------------------ UDP

    def _on_udp(self) -> None:
        sock = self._udp
        fwd = self.forwarder
        assert sock is not None and fwd is not None
        resolve = self.resolver.resolve
        recvfrom = sock.recvfrom
        sendto = sock.sendto
        handled = 0
        for _ in range(self.options.udp_batch):
            try:
                data, addr = recvfrom(_UDP_RECV)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue
            handled += 1
            try:
                out = resolve(data, addr[0])
                if out is None:
                    continue
                if out.__class__ is int:
                    fwd.forward_udp(data, addr, out)
                else:
                    sendto(out, addr)  # type: ignore[arg-type]
            except OSError:
                pass  # the reply could not be sent (buffer full, unreachable): dropped
            except Exception as exc:  # never let one packet kill the reader
                self.stats["errors"] += 1
                logger.debug("embedded DNS: query from {} failed: {!r}", addr, exc)
        self.stats["udp"] += handled

    # ------------------------------------------------------------------ TCP

    async def _on_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One TCP client. Refused at once, before it holds a slot or a read timeout, when
        it is unknown (it would get REFUSED anyway), when its address already holds
        ``tcp_max_connections_per_client`` connections, or when all slots are taken."""
        opts = self.options
        task = asyncio.current_task()
        peer = writer.get_extra_info("peername")
        client = peer[0] if peer else ""
        if not self.resolver.scope(client).known:
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
