"""The embedded DNS server for real: bound inside a test namespace, queried with dig and
dnspython over UDP and TCP, forwarding to fake upstreams on the namespace's loopback."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import socket
import time
from collections.abc import Callable
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.resolver
import pytest
from conftest import CLIENTS, GW, LAN_HOST_IP, NEIGHBOUR_IP, FakeUpstream, socket_in

from nyx_core import NyxSettings
from nyx_core.testing import Netns
from nyx_dns_embedded import EmbeddedDns, EmbeddedDnsSettings

pytestmark = pytest.mark.kernel

PORT = 5353
A_IP, B_IP, C_IP, D_IP = CLIENTS


def ips(*texts: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    return [ipaddress.ip_address(t) for t in texts]


def dig(ns: Netns, *args: str, client: str | None = A_IP) -> str:
    """dig's output for a query to the server from ``client`` (None: the namespace's own
    source address, e.g. from the LAN neighbour)."""
    source = ["-b", client] if client else []
    argv = ["dig", f"@{GW}", "-p", str(PORT), *source, "+time=3", "+tries=1", *args]
    return ns.run(argv, check=False).stdout


def status(out: str) -> str:
    """The status dig printed; "NO-ANSWER" only when dig says no server answered. Any
    other output (empty, a usage error) fails: a broken dig must not pass a check."""
    for line in out.splitlines():
        if "status:" in line:
            return line.split("status:")[1].split(",")[0].strip()
    if "no servers could be reached" in out:
        return "NO-ANSWER"
    raise AssertionError(f"dig printed neither a status nor 'no servers could be reached': {out!r}")


def closed_without_answer(sock: socket.socket) -> bytes:
    """Read until the server closes ``sock``; what it sent first (b"" when nothing).

    Fails if the server keeps the connection open for the socket's timeout: the tests that
    use it give the server a much longer TCP idle timeout, so only a connection the server
    drops by itself ends in time.
    """
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except ConnectionResetError:
        pass
    except TimeoutError as exc:
        raise AssertionError("the server kept the connection open") from exc
    return got


def tcp_roundtrip(sock: socket.socket, name: str) -> list[str]:
    """One query on an open TCP connection; the answer's addresses."""
    q = dns.message.make_query(name, "A")
    wire = q.to_wire()
    sock.sendall(len(wire).to_bytes(2, "big") + wire)
    size = int.from_bytes(_recv_exactly(sock, 2), "big")
    r = dns.message.from_wire(_recv_exactly(sock, size))
    assert r.id == q.id
    return addrs(r)


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise AssertionError(f"connection closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def answers(out: str) -> list[str]:
    lines, inside = [], False
    for line in out.splitlines():
        if line.startswith(";; ANSWER SECTION"):
            inside = True
        elif inside and not line.strip():
            break
        elif inside:
            lines.append(line)
    return lines


def query(
    name: str, rdtype: str = "A", client: str = A_IP, tcp: bool = False, **kw: object
) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, **kw)  # type: ignore[arg-type]
    if tcp:
        return dns.query.tcp(q, GW, port=PORT, source=client, timeout=5)
    return dns.query.udp(q, GW, port=PORT, source=client, timeout=5)


def addrs(r: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in r.answer for rd in rrset)


def test_dig_answers_names_case_nodata_nxdomain_ptr(dns_host: Netns, provider: EmbeddedDns) -> None:
    provider.register("a", "web", ips(A_IP), ["www"], ["n1"])
    assert dig(dns_host, "+short", "web").split() == [A_IP]
    assert dig(dns_host, "+short", "www.nyxd.local").split() == [A_IP]
    out = dig(dns_host, "WeB.NyXd.LoCaL")
    assert status(out) == "NOERROR"
    assert answers(out)[0].startswith("WeB.NyXd.LoCaL.") and answers(out)[0].endswith(A_IP)
    out = dig(dns_host, "web.nyxd.local", "AAAA")
    assert status(out) == "NOERROR" and answers(out) == []
    assert status(dig(dns_host, "nope.nyxd.local")) == "NXDOMAIN"
    assert dig(dns_host, "+short", "-x", A_IP).split() == ["web.nyxd.local."]


