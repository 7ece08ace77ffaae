"""nyx_core's IPAM helper for driver authors: allocate() and LeaseStore, without root."""

from __future__ import annotations

import ipaddress
import multiprocessing
import os
import stat
import threading
from pathlib import Path

import pytest

from nyx_core import AddressInUseError, IpamError, LeaseStore, allocate

NET = ipaddress.IPv4Network("10.231.0.0/29")  # .1-.6 usable
GW = ipaddress.IPv4Address("10.231.0.1")
NET6 = ipaddress.IPv6Network("fd00:231::/64")
GW6 = ipaddress.IPv6Address("fd00:231::1")


def test_never_network_gateway_or_broadcast() -> None:
    got: list[str] = []
    for _ in range(5):
        got.append(str(allocate(NET, GW, got)))
    assert got == ["10.231.0.2", "10.231.0.3", "10.231.0.4", "10.231.0.5", "10.231.0.6"]
    with pytest.raises(IpamError, match=r"10\.231\.0\.0/29 is exhausted"):
        allocate(NET, GW, got)


def test_round_robin_after_the_last_one_handed_out() -> None:
    assert str(allocate(NET, GW, [], after="10.231.0.4")) == "10.231.0.5"
    assert str(allocate(NET, GW, [], after="10.231.0.6")) == "10.231.0.2"
    assert str(allocate(NET, GW, ["10.231.0.5"], after="10.231.0.4")) == "10.231.0.6"
    assert str(allocate(NET, GW, [], after="garbage")) == "10.231.0.2"


@pytest.mark.parametrize(
    ("static", "word"),
    [
        ("10.231.0.1", "gateway"),
        ("10.231.0.0", "network or broadcast"),
        ("10.231.0.7", "network or broadcast"),
        ("10.9.0.2", "outside"),
        ("fd00::2", "outside"),
        ("10.231.0.3", "already leased"),
    ],
)
def test_static_refused_naming_the_address(static: str, word: str) -> None:
    with pytest.raises(IpamError, match=word) as info:
        allocate(NET, GW, ["10.231.0.3"], static=ipaddress.ip_address(static))
    assert static in str(info.value)


def test_ipv6_skips_the_anycast_and_gateway_and_scans_only_what_is_leased() -> None:
    assert allocate(NET6, GW6, []) == ipaddress.IPv6Address("fd00:231::2")
    used = [str(GW6 + i) for i in range(1, 500)]
    assert allocate(NET6, GW6, used) == GW6 + 500
    with pytest.raises(IpamError, match="subnet-router anycast"):
        allocate(NET6, GW6, [], static=NET6.network_address)
    last = NET6.broadcast_address
    assert allocate(NET6, GW6, [], static=last) == last  # no broadcast in IPv6


def test_leases_of_both_families_any_spelling_and_garbage() -> None:
    """A dual-stack network's leases mix both families: each allocation counts its own,
    in any spelling; something that is no address is a ValueError, as before."""
    used = ["10.231.0.2", "fd00:231:0::2", "FD00:231::3", "10.231.0.3"]
    assert allocate(NET6, GW6, used) == ipaddress.IPv6Address("fd00:231::4")
    assert allocate(NET, GW, used) == ipaddress.IPv4Address("10.231.0.4")
    with pytest.raises(AddressInUseError, match="already leased"):  # a conflict: nyxd's 409
        allocate(NET6, GW6, used, static=ipaddress.IPv6Address("fd00:231::3"))
    with pytest.raises(AddressInUseError, match="already leased"):
        allocate(NET, GW, used, static=ipaddress.IPv4Address("10.231.0.3"))
    with pytest.raises(ValueError, match="'nope'"):
        allocate(NET, GW, ["nope"])


