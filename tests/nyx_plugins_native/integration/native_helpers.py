"""Test helpers: tiny TCP/UDP servers and clients living in test namespaces.

Sockets are created with the calling thread switched into a namespace (``entered``), so
no process is started; servers run in daemon threads and are closed by the fixtures.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

from nyx_core.testing import (
    INTERNET_SERVER_IP,
    LAN_HOST_IP,
    LAN_NEIGHBOUR_IP,
    UPLINK_HOST_IP,
    Netns,
    entered,
)

__all__ = [
    "GW",
    "INTERNET_SERVER_IP",
    "LAN_HOST_IP",
    "LAN_IP",
    "UPLINK_HOST_IP",
    "Server",
    "Servers",
    "ask",
]

GW = "10.231.0.1"  # the gateway of the kit's test subnet (nyx_settings)
LAN_IP = LAN_NEIGHBOUR_IP  # the LAN neighbour


def _family(ip: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


class Server:
    """Answers every TCP connection (or UDP datagram) with ``<name> <peer-ip>``; IPv4 or
    IPv6 by the address (``::`` is IPv6 only)."""

    def __init__(self, ns: Netns | None, ip: str, port: int, name: str, udp: bool = False):
        kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
        family = _family(ip)
        if ns is None:
            self.sock = socket.socket(family, kind)
        else:
            with entered(ns):
                self.sock = socket.socket(family, kind)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            self.sock.bind((ip, port))
            if not udp:
                self.sock.listen(16)
        except OSError:
            self.sock.close()
            raise
        self.name = name
        self.udp = udp
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                if self.udp:
                    _data, peer = self.sock.recvfrom(512)
                    if not peer:  # shut down
                        return
                    self.sock.sendto(f"{self.name} {peer[0]}".encode(), peer)
                    continue
                conn, peer = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(f"{self.name} {peer[0]}".encode())

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(timeout=5)


def ask(ns: Netns | None, ip: str, port: int, udp: bool = False, timeout: float = 2.0) -> str:
    """Connect from ``ns`` (None: the current one) and return the answer, "" on failure."""
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    if ns is None:
        s = socket.socket(_family(ip), kind)
    else:
        with entered(ns):
            s = socket.socket(_family(ip), kind)
    s.settimeout(timeout)
    try:
        s.connect((ip, port))
        if udp:
            s.send(b"?")
            return s.recv(512).decode()
        chunks = []
        while True:
            data = s.recv(512)
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks).decode()
    except OSError:
        return ""
    finally:
        s.close()


class Servers:
    """Collects servers to close at the end of a test."""

    def __init__(self) -> None:
        self.items: list[Server] = []

    def __call__(self, *args: Any, **kw: Any) -> Server:
        srv = Server(*args, **kw)
        self.items.append(srv)
        return srv

    def close(self) -> None:
        for srv in self.items:
            srv.close()
