"""A small synchronous rtnetlink client for the setup/teardown hot path.

pyroute2 encodes and decodes the messages (its ``ifinfmsg``/``ifaddrmsg``/``rtmsg``
classes); this module only sends them over a plain ``AF_NETLINK`` socket opened in the
calling thread's namespace and reads the acknowledgements. Several requests go out in one
``send`` and their acks come back together: pyroute2's ``IPRoute`` runs an asyncio loop per
call, which costs ~0.35 ms a request, ten times the kernel's work here.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator
from typing import Any

from pyroute2.netlink import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
)
from pyroute2.netlink.rtnl import (
    RTM_DELLINK,
    RTM_GETLINK,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWROUTE,
)
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

__all__ = ["IFA_F_NODAD", "Rtnl", "RtnlError"]

_HDR = struct.Struct("=IHHII")
IFA_F_NODAD = 0x02
_IFF_UP = 1
_NETLINK_ROUTE = 0
_NETLINK_EXT_ACK = 11


_IFLA_IFNAME = 3
_IFLA_MTU = 4
_IFLA_MASTER = 10
_IFLA_LINKINFO = 18
_IFLA_INFO_KIND = 1


def _attrs(data: bytes, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    off = start
    while off + 4 <= end:
        alen, atype = struct.unpack_from("=HH", data, off)
        if alen < 4:
            return
        yield atype & 0x3FFF, data[off + 4 : off + alen]
        off += (alen + 3) & ~3


def _parse_name_master(msg: bytes) -> tuple[int, str, int]:
    """``(index, name, master index or 0)`` from an RTM_NEWLINK message."""
    (index,) = struct.unpack_from("=i", msg, 16 + 4)
    name, master = "", 0
    for atype, payload in _attrs(msg, 16 + 16, len(msg)):
        if atype == _IFLA_IFNAME:
            name = payload.rstrip(b"\0").decode(errors="replace")
        elif atype == _IFLA_MASTER:
            (master,) = struct.unpack_from("=I", payload)
    return index, name, master


def _parse_link(msg: bytes) -> tuple[int, int, str]:
    """``(index, mtu, kind)`` from an RTM_NEWLINK message (only the fields nyx needs)."""
    (index,) = struct.unpack_from("=i", msg, 16 + 4)
    mtu, kind = 1500, ""
    for atype, payload in _attrs(msg, 16 + 16, len(msg)):
        if atype == _IFLA_MTU:
            (mtu,) = struct.unpack_from("=I", payload)
        elif atype == _IFLA_LINKINFO:
            for itype, ipayload in _attrs(payload, 0, len(payload)):
                if itype == _IFLA_INFO_KIND:
                    kind = ipayload.rstrip(b"\0").decode()
    return index, mtu, kind


class RtnlError(OSError):
    """A request was refused; ``errno`` is the kernel's error code."""


