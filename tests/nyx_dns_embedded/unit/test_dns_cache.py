"""The cache of forwarded answers: what is kept and for how long, how it is served (the
client's ID, TTLs counted down), its bounds, the flush on an upstream change, and that it
sits behind the resolver's scoping (container names, internal and unknown clients)."""

from __future__ import annotations

import ipaddress
import sys
import threading

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import dns.tsigkeyring
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nyx_dns_embedded import _cache
from nyx_dns_embedded._cache import ForwardCache, cache_key, parse_answer
from nyx_dns_embedded._records import Registry
from nyx_dns_embedded._resolver import Resolver

GW = "10.231.0.1"
A_IP = "10.231.0.2"  # container "web" on n1
B_IP = "10.231.0.3"  # container "db" on n2, internal there
STRANGER = "10.231.0.99"
SOA = "ns.example. host.example. 1 3600 600 86400 {minimum}"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Servers:
    """What ``Upstreams.servers`` would return; tests change it."""

    def __init__(self) -> None:
        self.current: tuple[str, ...] = ("127.0.0.1",)

    def __call__(self) -> tuple[str, ...]:
        return self.current


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def servers() -> Servers:
    return Servers()


@pytest.fixture
def cache(clock: Clock, servers: Servers) -> ForwardCache:
    return ForwardCache(clock=clock, servers=servers)


def query(name: str = "www.example.com", rdtype: str = "A", **kw: object) -> dns.message.Message:
    return dns.message.make_query(name, rdtype, **kw)  # type: ignore[arg-type]


def answer_to(
    q: dns.message.Message,
    *records: str,
    ttl: int = 300,
    rcode: int = dns.rcode.NOERROR,
    soa: int | None = None,
    soa_ttl: int = 3600,
) -> bytes:
    """An upstream's answer: ``records`` are A addresses (or rdata of the question's type)."""
    r = dns.message.make_response(q)
    r.id = 0x4242  # the upstream saw nyx's own ID, never the client's
    r.set_rcode(rcode)
    name = q.question[0].name
    rdtype = q.question[0].rdtype
    if records:
        r.answer.append(dns.rrset.from_text(name, ttl, "IN", rdtype, *records))
    if soa is not None:
        r.authority.append(
            dns.rrset.from_text("example.com.", soa_ttl, "IN", "SOA", SOA.format(minimum=soa))
        )
    return r.to_wire()


def served(cache: ForwardCache, q: dns.message.Message, udp: bool = True) -> dns.message.Message:
    wire = q.to_wire()
    ck = cache_key(wire)
    assert ck is not None
    out = cache.answer(ck[0], wire, ck[1], udp)
    assert out is not None, "not served from the cache"
    r = dns.message.from_wire(out)
    assert r.id == q.id
    return r


def missed(cache: ForwardCache, q: dns.message.Message, udp: bool = True) -> bool:
    wire = q.to_wire()
    ck = cache_key(wire)
    return ck is None or cache.answer(ck[0], wire, ck[1], udp) is None


def ttls(r: dns.message.Message) -> list[int]:
    return [rrset.ttl for section in (r.answer, r.authority) for rrset in section]


# ---------------------------------------------------------------------- serving


def test_hit_has_the_new_id_rd_and_case_and_ttls_counted_down(
    cache: ForwardCache, clock: Clock
) -> None:
    first = query("www.example.com")
    assert cache.store(first.to_wire(), answer_to(first, "192.0.2.7", ttl=300))
    clock.now += 10.5
    again = query("WWW.Example.COM")
    again.flags &= ~dns.flags.RD
    r = served(cache, again)
    assert r.id == again.id != first.id
    assert not r.flags & dns.flags.RD and r.flags & dns.flags.QR
    assert r.question[0].name.to_text() == "WWW.Example.COM."  # the asker's case
    assert [rd.to_text() for rd in r.answer[0]] == ["192.0.2.7"]
    assert ttls(r) == [290]
    with_rd = query("www.example.com")
    assert served(cache, with_rd).flags & dns.flags.RD


def test_expires_with_its_smallest_ttl(cache: ForwardCache, clock: Clock) -> None:
    q = query("two.example.com")
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text(q.question[0].name, 300, "IN", "A", "192.0.2.1"))
    r.additional.append(dns.rrset.from_text("ns.example.com.", 40, "IN", "A", "192.0.2.53"))
    assert cache.store(q.to_wire(), r.to_wire())
    clock.now += 39.9
    assert ttls(served(cache, q)) == [261]  # 300 - 39 (whole seconds)
    assert served(cache, q).additional[0].ttl == 1
    clock.now += 0.1
    assert missed(cache, q)  # never served past the smallest TTL


