"""The loopback proxy: ``[::1]:PORT`` of published ports, which the kernel cannot DNAT.

A packet from ``::1`` never leaves through another link, so no NAT rule can send the host's
``[::1]:8080`` to a container (``127.0.0.1`` can, with ``route_localnet``; IPv6 has no such
switch). The driver's IPv6 reservation socket of a port published on ``::1`` or on every
IPv6 address (``::``, or no host address: every other address is DNAT'd before a packet
reaches that socket) is handed to this proxy, which relays what arrives there to the
container, as Docker's ``docker-proxy`` does. Only processes of the host reach ``::1``; the
container sees its network's gateway as the client.

One thread per network namespace (its upstream sockets must live there) runs a
``selectors`` loop over every listener, connection and UDP flow; it starts with the first
proxied port and ends with the last one. Everything is bounded: :data:`MAX_CONNECTIONS`
TCP connections and :data:`MAX_FLOWS` UDP flows per port (a connection beyond is closed at
once, the least recently used flow makes room), :data:`BUFFER` bytes buffered per
direction, :data:`CONNECT_TIMEOUT` for the container to accept, :data:`FLOW_IDLE` before a
UDP flow is forgotten. Removing a container's ports closes their connections.
"""

from __future__ import annotations

import collections
import contextlib
import selectors
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from ._firewall import PortElement
from ._nft import current_netns_id

__all__ = ["BUFFER", "CONNECT_TIMEOUT", "FLOW_IDLE", "MAX_CONNECTIONS", "MAX_FLOWS", "Proxies"]

MAX_CONNECTIONS = 256
MAX_FLOWS = 256
BUFFER = 64 * 1024
CONNECT_TIMEOUT = 10.0
FLOW_IDLE = 60.0
_TICK = 1.0


