"""The DNS provider conformance topology: two container networks on bridges of the kit's
host namespace, DNS clients in namespaces of their own, a fake upstream resolver in the
"internet" namespace.

::

    client ns (eth0 10.231.0.N/24) --veth-- kitdns-a 10.231.0.1/24 (gateway_ip) --+
                                                                                  |  host ns
    client ns (eth0 10.231.1.N/24) --veth-- kitdns-b 10.231.1.1/24 ---------------+  (the
                                                                                  |  provider
    "internet" ns: 198.18.0.10:53 FakeUpstream  <-- uplink0 (default route) ------+  runs here)

The provider listens on ``gateway_ip:dns_port`` (``kitdns-a``'s address); clients of the
second network reach it through their own gateway, as containers of a second network do
under nyxd. Network ``kit-b`` is the subnet right after ``container_subnet``. dnspython
is imported only when a query is made (it is a test dependency, not nyx-core's).
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import select
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._settings import NyxSettings
from ._netns import Netns, entered
from ._topology import INTERNET_SERVER_IP

if TYPE_CHECKING:
    import dns.message

__all__ = [
    "NETWORK_A",
    "NETWORK_B",
    "UPSTREAM_ANSWER",
    "DnsClient",
    "DnsNetworks",
    "FakeUpstream",
]

NETWORK_A = "kit-a"
"""The first network: ``container_subnet``, its bridge carries ``gateway_ip``."""
NETWORK_B = "kit-b"
"""The second network: the subnet after ``container_subnet``, gateway its first address."""
UPSTREAM_ANSWER = "198.18.0.53"
"""What the fake upstream answers to every A query."""
QUERY_TIMEOUT = 3.0

_veths = itertools.count()


def _batch(ns: Netns, lines: Sequence[str]) -> None:
    proc = subprocess.run(
        ["ip", "-n", ns.name, "-batch", "-"],
        input="\n".join(lines) + "\n",
        text=True,
        capture_output=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"ip -n {ns.name} -batch failed: {proc.stderr.strip()}")


def _free_addresses(gw: ipaddress.IPv4Interface) -> Iterator[ipaddress.IPv4Address]:
    return (ip for ip in gw.network.hosts() if ip != gw.ip)


@dataclass
class DnsClient:
    """A "container": its own namespace with ``ip`` on ``network``, asking ``server``."""

    ns: Netns
    ip: ipaddress.IPv4Address
    network: str
    server: tuple[str, int]

    def query(self, name: str, rdtype: str = "A", *, tcp: bool = False) -> dns.message.Message:
        """One query from this client; a missing answer fails the test (a provider answers
        every query, if only with REFUSED)."""
        import dns.exception
        import dns.message
        import dns.query

        q = dns.message.make_query(name, rdtype)
        host, port = self.server
        with entered(self.ns):
            try:
                if tcp:
                    return dns.query.tcp(q, host, port=port, timeout=QUERY_TIMEOUT)
                return dns.query.udp(q, host, port=port, timeout=QUERY_TIMEOUT)
            except (OSError, dns.exception.DNSException) as exc:
                how = "TCP" if tcp else "UDP"
                raise AssertionError(
                    f"{how} query {name} {rdtype} from {self.ip} ({self.network}) to "
                    f"{host}:{port} got no answer: {exc!r}"
                ) from exc

    def addresses(self, name: str, rdtype: str = "A", *, tcp: bool = False) -> list[str]:
        """The answer's records of ``rdtype`` as text, sorted (empty: no such record)."""
        import dns.rdatatype

        r = self.query(name, rdtype, tcp=tcp)
        want = dns.rdatatype.from_text(rdtype)
        return sorted(rd.to_text() for rrset in r.answer if rrset.rdtype == want for rd in rrset)


class DnsNetworks:
    """The two networks' bridges in ``host`` and a factory of clients (see the module)."""

    def __init__(self, host: Netns, settings: NyxSettings, make_ns: Callable[[], Netns]) -> None:
        self.host = host
        self.make_ns = make_ns
        self.server = (str(settings.gateway_ip), settings.dns_port)
        net_a = settings.container_subnet
        net_b = ipaddress.IPv4Network((int(net_a.broadcast_address) + 1, net_a.prefixlen))
        self.gateways = {
            NETWORK_A: settings.gateway_interface,
            NETWORK_B: ipaddress.IPv4Interface(f"{net_b.network_address + 1}/{net_b.prefixlen}"),
        }
        self.bridges = {NETWORK_A: "kitdns-a", NETWORK_B: "kitdns-b"}
        self._free = {name: _free_addresses(gw) for name, gw in self.gateways.items()}
        lines = []
        for name, bridge in self.bridges.items():
            lines += [
                f"link add {bridge} type bridge",
                f"addr add {self.gateways[name]} dev {bridge}",
                f"link set {bridge} up",
            ]
        _batch(host, lines)

    def client(self, network: str = NETWORK_A) -> DnsClient:
        """A new client namespace on ``network`` with the next free address."""
        gw = self.gateways[network]
        ip = next(self._free[network])
        ns = self.make_ns()
        veth = f"kitdnsc{next(_veths)}"
        _batch(
            self.host,
            [
                f"link add {veth} type veth peer name eth0 netns {ns.name}",
                f"link set {veth} master {self.bridges[network]} up",
            ],
        )
        _batch(
            ns,
            [
                f"addr add {ip}/{gw.network.prefixlen} dev eth0",
                "link set eth0 up",
                f"route add default via {gw.ip} dev eth0",
            ],
        )
        return DnsClient(ns, ip, network, self.server)


@dataclass
class FakeUpstream:
    """A tiny DNS server on ``ip:port`` (UDP and TCP) inside ``ns``: every A query gets
    :data:`UPSTREAM_ANSWER`, anything else an empty NOERROR. :meth:`names` lists what it
    was asked (lower case, no final dot)."""

    ns: Netns
    ip: str = INTERNET_SERVER_IP
    port: int = 53
    asked: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        with entered(self.ns):
            self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self._tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._udp.bind((self.ip, self.port))
            self._tcp.bind((self.ip, self.port))
            self._tcp.listen(16)
        except BaseException:
            self._udp.close()
            self._tcp.close()
            raise
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nyx-kit-upstream", daemon=True)
        self._thread.start()

    def names(self) -> list[str]:
        return [name for _transport, name in list(self.asked)]

    def _reply(self, data: bytes, transport: str) -> bytes | None:
        import dns.exception
        import dns.message
        import dns.rdatatype
        import dns.rrset

        try:
            q = dns.message.from_wire(data)
        except dns.exception.DNSException:
            return None
        if not q.question:
            return None
        question = q.question[0]
        self.asked.append((transport, question.name.to_text(omit_final_dot=True).lower()))
        r = dns.message.make_response(q)
        if question.rdtype == dns.rdatatype.A:
            r.answer.append(dns.rrset.from_text(question.name, 30, "IN", "A", UPSTREAM_ANSWER))
        return bytes(r.to_wire())

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
            ready: list[Any]
            ready, _, _ = select.select([self._udp, self._tcp], [], [], 0.05)
            if self._udp in ready:
                with contextlib.suppress(OSError):
                    data, addr = self._udp.recvfrom(65535)
                    out = self._reply(data, "udp")
                    if out is not None:
                        self._udp.sendto(out, addr)
            if self._tcp in ready:
                with contextlib.suppress(OSError):
                    conn, _ = self._tcp.accept()
                    self._serve_tcp(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._udp.close()
        self._tcp.close()
