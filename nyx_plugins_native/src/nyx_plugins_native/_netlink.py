"""Netlink through pyroute2, in the calling thread's network namespace.

Sockets are opened in the calling thread's namespace for each operation (pyroute2 0.9
binds its sockets to the thread that uses them). Container-side work opens a socket inside
the container namespace by switching the calling thread there with
``setns`` for the few microseconds the ``socket()`` call takes; no process is forked.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError as PyrNetlinkError

from nyx_core.errors import NetlinkError

__all__ = [
    "LinkExists",
    "LinkInfo",
    "configure_container",
    "create_veth",
    "delete_link",
    "ensure_bridge",
    "host_ipr",
    "in_netns",
]

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextmanager
def in_netns(path: str) -> Iterator[None]:
    """Run the block with the calling thread inside the netns at ``path``."""
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise NetlinkError(f"container netns {path!r} cannot be opened: {exc.strerror}") from exc
    orig = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            _setns(target)
        except OSError as exc:
            raise NetlinkError(f"setns into {path!r} failed: {exc.strerror}") from exc
        try:
            yield
        finally:
            _setns(orig)
    finally:
        os.close(target)
        os.close(orig)


@contextmanager
def host_ipr() -> Iterator[Any]:
    """An ``IPRoute`` of the calling thread's netns, closed after the block.

    pyroute2 0.9 keeps its socket and event loop per thread, so a socket is never shared
    between threads (concurrent setups each open their own; opening costs ~0.5 ms).
    """
    ipr = IPRoute(groups=0)  # no multicast subscriptions: only our own replies to parse
    try:
        yield ipr
    finally:
        ipr.close()


def _fail(what: str, exc: PyrNetlinkError) -> NetlinkError:
    return NetlinkError(f"{what}: {os.strerror(exc.code) if exc.code else exc}")


class LinkExists(NetlinkError):
    """The host-side veth name is taken (a leftover of a crashed setup)."""


class LinkInfo:
    __slots__ = ("index", "kind", "mtu")

    def __init__(self, index: int, mtu: int, kind: str) -> None:
        self.index = index
        self.mtu = mtu
        self.kind = kind


def get_link(ipr: Any, name: str) -> LinkInfo | None:
    try:
        msg = ipr.link("get", ifname=name)[0]
    except PyrNetlinkError as exc:
        if exc.code == errno.ENODEV:
            return None
        raise _fail(f"link {name!r} lookup failed", exc) from exc
    kind = ""
    linkinfo = msg.get_attr("IFLA_LINKINFO")
    if linkinfo is not None:
        kind = linkinfo.get_attr("IFLA_INFO_KIND") or ""
    return LinkInfo(msg["index"], msg.get_attr("IFLA_MTU") or 1500, kind)


def random_mac() -> str:
    b = bytearray(os.urandom(6))
    b[0] = (b[0] & 0xFE) | 0x02  # unicast, locally administered
    return ":".join(f"{x:02x}" for x in b)


def ensure_bridge(ipr: Any, name: str, gateway: ipaddress.IPv4Interface) -> LinkInfo:
    """Create (or complete) the bridge ``name`` with ``gateway`` and bring it up."""
    link = get_link(ipr, name)
    if link is None:
        try:
            ipr.link("add", ifname=name, kind="bridge", address=random_mac())
        except PyrNetlinkError as exc:
            if exc.code in (errno.EOPNOTSUPP, errno.EAFNOSUPPORT):
                raise NetlinkError(
                    f"cannot create bridge {name!r}: the kernel has no bridge support "
                    "(CONFIG_BRIDGE; load it with `modprobe bridge`)"
                ) from exc
            if exc.code != errno.EEXIST:
                raise _fail(f"cannot create bridge {name!r}", exc) from exc
        link = get_link(ipr, name)
        if link is None:
            raise NetlinkError(f"bridge {name!r} vanished right after creation")
    elif link.kind != "bridge":
        raise NetlinkError(
            f"interface {name!r} exists but is a {link.kind or 'plain'} link, not a bridge: "
            "pick another bridge name (NYXD_BRIDGE)"
        )
    have = {
        (a.get_attr("IFA_ADDRESS"), a["prefixlen"])
        for a in ipr.addr("dump", index=link.index, family=2)
    }
    if (str(gateway.ip), gateway.network.prefixlen) not in have:
        try:
            ipr.addr(
                "add",
                index=link.index,
                address=str(gateway.ip),
                prefixlen=gateway.network.prefixlen,
            )
        except PyrNetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise _fail(f"cannot add {gateway} to bridge {name!r}", exc) from exc
    try:
        ipr.link("set", index=link.index, state="up")
    except PyrNetlinkError as exc:
        raise _fail(f"cannot bring bridge {name!r} up", exc) from exc
    return link


def create_veth(
    ipr: Any,
    host_name: str,
    bridge_index: int,
    mtu: int,
    netns_fd: int,
    peer_name: str,
    mac: str,
) -> None:
    """veth ``host_name`` on the bridge, its peer created directly in the container netns."""
    try:
        ipr.link(
            "add",
            ifname=host_name,
            kind="veth",
            mtu=mtu,
            master=bridge_index,
            state="up",
            peer={"ifname": peer_name, "net_ns_fd": netns_fd, "address": mac, "mtu": mtu},
        )
    except PyrNetlinkError as exc:
        if exc.code == errno.EEXIST:
            raise LinkExists(host_name) from exc
        if exc.code == errno.EOPNOTSUPP:
            raise NetlinkError(
                "cannot create a veth pair: the kernel has no veth support "
                "(CONFIG_VETH; load it with `modprobe veth`)"
            ) from exc
        raise _fail(f"cannot create veth {host_name!r} (peer {peer_name!r})", exc) from exc


def configure_container(
    netns_path: str,
    ifname: str,
    address: ipaddress.IPv4Interface,
    gateway: ipaddress.IPv4Address | None,
) -> None:
    """Inside the container netns: ``lo`` up, address on ``ifname``, up, default route."""
    with in_netns(netns_path):
        ipr = IPRoute(groups=0)
    try:
        step = f"{ifname} lookup"
        try:
            idx = ipr.link("get", ifname=ifname)[0]["index"]
            step = "lo up"
            ipr.link("set", index=1, state="up")
            step = f"address {address} on {ifname}"
            ipr.addr("add", index=idx, address=str(address.ip), prefixlen=address.network.prefixlen)
            step = f"{ifname} up"
            ipr.link("set", index=idx, state="up")
            if gateway is not None:
                step = f"default route via {gateway}"
                try:
                    ipr.route("add", dst="0.0.0.0/0", gateway=str(gateway), oif=idx)
                except PyrNetlinkError as exc:
                    # a second network: the first one's default route stays
                    if exc.code != errno.EEXIST or ifname == "eth0":
                        raise
        except PyrNetlinkError as exc:
            raise _fail(f"container netns {netns_path!r}: {step} failed", exc) from exc
    finally:
        ipr.close()


def delete_link(ipr: Any, name: str) -> bool:
    """Delete a link; False when it did not exist."""
    try:
        ipr.link("del", ifname=name)
    except PyrNetlinkError as exc:
        if exc.code == errno.ENODEV:
            return False
        raise _fail(f"cannot delete link {name!r}", exc) from exc
    return True
