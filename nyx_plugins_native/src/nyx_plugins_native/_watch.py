"""Watch the host for changes made under nyx: its nftables tables and its bridges.

A firewall reload (``nft flush ruleset``, firewalld or ufw restarting, a configuration
management run loading a ruleset with ``nft -f``) or an administrator deleting a bridge
silently breaks every published port and every container's egress. The native driver
notices through netlink, in-process (no ``nft monitor`` subprocess):

- ``NETLINK_NETFILTER`` group ``NFNLGRP_NFTABLES``: every nf_tables change of the network
  namespace, one message per object, then ``NFT_MSG_NEWGEN`` closing each transaction. A
  message's ``nlmsg_pid`` is the netlink port of the socket that made the change, so nyx's
  own batches (its libnftables sockets) are told apart from everyone else's without guessing.
  Only transactions that touch one of nyx's tables count; the rest of the ruleset is none of
  nyx's business and costs one header parse per message.
- ``NETLINK_ROUTE`` group ``RTNLGRP_LINK``: ``RTM_DELLINK`` of a bridge nyx owns.

What to do about it is the caller's: :class:`HostWatch` calls ``on_ruleset`` once per burst
of foreign changes (debounced, rate limited with a backoff so that an agent fighting nyx for
its table cannot make it re-apply in a loop), and ``on_ruleset`` too when the kernel dropped
notifications (``ENOBUFS`` under a flood), and ``on_link_gone(name)`` for a deleted bridge.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from loguru import logger

__all__ = [
    "HostWatch",
    "NftEvent",
    "own_netlink_ports",
    "parse_link_events",
    "parse_nft_events",
]

NETLINK_ROUTE = 0
NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NFNLGRP_NFTABLES = 7
RTNLGRP_LINK = 1
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_NEWGEN = 15
RTM_DELLINK = 17
IFLA_IFNAME = 3
NLMSG_HDR = struct.Struct("=IHHII")
NLA_HDR = struct.Struct("=HH")
NFPROTO = {1: "inet", 2: "ip", 10: "ip6", 3: "arp", 5: "netdev", 7: "bridge"}
#: NFT_MSG_* names, for the log
NFT_MSGS = {
    0: "newtable",
    2: "deltable",
    3: "newchain",
    5: "delchain",
    6: "newrule",
    8: "delrule",
    9: "newset",
    11: "delset",
    12: "newsetelem",
    14: "delsetelem",
    16: "newobj",
    18: "delobj",
    19: "newflowtable",
    21: "delflowtable",
}
_RCVBUF = 4 << 20


@dataclass(frozen=True, slots=True)
class NftEvent:
    """One nf_tables notification: ``msg`` an ``NFT_MSG_*`` number, ``port`` the netlink
    port of the socket that made the change, ``family``/``table`` what it touched (the
    table name is the first attribute of every object message; ``None`` for NEWGEN)."""

    msg: int
    port: int
    family: str
    table: str | None


def _attrs(data: bytes, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    while start + NLA_HDR.size <= end:
        alen, atype = NLA_HDR.unpack_from(data, start)
        if alen < NLA_HDR.size or start + alen > end:
            return
        yield atype & 0x3FFF, data[start + NLA_HDR.size : start + alen]
        start += (alen + 3) & ~3


def _messages(data: bytes) -> Iterator[tuple[int, int, int, int]]:
    """(type, port, payload start, end) of each netlink message in ``data``."""
    off = 0
    while off + NLMSG_HDR.size <= len(data):
        length, mtype, _flags, _seq, port = NLMSG_HDR.unpack_from(data, off)
        if length < NLMSG_HDR.size or off + length > len(data):
            return
        yield mtype, port, off + NLMSG_HDR.size, off + length
        off += (length + 3) & ~3


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def parse_nft_events(data: bytes) -> list[NftEvent]:
    """The nf_tables notifications in one datagram; anything else is skipped."""
    out: list[NftEvent] = []
    for mtype, port, start, end in _messages(data):
        if mtype >> 8 != NFNL_SUBSYS_NFTABLES or end - start < 4:
            continue
        msg = mtype & 0xFF
        family = NFPROTO.get(data[start], str(data[start]))
        table = None
        if msg != NFT_MSG_NEWGEN:
            for atype, value in _attrs(data, start + 4, end):
                if atype == 1:  # NFTA_{TABLE_NAME,CHAIN_TABLE,RULE_TABLE,SET_TABLE,...}
                    table = _cstr(value)
                    break
        out.append(NftEvent(msg, port, family, table))
    return out


def parse_link_events(data: bytes) -> list[tuple[int, str]]:
    """(RTM_* type, interface name) of each link notification in one datagram."""
    out: list[tuple[int, str]] = []
    for mtype, _port, start, end in _messages(data):
        if mtype not in (16, RTM_DELLINK) or end - start < 16:
            continue
        for atype, value in _attrs(data, start + 16, end):  # after struct ifinfomsg
            if atype == IFLA_IFNAME:
                out.append((mtype, _cstr(value)))
                break
    return out


def own_netlink_ports(protocol: int = NETLINK_NETFILTER) -> set[int]:
    """Netlink ports of this process's own sockets of ``protocol`` in the calling thread's
    network namespace (``/proc/thread-self/net/netlink`` joined with our descriptors)."""
    inodes: set[str] = set()
    try:
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return set()
    ports: set[int] = set()
    try:
        with open("/proc/thread-self/net/netlink") as f:
            next(f, None)
            for line in f:
                cols = line.split()
                if len(cols) >= 10 and cols[1] == str(protocol) and cols[9] in inodes:
                    ports.add(int(cols[2]))
    except OSError:
        return set()
    return ports


def _subscribe(protocol: int, group: int) -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, protocol)
    try:
        try:  # a burst of element changes must not overflow it (root: past rmem_max)
            sock.setsockopt(socket.SOL_SOCKET, 33, _RCVBUF)  # SO_RCVBUFFORCE
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
        sock.bind((0, 0))
        sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)
    except OSError:
        sock.close()
        raise
    return sock


class HostWatch:
    """A thread watching nf_tables and links of the network namespace it was made in.

    ``tables`` is called for the current set of (family, name) tables nyx owns and
    ``bridges`` for the bridge names; both are read at each event, so networks created
    later are watched without a restart. ``debounce`` is how long a burst may go on before
    ``on_ruleset`` runs; after each call the next one waits at least ``interval``, doubled
    (up to ``max_interval``) while foreign changes keep coming within it.
    """

    def __init__(
        self,
        tables: Callable[[], set[tuple[str, str]]],
        bridges: Callable[[], set[str]],
        on_ruleset: Callable[[str], None],
        on_link_gone: Callable[[str], None],
        *,
        debounce: float = 0.05,
        interval: float = 0.25,
        max_interval: float = 30.0,
    ) -> None:
        self._tables = tables
        self._bridges = bridges
        self._on_ruleset = on_ruleset
        self._on_link_gone = on_link_gone
        self.debounce = debounce
        self.interval = interval
        self.max_interval = max_interval
        # made here, in the caller's namespace: the thread joins whatever it is given
        self._nft = _subscribe(NETLINK_NETFILTER, NFNLGRP_NFTABLES)
        try:
            self._rt = _subscribe(NETLINK_ROUTE, RTNLGRP_LINK)
        except OSError:
            self._nft.close()
            raise
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC)
        self._own: set[int] = own_netlink_ports()
        self._thread: threading.Thread | None = None
        self.reapplied = 0  # calls of on_ruleset, for the tests and `nyx info`

    # ------------------------------------------------------------------ life

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="nyx-native-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._stop_w, b"x")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        for sock in (self._nft, self._rt):
            sock.close()
        for fd in (self._stop_r, self._stop_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------------ events

    def _is_own(self, port: int) -> bool:
        if port not in self._own:  # a libnftables context made since the last look?
            self._own = own_netlink_ports()
        return port in self._own

    def _foreign_touch(self, events: list[NftEvent]) -> str | None:
        """A description of the first foreign change to one of our tables, else None."""
        ours: set[tuple[str, str]] | None = None
        for ev in events:
            if ev.table is None:
                continue
            if ours is None:
                ours = self._tables()
            if (ev.family, ev.table) not in ours:
                continue
            if self._is_own(ev.port):
                continue
            what = NFT_MSGS.get(ev.msg, str(ev.msg))
            return f"{what} in table {ev.family} {ev.table} by netlink port {ev.port}"
        return None

    def _loop(self) -> None:
        due: float | None = None  # when on_ruleset runs next
        reason = ""
        last_run = float("-inf")
        backoff = self.interval
        poller = select.poll()
        for fd in (self._nft.fileno(), self._rt.fileno(), self._stop_r):
            poller.register(fd, select.POLLIN)
        while True:
            timeout = None if due is None else max(0.0, due - time.monotonic()) * 1000
            ready = {fd for fd, _ in poller.poll(timeout)}
            if self._stop_r in ready:
                return
            if self._nft.fileno() in ready:
                why = self._drain_nft()
                if why is not None and due is None:
                    now = time.monotonic()
                    reason = why
                    # changed again soon after the last repair: someone may be fighting
                    # nyx for its table, so wait longer each time instead of looping
                    if now - last_run < backoff:
                        backoff = min(backoff * 2, self.max_interval)
                    else:
                        backoff = self.interval
                    due = max(now + self.debounce, last_run + backoff)
            if self._rt.fileno() in ready:
                for name in self._drain_links():
                    self._call(self._on_link_gone, name)
            if due is not None and time.monotonic() >= due:
                due = None
                self.reapplied += 1
                self._call(self._on_ruleset, reason)
                last_run = time.monotonic()

    def _drain_nft(self) -> str | None:
        why: str | None = None
        while True:
            try:
                data = self._nft.recv(1 << 16, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return why
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # notifications were dropped: look
                    why = why or "nftables notifications overflowed"
                    continue
                logger.warning("nftables watch: receive failed", error=str(exc))
                return why
            if why is None:
                why = self._foreign_touch(parse_nft_events(data))

    def _drain_links(self) -> list[str]:
        gone: list[str] = []
        while True:
            try:
                data = self._rt.recv(1 << 16, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return gone
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    gone.extend(self._bridges())  # lost some: let the caller check them all
                    continue
                logger.warning("link watch: receive failed", error=str(exc))
                return gone
            events = parse_link_events(data)
            if not events:
                continue
            bridges = self._bridges()
            gone.extend(n for t, n in events if t == RTM_DELLINK and n in bridges)

    @staticmethod
    def _call(fn: Callable[[str], None], arg: str) -> None:
        try:
            fn(arg)
        except Exception as exc:  # the watch outlives one failed repair
            logger.opt(exception=exc).warning("host watch: repair failed", what=arg)
