"""Netlink in the calling thread's network namespace.

The rare, host-wide steps (creating a bridge) use pyroute2's ``IPRoute``; the per-container
hot path uses :class:`~nyx_plugins_native._rtnl.Rtnl`, pyroute2's message classes over a
plain socket, with several requests per ``send``. Sockets are opened per operation in the
namespace of the calling thread, so concurrent setups never share one. Container-side work
opens its socket inside the container namespace by switching the calling thread there with
``setns`` just for the ``socket()`` call; no process is forked.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import ipaddress
import os
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError as PyrNetlinkError
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from nyx_core.errors import NetlinkError

from ._kernel import set_sysctl, write_netns_sysctl
from ._rtnl import CREATE_EXCL, NEWADDR, NEWLINK, NEWROUTE, Rtnl, RtnlError

__all__ = [
    "LinkExists",
    "LinkInfo",
    "attach_port",
    "bridge_mac",
    "bridge_ports",
    "check_veth_support",
    "configure_container",
    "create_veth",
    "delete_link",
    "ensure_bridge",
    "get_link",
    "host_rtnl",
    "in_netns",
    "random_mac",
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
def host_rtnl() -> Iterator[Rtnl]:
    """An rtnetlink socket of the calling thread's netns, closed after the block."""
    try:
        rt = Rtnl()
    except OSError as exc:
        raise NetlinkError(f"cannot open a netlink socket: {exc.strerror}") from exc
    try:
        yield rt
    finally:
        rt.close()


def _fail(what: str, code: int) -> NetlinkError:
    return NetlinkError(f"{what}: {os.strerror(code)}")


class LinkExists(NetlinkError):
    """The host-side veth name is taken (a leftover of a crashed setup)."""


class LinkInfo:
    __slots__ = ("index", "kind", "mtu")

    def __init__(self, index: int, mtu: int, kind: str) -> None:
        self.index = index
        self.mtu = mtu
        self.kind = kind


def get_link(rt: Rtnl, name: str) -> LinkInfo | None:
    try:
        found = rt.get_link(name)
    except RtnlError as exc:
        raise _fail(f"link {name!r} lookup failed", exc.errno or 0) from exc
    return None if found is None else LinkInfo(*found)


def check_veth_support() -> None:
    """Ask the kernel for a veth with an invalid MTU: it says EOPNOTSUPP when veth is missing,
    EINVAL (from the veth driver's own validation, nothing created) when it is there."""
    msg = ifinfmsg()
    msg["attrs"] = [
        ("IFLA_IFNAME", "nyxprobe0"),
        ("IFLA_MTU", 1),
        ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "veth")]}),
    ]
    with host_rtnl() as rt:
        (err,) = rt.batch([(msg, NEWLINK, CREATE_EXCL)])
    if err == errno.EOPNOTSUPP:
        raise NetlinkError(
            "the kernel has no veth support (CONFIG_VETH; load it with `modprobe veth`; "
            "see docs/kernel-requirements.md)"
        )
    if err == 0:  # cannot happen with MTU 1; clean up anyway
        with host_rtnl() as rt:
            rt.del_link("nyxprobe0")


def random_mac() -> str:
    b = bytearray(os.urandom(6))
    b[0] = (b[0] & 0xFE) | 0x02  # unicast, locally administered
    return ":".join(f"{x:02x}" for x in b)


def bridge_mac(name: str) -> str:
    """The bridge's MAC, the same each time a bridge of that name is made: one recreated
    after a deletion answers its containers at the address their neighbour caches hold,
    so their traffic goes on at once instead of after the kernel's stale-entry probes."""
    b = bytearray(hashlib.sha256(b"nyx-bridge:" + name.encode()).digest()[:6])
    b[0] = (b[0] & 0xFE) | 0x02  # unicast, locally administered
    return ":".join(f"{x:02x}" for x in b)


