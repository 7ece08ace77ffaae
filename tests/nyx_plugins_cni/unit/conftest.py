"""Unit-test fakes at nyx's boundary: the ``nft`` and ``ip`` binaries the CNI driver runs.

Autouse, so no unit test ever runs the real ``nft`` or ``ip`` on the host (and a plain
file stands for a network namespace): the driver's
:class:`~nyx_plugins_cni._firewall.InternalFirewall` gets :class:`FakeNft` (which keeps a
table in memory and understands exactly the batches the driver writes) and
:class:`~nyx_plugins_cni._networks.HostLinks` gets :class:`FakeLinks`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Sequence

import pytest

from nyx_plugins_cni import _driver, _firewall, _networks

_ADD = re.compile(r'^add rule inet nyx-cni forward (?P<rule>.*) comment (?P<comment>".*")$')
_DEL = re.compile(r"^delete rule inet nyx-cni forward handle (?P<handle>\d+)$")


class FakeNft:
    """The ``inet nyx-cni`` table in memory; every call is recorded in ``calls``."""

    def __init__(self) -> None:
        self.table = False
        self.rules: list[tuple[int, str, str]] = []  # (handle, rule, comment)
        self.next_handle = 2
        self.calls: list[tuple[list[str], str | None]] = []
        self.fail_apply: str | None = None

    def ruleset(self) -> list[str]:
        """``<rule> # <comment>`` lines, in chain order."""
        return [f"{rule} # {comment}" for _h, rule, comment in self.rules]

    def __call__(self, argv: Sequence[str], stdin: str | None) -> tuple[int, str, str]:
        args = list(argv[1:])
        self.calls.append((args, stdin))
        if args == ["-j", "list", "table", "inet", "nyx-cni"]:
            if not self.table:
                return 1, "", "Error: No such file or directory\nlist table inet nyx-cni\n"
            objs: list[object] = [{"table": {"family": "inet", "name": "nyx-cni"}}]
            objs += [
                {"rule": {"chain": "forward", "handle": h, "comment": c}} for h, _r, c in self.rules
            ]
            return 0, json.dumps({"nftables": objs}), ""
        if args == ["-f", "-"] and stdin is not None:
            if self.fail_apply:
                return 1, "", self.fail_apply
            self._apply(stdin)
            return 0, "", ""
        raise AssertionError(f"unexpected nft call {args}")

    def _apply(self, batch: str) -> None:
        for line in (x.strip() for x in batch.splitlines()):
            if line.startswith(("table inet nyx-cni {", "chain forward {")) or line in ("}", ""):
                self.table = True
            elif line == "delete table inet nyx-cni":
                self.table, self.rules = False, []
            elif m := _DEL.match(line):
                self.rules = [r for r in self.rules if r[0] != int(m["handle"])]
            elif m := _ADD.match(line):
                assert self.table
                self.rules.append((self.next_handle, m["rule"], json.loads(m["comment"])))
                self.next_handle += 1
            else:
                raise AssertionError(f"unexpected nft batch line {line!r}")


class FakeLinks:
    """Host links by name -> kind; ``deleted`` records ``ip link delete``; ``addrs6``
    holds the IPv6 addresses of ``ip -6 -j addr show dev``, ``addr_calls`` records ``ip
    addr del/add``, ``sysctls`` the sysctl writes."""

    def __init__(self) -> None:
        self.links: dict[str, str] = {}
        self.ports: dict[str, list[str]] = {}
        self.deleted: list[str] = []
        self.addrs6: dict[str, list[dict[str, object]]] = {}
        self.addr_calls: list[tuple[str, ...]] = []
        self.sysctls: list[tuple[str, str]] = []

    def sysctl(self, key: str, value: str) -> None:
        self.sysctls.append((key, value))

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        def done(rc: int, out: str = "") -> subprocess.CompletedProcess[str]:
            return subprocess.CompletedProcess(["ip", *args], rc, out, "")

        if args[:4] == ("-d", "-j", "link", "show"):
            name = args[-1]
            if name not in self.links:
                return done(1)
            return done(
                0, json.dumps([{"ifname": name, "linkinfo": {"info_kind": self.links[name]}}])
            )
        if args[:3] == ("-j", "link", "show"):
            return done(0, json.dumps([{"ifname": p} for p in self.ports.get(args[-1], [])]))
        if args[:4] == ("-6", "-j", "addr", "show"):
            return done(0, json.dumps([{"addr_info": self.addrs6.get(args[-1], [])}]))
        if args[:2] in (("addr", "del"), ("addr", "add")):
            self.addr_calls.append(args)
            return done(0)
        if args[:3] == ("link", "delete", "dev"):
            self.deleted.append(args[3])
            self.links.pop(args[3], None)
            return done(0)
        raise AssertionError(f"unexpected ip call {args}")


@pytest.fixture(autouse=True)
def fake_nft(monkeypatch: pytest.MonkeyPatch) -> FakeNft:
    nft = FakeNft()
    monkeypatch.setattr(_firewall, "_run", nft)
    monkeypatch.setattr(_firewall.InternalFirewall, "binary", lambda self: "/usr/sbin/nft")
    return nft


@pytest.fixture(autouse=True)
def fake_links(monkeypatch: pytest.MonkeyPatch) -> FakeLinks:
    links = FakeLinks()
    monkeypatch.setattr(_networks.HostLinks, "_ip", links)
    monkeypatch.setattr(_networks.HostLinks, "_sysctl", links.sysctl)
    return links


@pytest.fixture(autouse=True)
def any_file_is_a_netns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake plugins never enter the namespace: a plain file stands for one."""
    monkeypatch.setattr(_driver, "is_netns", os.path.exists)
