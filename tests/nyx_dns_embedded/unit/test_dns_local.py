"""Which sources count as the host: the kernel question and its cache."""

from __future__ import annotations

import pytest

from nyx_dns_embedded._local import LocalSources, is_local_address


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_kernel_question_in_this_namespace() -> None:
    # read-only netlink lookups; every namespace has lo with 127.0.0.1
    assert is_local_address("127.0.0.1") is True
    assert is_local_address("192.0.2.254") is False  # TEST-NET-1: not on this host
    assert is_local_address("not an address") is False
    assert is_local_address("0.0.0.0") is False


def test_kernel_question_for_ipv6_sources() -> None:
    assert is_local_address("::1") is True
    assert is_local_address("2001:db8::1") is False  # documentation prefix: not ours
    assert is_local_address("::") is False
    # IPv4-mapped: never a source on an IPv6-only socket, never taken for the host
    assert is_local_address("::ffff:127.0.0.1") is False


def test_other_loopback_sources_never_count_as_the_host() -> None:
    """127.0.0.0/8 is routed local, but a container can send from 127.0.0.5 when the
    bridge has route_localnet: only 127.0.0.1 (an interface address) is trusted."""
    assert is_local_address("127.0.0.5") is False
    assert is_local_address("127.255.255.254") is False


def test_cache_expires_and_is_bounded() -> None:
    asked: list[str] = []
    clock = Clock()

    def lookup(ip: str) -> bool:
        asked.append(ip)
        return ip == "192.0.2.2"

    local = LocalSources(ttl=5, max_entries=3, lookup=lookup, clock=clock)
    assert local("192.0.2.2") and not local("198.51.100.9")
    assert local("192.0.2.2") and not local("198.51.100.9")
    assert asked == ["192.0.2.2", "198.51.100.9"]  # cached, both ways
    clock.now += 6
    assert local("192.0.2.2")
    assert asked[-1] == "192.0.2.2"  # expired: asked again
    for i in range(10):
        local(f"198.51.100.{20 + i}")
    assert len(local._cache) <= 3


@pytest.mark.parametrize("rate", [1.0, 5.0])
def test_lookups_are_rate_limited(rate: float) -> None:
    clock = Clock()
    asked: list[str] = []

    def lookup(ip: str) -> bool:
        asked.append(ip)
        return True

    local = LocalSources(lookups_per_second=rate, lookup=lookup, clock=clock)
    got = [local(f"198.51.100.{i}") for i in range(20)]
    assert len(asked) == int(rate) and got.count(True) == int(rate)
    assert local.skipped == 20 - int(rate)
    clock.now += 1
    assert local("203.0.113.1") and len(asked) == int(rate) + 1