def test_ttls_are_capped_by_max_ttl(clock: Clock) -> None:
    cache = ForwardCache(clock=clock, max_ttl=100)
    q = query()
    assert cache.store(q.to_wire(), answer_to(q, "192.0.2.7", ttl=100000))
    assert ttls(served(cache, q)) == [100]
    clock.now += 100
    assert missed(cache, q)


def test_nxdomain_and_nodata_are_kept_for_the_soa_minimum(
    cache: ForwardCache, clock: Clock
) -> None:
    nx = query("gone.example.com")
    assert cache.store(nx.to_wire(), answer_to(nx, rcode=dns.rcode.NXDOMAIN, soa=60, soa_ttl=3600))
    nodata = query("www.example.com", "AAAA")
    assert cache.store(nodata.to_wire(), answer_to(nodata, soa=900, soa_ttl=30))
    r = served(cache, nx)
    assert r.rcode() == dns.rcode.NXDOMAIN and ttls(r) == [60]  # the SOA's TTL clamped too
    assert served(cache, nodata).rcode() == dns.rcode.NOERROR
    assert ttls(served(cache, nodata)) == [30]
    clock.now += 30
    assert missed(cache, nodata)  # min(SOA TTL 30, MINIMUM 900)
    assert ttls(served(cache, nx)) == [30]
    clock.now += 30
    assert missed(cache, nx)  # min(SOA TTL 3600, MINIMUM 60)


def test_negative_answers_without_soa_or_over_the_cap(clock: Clock) -> None:
    cache = ForwardCache(clock=clock, max_negative_ttl=20)
    q = query("gone.example.com")
    assert not cache.store(q.to_wire(), answer_to(q, rcode=dns.rcode.NXDOMAIN))
    assert missed(cache, q)
    assert cache.store(q.to_wire(), answer_to(q, rcode=dns.rcode.NXDOMAIN, soa=600))
    assert ttls(served(cache, q)) == [20]
    clock.now += 20
    assert missed(cache, q)
    off = ForwardCache(clock=clock, max_negative_ttl=0)
    assert not off.store(q.to_wire(), answer_to(q, rcode=dns.rcode.NXDOMAIN, soa=600))


@pytest.mark.parametrize(
    ("what", "make"),
    [
        # (with records and an SOA, which would make them cacheable but for the rcode)
        ("SERVFAIL", lambda q: answer_to(q, "192.0.2.7", rcode=dns.rcode.SERVFAIL, soa=60)),
        ("REFUSED", lambda q: answer_to(q, "192.0.2.7", rcode=dns.rcode.REFUSED, soa=60)),
        ("FORMERR", lambda q: answer_to(q, "192.0.2.7", rcode=dns.rcode.FORMERR, soa=60)),
        ("TTL 0", lambda q: answer_to(q, "192.0.2.7", ttl=0)),
        ("trailing junk", lambda q: answer_to(q, "192.0.2.7") + b"\x00"),
        ("cut short", lambda q: answer_to(q, "192.0.2.7")[:-1]),
        ("another question", lambda q: answer_to(query("other.example.com"), "192.0.2.7")),
        ("a query, not a response", lambda q: q.to_wire()),
    ],
)
def test_never_kept(cache: ForwardCache, what: str, make: object) -> None:
    q = query()
    assert callable(make)
    assert not cache.store(q.to_wire(), make(q)), what
    assert missed(cache, q) and len(cache) == 0
    assert cache.store(q.to_wire(), answer_to(q, "192.0.2.7", soa=60))  # control


def test_truncated_answers_are_not_kept(cache: ForwardCache) -> None:
    q = query()
    r = dns.message.make_response(q)
    r.flags |= dns.flags.TC  # a server may send the records that fitted
    r.answer.append(dns.rrset.from_text(q.question[0].name, 300, "IN", "A", "192.0.2.7"))
    assert not cache.store(q.to_wire(), r.to_wire())
    assert missed(cache, q)
    r.flags &= ~dns.flags.TC
    assert cache.store(q.to_wire(), r.to_wire())  # control: the same without TC is kept


