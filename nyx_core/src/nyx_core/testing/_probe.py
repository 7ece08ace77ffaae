"""Packets between namespaces: a TCP server in one, a client in another.

The conformance suites prove reachability with a real TCP exchange (connect, read the
server's banner), never with a ping or a route lookup: what counts is that a packet goes
out and the answer comes back.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

from ._netns import Netns, entered

__all__ = ["BANNER", "TcpServer", "reach", "tcp_server"]

BANNER = b"nyx-conformance"


def _family(ip: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


class TcpServer:
    """A TCP server bound to ``ip:port`` inside ``ns`` (IPv4 or IPv6, by the address; ``::``
    takes IPv6 only); answers every client with :data:`BANNER` and remembers who connected
    (their source addresses)."""

    def __init__(self, ns: Netns | None, ip: str, port: int) -> None:
        self.address = (ip, port)
        self.clients: list[str] = []
        family = _family(ip)
        if ns is None:
            self._sock = socket.socket(family, socket.SOCK_STREAM)
        else:
            with entered(ns):  # the socket belongs to ns for good
                self._sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                self._sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            self._sock.bind(self.address)
            self._sock.listen(16)
            self._sock.settimeout(0.2)
        except BaseException:
            self._sock.close()
            raise
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nyx-kit-tcp", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.clients.append(peer[0])
            with contextlib.suppress(OSError), conn:
                conn.sendall(BANNER)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


@contextlib.contextmanager
def tcp_server(ns: Netns | None, ip: str, port: int) -> Iterator[TcpServer]:
    """:class:`TcpServer` for the ``with`` block (``ns`` None: the calling thread's)."""
    server = TcpServer(ns, ip, port)
    try:
        yield server
    finally:
        server.close()


def reach(ns: Netns | None, ip: str, port: int, timeout: float = 5.0) -> str | None:
    """Connect from ``ns`` to ``ip:port`` (IPv4 or IPv6) and read the banner.

    :returns: None when the banner came back, else what went wrong (for the failure
        message): a timeout, a refusal, an unreachable network, a wrong answer.
    """
    family = _family(ip)
    if ns is None:
        sock = socket.socket(family, socket.SOCK_STREAM)
    else:
        with entered(ns):
            sock = socket.socket(family, socket.SOCK_STREAM)
    with sock:
        sock.settimeout(timeout)
        try:
            sock.connect((ip, port))
            got = b""
            while len(got) < len(BANNER):
                chunk = sock.recv(len(BANNER) - len(got))
                if not chunk:
                    break
                got += chunk
        except OSError as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if got != BANNER:
        return f"the answer was {got!r}, not the server's banner"
    return None