def test_tcp_with_dig_and_dnspython(dns_host: Netns, provider: EmbeddedDns) -> None:
    provider.register("a", "web", ips(A_IP), [], ["n1"])
    out = dig(dns_host, "+tcp", "web.nyxd.local")
    assert "(TCP)" in out and answers(out)[0].endswith(A_IP)
    r = query("WEB", tcp=True)
    assert addrs(r) == [A_IP]
    assert query("nope.nyxd.local", tcp=True).rcode() == dns.rcode.NXDOMAIN


def test_resolver_library_with_search_domain(dns_host: Netns, provider: EmbeddedDns) -> None:
    provider.register("a", "web", ips(A_IP), [], ["n1"])
    provider.register("b", "api", ips(B_IP), ["backend"], ["n1"])
    res = dns.resolver.Resolver(configure=False)
    res.nameservers = [GW]
    res.port = PORT
    res.search = [dns.name.from_text("nyxd.local")]
    res.use_search_by_default = True
    got = res.resolve("backend", "A", source=A_IP, search=True)
    assert [r.to_text() for r in got] == [B_IP]
    assert got.qname.to_text() == "backend.nyxd.local."
    with pytest.raises(dns.resolver.NoAnswer):
        res.resolve("api.nyxd.local", "AAAA", source=A_IP)
    with pytest.raises(dns.resolver.NXDOMAIN):
        res.resolve("ghost.nyxd.local", "A", source=A_IP)


def test_scoping_between_networks(dns_host: Netns, provider: EmbeddedDns) -> None:
    provider.register("a", "alpha", ips(A_IP), [], ["stack1"])
    provider.register("b", "beta", ips(B_IP), [], ["stack2"])
    provider.register("c", "gamma", ips(C_IP), [], ["stack1", "stack2"])
    assert status(dig(dns_host, "beta.nyxd.local", client=A_IP)) == "NXDOMAIN"
    assert status(dig(dns_host, "alpha.nyxd.local", client=B_IP)) == "NXDOMAIN"
    assert dig(dns_host, "+short", "gamma.nyxd.local", client=A_IP).split() == [C_IP]
    assert dig(dns_host, "+short", "alpha.nyxd.local", client=C_IP).split() == [A_IP]
    assert dig(dns_host, "+short", "beta.nyxd.local", client=C_IP).split() == [B_IP]
    assert status(dig(dns_host, "-x", B_IP, client=A_IP)) == "NXDOMAIN"
    # an address of the host that no container has is the host: it sees every name
    # (strangers are refused: test_lan_neighbour_is_refused_host_addresses_are_answered)
    assert dig(dns_host, "+short", "alpha.nyxd.local", client=D_IP).split() == [A_IP]
    assert dig(dns_host, "+short", "beta.nyxd.local", client=D_IP).split() == [B_IP]


def test_register_deregister_take_effect_at_once_on_the_same_sockets(
    dns_host: Netns, provider: EmbeddedDns
) -> None:
    server = provider.server
    assert server is not None
    before = sorted(os.readlink(f"/proc/self/fd/{s.fileno()}") for s in server._socks)
    provider.register("a", "web", ips(A_IP), [], ["n1"])
    assert addrs(query("web")) == [A_IP]
    provider.register("b", "db", ips(B_IP), [], ["n1"])
    assert addrs(query("db")) == [B_IP]
    provider.register("b", "db", ips(C_IP), [], ["n1"])  # same id again: replaced
    assert addrs(query("db", client=A_IP)) == [C_IP]
    provider.deregister("b")
    assert query("db.nyxd.local").rcode() == dns.rcode.NXDOMAIN
    after = sorted(os.readlink(f"/proc/self/fd/{s.fileno()}") for s in server._socks)
    assert before == after


def test_listens_only_on_the_gateway_address(dns_host: Netns, provider: EmbeddedDns) -> None:
    for proto in ("-u", "-t"):
        out = dns_host.run(["ss", "-ln", proto, f"sport = :{PORT}"]).stdout
        locals_ = [line.split()[3] for line in out.splitlines()[1:] if line.strip()]
        assert locals_ == [f"{GW}:{PORT}"], out
    provider.register("a", "web", ips(A_IP), [], ["n1"])
    other = ["dig", f"@{A_IP}", "-p", str(PORT), "+time=1", "+tries=1", "web"]
    assert status(dns_host.run(other, check=False).stdout) == "NO-ANSWER"
    assert dig(dns_host, "+short", "web").split() == [A_IP]  # control: the gateway answers