def test_signed_queries_and_answers_are_not_kept(cache: ForwardCache) -> None:
    keyring = dns.tsigkeyring.from_text({"k.": "c2VjcmV0c2VjcmV0c2VjcmV0"})
    q = query()
    q.use_tsig(keyring, keyname="k.")
    signed_query = q.to_wire()
    assert cache_key(signed_query) is None  # not a shape the cache knows
    plain = query()
    r = dns.message.make_response(plain)
    r.answer.append(dns.rrset.from_text(plain.question[0].name, 300, "IN", "A", "192.0.2.7"))
    r.use_tsig(keyring, keyname="k.")
    assert not cache.store(plain.to_wire(), r.to_wire())


def test_edns_options_of_the_upstream_are_not_replayed(cache: ForwardCache) -> None:
    cookie = dns.edns.GenericOption(dns.edns.COOKIE, b"c" * 8 + b"s" * 16)
    q = query(use_edns=0, payload=1232)
    r = dns.message.make_response(q)
    r.use_edns(0, payload=4096, options=[cookie])
    r.answer.append(dns.rrset.from_text(q.question[0].name, 300, "IN", "A", "192.0.2.7"))
    assert cache.store(q.to_wire(), r.to_wire())
    got = served(cache, query(use_edns=0, payload=1232))
    assert got.edns == 0 and not got.options and got.payload == 1232


def test_the_query_bits_that_change_an_answer_are_part_of_the_key(
    cache: ForwardCache,
) -> None:
    plain = query()
    assert cache.store(plain.to_wire(), answer_to(plain, "192.0.2.1"))
    assert missed(cache, query(use_edns=0))  # with an OPT record
    assert missed(cache, query(want_dnssec=True))  # DO
    cd = query()
    cd.flags |= dns.flags.CD
    assert missed(cache, cd)
    assert missed(cache, query(rdtype="AAAA"))
    assert missed(cache, query("www.example.org"))
    assert [rd.to_text() for rd in served(cache, query()).answer[0]] == ["192.0.2.1"]


def test_big_answers_only_to_clients_that_take_them(cache: ForwardCache) -> None:
    q = query(use_edns=0, payload=4096)
    many = [f"192.0.2.{i}" for i in range(1, 61)]
    assert cache.store(q.to_wire(), answer_to(q, *many))
    assert len(served(cache, query(use_edns=0, payload=4096)).answer[0]) == 60
    assert missed(cache, query(use_edns=0, payload=512))  # over its buffer: forwarded
    assert len(served(cache, query(use_edns=0, payload=512), udp=False).answer[0]) == 60


# ---------------------------------------------------------------------- bounds, flush


def test_bounded_in_entries_with_a_second_chance_for_hits(clock: Clock) -> None:
    cache = ForwardCache(clock=clock, max_entries=3)
    qs = [query(f"n{i}.example.com") for i in range(5)]
    for q in qs[:3]:
        assert cache.store(q.to_wire(), answer_to(q, "192.0.2.1"))
    served(cache, qs[0])  # hit: survives the next eviction once
    cache.store(qs[3].to_wire(), answer_to(qs[3], "192.0.2.1"))
    assert len(cache) == 3
    assert missed(cache, qs[1])  # the oldest one not hit
    served(cache, qs[0])
    cache.store(qs[4].to_wire(), answer_to(qs[4], "192.0.2.1"))
    assert len(cache) == 3 and missed(cache, qs[2])
    assert cache.stats["evicted"] == 2


def test_bounded_in_bytes(clock: Clock) -> None:
    cache = ForwardCache(clock=clock, max_bytes=4096)
    for i in range(40):
        q = query(f"n{i}.example.com")
        cache.store(q.to_wire(), answer_to(q, "192.0.2.1"))
    assert 0 < len(cache) < 40
    assert cache.bytes <= 4096
    assert not missed(cache, query("n39.example.com"))
    big = query("big.example.com", use_edns=0, payload=4096)
    assert not cache.store(
        big.to_wire(), answer_to(big, *[f"192.0.2.{i}" for i in range(1, 200)])
    )  # one answer over the whole budget is not kept at all


def test_flushed_when_the_upstreams_change(
    cache: ForwardCache, clock: Clock, servers: Servers
) -> None:
    q = query()
    assert cache.store(q.to_wire(), answer_to(q, "192.0.2.7"), servers.current)
    servers.current = ("127.0.0.2",)
    assert not missed(cache, q)  # looked at once a second, not per query
    clock.now += 1.0
    assert missed(cache, q) and len(cache) == 0
    # an answer from the old upstream that arrives after the change is not kept
    assert not cache.store(q.to_wire(), answer_to(q, "192.0.2.7"), ("127.0.0.1",))
    assert cache.store(q.to_wire(), answer_to(q, "192.0.2.8"), ("127.0.0.2",))


