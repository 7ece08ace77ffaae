"""The host watch on a real kernel: nf_tables and link notifications in a throwaway netns."""

from __future__ import annotations

import queue
import subprocess
from collections.abc import Iterator

import pytest

from nyx_core.testing import Netns
from nyx_core.testing._netns import entered
from nyx_plugins_native._nft import nft_context
from nyx_plugins_native._watch import HostWatch, own_netlink_ports

pytestmark = pytest.mark.kernel

OURS = ("ip", "nyxw")


@pytest.fixture
def ns() -> Iterator[Netns]:
    n = Netns.create("watch")
    try:
        with entered(n):
            yield n
    finally:
        n.delete()


@pytest.fixture
def watch(ns: Netns) -> Iterator[tuple[HostWatch, queue.Queue[tuple[str, str]]]]:
    calls: queue.Queue[tuple[str, str]] = queue.Queue()
    w = HostWatch(
        lambda: {OURS},
        lambda: {"nyxwb0"},
        lambda why: calls.put(("ruleset", why)),
        lambda name: calls.put(("link", name)),
        debounce=0.01,
    )
    w.start()
    try:
        yield w, calls
    finally:
        w.stop()


def foreign(ns: Netns, text: str) -> None:
    ns.run(["nft", text])


def test_own_batches_are_not_foreign_changes(ns: Netns, watch) -> None:  # type: ignore[no-untyped-def]
    w, calls = watch
    ctx = nft_context()
    ctx.run_text("add table ip nyxw; add chain ip nyxw c; add table ip other", "own")
    assert own_netlink_ports(), "libnftables' socket is one of ours"
    # foreign changes elsewhere, then one in our table: the first report names that one
    foreign(ns, "add chain ip other x")
    foreign(ns, "delete chain ip nyxw c")
    kind, why = calls.get(timeout=10)
    assert kind == "ruleset" and why.startswith("delchain in table ip nyxw"), why
    assert w.alive


def test_flush_ruleset_and_table_delete_are_seen(ns: Netns, watch) -> None:  # type: ignore[no-untyped-def]
    _w, calls = watch
    nft_context().run_text("add table ip nyxw; add chain ip nyxw c", "own")
    foreign(ns, "flush ruleset")
    assert calls.get(timeout=10)[0] == "ruleset"
    nft_context().run_text("add table ip nyxw", "own")
    foreign(ns, "delete table ip nyxw")
    kind, why = calls.get(timeout=10)
    assert kind == "ruleset" and "table ip nyxw" in why


def test_a_flood_of_unrelated_changes_reports_nothing(ns: Netns, watch) -> None:  # type: ignore[no-untyped-def]
    w, calls = watch
    script = "add table ip busy\n" + "".join(
        f"add chain ip busy c{i}\ndelete chain ip busy c{i}\n" for i in range(300)
    )
    for _ in range(5):  # five transactions of 600 changes each, none in our table
        subprocess.run(
            ["ip", "netns", "exec", ns.name, "nft", "-f", "-"], input=script, text=True, check=True
        )
        script = script.replace("add table ip busy\n", "")
    foreign(ns, "add table ip nyxw")  # the marker: the first report must be this one
    kind, why = calls.get(timeout=10)
    assert kind == "ruleset" and why.startswith("newtable in table ip nyxw"), why
    assert calls.empty() and w.reapplied == 1


def test_deleted_bridge_is_reported_by_name(ns: Netns, watch) -> None:  # type: ignore[no-untyped-def]
    _w, calls = watch
    for name in ("other0", "nyxwb0"):
        ns.run(["ip", "link", "add", name, "type", "bridge"])
    ns.run(["ip", "link", "del", "other0"])
    ns.run(["ip", "link", "del", "nyxwb0"])
    assert calls.get(timeout=10) == ("link", "nyxwb0")
