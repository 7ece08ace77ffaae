"""Published ports as intervals (issue 11 item 11) and subnets that would take the host's
traffic (item 6), without root: the pure logic, the network registry with a given host
view, and the supervisor with the fakes of test_supervisor."""

from __future__ import annotations

import ipaddress
import itertools
import random
from pathlib import Path
from typing import Any

import pytest
import test_supervisor as ts
from pydantic import ValidationError
from test_supervisor import Calls, make_sup, spec

from nyx_cli.daemon._models import ContainerSpec, NetworkAttachment
from nyx_cli.daemon._networks import NetworkRegistry
from nyx_cli.daemon._state import StateStore
from nyx_cli.daemon._supervisor import Supervisor
from nyx_cli.errors import ConflictError
from nyx_core import (
    ConfigError,
    HostView,
    NetworkBackend,
    NyxSettings,
    PortMapping,
    PortRange,
    find_port_clash,
    make_plugin_manager,
    port_ranges,
    runs_of_ports,
    subnet_host_conflict,
)
from nyx_core import _portset as ps
from nyx_core._hostnet import HostAddress, HostRoute, build_view, parse_fib_trie
from nyx_core.errors import PortConflictError

N = ipaddress.IPv4Network

# the fake driver, DNS and host of test_supervisor
calls, parts, sup = ts.calls, ts.parts, ts.sup


def pr(text: str, owner: str | None = None) -> PortRange:
    return port_ranges([PortMapping.parse(text)], owner)[0]


# ------------------------------------------------------------------ intervals


@pytest.mark.parametrize(
    ("a", "b", "clash"),
    [
        ("8000-8009:8000-8009", "8010-8019:8010-8019", False),  # adjacent
        ("8000-8010:8000-8010", "8010-8020:8010-8020", True),  # share 8010
        ("8000-9000:8000-9000", "8500:80", True),  # inside
        ("8500:80", "8000-9000:8000-9000", True),
        ("8080:80", "8080:80/udp", False),  # another protocol
        ("127.0.0.1:8080:80", "8080:80", True),  # specific vs every address
        ("8080:80", "127.0.0.1:8080:80", True),
        ("0.0.0.0:8080:80", "127.0.0.1:8080:80", True),  # 0.0.0.0 is every address
        ("127.0.0.1:8080:80", "127.0.0.2:8080:80", False),  # two specific addresses
        ("127.0.0.1:8080:80", "127.0.0.1:8080:80", True),
        ("[::1]:8080:80", "127.0.0.1:8080:80", False),
        ("[::]:8080:80", "127.0.0.1:8080:80", True),  # :: is every address
    ],
)
def test_two_intervals(a: str, b: str, clash: bool) -> None:
    assert (find_port_clash([pr(a)], [pr(b, "web")]) is not None) is clash
    # within one request: the same answer, reported as listed twice
    found = find_port_clash([pr(a), pr(b)])
    assert (found is not None) is clash
    if found is not None:
        assert ps.clash_message(*found).endswith("is listed twice in the port mappings")


def test_a_long_interval_seen_early_still_clashes() -> None:
    taken = [pr("1000-5000:1000-5000", "a"), pr("2000-2001:2000-2001", "b")]
    clash = find_port_clash([pr("4000:80")], taken)
    assert clash is not None and clash[1].owner == "a"
    # a specific address behind an every-address interval of another owner
    taken = [pr("1000-5000:1000-5000", "a"), pr("127.0.0.1:3000-3001:3000-3001", "b")]
    clash = find_port_clash([pr("127.0.0.1:4000:80")], taken)
    assert clash is not None and clash[1].owner == "a"


def test_clashes_among_taken_are_not_ours() -> None:
    taken = [pr("8080:80", "a"), pr("8080:80", "b")]
    assert find_port_clash([pr("9090:80")], taken) is None


def test_messages_name_the_first_shared_port_and_the_owner() -> None:
    with pytest.raises(PortConflictError) as exc:
        ps.check_port_clash([pr("8000-8100:8000-8100")], [pr("127.0.0.1:8050-9000:1-951", "web")])
    assert str(exc.value) == "host port 127.0.0.1:8050/tcp is already published by container 'web'"


