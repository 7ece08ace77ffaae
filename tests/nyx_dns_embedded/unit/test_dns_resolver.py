"""Resolver logic on raw packets: answers, NXDOMAIN vs NODATA, PTR, scoping, EDNS, TC,
the hot-path cache, and what gets forwarded."""

from __future__ import annotations

import ipaddress

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import pytest

from nyx_dns_embedded._records import Registry
from nyx_dns_embedded._resolver import FORWARD, Resolver, question_shape

GW = "10.231.0.1"
A_IP = "10.231.0.2"  # container "web" on n1
B_IP = "10.231.0.3"  # container "db" on n2
STRANGER = "10.231.0.99"
HOST_LAN = "192.0.2.2"  # another address of the host (uplink, LAN): local


class FakeLocal:
    """Stands in for the kernel question "is this address the host's?"; records calls."""

    def __init__(self, *local: str) -> None:
        self.local = set(local)
        self.asked: list[str] = []

    def __call__(self, ip: str) -> bool:
        self.asked.append(ip)
        return ip in self.local


@pytest.fixture
def reg() -> Registry:
    r = Registry()
    r.configure(
        local_clients={GW}, subnets=[ipaddress.ip_network("10.231.0.0/24")], default_network="n1"
    )
    r.register("a", "web", [ipaddress.ip_address(A_IP)], ["www"], ["n1"])
    r.register("b", "db", [ipaddress.ip_address(B_IP)], [], ["n2"])
    return r


@pytest.fixture
def local() -> FakeLocal:
    return FakeLocal(HOST_LAN)


@pytest.fixture
def res(reg: Registry, local: FakeLocal) -> Resolver:
    return Resolver(reg, ttl=60, is_local=local)


def ask(
    res: Resolver,
    name: str,
    rdtype: str = "A",
    client: str = A_IP,
    *,
    udp: bool = True,
    **kw: object,
) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, **kw)  # type: ignore[arg-type]
    out = res.resolve(q.to_wire(), client, udp)
    assert isinstance(out, bytes), f"expected an answer, got {out!r}"
    r = dns.message.from_wire(out)
    assert r.id == q.id
    return r


def addresses(r: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in r.answer for rd in rrset)


def test_a_for_hostname_alias_and_fqdn(res: Resolver) -> None:
    for name in ("web", "web.nyxd.local", "www", "www.nyxd.local."):
        r = ask(res, name)
        assert r.rcode() == dns.rcode.NOERROR
        assert r.flags & dns.flags.AA and r.flags & dns.flags.QR
        assert addresses(r) == [A_IP]
        assert r.answer[0].ttl == 60


def test_case_insensitive_and_question_case_echoed(res: Resolver) -> None:
    for _ in range(3):  # first slow path, then the cached template
        r = ask(res, "WeB.NyXd.LoCaL")
        assert addresses(r) == [A_IP]
        assert r.question[0].name.to_text() == "WeB.NyXd.LoCaL."
        assert r.answer[0].name.to_text() == "WeB.NyXd.LoCaL."


def test_rd_bit_echoed_from_the_cache(res: Resolver) -> None:
    ask(res, "web")
    r = ask(res, "web")
    assert r.flags & dns.flags.RD
    q = dns.message.make_query("web", "A")
    q.flags &= ~dns.flags.RD
    out = res.resolve(q.to_wire(), A_IP)
    assert isinstance(out, bytes)
    assert not dns.message.from_wire(out).flags & dns.flags.RD


def test_aaaa_of_known_name_without_v6_is_nodata(res: Resolver) -> None:
    r = ask(res, "web.nyxd.local", "AAAA")
    assert r.rcode() == dns.rcode.NOERROR
    assert r.answer == []
    assert r.authority and r.authority[0].rdtype == dns.rdatatype.SOA


def test_other_types_of_known_name_are_nodata(res: Resolver) -> None:
    r = ask(res, "web", "MX")
    assert r.rcode() == dns.rcode.NOERROR and r.answer == []


