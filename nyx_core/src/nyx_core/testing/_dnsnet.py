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

Dual stack, when the settings have ``container_subnet6`` (the suite sets
:data:`SUBNET6_A` for a provider that declares IPv6): ``kitdns-a`` also carries
``gateway6`` (``2001:db8:231::1/64``, ``nodad``), ``kitdns-b`` ``2001:db8:232::1/64``, and
every client gets an IPv6 address of its network and a default IPv6 route too.
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
SUBNET6_A = ipaddress.IPv6Network("2001:db8:231::/64")
"""The IPv6 subnet of ``kit-a`` (documentation prefix) when the provider serves IPv6."""
SUBNET6_B = ipaddress.IPv6Network("2001:db8:232::/64")
"""The IPv6 subnet of ``kit-b``, gateway its first address."""
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


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass
class DnsClient:
    """A "container": its own namespace with ``ip`` (and ``ip6`` on a dual-stack
    topology) on ``network``, asking ``server`` (or ``server6``, the IPv6 gateway)."""

    ns: Netns
    ip: ipaddress.IPv4Address
    network: str
    server: tuple[str, int]
    ip6: ipaddress.IPv6Address | None = None
    server6: tuple[str, int] | None = None

    @property
    def ips(self) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        """Its addresses: ``ip``, then ``ip6`` when it has one."""
        return [self.ip] if self.ip6 is None else [self.ip, self.ip6]

    def query(
        self, name: str, rdtype: str = "A", *, tcp: bool = False, v6: bool = False
    ) -> dns.message.Message:
        """One query from this client (``v6``: to ``server6``, from ``ip6``); a missing
        answer fails the test (a provider answers every query, if only with REFUSED)."""
        import dns.exception
        import dns.message
        import dns.query

        q = dns.message.make_query(name, rdtype)
        if v6 and self.server6 is None:
            raise AssertionError("the topology has no IPv6 (settings.container_subnet6)")
        host, port = self.server6 if v6 and self.server6 is not None else self.server
        with entered(self.ns):
            try:
                if tcp:
                    return dns.query.tcp(q, host, port=port, timeout=QUERY_TIMEOUT)
                return dns.query.udp(q, host, port=port, timeout=QUERY_TIMEOUT)
            except (OSError, dns.exception.DNSException) as exc:
                how = "TCP" if tcp else "UDP"
                src = self.ip6 if v6 else self.ip
                raise AssertionError(
                    f"{how} query {name} {rdtype} from {src} ({self.network}) to "
                    f"{_host_port(host, port)} got no answer: {exc!r}"
                ) from exc

    def addresses(
        self, name: str, rdtype: str = "A", *, tcp: bool = False, v6: bool = False
    ) -> list[str]:
        """The answer's records of ``rdtype`` as text, sorted (empty: no such record)."""
        import dns.rdatatype

        r = self.query(name, rdtype, tcp=tcp, v6=v6)
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
        self.gateways6: dict[str, ipaddress.IPv6Interface] = {}
        self.server6: tuple[str, int] | None = None
        gw6 = settings.gateway_interface6
        if gw6 is not None:
            self.server6 = (str(gw6.ip), settings.dns_port)
            net_b6 = SUBNET6_B if gw6.network != SUBNET6_B else SUBNET6_A
            self.gateways6 = {
                NETWORK_A: gw6,
                NETWORK_B: ipaddress.IPv6Interface(f"{net_b6.network_address + 1}/64"),
            }
        lines = []
        for name, bridge in self.bridges.items():
            lines += [
                f"link add {bridge} type bridge",
                f"addr add {self.gateways[name]} dev {bridge}",
                f"link set {bridge} up",
            ]
            if name in self.gateways6:
                lines.append(f"addr add {self.gateways6[name]} dev {bridge} nodad")
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
        lines = [
            f"addr add {ip}/{gw.network.prefixlen} dev eth0",
            "link set eth0 up",
            f"route add default via {gw.ip} dev eth0",
        ]
        gw6 = self.gateways6.get(network)
        ip6 = None
        if gw6 is not None:  # the same host part as the IPv4 address
            ip6 = gw6.network.network_address + (int(ip) - int(gw.network.network_address))
            lines += [
                f"addr add {ip6}/{gw6.network.prefixlen} dev eth0 nodad",
                f"route add ::/0 via {gw6.ip} dev eth0",
            ]
        _batch(ns, lines)
        return DnsClient(ns, ip, network, self.server, ip6, self.server6)


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
