"""Fixtures of the embedded DNS integration tests: a host namespace with the gateway and
client addresses on ``lo``, a provider serving there, fake upstreams on loopback; and,
for the "who is the host" tests, an uplink address of the host and a LAN neighbour
namespace that routes the container subnet to the host."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dnslib import QTYPE, RR, A, DNSRecord

from nyx_core import NyxSettings
from nyx_core.testing import Neighbour, Netns, entered
from nyx_dns_embedded import EmbeddedDns, EmbeddedDnsSettings

GW = "10.231.0.1"
CLIENTS = ["10.231.0.2", "10.231.0.3", "10.231.0.4", "10.231.0.5"]
UPLINK_IP = "203.0.113.2"  # the host's own address on its uplink (the kit's topology)
LAN_HOST_IP = "198.51.100.1"  # the host's address on the LAN link
NEIGHBOUR_IP = "198.51.100.2"  # a LAN neighbour (TEST-NET-2)


def _address(host: str) -> tuple[str, int] | tuple[str, int, int, int]:
    """``(host, 53)``; a zone (``fe80::1%link``) goes in the tuple's scope id, the only
    place the socket module reads it from."""
    addr, _, zone = host.partition("%")
    return (addr, 53, 0, socket.if_nametoindex(zone)) if zone else (host, 53)


class FakeUpstream:
    """A tiny DNS server on ``host:53`` (UDP and TCP; IPv4 or IPv6, ``fe80::1%link``
    included) inside the current namespace.

    ``mode``: ``answer`` (every name -> ``answer``), ``silent`` (never replies), ``big``
    (60 A records; over UDP without EDNS it answers TC like a real server).
    """

    def __init__(self, host: str, mode: str = "answer", answer: str = "203.0.113.7") -> None:
        self.host, self.mode, self.answer = host, mode, answer
        self.queries: list[tuple[str, str]] = []
        family = socket.AF_INET6 if ":" in host else socket.AF_INET  # fe80::1%link too
        self.udp = socket.socket(family, socket.SOCK_DGRAM)
        self.tcp = socket.socket(family, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.udp.bind(_address(host))
            self.tcp.bind(_address(host))
            self.tcp.listen(16)
        except OSError:
            self.udp.close()
            self.tcp.close()
            raise
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def names(self, transport: str | None = None) -> list[str]:
        return [n for t, n in list(self.queries) if transport in (None, t)]

    def _reply(self, data: bytes, transport: str) -> bytes | None:
        try:
            req = DNSRecord.parse(data)
        except Exception:
            return None
        self.queries.append((transport, str(req.q.qname).lower()))
        if self.mode == "silent":
            return None
        reply = req.reply()
        if self.mode == "big":
            for i in range(60):
                reply.add_answer(RR(req.q.qname, QTYPE.A, ttl=30, rdata=A(f"203.0.113.{i + 1}")))
            packed = reply.pack()
            has_edns = any(r.rtype == 41 for r in req.ar)
            if transport == "udp" and not has_edns and len(packed) > 512:
                reply.rr = []
                reply.header.tc = 1
        else:
            reply.add_answer(RR(req.q.qname, QTYPE.A, ttl=30, rdata=A(self.answer)))
        return bytes(reply.pack())

    def _serve_tcp(self, conn: socket.socket) -> None:
        conn.settimeout(2)
        with contextlib.suppress(OSError), conn:
            size = int.from_bytes(conn.recv(2), "big")
            data = b""
            while len(data) < size:
                chunk = conn.recv(size - len(data))
                if not chunk:
                    return
                data += chunk
            out = self._reply(data, "tcp")
            if out is not None:
                conn.sendall(len(out).to_bytes(2, "big") + out)

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.udp, self.tcp], [], [], 0.05)
            if self.udp in ready:
                data, addr = self.udp.recvfrom(65535)
                out = self._reply(data, "udp")
                if out is not None:
                    self.udp.sendto(out, addr)
            if self.tcp in ready:
                conn, _ = self.tcp.accept()
                self._serve_tcp(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.udp.close()
        self.tcp.close()


@pytest.fixture
def dns_host(nyx_in_host: Netns) -> Netns:
    """The host namespace (test thread inside) with the gateway and clients on ``lo``."""
    for addr in (GW, *CLIENTS):
        nyx_in_host.ip("addr", "add", f"{addr}/24", "dev", "lo")
    return nyx_in_host


@pytest.fixture
def uplink(dns_host: Netns) -> str:
    """A second address of the host, as on a real one: the kit's host namespace has an
    uplink (UPLINK_IP/24 on uplink0, default route through it). Returns UPLINK_IP."""
    return UPLINK_IP


@pytest.fixture
def neighbour(dns_host: Netns, nyx_lan_ns: Neighbour) -> Neighbour:
    """The kit's LAN neighbour (NEIGHBOUR_IP, the host is LAN_HOST_IP on lan0), with the
    container subnet routed to the host."""
    nyx_lan_ns.route_to_host("10.231.0.0/24")
    return nyx_lan_ns


def socket_in(ns: Netns, kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A socket that belongs to namespace ``ns`` (it stays there after setns back)."""
    with entered(ns):
        return socket.socket(socket.AF_INET, kind)


@pytest.fixture
def upstream(dns_host: Netns) -> Iterator[Callable[..., FakeUpstream]]:
    """Factory of fake upstreams on loopback addresses of the test namespace."""
    made: list[FakeUpstream] = []

    def make(
        host: str = "127.0.0.1", mode: str = "answer", answer: str = "203.0.113.7"
    ) -> FakeUpstream:
        up = FakeUpstream(host, mode, answer)
        made.append(up)
        return up

    try:
        yield make
    finally:
        for up in made:
            up.close()


@pytest.fixture
def host_resolv(tmp_path: Path) -> Path:
    """The "host" resolv.conf the provider forwards to (tests rewrite it)."""
    path = tmp_path / "host-resolv.conf"
    path.write_text("nameserver 127.0.0.1\nsearch corp.example\n")
    return path


@pytest.fixture
def dns_config(host_resolv: Path) -> EmbeddedDnsSettings:
    return EmbeddedDnsSettings(
        upstream_resolv_conf=host_resolv,
        forward_timeout=0.5,
        tcp_idle_timeout=1.0,
        tcp_max_connections=4,
    )


@pytest.fixture
def make_provider(
    dns_host: Netns, nyx_settings: NyxSettings
) -> Iterator[Callable[..., EmbeddedDns]]:
    """Factory: a started provider (in the test namespace) with the given config."""
    made: list[EmbeddedDns] = []

    def make(config: EmbeddedDnsSettings) -> EmbeddedDns:
        p = EmbeddedDns(config)
        p.start(nyx_settings)
        made.append(p)
        return p

    try:
        yield make
    finally:
        for p in made:
            p.stop()


@pytest.fixture
def provider(
    make_provider: Callable[..., EmbeddedDns], dns_config: EmbeddedDnsSettings
) -> EmbeddedDns:
    return make_provider(dns_config)