def test_unknown_name_under_nyxd_local_is_nxdomain(res: Resolver) -> None:
    r = ask(res, "nope.nyxd.local")
    assert r.rcode() == dns.rcode.NXDOMAIN
    assert r.flags & dns.flags.AA
    assert r.authority[0].rdtype == dns.rdatatype.SOA


def test_aaaa_answered_for_v6_addresses(reg: Registry, res: Resolver) -> None:
    reg.register("c", "six", [ipaddress.ip_address("fd00::6"), "10.231.0.6"], [], ["n1"])
    assert addresses(ask(res, "six", "AAAA")) == ["fd00::6"]
    assert addresses(ask(res, "six", "A")) == ["10.231.0.6"]
    assert addresses(ask(res, "six", "ANY")) == ["10.231.0.6", "fd00::6"]


def test_ptr_for_container_ips(res: Resolver) -> None:
    r = ask(res, "2.0.231.10.in-addr.arpa", "PTR")
    assert [rd.to_text() for rrset in r.answer for rd in rrset] == ["web.nyxd.local."]
    # db is on another network: its address is ours (never forwarded) but not visible
    assert ask(res, "3.0.231.10.in-addr.arpa", "PTR").rcode() == dns.rcode.NXDOMAIN
    # unregistered address inside the container subnet: NXDOMAIN, not forwarded
    assert ask(res, "77.0.231.10.in-addr.arpa", "PTR").rcode() == dns.rcode.NXDOMAIN


def test_ptr_outside_our_addresses_is_forwarded(res: Resolver) -> None:
    q = dns.message.make_query("1.2.0.192.in-addr.arpa", "PTR")
    assert isinstance(res.resolve(q.to_wire(), A_IP), int)


def test_scoping_between_networks(res: Resolver) -> None:
    assert ask(res, "db.nyxd.local", client=A_IP).rcode() == dns.rcode.NXDOMAIN
    assert addresses(ask(res, "db.nyxd.local", client=B_IP)) == [B_IP]
    assert ask(res, "web.nyxd.local", client=B_IP).rcode() == dns.rcode.NXDOMAIN
    # a bare name nobody on the client's networks has goes upstream
    q = dns.message.make_query("db", "A")
    assert isinstance(res.resolve(q.to_wire(), A_IP), int)
    # the host (gateway) sees everything
    assert addresses(ask(res, "db", client=GW)) == [B_IP]
    assert addresses(ask(res, "web", client=GW)) == [A_IP]


def test_unknown_clients_are_refused(res: Resolver) -> None:
    assert ask(res, "web", client=STRANGER).rcode() == dns.rcode.REFUSED
    assert ask(res, "example.com", client=STRANGER).rcode() == dns.rcode.REFUSED


def test_host_sees_every_name_from_any_of_its_addresses(res: Resolver, local: FakeLocal) -> None:
    """Issue 11 item 1: a host query sourced from the uplink's address is the host."""
    assert addresses(ask(res, "web", client=HOST_LAN)) == [A_IP]
    assert addresses(ask(res, "db", client=HOST_LAN)) == [B_IP]
    q = dns.message.make_query("example.com", "A")
    assert isinstance(res.resolve(q.to_wire(), HOST_LAN), int)  # forwarded
    # a source that is not the host's stays refused
    assert ask(res, "web", client=STRANGER).rcode() == dns.rcode.REFUSED
    assert set(local.asked) == {HOST_LAN, STRANGER}


