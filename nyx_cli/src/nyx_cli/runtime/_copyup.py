"""Copy-up: fill an empty volume with what the image has at the mount's target, as Docker does.

The first time a named volume is mounted on a directory the image has content in (a
database image's ``/var/lib/postgresql/data`` with its ownership, a web root), that content
is copied into the volume, and the volume's root takes the directory's owner and mode.
A volume that already holds anything is never touched.

Both sides are walked with directory file descriptors and ``O_NOFOLLOW``: the source is
resolved inside the rootfs (:func:`nyx_cli.runtime._inroot._walk`), nothing is ever created
through a symlink on the destination (``O_CREAT|O_EXCL``, ``mkdirat``, ``symlinkat``), so
neither a hostile image nor another container writing into the same volume can make nyxd
read or write a host file. Regular files, directories, symlinks and FIFOs are copied with
their owner, mode, times and the harmless xattrs (``user.*``, ``security.capability``, POSIX
ACLs); hard links become separate files; device nodes and sockets are skipped.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from loguru import logger

from nyx_core.errors import ConfigError

from ._inroot import _file_kind, _open_in_root

__all__ = ["copy_up"]

logger.disable(__name__)

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_DEPTH = 256
_XATTRS = ("user.", "security.capability", "system.posix_acl_access", "system.posix_acl_default")


def copy_up(rootfs: Path, target: str, dest: Path) -> bool:
    """Copy the image's content at ``target`` into the directory ``dest`` if ``dest`` is empty.

    :returns: whether anything was copied (``False``: ``dest`` holds something already, or
        the image has nothing at ``target``).
    :raises ConfigError: the image has something other than a directory at ``target``, or
        ``target`` cannot be resolved in the image (a loop, a file in the middle).
    """
    try:
        src_path = _open_in_root(rootfs, target)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise ConfigError(
            f"mount target {target!r} cannot be resolved in the image ({exc.strerror})"
        ) from exc
    try:
        st = os.fstat(src_path)
        if not stat.S_ISDIR(st.st_mode):
            raise ConfigError(
                f"mount target {target!r} is {_file_kind(st.st_mode)} in the image: "
                "a volume can only be mounted on a directory"
            )
        src = os.open(".", _DIR, dir_fd=src_path)
    finally:
        os.close(src_path)
    try:
        dst = os.open(dest, _DIR)
        try:
            if os.listdir(dst):
                return False
            _copy_dir(src, dst, 0)
            _copy_meta(dst, st)
        finally:
            os.close(dst)
    finally:
        os.close(src)
    return True


def _copy_meta(fd: int, st: os.stat_result) -> None:
    os.fchown(fd, st.st_uid, st.st_gid)  # before the mode: chown clears set-id bits
    os.fchmod(fd, stat.S_IMODE(st.st_mode))
    os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))


def _copy_xattrs(src: int, dst: int) -> None:
    try:
        names = os.listxattr(src)
    except OSError:
        return
    for name in names:
        if not name.startswith(_XATTRS):
            continue
        with contextlib.suppress(OSError):
            os.setxattr(dst, name, os.getxattr(src, name))


def _copy_dir(src: int, dst: int, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise ConfigError(f"copy-up: the image's tree is deeper than {_MAX_DEPTH} directories")
    for name in os.listdir(src):
        st = os.stat(name, dir_fd=src, follow_symlinks=False)
        try:
            _copy_entry(name, st, src, dst, depth)
        except FileExistsError:
            # someone (another container on the same volume) made it meanwhile: theirs stays
            logger.bind(name=name).warning("copy-up: entry exists in the volume, kept")


def _copy_entry(name: str, st: os.stat_result, src: int, dst: int, depth: int) -> None:
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        os.mkdir(name, 0o700, dir_fd=dst)
        s = os.open(name, _DIR, dir_fd=src)
        try:
            d = os.open(name, _DIR, dir_fd=dst)
            try:
                _copy_dir(s, d, depth + 1)
                _copy_xattrs(s, d)
                _copy_meta(d, st)
            finally:
                os.close(d)
        finally:
            os.close(s)
    elif stat.S_ISREG(mode):
        s = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src)
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            d = os.open(name, flags, 0o600, dir_fd=dst)
            try:
                _copy_bytes(s, d, st.st_size)
                _copy_xattrs(s, d)
                _copy_meta(d, st)
            finally:
                os.close(d)
        finally:
            os.close(s)
    elif stat.S_ISLNK(mode):
        os.symlink(os.readlink(name, dir_fd=src), name, dir_fd=dst)
        os.chown(name, st.st_uid, st.st_gid, dir_fd=dst, follow_symlinks=False)
        os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dst, follow_symlinks=False)
    elif stat.S_ISFIFO(mode):
        os.mkfifo(name, 0o600, dir_fd=dst)
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dst)
        try:
            os.chown(f"/proc/self/fd/{fd}", st.st_uid, st.st_gid)
            os.chmod(f"/proc/self/fd/{fd}", stat.S_IMODE(mode))
        finally:
            os.close(fd)
    else:
        logger.bind(name=name, kind=_file_kind(mode)).debug("copy-up: skipped")


def _copy_bytes(src: int, dst: int, size: int) -> None:
    offset = 0
    while offset < size:
        try:
            sent = os.sendfile(dst, src, offset, min(size - offset, 1 << 30))
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOSYS):
                raise
            _copy_read_write(src, dst, offset)
            return
        if sent == 0:
            return
        offset += sent


def _copy_read_write(src: int, dst: int, offset: int) -> None:
    os.lseek(src, offset, os.SEEK_SET)
    os.lseek(dst, offset, os.SEEK_SET)
    while chunk := os.read(src, 1 << 20):
        os.write(dst, chunk)