def test_forwarding_over_udp_and_tcp(
    dns_host: Netns, provider: EmbeddedDns, upstream: Callable[..., FakeUpstream]
) -> None:
    up = upstream("127.0.0.1")
    provider.register("a", "web", ips(A_IP), [], ["n1"])
    assert dig(dns_host, "+short", "Example.COM").split() == ["203.0.113.7"]
    assert up.names("udp") == ["example.com."]
    r = query("tcp.example.org", tcp=True)
    assert addrs(r) == ["203.0.113.7"] and r.rcode() == dns.rcode.NOERROR
    assert up.names("tcp") == ["tcp.example.org."]
    # container names never reach the upstream (each query is answered here)
    assert dig(dns_host, "+short", "web").split() == [A_IP]
    assert dig(dns_host, "+short", "web.nyxd.local").split() == [A_IP]
    assert status(dig(dns_host, "nope.nyxd.local")) == "NXDOMAIN"
    assert up.names() == ["example.com.", "tcp.example.org."]


def test_forward_failover_timeout_and_servfail(
    dns_host: Netns,
    provider: EmbeddedDns,
    upstream: Callable[..., FakeUpstream],
    host_resolv: Path,
) -> None:
    silent = upstream("127.0.0.2", mode="silent")
    good = upstream("127.0.0.1")
    host_resolv.write_text("nameserver 127.0.0.2\nnameserver 127.0.0.1\n")
    assert provider.server is not None
    provider.server.upstreams.reload()
    provider.register("a", "web", ips(A_IP), [], ["n1"])
    assert addrs(query("fail.over.example")) == ["203.0.113.7"]
    assert silent.names() == ["fail.over.example."] and good.names() == ["fail.over.example."]
    assert addrs(query("fail.over.tcp.example", tcp=True)) == ["203.0.113.7"]
    good.mode = "silent"
    r = query("dead.example")
    assert r.rcode() == dns.rcode.SERVFAIL
    assert query("dead.tcp.example", tcp=True).rcode() == dns.rcode.SERVFAIL


def test_forwarded_truncation_then_tcp(
    dns_host: Netns, provider: EmbeddedDns, upstream: Callable[..., FakeUpstream]
) -> None:
    upstream("127.0.0.1", mode="big")
    provider.register("a", "web", ips(A_IP), [], ["n1"])
    out = dig(dns_host, "+noedns", "+ignore", "many.example")
    assert " tc" in out.split("flags:")[1].split(";")[0] and answers(out) == []
    out = dig(dns_host, "+noedns", "many.example")  # dig retries over TCP by itself
    assert len(answers(out)) == 60


def test_internal_networks_get_no_forwarding(
    dns_host: Netns, provider: EmbeddedDns, upstream: Callable[..., FakeUpstream]
) -> None:
    up = upstream("127.0.0.1")
    provider.register("a", "web", ips(A_IP), [], ["backend"])
    provider.register("b", "front", ips(B_IP), [], ["backend", "public"])
    provider.set_network_internal("backend", True)
    assert status(dig(dns_host, "example.com")) == "REFUSED"
    assert query("example.com", tcp=True).rcode() == dns.rcode.REFUSED
    assert dig(dns_host, "+short", "front").split() == [B_IP]  # names still answered
    assert up.names() == []
    # a container also on a non-internal network keeps forwarding
    assert dig(dns_host, "+short", "example.com", client=B_IP).split() == ["203.0.113.7"]
    provider.set_network_internal("backend", False)
    assert dig(dns_host, "+short", "example.net").split() == ["203.0.113.7"]