def test_runs_of_ports_merge_consecutive_ports() -> None:
    ports = [(None, "tcp", p) for p in range(10000, 20000)] + [("0.0.0.0", "tcp", 20000)]
    ports += [("127.0.0.1", "tcp", 5), ("127.0.0.1", "tcp", 7), (None, "udp", 10000)]
    assert runs_of_ports(ports, "x") == [
        PortRange("tcp", None, 10000, 20000, "x"),
        PortRange("udp", None, 10000, 10000, "x"),
        PortRange("tcp", "127.0.0.1", 5, 5, "x"),
        PortRange("tcp", "127.0.0.1", 7, 7, "x"),
    ]


def _naive(new: list[PortRange], taken: list[PortRange]) -> bool:
    def meet(a: PortRange, b: PortRange) -> bool:
        same_ip = a.host_ip is None or b.host_ip is None or a.host_ip == b.host_ip
        return a.protocol == b.protocol and same_ip and a.first <= b.last and b.first <= a.last

    pairs = itertools.combinations(new, 2)
    return any(meet(a, b) for a, b in pairs) or any(meet(a, b) for a in new for b in taken)


def test_sweep_agrees_with_the_pairwise_definition() -> None:
    rnd = random.Random(11)
    for _ in range(2000):

        def one(owner: str | None) -> PortRange:
            first = rnd.randint(1, 60)
            return PortRange(
                rnd.choice(["tcp", "udp"]),
                rnd.choice([None, "127.0.0.1", "10.0.0.1"]),
                first,
                first + rnd.randint(0, 6),
                owner,
            )

        new = [one(None) for _ in range(rnd.randint(0, 4))]
        taken = [one(f"c{i}") for i in range(rnd.randint(0, 6))]
        assert (find_port_clash(new, taken) is not None) == _naive(new, taken), (new, taken)


def test_the_sweep_looks_at_each_interval_once_whatever_its_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    looked: list[PortRange] = []
    meeting = ps._Reach.meeting

    def spy(self: Any, r: PortRange) -> PortRange | None:
        looked.append(r)
        return meeting(self, r)

    monkeypatch.setattr(ps._Reach, "meeting", spy)
    new = [pr("30000-39999:30000-39999")]
    taken = [pr("10000-19999:10000-19999", "a"), pr("20000-29999:20000-29999", "b")]
    assert find_port_clash(new, taken) is None
    # one look per interval for the new one, at most two (mine, theirs) for each other
    assert len(looked) <= 2 * len(new) + len(taken)


# ------------------------------------------------------------------ the supervisor


@pytest.fixture
def wide_sup(tmp_path: Path, parts: dict[str, Any], calls: Calls) -> Supervisor:
    """A supervisor whose limit lets 10000-port ranges through."""
    sup = make_sup(tmp_path, parts, calls)
    sup.settings = sup.settings.model_copy(update={"max_published_ports": 65535})
    return sup


def test_every_port_is_refused_naming_the_setting(sup: Supervisor, calls: Calls) -> None:
    with pytest.raises(ConfigError) as exc:
        sup.create(spec(ports=[PortMapping.parse("1-65535:1-65535")]))
    text = str(exc.value)
    assert "1-65535:1-65535/tcp" in text and "65535 host ports" in text
    assert "max_published_ports=1024" in text and "NYXD_MAX_PUBLISHED_PORTS" in text
    assert sup.list_containers(all=True) == [] and "setup" not in calls.names()
    # the limit counts every mapping of the container together
    many = [PortMapping.parse(f"{p}-{p + 99}:{p}-{p + 99}") for p in range(20000, 21100, 100)]
    with pytest.raises(ConfigError, match="1100 host ports"):
        sup.create(spec(ports=many))
    sup.create(spec(ports=many[:10]))


def test_default_limit_and_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    assert NyxSettings().max_published_ports == 1024
    monkeypatch.setenv("NYXD_MAX_PUBLISHED_PORTS", "20000")
    assert NyxSettings().max_published_ports == 20000