def test_flush(cache: ForwardCache) -> None:
    q = query()
    cache.store(q.to_wire(), answer_to(q, "192.0.2.7"))
    cache.flush()
    assert missed(cache, q) and cache.bytes == 0


def test_an_old_upstreams_answer_never_lands_after_another_threads_flush(
    clock: Clock, servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dual-stack host's two servers share one cache (four threads). Thread X stores an
    answer it got from the old upstreams; between X's look at the upstreams and X's
    insert, thread Y sees them change and flushes. The answer must not survive Y's
    flush (it would be served for up to its TTL from upstreams that are gone)."""
    cache = ForwardCache(clock=clock, servers=servers)
    q = query("race.example")
    real = _cache.CacheEntry

    def built_while_another_thread_flushes(*args: object) -> object:
        entry = real(*args)  # type: ignore[arg-type]
        servers.current = ("127.0.0.2",)
        clock.now += 1.0
        other = threading.Thread(target=cache.check_upstreams)
        other.start()
        other.join(5)
        assert not other.is_alive()
        return entry

    monkeypatch.setattr(_cache, "CacheEntry", built_while_another_thread_flushes)
    assert not cache.store(q.to_wire(), answer_to(q, "192.0.2.7"), ("127.0.0.1",))
    assert len(cache) == 0 and cache.bytes == 0 and cache.stats["flushes"] == 1
    monkeypatch.setattr(_cache, "CacheEntry", real)
    assert missed(cache, q)
    assert cache.store(q.to_wire(), answer_to(q, "192.0.2.8"), ("127.0.0.2",))
    assert [rd.to_text() for rd in served(cache, q).answer[0]] == ["192.0.2.8"]


def test_threads_storing_reading_and_flushing_keep_the_books(clock: Clock) -> None:
    """Four threads (two servers' UDP and TCP threads) store, read and flush one cache at
    once: whatever the interleaving, the byte count and the bounds hold and every answer
    served parses and answers the question asked."""
    cache = ForwardCache(max_entries=40, max_bytes=40 * 400, clock=clock)
    names = [query(f"n{i}.example") for i in range(60)]
    answers = [answer_to(q, f"192.0.2.{i % 250 + 1}") for i, q in enumerate(names)]
    errors: list[str] = []

    def work(seed: int) -> None:
        try:
            for k in range(1500):
                i = (seed * 7 + k * 13) % len(names)
                q = names[i]
                if k % 3 == 0:
                    cache.store(q.to_wire(), answers[i])
                elif k % 97 == seed:
                    cache.flush()
                else:
                    wire = q.to_wire()
                    ck = cache_key(wire)
                    assert ck is not None
                    out = cache.answer(ck[0], wire, ck[1])
                    if out is not None:
                        r = dns.message.from_wire(out)
                        assert r.question[0].name == q.question[0].name
                        assert [rd.to_text() for rd in r.answer[0]] == [f"192.0.2.{i % 250 + 1}"]
        except Exception as exc:  # reported below, with the thread's seed
            errors.append(f"thread {seed}: {exc!r}")

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert errors == []
    assert len(cache) <= 40
    assert cache.bytes == sum(e.cost for e in cache.entries.values()) <= 40 * 400


# ---------------------------------------------------------------------- behind the resolver


@pytest.fixture
def reg() -> Registry:
    r = Registry()
    r.configure(
        local_clients={GW}, subnets=[ipaddress.ip_network("10.231.0.0/24")], default_network="n1"
    )
    r.register("a", "web", [ipaddress.ip_address(A_IP)], [], ["n1"])
    r.register("b", "db", [ipaddress.ip_address(B_IP)], [], ["n2"], internal_networks=["n2"])
    return r


@pytest.fixture
def res(reg: Registry, cache: ForwardCache) -> Resolver:
    return Resolver(reg, ttl=60, is_local=lambda ip: False, cache=cache)


def resolve(res: Resolver, q: dns.message.Message, client: str = A_IP) -> bytes | int | None:
    return res.resolve(q.to_wire(), client)


def test_resolver_serves_repeated_external_names_from_the_cache(
    res: Resolver, reg: Registry, cache: ForwardCache
) -> None:
    q = query("ext.example.com")
    assert isinstance(resolve(res, q), int)  # first: forward
    cache.store(q.to_wire(), answer_to(q, "192.0.2.7"))
    reg.register("z", "zzz", [ipaddress.ip_address("10.231.0.9")], [], ["n9"])  # new views
    for _ in range(3):  # slow path, then the templates' FORWARD marker: both read the cache
        again = query("ext.example.com")
        out = resolve(res, again)
        assert isinstance(out, bytes)
        r = dns.message.from_wire(out)
        assert r.id == again.id and [rd.to_text() for rd in r.answer[0]] == ["192.0.2.7"]
    assert isinstance(resolve(res, query("other.example.com")), int)  # not cached: forward


def test_replayed_answers_still_count_down_expire_and_go_with_a_flush(
    res: Resolver, cache: ForwardCache, clock: Clock, servers: Servers
) -> None:
    """The resolver keeps what the cache served for the exact query bytes (a replay):
    the same bytes again are answered from it, but never with a stale TTL, past the
    entry's life, or after the entry left the cache."""
    q = query("ext.example.com")
    wire = q.to_wire()
    assert isinstance(res.resolve(wire, A_IP), int)
    cache.store(wire, answer_to(q, "192.0.2.7", ttl=100))

    def ttl_now() -> int | None:
        out = res.resolve(wire, A_IP)
        if not isinstance(out, bytes):
            return None
        r = dns.message.from_wire(out)
        assert r.id == q.id
        return r.answer[0].ttl

    assert [ttl_now() for _ in range(3)] == [100, 100, 100]  # the last two: replays
    clock.now += 1.0
    assert ttl_now() == 99
    clock.now += 98.5
    assert ttl_now() == 1
    clock.now += 0.5
    assert ttl_now() is None  # expired: forwarded again
    cache.store(wire, answer_to(q, "192.0.2.8", ttl=100))
    assert ttl_now() == 100 and ttl_now() == 100
    cache.flush()
    assert ttl_now() is None
    cache.store(wire, answer_to(q, "192.0.2.9", ttl=100))
    assert ttl_now() == 100 and ttl_now() == 100
    cache.store(wire, answer_to(q, "192.0.2.10", ttl=50))  # replaced: the new one only
    r = dns.message.from_wire(res.resolve(wire, A_IP))  # type: ignore[arg-type]
    assert [rd.to_text() for rd in r.answer[0]] == ["192.0.2.10"]
    servers.current = ("127.0.0.9",)
    clock.now += 1.0
    assert ttl_now() is None  # the upstreams changed: gone


def test_a_replay_is_not_used_once_a_look_at_the_upstreams_is_due(
    res: Resolver, cache: ForwardCache, clock: Clock, servers: Servers
) -> None:
    q = query("ext.example.com")
    wire = q.to_wire()
    assert isinstance(res.resolve(wire, A_IP), int)
    clock.now += 0.5  # the answer's age turns at .5, the look at the upstreams is due at .0
    cache.store(wire, answer_to(q, "192.0.2.7"), servers.current)
    assert isinstance(res.resolve(wire, A_IP), bytes)
    assert isinstance(res.resolve(wire, A_IP), bytes)  # a replay now
    servers.current = ("127.0.0.9",)
    clock.now += 0.7  # same age (0), but the upstreams are looked at: changed, so gone
    assert isinstance(res.resolve(wire, A_IP), int)


def test_container_names_win_over_cached_upstream_answers(
    res: Resolver, reg: Registry, cache: ForwardCache
) -> None:
    q = query("api")
    assert isinstance(resolve(res, q), int)
    assert cache.store(q.to_wire(), answer_to(q, "192.0.2.66"))
    assert isinstance(resolve(res, query("api")), bytes)  # from the cache, until...
    reg.register("c", "api", [ipaddress.ip_address("10.231.0.7")], [], ["n1"])
    r = dns.message.from_wire(resolve(res, query("api")))  # type: ignore[arg-type]
    assert [rd.to_text() for rd in r.answer[0]] == ["10.231.0.7"] and r.flags & dns.flags.AA


def test_cache_never_answers_internal_or_unknown_clients(
    res: Resolver, cache: ForwardCache
) -> None:
    q = query("ext.example.com")
    assert cache.store(q.to_wire(), answer_to(q, "192.0.2.7"))
    assert isinstance(resolve(res, query("ext.example.com")), bytes)  # A_IP forwards
    for client in (B_IP, STRANGER):  # internal-only, unknown
        for _ in range(2):
            out = resolve(res, query("ext.example.com"), client)
            assert isinstance(out, bytes)
            r = dns.message.from_wire(out)
            assert r.rcode() == dns.rcode.REFUSED and not r.answer, client


def test_reverse_names_of_the_container_subnet_are_never_taken_from_the_cache(
    res: Resolver, cache: ForwardCache
) -> None:
    name = "77.0.231.10.in-addr.arpa."
    q = query(name, "PTR")
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text(name, 300, "IN", "PTR", "evil.example."))
    cache.store(q.to_wire(), r.to_wire())  # even if an answer got in somehow
    got = dns.message.from_wire(resolve(res, query(name, "PTR")))  # type: ignore[arg-type]
    assert got.rcode() == dns.rcode.NXDOMAIN and not got.answer


# ---------------------------------------------------------------------- fuzz


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tail=st.binary(max_size=120),
    cut=st.integers(0, 80),
    flip=st.integers(0, 2000),
    age=st.integers(0, 400),
)
def test_random_answers_never_raise_and_what_is_served_parses(
    tail: bytes, cut: int, flip: int, age: int
) -> None:
    clock = Clock()
    cache = ForwardCache(clock=clock)
    q = query("fuzz.example.com", use_edns=0)
    base = bytearray(answer_to(q, "192.0.2.7", soa=60) + tail)
    if cut:
        del base[-cut:]
    if base:
        base[flip % len(base)] ^= 1 << (flip % 8)
    parse_answer(bytes(base), len(q.to_wire()) - 11, True, 86400, 3600)
    if cache.store(q.to_wire(), bytes(base)):
        clock.now += age
        again = query("fuzz.example.com", use_edns=0)
        wire = again.to_wire()
        ck = cache_key(wire)
        assert ck is not None
        out = cache.answer(ck[0], wire, ck[1])
        if out is not None:  # what upstream said, with the asker's ID, TTLs counted down
            assert out[:2] == wire[:2] and len(out) <= len(base)  # (EDNS options dropped)
            try:
                original = dns.message.from_wire(bytes(base))
            except dns.exception.DNSException:
                return  # garbage in: the same garbage out, never worse
            got = dns.message.from_wire(out)
            assert got.answer == original.answer and got.rcode() == original.rcode()