def test_internal_for_one_container_leaves_its_network_forwarding(
    dns_host: Netns,
    provider: EmbeddedDns,
    upstream: Callable[..., FakeUpstream],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 11 item 5, through the hook nyxd calls: a container internal on the default
    network gets no forwarding (nothing reaches the upstream), and that does not turn the
    network internal for the container next to it."""
    from nyx_dns_embedded.plugin import EmbeddedDnsPlugin

    plugin = EmbeddedDnsPlugin()
    plugin.provider = provider  # the hooks nyxd calls, on the provider serving here
    up = upstream("127.0.0.1")
    for cid, host, ip, internal in (("vault", "vault", A_IP, ["nyx"]), ("plain", "web", B_IP, [])):
        plugin.nyx_dns_register(
            container_id=cid,
            hostname=host,
            ips=ips(ip),
            aliases=[],
            networks=["nyx"],
            internal_networks=internal,
        )
    # positive control: the other container on the same network is forwarded
    assert dig(dns_host, "+short", "control.example", client=B_IP).split() == ["203.0.113.7"]
    assert up.names() == ["control.example."]
    # the internal one: REFUSED over UDP and TCP, for names and reverse names outside
    assert status(dig(dns_host, "leak.example", client=A_IP)) == "REFUSED"
    assert status(dig(dns_host, "+tcp", "leak-tcp.example", client=A_IP)) == "REFUSED"
    assert query("leak.example", "TXT", client=A_IP).rcode() == dns.rcode.REFUSED
    assert status(dig(dns_host, "-x", "192.0.2.77", client=A_IP)) == "REFUSED"
    for _ in range(3):  # again, now from the resolver's cached templates
        assert query("leak-again.example", client=A_IP).rcode() == dns.rcode.REFUSED
    assert up.names() == ["control.example."]  # the upstream received nothing more
    # container names still work both ways
    assert dig(dns_host, "+short", "web", client=A_IP).split() == [B_IP]
    assert dig(dns_host, "+short", "vault", client=B_IP).split() == [A_IP]
    assert dig(dns_host, "+short", "after.example", client=B_IP).split() == ["203.0.113.7"]
    assert up.names() == ["control.example.", "after.example."]
    assert provider.resolv_conf("vault").splitlines()[-1] == "search nyxd.local"
    assert provider.resolv_conf("plain").splitlines()[-1] == "search nyxd.local corp.example"


def test_lan_neighbour_is_refused_host_addresses_are_answered(
    dns_host: Netns,
    uplink: str,
    neighbour: Netns,
    provider: EmbeddedDns,
    upstream: Callable[..., FakeUpstream],
) -> None:
    """Issue 11 item 1: the host sees every name whatever its source address (the
    uplink's, a LAN address); a LAN neighbour routed to the gateway is refused."""
    up = upstream("127.0.0.1")
    provider.register("a", "web", ips(A_IP), [], ["n1"])
    provider.register("b", "db", ips(B_IP), [], ["n2"])
    for src in (uplink, LAN_HOST_IP):
        assert dig(dns_host, "+short", "web.nyxd.local", client=src).split() == [A_IP]
        assert dig(dns_host, "+short", "db", client=src).split() == [B_IP]
        assert addrs(query("web", tcp=True, client=src)) == [A_IP]
        assert dig(dns_host, "+short", "-x", B_IP, client=src).split() == ["db.nyxd.local."]
    assert dig(dns_host, "+short", "host.example", client=uplink).split() == ["203.0.113.7"]
    assert up.names() == ["host.example."]
    # the neighbour reaches the server (it answers) but gets nothing, and nothing is
    # forwarded for it
    for name in ("web.nyxd.local", "web", "lan.example"):
        out = dig(neighbour, name, client=None)
        assert status(out) == "REFUSED", out
    assert up.names() == ["host.example."]
    # over TCP it is dropped without an answer
    with socket_in(neighbour) as s:
        s.settimeout(10)
        s.connect((GW, PORT))
        assert s.getsockname()[0] == NEIGHBOUR_IP
        q = dns.message.make_query("web", "A").to_wire()
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            s.sendall(len(q).to_bytes(2, "big") + q)
        assert closed_without_answer(s) == b""
    # a loopback source other than 127.0.0.1 is not trusted as the host (a container can
    # send from one when the bridge has route_localnet)
    assert status(dig(dns_host, "web.nyxd.local", client="127.0.0.5")) == "REFUSED"
    assert dig(dns_host, "+short", "web.nyxd.local", client="127.0.0.1").split() == [A_IP]


def test_tcp_from_unknown_clients_is_closed_at_once(
    dns_host: Netns,
    neighbour: Netns,
    make_provider: Callable[..., EmbeddedDns],
    host_resolv: Path,
) -> None:
    """Issue 11 item 12: a client that would be refused anyway never holds a TCP slot or
    a read timeout: a flood of three times the cap is dropped at once (the idle timeout is
    a minute, so a connection the server kept would outlive the read) and a known client
    is served while the flood is connected."""
    p = make_provider(
        EmbeddedDnsSettings(
            upstream_resolv_conf=host_resolv, tcp_idle_timeout=60, tcp_max_connections=4
        )
    )
    p.register("a", "web", ips(A_IP), [], ["n1"])
    flood: list[socket.socket] = []
    try:
        for _ in range(12):
            s = socket_in(neighbour)
            flood.append(s)
            s.settimeout(10)
            s.connect((GW, PORT))
        assert addrs(query("web", tcp=True)) == [A_IP]
        with socket.create_connection((GW, PORT), timeout=10, source_address=(A_IP, 0)) as c:
            assert tcp_roundtrip(c, "web") == [A_IP]
            assert tcp_roundtrip(c, "web.nyxd.local") == [A_IP]
        q = dns.message.make_query("web", "A").to_wire()
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            flood[0].sendall(len(q).to_bytes(2, "big") + q)  # a query changes nothing
        for s in flood:
            assert closed_without_answer(s) == b""
    finally:
        for s in flood:
            s.close()
    assert p.server is not None and p.server.stats["tcp_unknown"] == 12


def test_tcp_connections_per_client_are_capped(
    dns_host: Netns, make_provider: Callable[..., EmbeddedDns], host_resolv: Path
) -> None:
    """Issue 11 item 12: one client address holds at most
    ``tcp_max_connections_per_client`` connections; other clients are not affected."""
    p = make_provider(
        EmbeddedDnsSettings(
            upstream_resolv_conf=host_resolv,
            tcp_idle_timeout=60,
            tcp_max_connections=8,
            tcp_max_connections_per_client=2,
        )
    )
    p.register("a", "web", ips(A_IP), [], ["n1"])
    p.register("b", "db", ips(B_IP), [], ["n1"])
    held = [
        socket.create_connection((GW, PORT), timeout=10, source_address=(A_IP, 0)) for _ in range(2)
    ]
    try:
        for c in held:  # each one is served, so each one holds a slot now
            assert tcp_roundtrip(c, "db") == [B_IP]
        with socket.create_connection((GW, PORT), timeout=10, source_address=(A_IP, 0)) as over:
            assert closed_without_answer(over) == b""
        # another client is served, and so are the two held connections
        with socket.create_connection((GW, PORT), timeout=10, source_address=(B_IP, 0)) as b:
            assert tcp_roundtrip(b, "web") == [A_IP]
        assert [tcp_roundtrip(c, "web") for c in held] == [[A_IP], [A_IP]]
        # closing one frees its slot (the server notices the close on its own time)
        held.pop().close()
        for _ in range(100):
            with socket.create_connection(
                (GW, PORT), timeout=10, source_address=(A_IP, 0)
            ) as again:
                try:
                    got = tcp_roundtrip(again, "db")
                except (AssertionError, ConnectionResetError):
                    time.sleep(0.05)
                    continue
            assert got == [B_IP]
            break
        else:
            raise AssertionError("the closed connection's slot was never given back")
    finally:
        for c in held:
            c.close()
    assert p.server is not None and p.server.stats["tcp_refused"] >= 1


def test_host_resolv_conf_is_reread_when_it_changes(
    dns_host: Netns,
    provider: EmbeddedDns,
    upstream: Callable[..., FakeUpstream],
    host_resolv: Path,
) -> None:
    upstream("127.0.0.1", answer="203.0.113.7")
    upstream("127.0.0.2", answer="203.0.113.8")
    provider.register("a", "web", ips(A_IP), [], ["n1"])
    assert addrs(query("one.example")) == ["203.0.113.7"]
    host_resolv.write_text("nameserver 127.0.0.2\nsearch other.example\n")
    got: list[str] = []
    for i in range(50):  # the file is looked at about once a second
        got = addrs(query(f"two{i}.example"))
        if got == ["203.0.113.8"]:
            break
        time.sleep(0.1)
    assert got == ["203.0.113.8"]
    assert "search nyxd.local other.example" in provider.resolv_conf("a")


def test_edns_and_udp_truncation(dns_host: Netns, provider: EmbeddedDns) -> None:
    many = [f"10.231.0.{i}" for i in range(100, 160)]
    provider.register("a", "web", ips(A_IP), [], ["n1"])
    provider.register("big", "big", ips(*many), [], ["n1"])
    out = dig(dns_host, "+noedns", "+ignore", "big")
    assert " tc" in out.split("flags:")[1].split(";")[0]
    assert len(answers(dig(dns_host, "+noedns", "big"))) == 60  # retried over TCP
    out = dig(dns_host, "+bufsize=1232", "big")
    assert "EDNS: version: 0" in out and "udp: 1232" in out and len(answers(out)) == 60


def test_garbage_never_stalls_the_server(dns_host: Netns, provider: EmbeddedDns) -> None:
    provider.register("a", "web", ips(A_IP), [], ["n1"])
    rnd = random.Random(4)
    good = dns.message.make_query("web", "A").to_wire()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((A_IP, 0))
        for i in range(3000):
            kind = i % 3
            if kind == 0:
                pkt = rnd.randbytes(rnd.randint(0, 1500))
            elif kind == 1:
                pkt = bytearray(good)
                pkt[rnd.randrange(len(pkt))] = rnd.randrange(256)
                pkt = bytes(pkt[: rnd.randint(0, len(pkt))])
            else:
                pkt = rnd.randbytes(rnd.randint(0, 60000))
            try:
                s.sendto(pkt, (GW, PORT))
            except OSError:
                pass
    # TCP: junk, a length with no body, a huge length then silence
    # (each one is read until the server closes it, so none is left over the cap)
    for junk in (b"\x00\x05hello", b"\x00", b"\xff\xff" + b"x" * 100, rnd.randbytes(3000)):
        with socket.create_connection((GW, PORT), timeout=5, source_address=(A_IP, 0)) as c:
            c.sendall(junk)
            c.shutdown(socket.SHUT_WR)
            try:
                while c.recv(65536):
                    pass
            except ConnectionResetError:
                pass
    # the flood may still fill the socket buffer and a datagram can be dropped: retry like
    # a stub resolver does
    for attempt in range(5):
        try:
            q = dns.message.make_query("web", "A")
            r = dns.query.udp(q, GW, port=PORT, source=A_IP, timeout=2)
            break
        except dns.exception.Timeout:
            assert attempt < 4, "no answer after the flood"
    assert addrs(r) == [A_IP]
    assert addrs(query("web", tcp=True)) == [A_IP]
    assert provider.server is not None and provider.server.running
    assert provider.server.stats["udp"] > 0


def test_tcp_connection_cap_and_idle_timeout(dns_host: Netns, provider: EmbeddedDns) -> None:
    provider.register("a", "web", ips(A_IP), [], ["n1"])
    conns = [
        socket.create_connection((GW, PORT), timeout=10, source_address=(A_IP, 0)) for _ in range(4)
    ]
    try:
        # answered on an open connection, then idle connections are closed by the server
        q = dns.message.make_query("web", "A").to_wire()
        conns[0].sendall(len(q).to_bytes(2, "big") + q)
        size = int.from_bytes(conns[0].recv(2), "big")
        assert size > 12 and conns[0].recv(size)[:2] == q[:2]
        # the fifth connection is over the cap (4): closed at once
        with socket.create_connection((GW, PORT), timeout=10, source_address=(A_IP, 0)) as over:
            assert over.recv(10) == b""
        # idle ones are closed by the server (tcp_idle_timeout=1 s)
        for c in conns:
            assert c.recv(10) == b""
    finally:
        for c in conns:
            c.close()
    assert addrs(query("web", tcp=True)) == [A_IP]


def test_inflight_forwarding_is_bounded(
    dns_host: Netns,
    make_provider: Callable[..., EmbeddedDns],
    upstream: Callable[..., FakeUpstream],
    host_resolv: Path,
) -> None:
    up = upstream("127.0.0.1", mode="silent")
    p = make_provider(
        EmbeddedDnsSettings(upstream_resolv_conf=host_resolv, forward_timeout=1.0, max_inflight=2)
    )
    p.register("a", "web", ips(A_IP), [], ["n1"])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((A_IP, 0))
        s.settimeout(5)
        sent = {}
        for i in range(5):
            q = dns.message.make_query(f"q{i}.example", "A")
            sent[q.id] = q
            s.sendto(q.to_wire(), (GW, PORT))
        rcodes = []
        for _ in range(5):
            r = dns.message.from_wire(s.recv(4096))
            assert r.id in sent
            rcodes.append(r.rcode())
    assert rcodes == [dns.rcode.SERVFAIL] * 5
    assert len(up.names()) == 2


def test_through_the_plugin_hooks(
    dns_host: Netns,
    nyx_settings: NyxSettings,
    host_resolv: Path,
    monkeypatch: pytest.MonkeyPatch,
    upstream: Callable[..., FakeUpstream],
) -> None:
    from nyx_core import DnsFacade

    upstream("127.0.0.1")
    monkeypatch.setenv("NYXD_EMBEDDED_UPSTREAM_RESOLV_CONF", str(host_resolv))
    facade = DnsFacade.load("embedded")
    facade.start(nyx_settings)
    try:
        facade.start(nyx_settings)  # idempotent
        facade.register("c1", "web", ips(A_IP), ["www"], ["nyx"], [])
        text = facade.resolv_conf("c1")
        assert text.splitlines()[1:] == [f"nameserver {GW}", "search nyxd.local corp.example"]
        (plugin,) = facade.pm.get_plugins()
        path = plugin.provider.resolv_conf_path("c1")
        assert path == nyx_settings.run_dir / "dns" / "c1" / "resolv.conf"
        assert path.read_text() == text
        assert dig(dns_host, "+short", "www.nyxd.local").split() == [A_IP]
        assert dig(dns_host, "+short", "elsewhere.example").split() == ["203.0.113.7"]
        facade.deregister("c1")
        facade.deregister("c1")
        assert not path.exists()
        assert status(dig(dns_host, "web.nyxd.local", client=GW)) == "NXDOMAIN"
    finally:
        facade.stop()
        facade.stop()
    out = dns_host.run(["ss", "-lnu", f"sport = :{PORT}"]).stdout
    assert "Local Address" in out and GW not in out


def test_stop_start_keeps_records_and_frees_the_port(
    dns_host: Netns, provider: EmbeddedDns, nyx_settings: NyxSettings
) -> None:
    provider.register("a", "web", ips(A_IP), [], ["n1"])
    provider.stop()
    assert status(dig(dns_host, "web")) == "NO-ANSWER"
    provider.stop()
    assert provider.start(nyx_settings) == (GW, PORT)
    assert addrs(query("web")) == [A_IP]


def test_missing_gateway_address_is_a_clear_error(
    dns_host: Netns, nyx_settings: NyxSettings, dns_config: EmbeddedDnsSettings
) -> None:
    from nyx_core import DnsError

    settings = nyx_settings.model_copy(update={"gateway_ip": ipaddress.ip_address("10.232.0.77")})
    p = EmbeddedDns(dns_config)
    with pytest.raises(DnsError, match=r"10\.232\.0\.77:5353 \(gateway_ip, dns_port\)"):
        p.start(settings)
    assert p.server is None
    p.stop()


def test_concurrent_registrations_while_serving(dns_host: Netns, provider: EmbeddedDns) -> None:
    import threading

    provider.register("client", "client", ips(A_IP), [], ["n1"])
    errors: list[BaseException] = []
    stop = threading.Event()

    def churn(worker: int) -> None:
        try:
            for i in range(60):
                cid = f"w{worker}-{i}"
                provider.register(cid, cid, ips(f"10.231.{10 + worker}.{i + 1}"), [], ["n1"])
                if i % 3 == 0:
                    provider.deregister(cid)
        except BaseException as exc:
            errors.append(exc)

    answered = []

    def ask_all_the_time() -> None:
        while not stop.is_set():
            try:
                answered.append(query("client").rcode())
            except BaseException as exc:
                errors.append(exc)
                return

    asker = threading.Thread(target=ask_all_the_time)
    asker.start()
    workers = [threading.Thread(target=churn, args=(w,)) for w in range(4)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    stop.set()
    asker.join()
    assert errors == []
    assert answered and set(answered) == {dns.rcode.NOERROR}
    for w in range(4):
        for i in range(60):
            r = query(f"w{w}-{i}.nyxd.local")
            if i % 3 == 0:
                assert r.rcode() == dns.rcode.NXDOMAIN
            else:
                assert addrs(r) == [f"10.231.{10 + w}.{i + 1}"]
