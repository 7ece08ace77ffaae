"""What the CNI driver keeps per container, and the small helpers its parts share."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nyx_core import NyxError

from ._cache import CacheEntry
from ._conf import LOOPBACK_NETWORK, NetworkConfig, parse_version

__all__ = [
    "Attachment",
    "GcReport",
    "Progress",
    "cni_args",
    "is_netns",
    "pair_order",
    "port_keys",
    "same_file",
    "ver",
]


@dataclass
class GcReport:
    """What :meth:`CniDriver.gc` did."""

    removed: list[str] = field(default_factory=list)
    """Container ids whose stale attachments were deleted (DEL with the cached result)."""
    gc_plugins: list[str] = field(default_factory=list)
    """Plugins that got a spec 1.1 ``GC`` command."""
    rules: list[str] = field(default_factory=list)
    """Tags of ``inet nyx-cni`` rules deleted (``internal`` attachments of gone containers)."""
    errors: list[NyxError] = field(default_factory=list)


@dataclass
class Attachment:
    """A container's attachments: its published ports, (network, ifname) pairs in the order
    they were added, its netns held open, whether it has ``internal`` rules of its own."""

    keys: list[tuple[str, str | None, int]]
    pairs: list[tuple[str, str]]
    fd: int | None = None
    fw: bool = False
    configs: dict[str, NetworkConfig] = field(default_factory=dict)
    """Per network, the configuration to ADD with when it is not the network's own."""


@dataclass
class Progress:
    net: NetworkConfig
    version: str
    ifname: str
    entry: CacheEntry
    tried: int = 0
    prev: dict[str, Any] | None = None


def ver(v: str) -> tuple[int, int, int]:
    return parse_version(v)


def pair_order(pair: tuple[str, str]) -> tuple[bool, int, str]:
    """Order of attachments rebuilt from the cache: ``lo`` first, then eth0, eth1, ..."""
    network, ifname = pair
    return network != LOOPBACK_NETWORK, len(ifname), ifname


def is_netns(path: str) -> bool:
    """True when ``path`` is a network namespace (an nsfs inode, like ``/proc/self/ns/net``);
    False for a missing path and for the plain file a crash leaves where a netns bind mount
    was."""
    try:
        return os.stat(path).st_dev == os.stat("/proc/self/ns/net").st_dev
    except OSError:
        return False


def same_file(fd1: int, fd2: int) -> bool:
    a, b = os.fstat(fd1), os.fstat(fd2)
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def cni_args(container_id: str) -> list[list[str]]:
    """The ``CNI_ARGS`` pairs nyx passes: podman's convention, the container id as pod name
    (dnsname registers that name)."""
    return [["IgnoreUnknown", "1"], ["K8S_POD_NAME", container_id]]


def port_keys(mappings: Iterable[Mapping[str, Any]]) -> list[tuple[str, str | None, int]]:
    keys = []
    for m in mappings:
        ip = m.get("hostIP") or None
        if ip in ("0.0.0.0", "::"):
            ip = None
        keys.append((str(m.get("protocol", "tcp")).lower(), ip, int(m["hostPort"])))
    return keys