def test_ranges_are_checked_as_intervals(
    wide_sup: Supervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nyx_cli.daemon._supervisor as supmod

    seen: list[tuple[int, int]] = []
    real = supmod.find_port_clash

    def spy(new: Any, taken: Any = ()) -> Any:
        taken = list(taken)
        seen.append((len(new), len(taken)))
        return real(new, taken)

    monkeypatch.setattr(supmod, "find_port_clash", spy)
    wide_sup.create(spec(name="a", ports=[PortMapping.parse("10000-19999:10000-19999")]))
    wide_sup.create(spec(name="b", ports=[PortMapping.parse("20000-29999:20000-29999/udp")]))
    with pytest.raises(ConflictError, match=r"host port 19999/tcp .*'a'"):
        wide_sup.create(spec(name="c", ports=[PortMapping.parse("19999-29998:19999-29998")]))
    wide_sup.create(spec(name="d", ports=[PortMapping.parse("20000-29999:20000-29999")]))
    # one interval per mapping, never one per port; of the running containers' mappings
    # only those that overlap one of the new ones ("a" for "c"; neither "a" nor the udp "b"
    # for "d"): a start does not pay an interval for everything else that runs
    assert seen[1::2] == [(1, 0), (1, 0), (1, 1), (1, 0)]  # at start (create checks alone)


def test_a_port_listed_twice_is_a_config_error(sup: Supervisor) -> None:
    ports = [PortMapping.parse("8000-8010:8000-8010"), PortMapping.parse("127.0.0.1:8010:80")]
    with pytest.raises(ConfigError, match="127.0.0.1:8010/tcp is listed twice"):
        sup.create(spec(ports=ports), start=False)


# ------------------------------------------------------------------ host routes


ROUTE = """\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
uplink\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
uplink\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
nyxt0\t00E70A0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
tun0\t00000000\t00000000\t0001\t0\t0\t0\t00000080\t0\t0\t0
tun0\t00000080\t00000000\t0001\t0\t0\t0\t00000080\t0\t0\t0
*\t000012C6\t00000000\t0001\t0\t0\t0\t0000FEFF\t0\t0\t0
"""

FIB_TRIE = """\
Id 52:
  |-- 100.64.0.0
     /10 link UNICAST
Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     |-- 0.0.0.0
        /1 link UNICAST
     |-- 128.0.0.0
        /1 link UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     |-- 10.10.231.0
        /24 link UNICAST
     |-- 10.10.231.1
        /32 host LOCAL
     +-- 192.0.0.0/4 2 0 1
        +-- 192.0.2.0/24 2 0 2
           +-- 192.0.2.0/30 2 0 2
              |-- 192.0.2.0
                 /24 link UNICAST
              |-- 192.0.2.2
                 /32 host LOCAL
           |-- 192.0.2.255
              /32 link BROADCAST
        |-- 198.18.0.0
           /15 universe BLACKHOLE
        |-- 203.0.113.9
           /32 host LOCAL
Local:
  +-- 0.0.0.0/0 3 0 5
     |-- 192.0.2.2
        /32 host LOCAL
     |-- 192.0.2.255
        /32 link BROADCAST
"""


@pytest.fixture
def view() -> HostView:
    return build_view(ROUTE, FIB_TRIE)


def test_parse_fib_trie_tables() -> None:
    entries = parse_fib_trie(FIB_TRIE)
    assert ("52", N("100.64.0.0/10"), "UNICAST") in entries
    assert ("main", N("198.18.0.0/15"), "BLACKHOLE") in entries
    assert ("local", N("192.0.2.2/32"), "LOCAL") in entries


def test_the_view_has_routes_with_devices_and_addresses(view: HostView) -> None:
    assert sorted(str(r) for r in view.routes) == [
        "10.10.231.0/24 dev nyxt0",
        "100.64.0.0/10 table 52",
        "192.0.2.0/24 dev uplink",
        "blackhole 198.18.0.0/15",
    ]
    assert sorted(str(a) for a in view.addresses) == [
        "10.10.231.1 (nyxt0)",
        "127.0.0.0/8",
        "127.0.0.1",
        "192.0.2.2 (uplink)",
        "203.0.113.9",
    ]


@pytest.mark.parametrize(
    ("subnet", "reason"),
    [
        ("192.0.2.0/24", "contains host address 192.0.2.2 (uplink)"),
        ("192.0.2.128/25", "overlaps the host route 192.0.2.0/24 dev uplink"),
        ("192.0.0.0/16", "contains host address 192.0.2.2 (uplink)"),
        ("203.0.113.8/30", "contains host address 203.0.113.9"),
        ("100.100.0.0/16", "overlaps the host route 100.64.0.0/10 table 52"),
        ("198.19.0.0/24", "overlaps the host route blackhole 198.18.0.0/15"),
        ("127.1.0.0/16", "overlaps 127.0.0.0/8 (loopback)"),
        ("169.254.169.0/24", "overlaps 169.254.0.0/16 (link-local"),
        ("224.0.0.0/24", "overlaps 224.0.0.0/4 (multicast)"),
        ("10.89.0.0/24", None),  # inside only the default and the 0/1 + 128/1 pair
        ("192.0.3.0/24", None),  # next to the uplink
    ],
)
def test_subnet_host_conflict(view: HostView, subnet: str, reason: str | None) -> None:
    got = subnet_host_conflict(N(subnet), view)
    if reason is None:
        assert got is None
    else:
        assert got is not None and got.startswith(reason), got


def test_nyx_bridges_are_not_host_routes(view: HostView) -> None:
    assert subnet_host_conflict(N("10.10.231.0/24"), view) is not None
    assert subnet_host_conflict(N("10.10.231.0/24"), view, ignore_devs={"nyxt0"}) is None


def _registry(tmp_path: Path, view: HostView) -> tuple[NetworkRegistry, StateStore]:
    settings = NyxSettings(
        state_dir=tmp_path / "state",
        container_subnet="10.231.0.0/24",
        gateway_ip="10.231.0.1",
    )
    store = StateStore(settings.state_dir)
    pm = make_plugin_manager()
    pm.register(ts.FakeBackend(Calls()))
    pm.register(ts.FakeCapabilities("fake"))
    backend = NetworkBackend(pm, "fake")
    return NetworkRegistry(settings, store, backend, host_view=lambda: view), store


def test_registry_refuses_a_subnet_of_the_host_and_records_nothing(tmp_path: Path) -> None:
    view = HostView(
        routes=(HostRoute(N("192.0.2.0/24"), "eth0"),),
        addresses=(HostAddress(N("192.0.2.2/32"), "eth0"),),
    )
    reg, store = _registry(tmp_path, view)
    before = reg.list()
    with pytest.raises(ConfigError) as exc:
        reg.create("evil", subnet="192.0.2.0/24")
    assert (
        str(exc.value)
        == "network 'evil': subnet 192.0.2.0/24 contains host address 192.0.2.2 (eth0)"
    )
    with pytest.raises(ConfigError) as exc:
        reg.create("evil", subnet="192.0.2.128/25")
    assert str(exc.value) == (
        "network 'evil': subnet 192.0.2.128/25 overlaps the host route 192.0.2.0/24 dev eth0"
    )
    with pytest.raises(ConfigError, match="loopback"):
        reg.create("evil", subnet="127.0.0.0/24")
    assert reg.list() == before and store.load_networks() == {}


def test_registry_pool_skips_what_the_host_uses(tmp_path: Path) -> None:
    view = HostView(routes=(HostRoute(N("10.89.0.0/23"), "eth1"),))
    reg, _store = _registry(tmp_path, view)
    assert reg.create("a")["subnet"] == "10.89.2.0/24"
    # the check against other nyx networks still comes first (409)
    with pytest.raises(ConflictError, match="overlaps 10.89.2.0/24"):
        reg.create("b", subnet="10.89.2.0/25")


def test_supervisor_network_create_reads_the_host(sup: Supervisor) -> None:
    sup.networks.host_view = lambda: HostView(routes=(HostRoute(N("192.0.2.0/24"), "eth0"),))
    with pytest.raises(ConfigError, match="overlaps the host route 192.0.2.0/24 dev eth0"):
        sup.create_network("evil", subnet="192.0.2.0/25")
    assert [n["name"] for n in sup.list_networks()] == ["nyx"]


# ------------------------------------------------------------------ no subnet from a container


def test_a_container_cannot_bring_its_own_subnet() -> None:
    with pytest.raises(ValidationError, match="joins existing networks only"):
        ContainerSpec(image="x", networks=[{"name": "evil", "subnet": "192.0.2.1/24"}])
    with pytest.raises(ValidationError, match="joins existing networks only"):
        NetworkAttachment.model_validate({"name": "evil", "subnet": "192.0.2.1/24"})
    # a record stored by an older nyxd (subnet: null) still loads
    att = NetworkAttachment.model_validate({"name": "back", "subnet": None})
    assert att == NetworkAttachment(name="back") and "subnet" not in att.model_dump()


def test_a_container_joins_only_networks_that_exist(sup: Supervisor, calls: Calls) -> None:
    from nyx_cli.errors import NotFoundError

    with pytest.raises(NotFoundError, match="no such network: evil"):
        sup.create(spec(networks=[NetworkAttachment(name="evil")]))
    assert "setup" not in calls.names()