def test_parse_answer_clamps_and_normalises() -> None:
    q = query(use_edns=0)
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text(q.question[0].name, 999999, "IN", "A", "192.0.2.7"))
    parsed = parse_answer(r.to_wire(), len(q.to_wire()) - 11, True, 86400, 3600)
    assert parsed is not None
    wire, offsets, ttl_values, lifetime = parsed
    assert wire[:2] == b"\x00\x00" and lifetime == 86400 and ttl_values == (86400,)
    assert len(offsets) == 1
    assert dns.message.from_wire(bytes(wire)).answer[0].ttl == 86400


def test_a_replay_patches_its_ttls_and_looks_at_the_upstreams_itself(
    cache: ForwardCache, clock: Clock, servers: Servers
) -> None:
    """A steady stream of repeats stays on the shortest path: when the age turns, the
    replay patches its TTLs; when a look at the upstreams is due, it takes it; only an
    expired, replaced or flushed entry (upstreams changed) sends the caller back."""
    q = query("ext.example.com")
    wire = q.to_wire()
    cache.store(wire, answer_to(q, "192.0.2.7", ttl=100), servers.current)
    keyed = cache_key(wire)
    assert keyed is not None
    got = cache.lookup(keyed[0], wire, keyed[1])
    assert got is not None
    _out, replay = got

    def ttl(tail: bytes | None) -> int:
        assert tail is not None
        r = dns.message.from_wire(wire[:2] + tail)
        assert [rd.to_text() for rd in r.answer[0]] == ["192.0.2.7"]
        return r.answer[0].ttl

    assert ttl(replay.get(clock.now)) == 100
    clock.now += 1.2  # the age turned and the look at the upstreams is due: still a replay
    assert ttl(replay.get(clock.now)) == 99
    clock.now += 57.0
    assert ttl(replay.get(clock.now)) == 42
    servers.current = ("127.0.0.9",)
    clock.now += 1.0
    assert replay.get(clock.now) is None  # the upstreams changed: flushed
