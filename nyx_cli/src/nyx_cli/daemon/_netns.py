"""Named network namespaces for containers, and the libc mount calls nyx needs.

:func:`create_netns` makes a fresh namespace in a short-lived helper thread
(``unshare(CLONE_NEWNET)`` changes only that thread) and bind-mounts the thread's
``/proc/thread-self/ns/net`` onto ``path``, as ``ip netns add`` does. The caller's own
namespace never changes. ``lo`` is left down: the network driver brings it up
(:func:`loopback_up` does it for a container without a network, ``network_mode: none``).
:func:`set_sysctls` writes ``net.*`` sysctls inside a container's namespace, from a helper
thread that entered it with ``setns`` (``/proc/sys/net`` shows the calling thread's
namespace).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import struct
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from nyx_core.errors import ConfigError

from ..errors import RuntimeErrorNyx

T = TypeVar("T")

__all__ = [
    "MNT_DETACH",
    "MS_BIND",
    "create_netns",
    "delete_netns",
    "in_netns",
    "is_mountpoint",
    "is_netns",
    "loopback_up",
    "mount",
    "set_sysctls",
    "umount",
]

CLONE_NEWNET = 0x40000000
_NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3), linux/nsfs.h
MS_BIND = 0x1000
MNT_DETACH = 0x2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1


def _enc(value: str | os.PathLike[str] | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def mount(
    source: str | os.PathLike[str] | None,
    target: str | os.PathLike[str],
    fstype: str | None,
    flags: int = 0,
    data: str | None = None,
) -> None:
    """``mount(2)``; raises :class:`OSError` with the errno."""
    if _libc.mount(_enc(source), _enc(target), _enc(fstype), flags, _enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {fstype or ''} {source} on {target}: {os.strerror(err)}")


def umount(target: str | os.PathLike[str], flags: int = MNT_DETACH) -> bool:
    """``umount2(2)``; False when ``target`` was not mounted (or does not exist)."""
    if _libc.umount2(_enc(target), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOENT):
        return False
    raise OSError(err, f"umount {target}: {os.strerror(err)}")


def is_mountpoint(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` (symlinks followed) is the mount point of something in this mount
    namespace.

    O(1): one ``statx`` (its ``STATX_ATTR_MOUNT_ROOT``, Linux 5.8), else the mount ids of
    ``path`` and its parent directory (``/proc/self/fdinfo``), bind mounts of the same
    filesystem included. Reading ``/proc/self/mountinfo`` instead costs a line per mount:
    with a netns and a rootfs per container, every start and every re-adoption would pay
    for all the others.
    """
    root = _statx_mount_root(path)
    return root if root is not None else _by_mount_ids(path)


def _by_mount_ids(path: str | os.PathLike[str]) -> bool:
    """:func:`is_mountpoint` without ``statx``: ``path`` and its parent on different mounts."""
    want = os.path.realpath(path)
    if want == "/":
        return True
    try:
        mine, parent = _mount_id(want), _mount_id(os.path.dirname(want))
    except OSError:
        return False
    if mine is not None and parent is not None:
        return mine != parent
    return _in_mountinfo(want)  # a kernel without mnt_id in fdinfo (before 3.15)


_AT_FDCWD = -100
_STATX_TYPE = 0x1
_STATX_ATTR_MOUNT_ROOT = 0x2000
_statx = getattr(_libc, "statx", None)  # glibc 2.28
if _statx is not None:
    _statx.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p]


def _statx_mount_root(path: str | os.PathLike[str]) -> bool | None:
    """``STATX_ATTR_MOUNT_ROOT`` of ``path``: False when it does not exist, None when the
    kernel or libc cannot say."""
    if _statx is None:
        return None
    buf = ctypes.create_string_buffer(256)  # struct statx
    if _statx(_AT_FDCWD, os.fsencode(path), 0, _STATX_TYPE, buf) != 0:
        err = ctypes.get_errno()
        if err in (errno.ENOSYS, errno.EINVAL):
            return None
        return False
    attributes, supported = (
        struct.unpack_from("=Q", buf, 8)[0],
        struct.unpack_from("=Q", buf, 56)[0],
    )
    if not supported & _STATX_ATTR_MOUNT_ROOT:
        return None
    return bool(attributes & _STATX_ATTR_MOUNT_ROOT)


def _mount_id(path: str) -> int | None:
    """The id of the mount ``path`` is on (``mnt_id`` of an ``O_PATH`` descriptor)."""
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        with open(f"/proc/self/fdinfo/{fd}", "rb") as f:
            for line in f.read().splitlines():
                if line.startswith(b"mnt_id:"):
                    return int(line.split()[1])
    finally:
        os.close(fd)
    return None


def _in_mountinfo(want: str) -> bool:
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                point = line.split(" ", 5)[4]
                if _unescape(point) == want:
                    return True
    except OSError:
        return False
    return False


