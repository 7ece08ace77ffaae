"""Coverage-guided fuzzing of the resolver with atheris (optional; not collected by pytest).

    pip install atheris
    python tests/nyx_dns_embedded/fuzz_atheris.py -atheris_runs=200000

Every input goes through :meth:`Resolver.resolve` twice (slow path, then whatever the hot
path cached) for a container client, an internal-network client, the host (gateway and another of
its addresses) and a stranger,
over UDP and TCP. It fails on any exception, on an answer that is not a response to the
query's ID, or when the hot path answers differently from the slow path.
"""

from __future__ import annotations

import ipaddress
import sys

import atheris

with atheris.instrument_imports():
    import dnslib  # noqa: F401

    from nyx_dns_embedded._records import Registry
    from nyx_dns_embedded._resolver import Resolver

CLIENTS = ("10.231.0.1", "10.231.0.2", "10.231.0.3", "198.51.100.1", "192.0.2.9")
HOST_ADDRESSES = frozenset({"198.51.100.1"})  # another address of the host


def registry() -> Registry:
    r = Registry()
    r.configure(
        local_clients={"10.231.0.1"},
        subnets=[ipaddress.ip_network("10.231.0.0/24")],
        default_network="n1",
    )
    r.register("a", "web", [ipaddress.ip_address("10.231.0.2")], ["www"], ["n1"])
    r.register("b", "db", [ipaddress.ip_address("10.231.0.3"), "fd00::3"], [], ["n2"])
    many = [ipaddress.ip_address(f"10.231.0.{i}") for i in range(100, 150)]
    r.register("c", "big", many, [], ["n1"])
    r.set_network_internal("n2", True)
    return r


REG = registry()


def one_input(data: bytes) -> None:
    for udp in (True, False):
        for client in CLIENTS:
            res = Resolver(REG, is_local=HOST_ADDRESSES.__contains__)
            first = res.resolve(data, client, udp)
            second = res.resolve(data, client, udp)
            if first != second:
                raise AssertionError(f"hot path differs: {first!r} != {second!r}")
            if isinstance(first, bytes):
                if len(first) < 12 or first[:2] != data[:2] or not first[2] & 0x80:
                    raise AssertionError(f"not a response to the query: {first!r}")
                if udp and len(first) > 4096:
                    raise AssertionError("oversized UDP answer")
            elif isinstance(first, int) and not 12 < first <= len(data):
                raise AssertionError(f"bad question end {first}")


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