def _family(ip: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


class _Interest:
    """A socket's registration in the selector, kept in step with what it waits for."""

    def __init__(self, sel: selectors.BaseSelector, sock: socket.socket, data: object) -> None:
        self.sel, self.sock, self.data, self.events = sel, sock, data, 0

    def set(self, events: int) -> None:
        if events == self.events:
            return
        if self.events == 0:
            self.sel.register(self.sock, events, self.data)
        elif events == 0:
            self.sel.unregister(self.sock)
        else:
            self.sel.modify(self.sock, events, self.data)
        self.events = events

    def close(self) -> None:
        self.set(0)
        self.sock.close()


@dataclass(eq=False)
class _Listener:
    key: str
    sock: socket.socket
    target: tuple[str, int]
    udp: bool
    conns: set[_Conn] = field(default_factory=set)
    flows: collections.OrderedDict[object, _Flow] = field(default_factory=collections.OrderedDict)


class _Conn:
    """One TCP connection: the host's client and the container, with a buffer each way."""

    def __init__(self, loop: _Loop, lst: _Listener, client: socket.socket) -> None:
        self.loop, self.lst = loop, lst
        client.setblocking(False)
        up = socket.socket(_family(lst.target[0]), socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        up.setblocking(False)
        self.client = _Interest(loop.sel, client, (self, "client"))
        self.up = _Interest(loop.sel, up, (self, "up"))
        self.to_up = bytearray()
        self.to_client = bytearray()
        self.eof_client = self.eof_up = False
        self.shut_up = self.shut_client = False
        self.connected = False
        self.deadline = time.monotonic() + CONNECT_TIMEOUT
        up.connect_ex(lst.target)
        self.update()

    def update(self) -> None:
        r, w = selectors.EVENT_READ, selectors.EVENT_WRITE
        if not self.connected:
            self.client.set(0)
            self.up.set(w)
            return
        if self.eof_client and not self.to_up and not self.shut_up:
            self.shut_up = True
            with contextlib.suppress(OSError):
                self.up.sock.shutdown(socket.SHUT_WR)
        if self.eof_up and not self.to_client and not self.shut_client:
            self.shut_client = True
            with contextlib.suppress(OSError):
                self.client.sock.shutdown(socket.SHUT_WR)
        if self.shut_up and self.shut_client:
            self.close()
            return
        cev = (r if not self.eof_client and len(self.to_up) < BUFFER else 0) | (
            w if self.to_client else 0
        )
        uev = (r if not self.eof_up and len(self.to_client) < BUFFER else 0) | (
            w if self.to_up else 0
        )
        self.client.set(cev)
        self.up.set(uev)

    def event(self, side: str, mask: int) -> None:
        try:
            if side == "up" and not self.connected:
                err = self.up.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise OSError(err, "connect to the container failed")
                self.connected = True
            elif side == "client":
                self._pump(mask, self.client.sock, self.to_up, self.to_client, "eof_client")
            else:
                self._pump(mask, self.up.sock, self.to_client, self.to_up, "eof_up")
        except OSError:
            self.close()
            return
        self.update()

    def _pump(
        self, mask: int, sock: socket.socket, inbox: bytearray, outbox: bytearray, eof: str
    ) -> None:
        if mask & selectors.EVENT_READ:
            data = sock.recv(BUFFER - len(inbox))
            if data:
                inbox += data
            else:
                setattr(self, eof, True)
        if mask & selectors.EVENT_WRITE and outbox:
            sent = sock.send(outbox)
            del outbox[:sent]

    def expired(self, now: float) -> bool:
        return not self.connected and now > self.deadline

    def close(self) -> None:
        self.client.close()
        self.up.close()
        self.lst.conns.discard(self)


class _Flow:
    """One UDP client of a proxied port: a connected socket towards the container."""

    def __init__(self, loop: _Loop, lst: _Listener, client: tuple[Any, ...]) -> None:
        self.lst, self.client = lst, client
        up = socket.socket(_family(lst.target[0]), socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        up.setblocking(False)
        up.connect(lst.target)
        self.up = _Interest(loop.sel, up, (self, "up"))
        self.up.set(selectors.EVENT_READ)
        self.last = time.monotonic()

    def send(self, data: bytes) -> None:
        self.last = time.monotonic()
        with contextlib.suppress(OSError):
            self.up.sock.send(data)

    def event(self, side: str, mask: int) -> None:
        for _ in range(64):
            try:
                data = self.up.sock.recv(65535)
            except BlockingIOError:
                return
            except OSError:  # ICMP unreachable from the container: try again later
                return
            self.last = time.monotonic()
            with contextlib.suppress(OSError):
                self.lst.sock.sendto(data, self.client)

    def close(self) -> None:
        self.up.close()


class _Loop:
    """The thread of one network namespace; its selector and wake-up pair exist while it
    runs."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.commands: collections.deque[Callable[[], None]] = collections.deque()
        self.listeners: dict[str, list[_Listener]] = {}
        self.running = False

    def _start(self) -> None:
        """Under ``lock``: a fresh selector and wake-up pair, and the thread."""
        self.sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.sel.register(self._wake_r, selectors.EVENT_READ, None)
        self.running = True
        threading.Thread(target=self._run, name="nyx-loopback-proxy", daemon=True).start()

    def _stop(self) -> None:
        """Under ``lock``, in the thread, with nothing left to serve."""
        self.running = False
        self.sel.close()
        self._wake_r.close()
        self._wake_w.close()

    def call(self, fn: Callable[[], None], wait: bool) -> None:
        """Run ``fn`` in the loop's thread (started if needed, in the caller's netns)."""
        done = threading.Event()

        def command() -> None:
            try:
                fn()
            finally:
                done.set()

        with self.lock:
            self.commands.append(command)
            if not self.running:
                self._start()
            with contextlib.suppress(OSError):
                self._wake_w.send(b"x")
        if wait and not done.wait(10):
            logger.warning("loopback proxy did not answer in 10 s")

    def _run(self) -> None:
        while True:
            with self.lock:
                todo = list(self.commands)
                self.commands.clear()
                if not todo and not self.listeners:
                    self._stop()
                    return
            for command in todo:
                try:
                    command()
                except Exception as exc:  # a bug here must not stop every proxied port
                    logger.opt(exception=exc).warning("loopback proxy command failed")
            if not self.listeners:
                continue
            for key, mask in self.sel.select(_TICK):
                try:
                    self._dispatch(key, mask)
                except Exception as exc:
                    logger.opt(exception=exc).warning("loopback proxy event failed")
            self._expire()

    def _dispatch(self, key: selectors.SelectorKey, mask: int) -> None:
        if key.data is None:
            with contextlib.suppress(OSError):
                while self._wake_r.recv(512):
                    pass
            return
        obj, side = key.data
        if isinstance(obj, _Listener):
            self._accept(obj) if not obj.udp else self._datagrams(obj)
        else:
            obj.event(side, mask)

    def _accept(self, lst: _Listener) -> None:
        for _ in range(64):
            try:
                client, _addr = lst.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if len(lst.conns) >= MAX_CONNECTIONS:
                client.close()
                continue
            try:
                lst.conns.add(_Conn(self, lst, client))
            except OSError:
                client.close()

    def _datagrams(self, lst: _Listener) -> None:
        for _ in range(64):
            try:
                data, client = lst.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            flow = lst.flows.get(client)
            if flow is None:
                if len(lst.flows) >= MAX_FLOWS:
                    _old, oldest = lst.flows.popitem(last=False)
                    oldest.close()
                try:
                    flow = _Flow(self, lst, client)
                except OSError:
                    continue
                lst.flows[client] = flow
            else:
                lst.flows.move_to_end(client)
            flow.send(data)

    def _expire(self) -> None:
        now = time.monotonic()
        for lsts in self.listeners.values():
            for lst in lsts:
                for conn in [c for c in lst.conns if c.expired(now)]:
                    conn.close()
                for client, flow in list(lst.flows.items()):
                    if now - flow.last > FLOW_IDLE:
                        del lst.flows[client]
                        flow.close()

    # ------------------------------------------------------------------ commands

    def add(self, key: str, items: Sequence[tuple[socket.socket, PortElement]]) -> None:
        def command() -> None:
            for sock, pel in items:
                sock.setblocking(False)
                lst = _Listener(
                    key, sock, (pel.container_ip, pel.container_port), pel.protocol == "udp"
                )
                self.sel.register(sock, selectors.EVENT_READ, (lst, "listen"))
                self.listeners.setdefault(key, []).append(lst)

        # no need to wait: the kernel queues connections on the listening socket meanwhile
        self.call(command, wait=False)

    def remove(self, key: str) -> None:
        def command() -> None:
            for lst in self.listeners.pop(key, []):
                for conn in list(lst.conns):
                    conn.close()
                for flow in lst.flows.values():
                    flow.close()
                lst.flows.clear()
                with contextlib.suppress(KeyError, ValueError):
                    self.sel.unregister(lst.sock)

        with self.lock:
            if not self.running:
                return
        self.call(command, wait=True)


class Proxies:
    """The loopback proxy of one driver: :meth:`add` a container's proxied sockets when it
    is set up, :meth:`remove` them before they are closed at teardown."""

    def __init__(self) -> None:
        self._loops: dict[int, _Loop] = {}
        self._lock = threading.Lock()

    def add(self, key: str, items: Sequence[tuple[socket.socket, PortElement]]) -> None:
        """Serve ``[::1]`` on these reserved sockets (``key``: the attachment)."""
        items = [(s, p) for s, p in items if p.proxied]
        if not items:
            return
        with self._lock:
            loop = self._loops.setdefault(current_netns_id(), _Loop())
        loop.add(key, items)

    def remove(self, key: str) -> None:
        """Stop serving ``key``'s sockets and close its connections (the caller closes the
        sockets). Idempotent."""
        with self._lock:
            loops = list(self._loops.values())
        for loop in loops:
            loop.remove(key)