def test_lease_release_and_reuse_on_a_tiny_subnet(tmp_path: Path) -> None:
    store = LeaseStore(tmp_path / "leases")
    ips = [store.lease(f"c{i}", "n", NET, GW) for i in range(5)]
    assert len(set(ips)) == 5
    with pytest.raises(IpamError, match="exhausted"):
        store.lease("c9", "n", NET, GW)
    with pytest.raises(IpamError, match="already has a lease"):
        store.lease("c0", "n", NET, GW)
    assert store.release("c2") == [str(ips[2])]
    assert store.release("c2") == []  # idempotent
    assert store.lease("c9", "n", NET, GW) == ips[2]  # the only free one
    # many cycles on a full pool: every release makes an address usable again
    for n in range(50):
        owner = f"c{n % 5 if n % 5 != 2 else 9}"
        freed = store.release(owner)
        assert store.lease(owner, "n", NET, GW) == ipaddress.ip_address(freed[0])
    assert len(store.leases("n")) == 5


def test_records_keep_extra_fields_and_survive_a_new_store(tmp_path: Path) -> None:
    LeaseStore(tmp_path / "l").lease("c1", "n", NET, GW, veth="nv1")
    again = LeaseStore(tmp_path / "l")
    (rec,) = again.leases().values()
    assert rec == {"owner": "c1", "network": "n", "ip": "10.231.0.2", "veth": "nv1"}
    with again.locked() as st:
        st.meta["networks"] = {"n": {"subnet": str(NET)}}
    assert LeaseStore(tmp_path / "l").locked(write=False).__enter__().meta == {
        "networks": {"n": {"subnet": str(NET)}}
    }


def test_files_are_private(tmp_path: Path) -> None:
    store = LeaseStore(tmp_path / "l")
    store.lease("c1", "n", NET, GW)
    for path in [store.dir, store.rdir, store.lockfile, *store.rdir.iterdir()]:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        assert mode & 0o077 == 0, f"{path} is {oct(mode)}"


def test_a_failing_block_writes_nothing(tmp_path: Path) -> None:
    store = LeaseStore(tmp_path / "l")
    with pytest.raises(RuntimeError), store.locked() as st:
        st.records["x/n"] = {"owner": "x", "network": "n", "ip": "10.231.0.2"}
        raise RuntimeError("boom")
    assert store.leases() == {}


def test_files_a_killed_writer_left_half_written_are_removed(tmp_path: Path) -> None:
    """A writer killed between writing a file and renaming it into place leaves ``.*.tmp``
    files; the next store to read the directory (under the flock) removes them."""
    store = LeaseStore(tmp_path / "l", meta_file="networks.json")
    store.lease("c1", "n", NET, GW)
    with store.locked() as st:
        st.meta["n"] = {"subnet": str(NET)}
    stale = [
        store.dir / ".networks.json.123.456.tmp",
        store.rdir / ".c1@n.json.123.456.tmp",
    ]
    for path in stale:
        path.write_text("{half")
    again = LeaseStore(tmp_path / "l", meta_file="networks.json")
    assert list(again.leases()) == ["c1/n"]
    assert [p for p in stale if p.exists()] == []
    assert sorted(p.name for p in store.rdir.iterdir()) == ["c1@n.json"]


def test_corrupt_record_is_a_clear_error(tmp_path: Path) -> None:
    store = LeaseStore(tmp_path / "l")
    store.lease("c1", "n", NET, GW)
    next(store.rdir.iterdir()).write_text("{not json")
    with pytest.raises(IpamError, match="corrupt"):
        LeaseStore(tmp_path / "l").leases()


def test_concurrent_threads_get_distinct_addresses(tmp_path: Path) -> None:
    net = ipaddress.IPv4Network("10.231.0.0/24")
    store = LeaseStore(tmp_path / "l")
    got: list[str] = []
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            got.append(str(store.lease(f"c{i}", "n", net, GW)))
        except BaseException as exc:  # asserted below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(got)) == 40


def _lease_in_child(path: str, owner: str, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    net = ipaddress.IPv4Network("10.231.0.0/24")
    ips = [str(LeaseStore(Path(path)).lease(f"{owner}-{i}", "n", net, GW)) for i in range(15)]
    out.put(ips)


def test_concurrent_processes_get_distinct_addresses(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_lease_in_child, args=(str(tmp_path / "l"), f"p{i}", out))
        for i in range(4)
    ]
    for p in procs:
        p.start()
    got = [ip for _ in procs for ip in out.get(timeout=30)]
    for p in procs:
        p.join(30)
    assert len(got) == len(set(got)) == 60
