"""The forward cache and the batched UDP path of a real server: repeated external names
stop reaching the upstream, the cache empties when the host's resolvers change, errors
and truncated answers are never kept, scoping still holds; bursts from several clients
(recvmmsg/sendmmsg) get every answer right, to the right client, with the right ID."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest
from conftest import CLIENTS, GW, FakeUpstream

from nyx_core.testing import Netns
from nyx_dns_embedded import EmbeddedDns, EmbeddedDnsSettings

pytestmark = pytest.mark.kernel

PORT = 5353
A_IP, B_IP, C_IP, _ = CLIENTS


def ips(*texts: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    return [ipaddress.ip_address(t) for t in texts]


def query(
    name: str, rdtype: str = "A", client: str = A_IP, tcp: bool = False, **kw: object
) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, **kw)  # type: ignore[arg-type]
    r = (dns.query.tcp if tcp else dns.query.udp)(q, GW, port=PORT, source=client, timeout=5)
    assert r.id == q.id
    return r


def addrs(r: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in r.answer for rd in rrset)


def test_repeated_external_names_reach_the_upstream_once(
    dns_host: Netns, provider: EmbeddedDns, upstream: Callable[..., FakeUpstream]
) -> None:
    up = upstream("127.0.0.1")
    provider.register("a", "web", ips(A_IP), [], ["n1"])
    provider.register("c", "other", ips(C_IP), [], ["n2"])
    first = query("cached.example")
    assert addrs(first) == ["203.0.113.7"] and first.answer[0].ttl == 30
    for client in (A_IP, A_IP, C_IP):  # the same client again, a client of another network
        r = query("Cached.EXAMPLE", client=client)
        assert addrs(r) == ["203.0.113.7"] and 0 < r.answer[0].ttl <= 30
        assert r.question[0].name.to_text() == "Cached.EXAMPLE."
    r = query("cached.example", tcp=True)  # TCP reads the same cache
    assert addrs(r) == ["203.0.113.7"]
    assert up.names() == ["cached.example."]
    # another type, EDNS, a new name: their own entries
    query("cached.example", "AAAA")
    query("cached.example", use_edns=0)
    query("fresh.example")
    assert up.names() == ["cached.example."] * 3 + ["fresh.example."]
    # the host shares the cache with the containers
    assert addrs(query("fresh.example", client=GW)) == ["203.0.113.7"]
    assert len(up.names()) == 4
    assert provider.server is not None and provider.server.cache is not None
    assert len(provider.server.cache) == 4


def test_internal_containers_never_get_cached_answers(
    dns_host: Netns, provider: EmbeddedDns, upstream: Callable[..., FakeUpstream]
) -> None:
    up = upstream("127.0.0.1")
    provider.register("a", "web", ips(A_IP), [], ["n1"])
    provider.register("v", "vault", ips(B_IP), [], ["n1"], internal_networks=["n1"])
    assert addrs(query("secret.example", client=A_IP)) == ["203.0.113.7"]
    for tcp in (False, True, False):
        r = query("secret.example", client=B_IP, tcp=tcp)
        assert r.rcode() == dns.rcode.REFUSED and not r.answer
    assert addrs(query("vault", client=B_IP)) == [B_IP]
    assert up.names() == ["secret.example."]


def test_a_container_name_wins_over_a_cached_upstream_answer(
    dns_host: Netns, provider: EmbeddedDns, upstream: Callable[..., FakeUpstream]
) -> None:
    upstream("127.0.0.1")
    provider.register("a", "web", ips(A_IP), [], ["n1"])
    assert addrs(query("api")) == ["203.0.113.7"]  # not a container (yet): upstream's
    assert addrs(query("api")) == ["203.0.113.7"]  # from the cache
    provider.register("b", "api", ips(B_IP), [], ["n1"])
    r = query("api")
    assert addrs(r) == [B_IP] and r.flags & dns.flags.AA


def test_the_cache_is_emptied_when_the_host_resolvers_change(
    dns_host: Netns,
    provider: EmbeddedDns,
    upstream: Callable[..., FakeUpstream],
    host_resolv: Path,
) -> None:
    old = upstream("127.0.0.1", answer="203.0.113.7")
    new = upstream("127.0.0.2", answer="203.0.113.8")
    provider.register("a", "web", ips(A_IP), [], ["n1"])
    assert addrs(query("moved.example")) == ["203.0.113.7"]
    assert addrs(query("moved.example")) == ["203.0.113.7"]
    assert old.names() == ["moved.example."]
    host_resolv.write_text("nameserver 127.0.0.2\n")
    got: list[str] = []
    for _ in range(50):  # the file is looked at about once a second (TTL is still 30 s)
        got = addrs(query("moved.example"))
        if got == ["203.0.113.8"]:
            break
        time.sleep(0.1)
    assert got == ["203.0.113.8"]
    assert new.names() == ["moved.example."]
    assert addrs(query("moved.example")) == ["203.0.113.8"]  # and kept from the new one
    assert new.names() == ["moved.example."]


def test_servfail_and_truncated_answers_are_not_kept(
    dns_host: Netns,
    provider: EmbeddedDns,
    upstream: Callable[..., FakeUpstream],
) -> None:
    up = upstream("127.0.0.1", mode="silent")
    provider.register("a", "web", ips(A_IP), [], ["n1"])
    assert query("flaky.example").rcode() == dns.rcode.SERVFAIL  # after the 0.5 s timeout
    up.mode = "answer"
    assert addrs(query("flaky.example")) == ["203.0.113.7"]  # asked again, not replayed
    assert up.names() == ["flaky.example."] * 2
    up.mode = "big"
    for _ in range(2):  # no EDNS over UDP: truncated by the upstream, asked each time
        r = query("many.example")
        assert r.flags & dns.flags.TC and not r.answer
    assert up.names("udp").count("many.example.") == 2
    assert len(addrs(query("many.example", tcp=True))) == 60  # the TCP answer is kept...
    assert len(addrs(query("many.example", tcp=True))) == 60
    assert up.names("tcp") == ["many.example."]
    r = query("many.example")  # ...but never sent over UDP to a client without EDNS
    assert r.flags & dns.flags.TC and not r.answer


def test_without_the_cache_every_query_goes_upstream(
    dns_host: Netns,
    make_provider: Callable[..., EmbeddedDns],
    upstream: Callable[..., FakeUpstream],
    host_resolv: Path,
) -> None:
    up = upstream("127.0.0.1")
    p = make_provider(EmbeddedDnsSettings(upstream_resolv_conf=host_resolv, cache_size=0))
    p.register("a", "web", ips(A_IP), [], ["n1"])
    for _ in range(3):
        assert addrs(query("uncached.example")) == ["203.0.113.7"]
    assert up.names() == ["uncached.example."] * 3
    assert p.server is not None and p.server.cache is None


@pytest.mark.parametrize("burst_gap", [0.0, float("inf")], ids=["one-by-one", "batches"])
def test_bursts_from_several_clients_get_every_answer_right(
    dns_host: Netns,
    provider: EmbeddedDns,
    upstream: Callable[..., FakeUpstream],
    burst_gap: float,
) -> None:
    """Each client sends its queries back to back without waiting (container names, a
    cached external name, an external name that is forwarded because it is new, a name
    that is a container of another network only, garbage) while another thread registers
    containers; every query gets exactly one answer, to the socket that asked, with its ID
    and the right addresses."""
    up = upstream("127.0.0.1")
    server = provider.server
    assert server is not None
    server.burst_gap = burst_gap
    provider.register("a", "web", ips(A_IP), [], ["n1"])
    provider.register("b", "db", ips(B_IP), [], ["n1"])
    provider.register("c", "far", ips(C_IP), [], ["n2"])  # not visible from n1: forwarded
    assert addrs(query("warm.example")) == ["203.0.113.7"]
    ext = ["203.0.113.7"]
    expected = {"web": [A_IP], "db": [B_IP], "warm.example": ext, "far": ext}
    errors: list[str] = []
    churn_stop = threading.Event()

    def churn() -> None:
        i = 0
        while not churn_stop.wait(0.001):
            provider.register(f"x{i % 5}", f"x{i % 5}", ips(f"10.231.1.{i % 5 + 1}"), [], ["n1"])
            i += 1

    def client(source: str, rounds: int) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((source, 0))
            s.settimeout(5)
            sent: dict[int, str] = {}
            for r in range(rounds):
                for name in ("web", "db", "warm.example", f"new{r}.{source}.example", "far"):
                    q = dns.message.make_query(name, "A")
                    while q.id in sent:
                        q.id = (q.id + 1) & 0xFFFF
                    sent[q.id] = name
                    s.sendto(q.to_wire(), (GW, PORT))
                s.sendto(b"\x00" * 5, (GW, PORT))  # a runt: never answered
            for _ in range(len(sent)):
                try:
                    data = s.recv(4096)
                except TimeoutError:
                    errors.append(f"{source}: {len(sent)} answers missing")
                    return
                r = dns.message.from_wire(data)
                name = sent.pop(r.id, None)
                if name is None:
                    errors.append(f"{source}: unexpected id {r.id}")
                elif addrs(r) != expected.get(name, ext):
                    errors.append(f"{source}: {name} -> {addrs(r)}")

    churner = threading.Thread(target=churn)
    churner.start()
    try:
        threads = [threading.Thread(target=client, args=(src, 40)) for src in (A_IP, B_IP)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        churn_stop.set()
        churner.join()
    assert errors == []
    assert len([n for n in up.names() if n.startswith("new")]) == 80
    assert up.names().count("warm.example.") == 1
    if burst_gap:
        assert server.stats["udp_batches"] > 0
    assert server.stats["errors"] == 0
