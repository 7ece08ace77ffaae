"""Throwaway network namespaces for tests (needs root and iproute2).

Tests never touch the root namespace: they create a "host" namespace where the driver
under test runs (:func:`entered` switches the calling thread into it with ``setns``) and
container namespaces, and delete them all afterwards.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import os
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PREFIX", "Netns", "entered", "leaked_namespaces", "new_name", "snapshot"]

PREFIX = "nyxt-"
_CLONE_NEWNET = 0x40000000
_counter = itertools.count()
_libc = ctypes.CDLL(None, use_errno=True)


def new_name(role: str) -> str:
    """A fresh test namespace name, ``nyxt-<role>-<pid>-<n>`` (what the leak check knows)."""
    return f"{PREFIX}{role}-{os.getpid()}-{next(_counter)}"


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@dataclass
class Netns:
    """A named namespace under /run/netns, created by :meth:`create`."""

    name: str

    @property
    def path(self) -> str:
        return f"/run/netns/{self.name}"

    @classmethod
    def create(cls, role: str = "ns") -> Netns:
        ns = cls(new_name(role))
        subprocess.run(["ip", "netns", "add", ns.name], check=True)
        ns.ip("link", "set", "lo", "up")
        return ns

    def delete(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], check=False, capture_output=True)

    def make_stale(self) -> None:
        """Unmount the namespace from :attr:`path`: the path stays, as a plain empty file
        that is no longer a namespace (what a host crash or reboot leaves under a runtime's
        netns directory). The namespace itself goes away with its last reference, and its
        links with it. :meth:`delete` still removes the file."""
        proc = subprocess.run(["umount", "--lazy", self.path], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"umount {self.path} failed: {proc.stderr.strip()}")

    def run(
        self, argv: Sequence[str], *, check: bool = True, timeout: float = 30, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside this namespace (``ip netns exec``)."""
        return subprocess.run(
            ["ip", "netns", "exec", self.name, *argv],
            check=check,
            text=True,
            capture_output=True,
            timeout=timeout,
            **kw,
        )

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "-n", self.name, *args], check=check, text=True, capture_output=True
        )

    def ipj(self, *args: str) -> Any:
        out = self.ip("-j", *args).stdout
        return json.loads(out) if out.strip() else []

    def sysctl(self, key: str, value: str | None = None) -> str:
        path = "/proc/sys/" + key.replace(".", "/")
        with entered(self):
            if value is not None:
                Path(path).write_text(value)
            return Path(path).read_text().strip()


@contextmanager
def entered(ns: Netns | str) -> Iterator[None]:
    """Switch the calling thread into ``ns`` and back. Threads started inside inherit it."""
    path = ns.path if isinstance(ns, Netns) else ns
    orig = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(path, os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(orig)
    finally:
        os.close(target)
        os.close(orig)


def _strip(obj: Any, drop: frozenset[str]) -> Any:
    if isinstance(obj, dict):
        return {k: _strip(v, drop) for k, v in obj.items() if k not in drop}
    if isinstance(obj, list):
        return [_strip(v, drop) for v in obj]
    return obj


def snapshot(ns: Netns) -> dict[str, Any]:
    """Links, addresses, routes (IPv4 and IPv6, but the kernel's ``fe80::/64`` of each
    link) and the nft ruleset of ``ns``, minus volatile fields.

    Two snapshots compare equal when nothing was left behind.
    """
    links = sorted(
        (link["ifname"], (link.get("linkinfo") or {}).get("info_kind", ""))
        for link in ns.ipj("-d", "link", "show")
    )
    addrs = sorted(
        (a["ifname"], f"{i['local']}/{i['prefixlen']}")
        for a in ns.ipj("addr", "show")
        for i in a.get("addr_info", [])
        if i.get("scope") != "link"
    )
    routes = sorted(
        (r.get("dst", ""), r.get("dev", ""), r.get("gateway", ""))
        for family in ("-4", "-6")
        for r in ns.ipj(family, "route", "show", "table", "all")
        if r.get("type", "unicast") == "unicast"
        and r.get("table") in (None, "main")
        and not r.get("dst", "").startswith("fe80:")  # each IPv6 link's own, by the kernel
    )
    nft = ns.run(["nft", "-j", "list", "ruleset"], check=False).stdout
    ruleset = json.loads(nft)["nftables"] if nft.strip() else []
    ruleset = _strip(ruleset, frozenset({"handle", "counter", "metainfo", "expires"}))
    return {"links": links, "addresses": addrs, "routes": routes, "nftables": ruleset}


def leaked_namespaces() -> list[str]:
    """Test namespaces of this process still present under /run/netns."""
    mine = f"-{os.getpid()}-"
    try:
        return sorted(n for n in os.listdir("/run/netns") if n.startswith(PREFIX) and mine in n)
    except FileNotFoundError:
        return []