def test_host_ipv6_source_over_udp_must_ask_again_over_tcp(reg: Registry) -> None:
    """IPv6 has no martian-source check: a container can send UDP from the host's IPv6
    gateway. Such a source gets an empty TC answer over UDP (a resolver retries over TCP,
    whose handshake proves the source) and the host's view over TCP; ``::1`` (dropped by
    the kernel when it arrives from outside) and IPv4 host sources answer at once."""
    gw6, host6 = "2001:db8:231::1", "2001:db8:113::2"
    reg.register("c", "six", [ipaddress.ip_address("2001:db8:231::6")], [], ["n1"])
    reg.configure(local_clients={GW, "127.0.0.1", "::1"})
    res = Resolver(reg, ttl=60, is_local=FakeLocal(gw6, host6, HOST_LAN))
    for client in (gw6, host6):
        for name, rdtype in (("web", "A"), ("six", "AAAA"), ("example.com", "A")):
            for _ in range(2):  # the slow path, then the template cache
                r = ask(res, name, rdtype, client=client)
                assert r.flags & dns.flags.TC and r.rcode() == dns.rcode.NOERROR
                assert r.answer == [] and r.authority == []
        assert addresses(ask(res, "six", "AAAA", client=client, udp=False)) == ["2001:db8:231::6"]
        q = dns.message.make_query("example.com", "A").to_wire()
        assert isinstance(res.resolve(q, client, False), int)  # forwarded over TCP
        assert res.scope(client, udp=False).known  # the TCP accept check lets it in
        assert res.scope(client, udp=True).tcp_only  # the UDP thread's slow way: TC
    assert addresses(ask(res, "six", "AAAA", client="::1")) == ["2001:db8:231::6"]
    assert addresses(ask(res, "web", client=HOST_LAN)) == [A_IP]
    # a registered IPv6 container and a stranger are unchanged
    assert addresses(ask(res, "web", client="2001:db8:231::6")) == [A_IP]  # both on n1
    assert ask(res, "six", "AAAA", client="2001:db8:231::99").rcode() == dns.rcode.REFUSED


def test_registered_and_fixed_host_clients_never_ask_the_kernel(
    res: Resolver, local: FakeLocal
) -> None:
    for _ in range(3):
        ask(res, "web", client=A_IP)
        ask(res, "db", client=B_IP)
        ask(res, "web", client=GW)
    assert res.scope(A_IP, udp=True).known and res.scope(GW, udp=True).known
    assert local.asked == []


def test_other_names_are_forwarded_with_question_end(res: Resolver) -> None:
    q = dns.message.make_query("Example.COM", "A").to_wire()
    for _ in range(2):  # slow path, then the FORWARD marker from the cache
        out = res.resolve(q, A_IP)
        assert out == len(q)
    scope = res.scope(A_IP, udp=True)
    assert FORWARD in scope.cache0.values()


def test_internal_network_clients_get_refused_instead_of_forwarding(
    reg: Registry, res: Resolver
) -> None:
    reg.set_network_internal("n1", True)
    r = ask(res, "example.com")
    assert r.rcode() == dns.rcode.REFUSED
    assert not r.flags & dns.flags.RA
    assert addresses(ask(res, "web")) == [A_IP]  # container names still answered
    q = dns.message.make_query("example.com", "A")
    assert isinstance(res.resolve(q.to_wire(), B_IP), int)


def test_internal_for_one_registration_only(reg: Registry, res: Resolver) -> None:
    """Issue 11 item 5: internal for one container does not silence its network."""
    reg.register("c", "api", [ipaddress.ip_address("10.231.0.4")], [], ["n1"], ["n1"])
    q = dns.message.make_query("example.com", "A").to_wire()
    for _ in range(2):  # slow path, then whatever the scope's cache holds
        r = ask(res, "example.com", client="10.231.0.4")
        assert r.rcode() == dns.rcode.REFUSED and not r.flags & dns.flags.RA
        assert isinstance(res.resolve(q, A_IP), int)  # "web" on n1 still forwards
    assert addresses(ask(res, "web", client="10.231.0.4")) == [A_IP]
    assert addresses(ask(res, "api", client=A_IP)) == ["10.231.0.4"]


def test_changes_take_effect_on_the_next_query(reg: Registry, res: Resolver) -> None:
    assert addresses(ask(res, "web")) == [A_IP]
    assert addresses(ask(res, "web")) == [A_IP]  # now cached
    reg.register("a", "web", [ipaddress.ip_address("10.231.0.20")], [], ["n1"])
    assert addresses(ask(res, "web", client="10.231.0.20")) == ["10.231.0.20"]
    reg.deregister("a")
    assert ask(res, "web.nyxd.local", client=GW).rcode() == dns.rcode.NXDOMAIN


