"""Batched UDP I/O: ``recvmmsg``/``sendmmsg`` through ctypes, with buffers allocated once.

One :class:`UdpBatch` serves one UDP socket from one thread. :meth:`UdpBatch.recv` fills up
to ``slots`` messages with one system call; the caller reads message ``i`` from
:attr:`data` / :attr:`names` through the memoryviews (offsets below), queues replies with
:meth:`UdpBatch.reply` (addressed to the sender of message ``i``, whose ``sockaddr`` is
reused as it is: no address is parsed or formatted) and sends them all with one
:meth:`UdpBatch.flush`. Under load that is two system calls per batch instead of two per
query, and a client's reader is woken once per batch.

Layout (Linux, LP64): ``struct mmsghdr`` is 64 bytes (``msghdr`` 56, ``msg_len`` at 56),
``struct iovec`` 16, a name slot 28 bytes (``sockaddr_in6``; ``sockaddr_in`` uses 16).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import socket
import sys

__all__ = ["MSG_WAITFORONE", "NAME_SLOT", "Address", "UdpBatch", "available"]

Address = tuple[str, int] | tuple[str, int, int, int]
"""A client's address as the socket module gives it: ``(host, port)``, or for IPv6
``(host, port, flowinfo, scope_id)``."""

MSG_WAITFORONE = 0x10000
NAME_SLOT = 28
_MMSG = 64


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_void_p),
        ("namelen", ctypes.c_uint32),
        ("iov", ctypes.c_void_p),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("hdr", _MsgHdr), ("len", ctypes.c_uint32)]


def _libc_calls() -> tuple[object, object] | None:
    if ctypes.sizeof(_MMsgHdr) != _MMSG or ctypes.sizeof(ctypes.c_void_p) != 8:
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        recv, send = libc.recvmmsg, libc.sendmmsg
    except (OSError, AttributeError):
        return None
    recv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    recv.restype = ctypes.c_int
    send.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    send.restype = ctypes.c_int
    return recv, send


_CALLS = _libc_calls()


def available() -> bool:
    """True when this libc has ``recvmmsg``/``sendmmsg`` and the ABI is the LP64 one."""
    return _CALLS is not None


class UdpBatch:
    """Preallocated ``recvmmsg``/``sendmmsg`` buffers for one UDP socket.

    Message ``i`` of the last :meth:`recv`: its length is ``lengths[i * 16 + 14]``, its
    bytes ``data[i * size : i * size + length]``, its source ``names[i * 28 : i * 28 +
    28]`` (a ``sockaddr_in``/``sockaddr_in6``). Datagrams longer than ``size`` are cut.
    """

    def __init__(self, sock: socket.socket, slots: int = 64, size: int = 4096) -> None:
        if _CALLS is None:
            raise OSError(errno.ENOSYS, "recvmmsg/sendmmsg are not available")
        self._recv, self._send = _CALLS
        self.sock = sock
        self.fd = sock.fileno()
        self.slots, self.size = slots, size
        self.namelen = 16 if sock.family == socket.AF_INET else NAME_SLOT
        self._rbuf = (ctypes.c_char * (slots * size))()
        self._sbuf = (ctypes.c_char * (slots * size))()
        self._names = (ctypes.c_char * (slots * NAME_SLOT))()
        self._riov = (_IoVec * slots)()
        self._siov = (_IoVec * slots)()
        self._rmsg = (_MMsgHdr * slots)()
        self._smsg = (_MMsgHdr * slots)()
        rbase, sbase = ctypes.addressof(self._rbuf), ctypes.addressof(self._sbuf)
        self.name_base = ctypes.addressof(self._names)
        for i in range(slots):
            self._riov[i].base = rbase + i * size
            self._riov[i].len = size
            self._siov[i].base = sbase + i * size
            rh = self._rmsg[i].hdr
            rh.name = self.name_base + i * NAME_SLOT
            rh.namelen = NAME_SLOT
            rh.iov = ctypes.addressof(self._riov[i])
            rh.iovlen = 1
            sh = self._smsg[i].hdr
            sh.namelen = self.namelen
            sh.iov = ctypes.addressof(self._siov[i])
            sh.iovlen = 1
        #: received bytes, slot ``i`` at ``i * size``
        self.data = memoryview(self._rbuf).cast("B")
        #: source addresses, slot ``i`` at ``i * 28``
        self.names = memoryview(self._names).cast("B")
        #: the same as uint32: an IPv4 source address of message ``i`` at ``i * 7 + 1``
        self.names32 = self.names.cast("I")
        #: ``struct mmsghdr`` as uint32: ``msg_len`` of message ``i`` at ``i * 16 + 14``
        self.lengths = memoryview(self._rmsg).cast("B").cast("I")
        #: replies queued so far: reply ``j`` goes in ``send_data[j * size:]``, its length
        #: in ``send_lengths[j * 2 + 1]`` (``iov_len``), the address of its ``sockaddr``
        #: in ``send_names[j * 8]`` (``msg_name``: ``name_base + i * 28`` for message i)
        self.send_data = memoryview(self._sbuf).cast("B")
        self.send_lengths = memoryview(self._siov).cast("B").cast("Q")
        self.send_names = memoryview(self._smsg).cast("B").cast("Q")
        self._rmsg_p = ctypes.addressof(self._rmsg)
        self._smsg_p = ctypes.addressof(self._smsg)
        self.queued = 0

    def recv(self, flags: int) -> int:
        """Receive up to ``slots`` datagrams; 0 when none is there (EAGAIN, EINTR, the
        socket's receive timeout) or the socket was shut down."""
        n = self._recv(self.fd, self._rmsg_p, self.slots, flags, None)  # type: ignore[operator]
        if n < 0:
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EINTR):
                return 0
            raise OSError(err, os.strerror(err))
        # msg_namelen now holds the sender's length, the same for every datagram of this
        # socket's family, so it need not be reset for the next call
        return n  # type: ignore[no-any-return]

    def reply(self, i: int, out: bytes) -> bool:
        """Queue ``out`` for the sender of message ``i``; False when it does not fit a slot
        (the caller sends it another way)."""
        n = len(out)
        j = self.queued
        if n > self.size or j >= self.slots:
            return False
        o = j * self.size
        self.send_data[o : o + n] = out
        self.send_lengths[j * 2 + 1] = n
        self.send_names[j * 8] = self.name_base + i * NAME_SLOT
        self.queued = j + 1
        return True

    def flush(self) -> int:
        """Send every queued reply (without blocking); returns how many the kernel took.
        A reply the kernel refuses (buffer full, unreachable) is dropped, as a lost
        datagram would be."""
        k = self.queued
        self.queued = 0
        sent = off = 0
        while off < k:
            n = self._send(  # type: ignore[operator]
                self.fd, self._smsg_p + off * _MMSG, k - off, socket.MSG_DONTWAIT
            )
            if n <= 0:
                off += 1  # skip the one that failed
            else:
                off += n
                sent += n
        return sent

    def source(self, i: int) -> Address:
        """The sender of message ``i`` as ``recvfrom`` gives it: ``(host, port)``, for
        IPv6 ``(host, port, flowinfo, scope_id)`` (a link-local sender is reachable only
        with its scope id)."""
        o = i * NAME_SLOT
        names = self.names
        port = int.from_bytes(names[o + 2 : o + 4], "big")
        if self.namelen == 16:
            return socket.inet_ntop(socket.AF_INET, names[o + 4 : o + 8]), port
        host = socket.inet_ntop(socket.AF_INET6, names[o + 8 : o + 24])
        flow = int.from_bytes(names[o + 4 : o + 8], "big")
        return host, port, flow, int.from_bytes(names[o + 24 : o + 28], sys.byteorder)

    def packed_source(self, i: int) -> bytes:
        """The sender's address of message ``i``, packed (4 or 16 bytes)."""
        o = i * NAME_SLOT
        if self.namelen == 16:
            return bytes(self.names[o + 4 : o + 8])
        return bytes(self.names[o + 8 : o + 24])
