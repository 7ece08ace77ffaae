"""The loopback proxy on loopback alone (no root): relays, bounds, stops with its ports."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from nyx_plugins_native import _proxy
from nyx_plugins_native._firewall import PortElement


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


pytestmark = pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback")


class Echo:
    """A TCP (and UDP) echo server on 127.0.0.1: the "container"."""

    def __init__(self) -> None:
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen(64)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", self.tcp.getsockname()[1]))
        self.port = self.tcp.getsockname()[1]
        self.conns: list[socket.socket] = []
        for fn in (self._tcp, self._udp):
            threading.Thread(target=fn, daemon=True).start()

    def _tcp(self) -> None:
        while True:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                conn.sendall(data)

    def _udp(self) -> None:
        while True:
            try:
                data, peer = self.udp.recvfrom(65536)
            except OSError:
                return
            self.udp.sendto(b"udp:" + data, peer)

    def close(self) -> None:
        self.tcp.close()
        self.udp.close()


@pytest.fixture
def echo() -> Iterator[Echo]:
    e = Echo()
    yield e
    e.close()


def _listener(kind: int) -> socket.socket:
    s = socket.socket(socket.AF_INET6, kind)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind(("::1", 0))
    if kind == socket.SOCK_STREAM:
        s.listen(128)
    return s


def _client(port: int) -> socket.socket:
    c = socket.create_connection(("::1", port), timeout=5)
    c.settimeout(5)
    return c


def test_tcp_and_udp_are_relayed_and_stop_with_the_ports(echo: Echo) -> None:
    proxies = _proxy.Proxies()
    tcp, udp = _listener(socket.SOCK_STREAM), _listener(socket.SOCK_DGRAM)
    port, uport = tcp.getsockname()[1], udp.getsockname()[1]
    proxies.add(
        "ctr/nyx",
        [
            (tcp, PortElement("::1", "tcp", port, "127.0.0.1", echo.port)),
            (udp, PortElement("::1", "udp", uport, "127.0.0.1", echo.port)),
        ],
    )
    try:
        with _client(port) as c:
            big = bytes(range(256)) * 4096  # 1 MiB: more than the buffers hold
            threading.Thread(target=c.sendall, args=(big,), daemon=True).start()
            got = b""
            while len(got) < len(big):
                got += c.recv(65536)
            assert got == big
            c.shutdown(socket.SHUT_WR)  # half-close travels; the echo closes; so do we
            assert c.recv(10) == b""
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as u:
            u.settimeout(5)
            u.sendto(b"hi", ("::1", uport))
            assert u.recvfrom(100)[0] == b"udp:hi"
        live = _client(port)
        live.sendall(b"x")
        assert live.recv(10) == b"x"
    finally:
        proxies.remove("ctr/nyx")
    # removing the ports closes their connections (the listeners are the caller's)
    assert live.recv(10) == b""
    live.close()
    tcp.close()
    udp.close()
    proxies.remove("ctr/nyx")  # idempotent


def test_connections_per_port_are_capped(echo: Echo, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_proxy, "MAX_CONNECTIONS", 2)
    proxies = _proxy.Proxies()
    tcp = _listener(socket.SOCK_STREAM)
    port = tcp.getsockname()[1]
    proxies.add("cap/nyx", [(tcp, PortElement("::1", "tcp", port, "127.0.0.1", echo.port))])
    try:
        held = [_client(port) for _ in range(2)]
        for c in held:
            c.sendall(b"y")
            assert c.recv(10) == b"y"
        with _client(port) as third:
            assert third.recv(10) == b""  # closed at once
        for c in held:
            c.close()
    finally:
        proxies.remove("cap/nyx")
        tcp.close()


def test_a_container_that_refuses_closes_the_client(echo: Echo) -> None:
    proxies = _proxy.Proxies()
    tcp = _listener(socket.SOCK_STREAM)
    port = tcp.getsockname()[1]
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        nobody = free.getsockname()[1]
    proxies.add("ref/nyx", [(tcp, PortElement("::1", "tcp", port, "127.0.0.1", nobody))])
    try:
        with _client(port) as c:
            try:
                assert c.recv(10) == b""
            except ConnectionResetError:
                pass
    finally:
        proxies.remove("ref/nyx")
        tcp.close()


def test_the_thread_ends_with_the_last_port(echo: Echo) -> None:
    proxies = _proxy.Proxies()
    tcp = _listener(socket.SOCK_STREAM)
    port = tcp.getsockname()[1]
    before = set(threading.enumerate())
    proxies.add("t/nyx", [(tcp, PortElement("::1", "tcp", port, "127.0.0.1", echo.port))])
    (loop,) = proxies._loops.values()
    assert loop.running
    mine = [t for t in threading.enumerate() if t not in before and t.name == "nyx-loopback-proxy"]
    assert len(mine) == 1
    proxies.remove("t/nyx")
    tcp.close()
    mine[0].join(5)
    assert not mine[0].is_alive() and not loop.running
