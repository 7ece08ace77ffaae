"""IPAM and the lease file, without root."""

from __future__ import annotations

import ipaddress
import threading
from pathlib import Path

import pytest

from nyx_core import IpamError
from nyx_plugins_native import StateStore, allocate

NET = ipaddress.IPv4Network("10.231.0.0/29")  # .1-.6 usable
GW = ipaddress.IPv4Address("10.231.0.1")


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
        ("10.231.0.3", "already leased"),
    ],
)
def test_static_refused(static: str, word: str) -> None:
    with pytest.raises(IpamError, match=word) as info:
        allocate(NET, GW, ["10.231.0.3"], static=ipaddress.IPv4Address(static))
    assert static in str(info.value)


def test_static_honoured() -> None:
    ip = ipaddress.IPv4Address("10.231.0.5")
    assert allocate(NET, GW, ["10.231.0.2"], static=ip) == ip


def test_concurrent_allocations_under_the_file_lock(tmp_path: Path) -> None:
    net = ipaddress.IPv4Network("10.231.0.0/24")
    gw = ipaddress.IPv4Address("10.231.0.1")
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            store = StateStore(tmp_path)  # every caller opens its own lock fd
            with store.locked() as st:
                used = [a["ip"] for a in st["attachments"].values()]
                ip = allocate(net, gw, used, after=st["cursor"].get("n"))
                st["attachments"][f"c{i}/n"] = {"ip": str(ip), "network": "n", "container": f"c{i}"}
                st["cursor"]["n"] = str(ip)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    ips = [a["ip"] for a in StateStore(tmp_path).snapshot()["attachments"].values()]
    assert len(ips) == len(set(ips)) == 50


def test_failed_block_writes_nothing(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    with pytest.raises(RuntimeError), store.locked() as st:
        st["attachments"]["x/n"] = {"ip": "10.0.0.2", "container": "x", "network": "n"}
        raise RuntimeError("crash between allocation and use")
    assert store.snapshot()["attachments"] == {}


@pytest.mark.parametrize("which", ["networks", "attachment"])
def test_corrupt_lease_file_is_a_clear_error(tmp_path: Path, which: str) -> None:
    store = StateStore(tmp_path)
    store.adir.mkdir(parents=True)
    bad = store.netfile if which == "networks" else store.adir / "c@n.json"
    bad.write_text("{not json")
    with pytest.raises(IpamError, match="corrupt") as info:
        StateStore(tmp_path).snapshot()
    assert str(bad) in str(info.value)


def test_one_file_per_attachment_and_other_writers_are_seen(tmp_path: Path) -> None:
    a, b = StateStore(tmp_path), StateStore(tmp_path)  # e.g. two processes
    with a.locked() as st:
        st["attachments"]["c1/n"] = {"ip": "10.0.0.2", "container": "c1", "network": "n"}
    assert (a.adir / "c1@n.json").exists()
    with b.locked() as st:
        assert set(st["attachments"]) == {"c1/n"}
        st["attachments"]["c2/n"] = {"ip": "10.0.0.3", "container": "c2", "network": "n"}
        del st["attachments"]["c1/n"]
    assert set(a.snapshot()["attachments"]) == {"c2/n"}
    assert sorted(p.name for p in a.adir.iterdir()) == ["c2@n.json"]