def ensure_bridge(
    name: str,
    gateway: ipaddress.IPv4Interface,
    mtu: int | None = None,
    gateway6: ipaddress.IPv6Interface | None = None,
) -> LinkInfo:
    """Create (or complete) the bridge ``name`` with ``gateway`` and bring it up.

    ``mtu`` (None: the kernel's default, left as it is) is set as the user's MTU, so the
    bridge keeps it whatever its ports are; veths made later take the bridge's MTU.
    ``gateway6`` (a dual-stack network) is added ``nodad`` (usable at once: the DNS
    provider binds it at start), with IPv6 on and router advertisements ignored on the
    bridge (``accept_ra=0``: a container's advertisement never configures the host).

    A bridge made here has multicast snooping off: it floods multicast to every port as a
    plain switch does (what a snooping bridge without a querier on the segment ends up
    doing too, once its groups age out), and bringing a port up no longer walks every
    other port's multicast state (a port's setup grew with the number of ports). A bridge
    that exists already keeps its setting: it may be the administrator's.
    """
    with host_rtnl() as rt:
        link = get_link(rt, name)
    ipr: Any = IPRoute(groups=0)
    try:
        if link is None:
            try:
                ipr.link(
                    "add",
                    ifname=name,
                    kind="bridge",
                    address=bridge_mac(name),
                    br_mcast_snooping=0,
                )
            except PyrNetlinkError as exc:
                if exc.code in (errno.EOPNOTSUPP, errno.EAFNOSUPPORT):
                    raise NetlinkError(
                        f"cannot create bridge {name!r}: the kernel has no bridge support "
                        "(CONFIG_BRIDGE; load it with `modprobe bridge`)"
                    ) from exc
                if exc.code != errno.EEXIST:
                    raise _fail(f"cannot create bridge {name!r}", exc.code) from exc
            with host_rtnl() as rt:
                link = get_link(rt, name)
            if link is None:
                raise NetlinkError(f"bridge {name!r} vanished right after creation")
        elif link.kind != "bridge":
            raise NetlinkError(
                f"interface {name!r} exists but is a {link.kind or 'plain'} link, not a "
                "bridge: pick another bridge name (NYXD_BRIDGE)"
            )
        if mtu is not None and link.mtu != mtu:
            try:
                ipr.link("set", index=link.index, mtu=mtu)
            except PyrNetlinkError as exc:
                raise _fail(f"cannot set MTU {mtu} on bridge {name!r}", exc.code) from exc
            link = LinkInfo(link.index, mtu, link.kind)
        if gateway6 is not None:
            _ipv6_on(name)
            have6 = {
                (ipaddress.ip_address(a.get_attr("IFA_ADDRESS")), a["prefixlen"])
                for a in ipr.addr("dump", index=link.index, family=10)
            }
            if (gateway6.ip, gateway6.network.prefixlen) not in have6:
                msg = Rtnl.addr_msg(link.index, str(gateway6.ip), gateway6.network.prefixlen, None)
                with host_rtnl() as rt:
                    (err,) = rt.batch([(msg, NEWADDR, CREATE_EXCL)])
                if err and err != errno.EEXIST:
                    raise _fail(f"cannot add {gateway6} to bridge {name!r}", err)
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
                    raise _fail(f"cannot add {gateway} to bridge {name!r}", exc.code) from exc
        try:
            ipr.link("set", index=link.index, state="up")
        except PyrNetlinkError as exc:
            raise _fail(f"cannot bring bridge {name!r} up", exc.code) from exc
        return link
    finally:
        ipr.close()


def bridge_ports(bridges: Collection[str]) -> dict[str, str]:
    """Links enslaved to one of ``bridges`` in this netns: ``{port name: bridge name}``."""
    try:
        with Rtnl() as rt:
            links = rt.links()
    except RtnlError as exc:
        raise _fail("cannot list links", exc.errno or 0) from exc
    masters = {index: name for index, name, _m in links if name in bridges}
    return {name: masters[master] for _i, name, master in links if master in masters}


def _hairpin_msg(name: str) -> Any:
    """Up, and hairpin mode on the bridge port ``name`` (see :func:`create_veth`)."""
    up = Rtnl.up_msg(0, name)
    up["attrs"].append(
        (
            "IFLA_LINKINFO",
            {
                "attrs": [
                    ("IFLA_INFO_SLAVE_KIND", "bridge"),
                    ("IFLA_INFO_SLAVE_DATA", {"attrs": [("IFLA_BRPORT_MODE", 1)]}),
                ]
            },
        )
    )
    return up


def attach_port(rt: Rtnl, name: str, bridge_index: int) -> bool:
    """Enslave the existing link ``name`` to the bridge again (up, hairpin); False when
    the link is gone (its container's netns went with it)."""
    master = Rtnl.up_msg(0, name)
    master["attrs"].append(("IFLA_MASTER", bridge_index))
    (err,) = rt.batch([(master, NEWLINK, 0)])
    if err == errno.ENODEV:
        return False
    if err:
        raise _fail(f"cannot attach {name!r} to its bridge", err)
    (err,) = rt.batch([(_hairpin_msg(name), NEWLINK, 0)])  # needs the master set first
    if err:
        raise _fail(f"cannot set hairpin mode on {name!r}", err)
    return True


def create_veth(
    rt: Rtnl,
    host_name: str,
    bridge_index: int,
    mtu: int,
    netns_fd: int,
    peer_name: str,
    mac: str,
) -> None:
    """veth ``host_name`` on the bridge, its peer created directly in the container netns."""
    msg = Rtnl.veth_msg(host_name, bridge_index, mtu, peer_name, netns_fd, mac)
    (err,) = rt.batch([(msg, NEWLINK, CREATE_EXCL)])
    if err == errno.EEXIST:
        raise LinkExists(f"link {host_name!r} (or {peer_name!r} in the container) exists")
    if err == errno.EOPNOTSUPP:
        raise NetlinkError(
            "cannot create a veth pair: the kernel has no veth support "
            "(CONFIG_VETH; load it with `modprobe veth`)"
        )
    if err:
        raise _fail(f"cannot create veth {host_name!r} (peer {peer_name!r})", err)
    # A bridge port needs no IPv6: without this every port adds an fe80::/64 and an ff00::/8
    # route on the same FIB node, and the kernel's cost of adding a port grows with their
    # number. Done while the link is down, before addrconf runs.
    _disable_ipv6(host_name)
    # up, and hairpin mode on the bridge port: a container reaching its own published port
    # through a host address gets its (masqueraded) packets back through the same port
    (err,) = rt.batch([(_hairpin_msg(host_name), NEWLINK, 0)])
    if err:
        raise _fail(f"cannot bring veth {host_name!r} up", err)


