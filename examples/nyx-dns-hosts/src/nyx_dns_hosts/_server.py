"""The DNS server: UDP and TCP on one address (IPv4 or IPv6), one thread per query (an
example, not a fast server), answers built with dnspython."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
from collections.abc import Callable
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from ._names import DOMAIN, Scope

__all__ = ["Answerer", "Server"]

_DOMAIN = dns.name.from_text(DOMAIN)


class Answerer:
    """Turns one query into one response for a client address."""

    def __init__(
        self,
        scope: Callable[[str], Scope | None],
        upstreams: list[tuple[str, int]],
        *,
        ttl: int,
        timeout: float,
    ) -> None:
        self.scope = scope
        self.upstreams = upstreams
        self.ttl = ttl
        self.timeout = timeout

    def answer(self, wire: bytes, client: str, tcp: bool) -> bytes | None:
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        if query.flags & dns.flags.QR:
            return None
        resp = dns.message.make_response(query)
        if len(query.question) != 1:
            resp.set_rcode(dns.rcode.FORMERR)
            return resp.to_wire()
        q = query.question[0]
        scope = self.scope(client)
        if scope is None:
            resp.set_rcode(dns.rcode.REFUSED)
            return resp.to_wire()
        name = q.name.to_text(omit_final_dot=True).lower()
        if name in scope.names or name in scope.ptrs:
            resp.flags |= dns.flags.AA
            self._records(resp, q, name, scope)
            return resp.to_wire()
        if q.name.is_subdomain(_DOMAIN):
            resp.flags |= dns.flags.AA
            resp.set_rcode(dns.rcode.NXDOMAIN)
            return resp.to_wire()
        if scope.forward and self.upstreams:
            return self._forward(query, tcp)
        resp.set_rcode(dns.rcode.REFUSED)  # internal-only, or nowhere to forward to
        return resp.to_wire()

    def _records(
        self, resp: dns.message.Message, q: dns.rrset.RRset, name: str, scope: Scope
    ) -> None:
        if q.rdtype == dns.rdatatype.PTR and name in scope.ptrs:
            target = scope.ptrs[name] + "."
            resp.answer.append(dns.rrset.from_text(q.name, self.ttl, "IN", "PTR", target))
            return
        want = {dns.rdatatype.A: 4, dns.rdatatype.AAAA: 6}.get(q.rdtype)
        ips = [str(ip) for ip in scope.names.get(name, []) if ip.version == want]
        if ips:
            kind = "A" if want == 4 else "AAAA"
            resp.answer.append(dns.rrset.from_text_list(q.name, self.ttl, "IN", kind, ips))

    def _forward(self, query: dns.message.Message, tcp: bool) -> bytes:
        for host, port in self.upstreams:
            try:
                if tcp:
                    got = dns.query.tcp(query, host, timeout=self.timeout, port=port)
                else:
                    got = dns.query.udp(query, host, timeout=self.timeout, port=port)
            except (OSError, dns.exception.DNSException):
                continue
            got.id = query.id
            return got.to_wire()
        resp = dns.message.make_response(query)
        resp.set_rcode(dns.rcode.SERVFAIL)
        return resp.to_wire()


class _Udp(socketserver.ThreadingUDPServer):
    daemon_threads = True
    answerer: Answerer


class _Tcp(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    answerer: Answerer


class _Udp6(_Udp):
    address_family = socket.AF_INET6


class _Tcp6(_Tcp):
    address_family = socket.AF_INET6


class _UdpHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        server: Any = self.server
        out = server.answerer.answer(data, self.client_address[0], False)
        if out is not None:
            with contextlib.suppress(OSError):
                sock.sendto(out, self.client_address)


class _TcpHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        conn: socket.socket = self.request
        conn.settimeout(5)
        server: Any = self.server
        with contextlib.suppress(OSError):
            while True:
                head = _read(conn, 2)
                if head is None:
                    return
                data = _read(conn, int.from_bytes(head, "big"))
                if data is None:
                    return
                out = server.answerer.answer(data, self.client_address[0], True)
                if out is None:
                    return
                conn.sendall(len(out).to_bytes(2, "big") + out)


def _read(conn: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


class Server:
    """UDP and TCP servers on ``address``, each served by a thread of its own."""

    def __init__(self, address: tuple[str, int], answerer: Answerer) -> None:
        v6 = ":" in address[0]  # the IPv6 gateway: a second Server
        self.udp = (_Udp6 if v6 else _Udp)(address, _UdpHandler)
        try:
            self.tcp = (_Tcp6 if v6 else _Tcp)(address, _TcpHandler)
        except BaseException:
            self.udp.server_close()
            raise
        self.udp.answerer = self.tcp.answerer = answerer
        self.threads = [
            threading.Thread(
                target=s.serve_forever, args=(0.05,), name=f"nyx-dns-hosts-{n}", daemon=True
            )
            for n, s in (("udp", self.udp), ("tcp", self.tcp))
        ]
        for t in self.threads:
            t.start()

    def close(self) -> None:
        for s in (self.udp, self.tcp):
            s.shutdown()
            s.server_close()
        for t in self.threads:
            t.join(5)