def test_edns_is_echoed_and_cached_separately(res: Resolver) -> None:
    for _ in range(2):
        r = ask(res, "web", use_edns=0, payload=4096)
        assert r.edns == 0 and r.payload == 1232
        assert addresses(r) == [A_IP]
        plain = ask(res, "web")
        assert plain.edns == -1


def test_edns_with_options_is_answered(res: Resolver) -> None:
    cookie = dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"\x01" * 8)
    for _ in range(2):
        r = ask(res, "web", use_edns=0, options=[cookie])
        assert addresses(r) == [A_IP] and r.edns == 0


def test_bad_edns_version_is_badvers(res: Resolver) -> None:
    r = ask(res, "web", use_edns=1)
    assert r.rcode() == dns.rcode.BADVERS


def test_large_answer_sets_tc_on_udp_only(reg: Registry, res: Resolver) -> None:
    ips = [ipaddress.ip_address(f"10.231.0.{i}") for i in range(100, 160)]
    reg.register("big", "big", ips, [], ["n1"])
    r = ask(res, "big")
    assert r.flags & dns.flags.TC and r.answer == []
    r = ask(res, "big", udp=False)
    assert not r.flags & dns.flags.TC and len(addresses(r)) == 60
    r = ask(res, "big", use_edns=0, payload=4096)
    assert not r.flags & dns.flags.TC and len(addresses(r)) == 60
    r = ask(res, "big", use_edns=0, payload=600)
    assert r.flags & dns.flags.TC and r.edns == 0


def test_notimp_formerr_and_dropped_packets(res: Resolver) -> None:
    q = dns.message.make_query("web", "A")
    q.set_opcode(dns.opcode.STATUS)
    out = res.resolve(q.to_wire(), A_IP)
    assert isinstance(out, bytes)
    assert dns.message.from_wire(out).rcode() == dns.rcode.NOTIMP
    # two questions
    wire = bytearray(dns.message.make_query("web", "A").to_wire())
    wire[5] = 2
    wire += wire[12:]
    out = res.resolve(bytes(wire), A_IP)
    assert isinstance(out, bytes) and out[3] & 0x0F == dns.rcode.FORMERR
    # a response is never answered (no loops), runts are dropped
    resp = dns.message.make_response(dns.message.make_query("web", "A")).to_wire()
    assert res.resolve(resp, A_IP) is None
    assert res.resolve(b"\x00\x01\x02", A_IP) is None
    # truncated question: FORMERR with the ID
    bad = dns.message.make_query("web", "A").to_wire()[:-3]
    out = res.resolve(bad, A_IP)
    assert isinstance(out, bytes) and out[:2] == bad[:2] and out[3] & 0x0F == dns.rcode.FORMERR


def test_question_shape() -> None:
    plain = dns.message.make_query("Web.X", "A").to_wire()
    shape = question_shape(plain)
    assert shape == (0, b"\x03web\x01x\x00\x00\x01\x00\x01", len(plain))
    edns = dns.message.make_query("web.x", "A", use_edns=0).to_wire()
    shape = question_shape(edns)
    assert shape is not None and shape[0] == 1 and shape[2] == len(edns) - 11
    assert question_shape(plain + b"\x00") is None  # trailing garbage
    assert question_shape(plain[:-1]) is None
    resp = dns.message.make_response(dns.message.make_query("web", "A")).to_wire()
    assert question_shape(resp) is None
    # qtype bytes that look like ASCII letters are not lower-cased (65 HTTPS vs 97)
    https = question_shape(dns.message.make_query("web", 65).to_wire())
    other = question_shape(dns.message.make_query("web", 97).to_wire())
    assert https is not None and other is not None and https[1] != other[1]


def test_cache_is_bounded(res: Resolver) -> None:
    for i in range(3000):
        q = dns.message.make_query(f"n{i}.nyxd.local", "A")
        res.resolve(q.to_wire(), A_IP)
    assert len(res.scope(A_IP, udp=True).cache0) <= 2048