def _ipv6_on(ifname: str) -> None:
    """IPv6 on for ``ifname`` (a dual-stack bridge), router advertisements ignored, no
    duplicate address detection: its link-local address is usable at once (the kernel
    sends the neighbour solicitations of *forwarded* packets from it: while it is
    tentative, the first connection from outside to a published port stalls ~2 s)."""
    conf = f"/proc/sys/net/ipv6/conf/{ifname}"
    if not os.path.isdir(conf):
        raise NetlinkError(
            f"{ifname}: IPv6 is not available (no {conf}); a dual-stack network needs a "
            "kernel with IPv6 (see docs/kernel-requirements.md)"
        )
    for key, value in (("accept_dad", "0"), ("accept_ra", "0"), ("disable_ipv6", "0")):
        set_sysctl(f"net.ipv6.conf.{{}}.{key}", value, ifname)


def _disable_ipv6(ifname: str) -> None:
    try:
        write_netns_sysctl(f"net/ipv6/conf/{ifname}/disable_ipv6", "1")
    except FileNotFoundError:
        pass  # a kernel without IPv6
    except OSError as exc:
        raise NetlinkError(f"cannot disable IPv6 on {ifname!r}: {exc.strerror}") from exc


def configure_container(
    netns_path: str,
    ifname: str,
    address: ipaddress.IPv4Interface,
    gateway: ipaddress.IPv4Address | None,
    address6: ipaddress.IPv6Interface | None = None,
    gateway6: ipaddress.IPv6Address | None = None,
) -> None:
    """Inside the container netns: ``lo`` up, address(es) on ``ifname``, up, default
    route(s). The IPv6 address is ``nodad`` and ``ifname`` ignores router advertisements
    (another container could send them). Without an IPv6 address, ``ifname`` gets IPv6 off
    before it comes up: no link-local address, so no duplicate address detection, router
    solicitations or MLD reports that the bridge floods to every other port (with many
    containers attached, that traffic grows with the square of their number), and no
    address or route from another container's router advertisement."""
    with in_netns(netns_path):
        rt = Rtnl()
        if address6 is not None:
            try:
                write_netns_sysctl(f"net/ipv6/conf/{ifname}/accept_ra", "0")
            except OSError as exc:
                rt.close()
                raise NetlinkError(
                    f"container netns {netns_path!r}: cannot set accept_ra=0 on {ifname}: "
                    f"{exc.strerror} (is IPv6 disabled in the container namespace?)"
                ) from exc
        else:
            try:
                _disable_ipv6(ifname)
            except NetlinkError as exc:
                rt.close()
                raise NetlinkError(f"container netns {netns_path!r}: {exc}") from exc
    try:
        link = get_link(rt, ifname)
        if link is None:
            raise NetlinkError(f"container netns {netns_path!r}: {ifname} is missing")
        steps: list[tuple[str, Any, int, int]] = [
            ("lo up", Rtnl.up_msg(1), NEWLINK, 0),
            (
                f"address {address} on {ifname}",
                Rtnl.addr_msg(
                    link.index,
                    str(address.ip),
                    address.network.prefixlen,
                    str(address.network.broadcast_address),
                ),
                NEWADDR,
                CREATE_EXCL,
            ),
        ]
        if address6 is not None:
            steps.append(
                (
                    f"address {address6} on {ifname}",
                    Rtnl.addr_msg(link.index, str(address6.ip), address6.network.prefixlen, None),
                    NEWADDR,
                    CREATE_EXCL,
                )
            )
        steps.append((f"{ifname} up", Rtnl.up_msg(link.index), NEWLINK, 0))
        for gw in (gateway, gateway6 if address6 is not None else None):
            if gw is not None:
                steps.append(
                    (
                        f"default route via {gw}",
                        Rtnl.default_route_msg(str(gw), link.index),
                        NEWROUTE,
                        CREATE_EXCL,
                    )
                )
        errs = rt.batch([(m, t, f) for _s, m, t, f in steps])
        for (step, *_rest), err in zip(steps, errs, strict=True):
            if not err:
                continue
            if step.startswith("default route") and err == errno.EEXIST and ifname != "eth0":
                continue  # a second network: the first one's default route stays
            raise _fail(f"container netns {netns_path!r}: {step} failed", err)
    finally:
        rt.close()


def delete_link(rt: Rtnl, name: str) -> bool:
    """Delete a link; False when it did not exist."""
    try:
        return rt.del_link(name)
    except RtnlError as exc:
        raise _fail(f"cannot delete link {name!r}", exc.errno or 0) from exc