class Rtnl:
    """One rtnetlink socket in the namespace of the thread that creates it."""

    def __init__(self) -> None:
        self.sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, _NETLINK_ROUTE
        )
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ transport

    def _prepare(self, msg: Any, mtype: int, flags: int) -> int:
        self.seq += 1
        msg["header"]["type"] = mtype
        msg["header"]["flags"] = flags
        msg["header"]["sequence_number"] = self.seq
        msg.encode()
        return self.seq

    def batch(self, requests: list[tuple[Any, int, int]]) -> list[int]:
        """Send ``(msg, type, flags)`` requests at once; return each one's error (0 = ok)."""
        seqs = [self._prepare(m, t, f | NLM_F_REQUEST | NLM_F_ACK) for m, t, f in requests]
        self.sock.send(b"".join(m.data for m, _t, _f in requests))
        results: dict[int, int] = {}
        while len(results) < len(seqs):
            data = self.sock.recv(65536)
            off = 0
            while off + 16 <= len(data):
                length, mtype, _flags, seq, _pid = _HDR.unpack_from(data, off)
                if mtype == NLMSG_ERROR and seq in seqs:
                    (code,) = struct.unpack_from("=i", data, off + 16)
                    results[seq] = -code
                off += (length + 3) & ~3
                if length == 0:
                    break
        return [results[s] for s in seqs]

    def request(self, msg: Any, mtype: int, flags: int = 0) -> None:
        (err,) = self.batch([(msg, mtype, flags)])
        if err:
            raise RtnlError(err, os.strerror(err))

    # ------------------------------------------------------------------ links

    def get_link(self, name: str) -> tuple[int, int, str] | None:
        """``(index, mtu, kind)`` of the link ``name``, None when there is none."""
        msg = ifinfmsg()
        msg["attrs"] = [("IFLA_IFNAME", name)]
        seq = self._prepare(msg, RTM_GETLINK, NLM_F_REQUEST)
        self.sock.send(msg.data)
        while True:
            data = self.sock.recv(65536)
            off = 0
            while off + 16 <= len(data):
                length, mtype, _flags, rseq, _pid = _HDR.unpack_from(data, off)
                if rseq == seq:
                    if mtype == NLMSG_ERROR:
                        (code,) = struct.unpack_from("=i", data, off + 16)
                        if -code == errno.ENODEV:
                            return None
                        raise RtnlError(-code, os.strerror(-code))
                    if mtype == RTM_NEWLINK:
                        return _parse_link(data[off : off + length])
                    if mtype == NLMSG_DONE:
                        return None
                off += (length + 3) & ~3
                if length == 0:
                    break

    def links(self) -> list[tuple[int, str, int]]:
        """``(index, name, master index or 0)`` of every link in this namespace, from one
        dump parsed here (pyroute2 decodes every attribute of every link: ~0.6 ms a link)."""
        msg = ifinfmsg()
        seq = self._prepare(msg, RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP)
        self.sock.send(msg.data)
        out: list[tuple[int, str, int]] = []
        while True:
            data = self.sock.recv(1 << 16)
            off = 0
            while off + 16 <= len(data):
                length, mtype, _flags, rseq, _pid = _HDR.unpack_from(data, off)
                if length < 16:
                    break
                if rseq == seq:
                    if mtype == NLMSG_DONE:
                        return out
                    if mtype == NLMSG_ERROR:
                        (code,) = struct.unpack_from("=i", data, off + 16)
                        if code:
                            raise RtnlError(-code, os.strerror(-code))
                    elif mtype == RTM_NEWLINK:
                        out.append(_parse_name_master(data[off : off + length]))
                off += (length + 3) & ~3

    @staticmethod
    def veth_msg(
        name: str, master: int, mtu: int, peer: str, peer_ns_fd: int, peer_mac: str
    ) -> Any:
        msg = ifinfmsg()  # created down: the caller configures it, then brings it up
        peer_attrs = [
            ("IFLA_IFNAME", peer),
            ("IFLA_NET_NS_FD", peer_ns_fd),
            ("IFLA_ADDRESS", peer_mac),
            ("IFLA_MTU", mtu),
        ]
        msg["attrs"] = [
            ("IFLA_IFNAME", name),
            ("IFLA_MTU", mtu),
            ("IFLA_MASTER", master),
            (
                "IFLA_LINKINFO",
                {
                    "attrs": [
                        ("IFLA_INFO_KIND", "veth"),
                        ("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", {"attrs": peer_attrs})]}),
                    ]
                },
            ),
        ]
        return msg

    def add_veth(
        self, name: str, master: int, mtu: int, peer: str, peer_ns_fd: int, peer_mac: str
    ) -> None:
        msg = self.veth_msg(name, master, mtu, peer, peer_ns_fd, peer_mac)
        self.request(msg, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL)

    def del_link(self, name: str) -> bool:
        """Delete a link by name; False when it did not exist."""
        msg = ifinfmsg()
        msg["attrs"] = [("IFLA_IFNAME", name)]
        (err,) = self.batch([(msg, RTM_DELLINK, 0)])
        if err == errno.ENODEV:
            return False
        if err:
            raise RtnlError(err, os.strerror(err))
        return True

    # ------------------------------------------------------------------ messages

    @staticmethod
    def up_msg(index: int, name: str | None = None) -> Any:
        """Bring a link up, by index, or by name when ``index`` is 0."""
        msg = ifinfmsg()
        msg["index"] = index
        msg["flags"] = _IFF_UP
        msg["change"] = _IFF_UP
        if name is not None:
            msg["attrs"] = [("IFLA_IFNAME", name)]
        return msg

    @staticmethod
    def addr_msg(index: int, address: str, prefixlen: int, broadcast: str | None) -> Any:
        """An IPv4 address, or (``address`` with a ``:``) an IPv6 one that skips duplicate
        address detection (``nodad``: usable at once; nyx's IPAM hands each address out
        once)."""
        msg = ifaddrmsg()
        v6 = ":" in address
        msg["family"] = socket.AF_INET6 if v6 else socket.AF_INET
        msg["prefixlen"] = prefixlen
        msg["index"] = index
        if v6:
            msg["flags"] = IFA_F_NODAD
            attrs = [("IFA_ADDRESS", address)]
        else:
            attrs = [("IFA_LOCAL", address), ("IFA_ADDRESS", address)]
        if broadcast:
            attrs.append(("IFA_BROADCAST", broadcast))
        msg["attrs"] = attrs
        return msg

    @staticmethod
    def default_route_msg(gateway: str, oif: int) -> Any:
        """The default route via ``gateway`` (IPv4, or IPv6 when it has a ``:``)."""
        msg = rtmsg()
        msg["family"] = socket.AF_INET6 if ":" in gateway else socket.AF_INET
        msg["table"] = 254  # main
        msg["proto"] = 3  # boot
        msg["scope"] = 0  # universe
        msg["type"] = 1  # unicast
        msg["attrs"] = [("RTA_TABLE", 254), ("RTA_GATEWAY", gateway), ("RTA_OIF", oif)]
        return msg


NEWLINK = RTM_NEWLINK
NEWADDR = RTM_NEWADDR
NEWROUTE = RTM_NEWROUTE
CREATE_EXCL = NLM_F_CREATE | NLM_F_EXCL
