"""Fuzzing the resolver with hypothesis: random and mutated packets never raise, every
answer is a well-formed response to the query's ID, and the hot path (cached templates,
whole-query answers) always answers byte-for-byte what the slow path would."""

from __future__ import annotations

import ipaddress

import dns.message
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nyx_dns_embedded._records import Registry
from nyx_dns_embedded._resolver import Resolver

# the gateway, three containers, another address of the host, a stranger; the IPv6
# container, an IPv6 address of the host (TC over UDP), an IPv6 stranger
CLIENTS = [
    "10.231.0.1",
    "10.231.0.2",
    "10.231.0.3",
    "10.231.0.4",
    "198.51.100.1",
    "192.0.2.9",
    "fd00::4",
    "2001:db8:231::1",
    "2001:db8::9",
]
HOST_ADDRESSES = frozenset({"198.51.100.1", "2001:db8:231::1"})


def resolver() -> Resolver:
    """A fresh resolver whose "is this the host?" question is answered without the kernel."""
    return Resolver(REG, is_local=HOST_ADDRESSES.__contains__)


NAMES = [
    "web",
    "WEB.nyxd.local",
    "www",
    "db.NYXD.local.",
    "nope.nyxd.local",
    "nyxd.local",
    "example.com",
    "2.0.231.10.in-addr.arpa",
    "9.9.231.10.in-addr.arpa",
    "big",
    "x" * 63 + ".y",
]
TYPES = ["A", "AAAA", "PTR", "ANY", "MX", "SOA", "TXT", 65, 97]


def make_registry() -> Registry:
    r = Registry()
    r.configure(
        local_clients={"10.231.0.1"},
        subnets=[ipaddress.ip_network("10.231.0.0/24")],
        default_network="n1",
    )
    r.register("a", "web", [ipaddress.ip_address("10.231.0.2")], ["www"], ["n1"])
    r.register("b", "db", [ipaddress.ip_address("10.231.0.3")], [], ["n2"])
    r.register("c", "six", [ipaddress.ip_address("10.231.0.4"), "fd00::4"], [], ["n1", "n2"])
    many = [ipaddress.ip_address(f"10.231.0.{i}") for i in range(100, 150)]
    r.register("d", "big", many, [], ["n1"])
    r.set_network_internal("n2", True)
    return r


REG = make_registry()


def check(out: bytes | int | None, data: bytes, udp: bool) -> None:
    if out is None:
        return
    if isinstance(out, int):
        assert 12 < out <= len(data)
        return
    assert isinstance(out, bytes)
    assert len(out) >= 12
    assert out[:2] == data[:2]
    assert out[2] & 0x80  # QR
    if udp:
        assert len(out) <= 4096
    if len(out) > 12:
        dns.message.from_wire(out)  # well-formed beyond the header


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(min_size=0, max_size=700), client=st.sampled_from(CLIENTS), udp=st.booleans())
def test_random_bytes_never_raise(data: bytes, client: str, udp: bool) -> None:
    res = resolver()
    check(res.resolve(data, client, udp), data, udp)
    check(res.resolve(data, client, udp), data, udp)


def query_strategy() -> st.SearchStrategy[bytes]:
    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        name = draw(st.sampled_from(NAMES))
        rdtype = draw(st.sampled_from(TYPES))
        edns = draw(st.sampled_from([-1, 0, 1]))
        payload = draw(st.sampled_from([512, 600, 1232, 4096, 65535]))
        q = dns.message.make_query(name, rdtype, use_edns=edns, payload=payload)
        q.id = draw(st.integers(0, 0xFFFF))
        if draw(st.booleans()):
            q.flags = draw(st.integers(0, 0xFFFF)) & 0x7FFF
        return q.to_wire()

    return build()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(query_strategy()))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["flip", "cut", "add", "set"]))
        if op == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut" and data:
            del data[draw(st.integers(0, len(data) - 1)) :]
        elif op == "add":
            data += draw(st.binary(min_size=1, max_size=20))
        elif op == "set" and data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=mutated(), client=st.sampled_from(CLIENTS), udp=st.booleans())
def test_mutated_queries_never_raise(data: bytes, client: str, udp: bool) -> None:
    res = resolver()
    for _ in range(2):
        check(res.resolve(data, client, udp), data, udp)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    warmup=st.lists(query_strategy(), max_size=4),
    data=query_strategy(),
    client=st.sampled_from(CLIENTS),
    udp=st.booleans(),
)
def test_hot_path_answers_exactly_like_slow_path(
    warmup: list[bytes], data: bytes, client: str, udp: bool
) -> None:
    warm = resolver()
    for w in [*warmup, data, data]:  # slow path, then templates, then the exact-query cache
        warm.resolve(w, client, udp)
    fast = warm.resolve(data, client, udp)
    cold = resolver()
    slow = cold.slow(data, cold.scope(client, udp=udp), udp)
    assert fast == slow


@pytest.mark.parametrize("size", [0, 1, 11, 12, 13, 17, 512, 4096])
def test_zero_filled_packets(size: int) -> None:
    data = bytes(size)
    check(resolver().resolve(data, "10.231.0.2"), data, True)
