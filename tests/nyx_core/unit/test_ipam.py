"""nyx_core's IPAM helper for driver authors: allocate() and LeaseStore, without root."""

from __future__ import annotations

import ipaddress
import json
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


# ---------------------------------------------------------------- the in-memory index


def _scan(store: LeaseStore, network: str) -> set[str]:
    """The addresses of ``network`` read from the files by a store with no cache."""
    leases = LeaseStore(store.dir).leases(network)
    return {r[f] for r in leases.values() for f in ("ip", "ip6") if r.get(f)}


def test_two_stores_on_one_directory_never_hand_out_one_address(tmp_path: Path) -> None:
    """Two nyxd processes (or one restarted) on the same directory: each store's cached
    index sees the other's leases and releases, in any interleaving."""
    a, b = LeaseStore(tmp_path / "l"), LeaseStore(tmp_path / "l")
    got = [a.lease("a0", "n", NET, GW), b.lease("b0", "n", NET, GW)]
    got += [a.lease("a1", "n", NET, GW), b.lease("b1", "n", NET, GW)]
    assert len(set(got)) == 4
    assert a.release("b0") == [str(got[1])]  # a releases what b leased
    got += [b.lease("b2", "n", NET, GW), a.lease("a2", "n", NET, GW)]  # .6, then b0's
    assert len({str(ip) for ip in got[:1] + got[2:]}) == 5
    with pytest.raises(IpamError, match=r"10\.231\.0\.0/29 is exhausted \(5 leases\)"):
        b.lease("b3", "n", NET, GW)
    scanned = _scan(b, "n")
    with b.locked(write=False) as st:
        assert set(st.used("n")) == scanned
        assert sorted(st.owned("a1")) == ["a1/n"]
    # a restart: a new store reads the files and hands out nothing already leased
    again = LeaseStore(tmp_path / "l")
    assert again.release("a1") == [str(got[2])]
    assert a.lease("a3", "n", NET, GW) == got[2]


def test_a_lease_file_removed_behind_the_stores_back_is_free_again(tmp_path: Path) -> None:
    """Removed by hand (no generation bump), and even when the directory's modification
    time did not change (a coarse clock that did not tick since the store's last write):
    a refusal is checked against the files before it is made."""

    def remove(name: str) -> None:
        before = os.stat(store.rdir)
        (store.rdir / name).unlink()
        os.utime(store.rdir, ns=(before.st_atime_ns, before.st_mtime_ns))

    store = LeaseStore(tmp_path / "l")
    ips = [store.lease(f"c{i}", "n", NET, GW) for i in range(5)]  # the pool is full
    remove("c3@n.json")
    assert store.lease("x", "n", NET, GW) == ips[3]
    remove("c1@n.json")
    assert store.lease("y", "n", NET, GW, static=ips[1]) == ips[1]  # a static request too
    with pytest.raises(AddressInUseError, match=r"static_ip 10\.231\.0\.3 is already leased"):
        store.lease("z", "n", NET, GW, static=ips[1])
    with pytest.raises(IpamError, match=r"10\.231\.0\.0/29 is exhausted \(5 leases\)"):
        store.lease("z", "n", NET, GW)
    assert set(store.leases()) == {"c0/n", "c2/n", "c4/n", "x/n", "y/n"}


def test_a_lease_file_added_behind_the_stores_back_is_seen(tmp_path: Path) -> None:
    """The cache is checked against the records directory's modification time too."""
    store = LeaseStore(tmp_path / "l")
    store.lease("c0", "n", NET, GW)  # .2; the cursor is at .2
    rec = {"owner": "other", "network": "n", "ip": "10.231.0.3"}
    (store.rdir / "other@n.json").write_text(json.dumps(rec))
    st_ = os.stat(store.rdir)  # a later change: another mtime, whatever the clock's grain
    os.utime(store.rdir, ns=(st_.st_atime_ns, st_.st_mtime_ns + 1_000_000))
    assert store.lease("c1", "n", NET, GW) == ipaddress.IPv4Address("10.231.0.4")


def test_the_index_follows_every_change(tmp_path: Path) -> None:
    """Addresses, owners and tokens found through the index are what a scan of the records
    finds, after leases, releases, replaced and popped records and a failed block."""
    ports = lambda rec: [("port", p) for p in rec.get("ports", ())]  # noqa: E731
    store = LeaseStore(tmp_path / "l", index=ports)
    net = ipaddress.IPv4Network("10.231.0.0/24")
    for i in range(12):
        store.lease(f"c{i}", "n" if i % 3 else "m", net, GW, ports=[8000 + i % 4])
    store.release("c4")
    with store.locked() as st:
        st.records["c5/n"] = {**st.records["c5/n"], "ip": "10.231.0.200", "ports": [9000]}
        st.records.pop("c7/n")
        del st.records["c0/m"]
        st.records["legacy/n"] = {"container": "legacy", "network": "n", "ip": "10.231.0.201"}
        st.records["v6/n"] = {"owner": "v6", "network": "n", "ip6": "fd00:231::7"}
    with pytest.raises(RuntimeError), store.locked() as st:
        st.records["c1/n"] = {"owner": "c1", "network": "n", "ip": "10.231.0.250"}
        raise RuntimeError("boom")
    fresh = LeaseStore(tmp_path / "l").leases()
    with store.locked(write=False) as st:
        assert st.records == fresh
        for network in ("n", "m"):
            want = {
                r[f]
                for r in fresh.values()
                if r["network"] == network
                for f in ("ip", "ip6")
                if f in r
            }
            assert set(st.used(network)) == want
            assert all(ip in st.used(network) for ip in want)
            assert len(st.used(network)) == len(want)
        assert "10.231.0.250" not in st.used("n") and "10.231.0.2" not in st.used("m")
        assert st.owned("legacy") == {"legacy/n": fresh["legacy/n"]}
        assert st.owned("c4") == {} and st.owned("nobody") == {}
        for port in (8000, 8001, 8002, 8003, 9000):
            want_keys = {k for k, r in fresh.items() if port in r.get("ports", ())}
            assert st.find(("port", port)) == want_keys
    before = _scan(store, "m")
    assert str(store.lease("c1", "m", net, GW)) not in before


def test_used_addresses_is_a_collection_of_strings(tmp_path: Path) -> None:
    store = LeaseStore(tmp_path / "l")
    store.lease("c0", "n", NET6, GW6)
    store.lease("c1", "n", NET, GW)
    with store.locked(write=False) as st:
        used = st.used("n")
        assert sorted(used) == ["10.231.0.2", "fd00:231::2"]
        assert "fd00:231:0::2" in used and "10.231.0.3" not in used and "nope" not in used
        assert allocate(NET, GW, used) == ipaddress.IPv4Address("10.231.0.3")
        assert list(st.used("other")) == []