def is_netns(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a network namespace mounted there (nsfs, ``NS_GET_NSTYPE`` says
    ``CLONE_NEWNET``): not a missing path, not the empty file a mount leaves behind when it
    is gone (a crash, a reboot), not some other file or namespace bound over it."""
    if not is_mountpoint(path):
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        return fcntl.ioctl(fd, _NS_GET_NSTYPE) == CLONE_NEWNET
    except OSError:  # ENOTTY: not a namespace file
        return False
    finally:
        os.close(fd)


def _unescape(text: str) -> str:
    return (
        text.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
    )


def create_netns(path: Path) -> None:
    """Create a new network namespace and bind-mount it at ``path``.

    :raises RuntimeErrorNyx: naming the path, when the namespace cannot be made (not root,
        ``path`` already a namespace mount, ...). Nothing is left behind on failure.
    """
    path = Path(path)
    if is_mountpoint(path):
        raise RuntimeErrorNyx(f"network namespace {str(path)!r} already exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    created = not path.exists()
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o444)
    os.close(fd)
    failure: list[BaseException] = []

    def helper() -> None:
        try:
            if _libc.unshare(CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)}")
            mount(f"/proc/self/task/{threading.get_native_id()}/ns/net", path, None, MS_BIND)
        except BaseException as exc:  # reported to the caller below
            failure.append(exc)

    thread = threading.Thread(target=helper, name="nyx-netns", daemon=True)
    thread.start()
    thread.join()
    if failure:
        if created:
            path.unlink(missing_ok=True)
        raise RuntimeErrorNyx(
            f"cannot create network namespace {str(path)!r}: {failure[0]}"
        ) from failure[0]


def delete_netns(path: Path) -> None:
    """Unmount (lazily) and remove the namespace at ``path``; a missing one is no error."""
    path = Path(path)
    try:
        while umount(path, MNT_DETACH):
            pass
    except OSError as exc:
        raise RuntimeErrorNyx(f"cannot unmount network namespace {str(path)!r}: {exc}") from exc
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise RuntimeErrorNyx(f"cannot remove network namespace {str(path)!r}: {exc}") from exc


def in_netns(path: Path, fn: Callable[[], T]) -> T:
    """``fn()`` in a short-lived helper thread that entered the network namespace at
    ``path`` (``setns``): the caller's own namespace never changes, and a failure to enter
    is an error, never a silent run in nyxd's own namespace.

    :raises RuntimeErrorNyx: naming the path, when the namespace cannot be entered.
    """
    result: list[T] = []
    failure: list[BaseException] = []

    def helper() -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise RuntimeErrorNyx(
                        f"cannot enter network namespace {str(path)!r}: {os.strerror(err)}"
                    )
            finally:
                os.close(fd)
            result.append(fn())
        except BaseException as exc:  # reported to the caller below
            failure.append(exc)

    thread = threading.Thread(target=helper, name="nyx-in-netns", daemon=True)
    thread.start()
    thread.join()
    if failure:
        if isinstance(failure[0], OSError):
            raise RuntimeErrorNyx(f"network namespace {str(path)!r}: {failure[0]}") from failure[0]
        raise failure[0]
    return result[0]


def loopback_up(path: Path) -> None:
    """Bring ``lo`` up in the namespace at ``path`` (``network_mode: none``: lo only)."""

    def up() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            req = struct.pack("16sH14x", b"lo", 0)
            flags = struct.unpack("16sH14x", fcntl.ioctl(sock, _SIOCGIFFLAGS, req))[1]
            fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))

    in_netns(path, up)


def set_sysctls(path: Path, values: Mapping[str, str]) -> None:
    """Write ``net.*`` sysctls in the namespace at ``path``.

    Only sysctls the kernel shows inside that namespace exist there, and those are the
    namespace's own (the host-wide ``net.*`` ones are visible in the initial namespace
    only): so nothing outside the container changes.

    :raises ConfigError: naming the sysctl, when it is not ``net.*``, does not exist in a
        container's namespace, is read-only there, or the kernel refuses the value.
    """
    for key in values:
        parts = key.split(".")
        if parts[0] != "net" or len(parts) < 2 or any(p in ("", ".", "..") for p in parts):
            raise ConfigError(f"sysctls {key!r}: only net.* sysctls can be set")

    def write() -> None:
        for key, value in values.items():
            target = "/proc/sys/" + key.replace(".", "/")
            try:
                fd = os.open(target, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError as exc:
                raise ConfigError(
                    f"sysctls {key!r}: no such sysctl in a container's network namespace "
                    "(host-wide net.* sysctls cannot be set per container)"
                ) from exc
            except PermissionError as exc:
                raise ConfigError(
                    f"sysctls {key!r}: read-only in a container's network namespace"
                ) from exc
            try:
                os.write(fd, value.encode())
            except OSError as exc:
                raise ConfigError(
                    f"sysctls {key!r}: the kernel refused {value!r}: {exc.strerror}"
                ) from exc
            finally:
                os.close(fd)

    in_netns(path, write)
