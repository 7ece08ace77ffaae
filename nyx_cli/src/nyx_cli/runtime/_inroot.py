"""Paths inside an image's rootfs, resolved without ever leaving it.

:func:`_walk` is the one walker of nyx: every component opened relative to its parent's fd
with ``O_NOFOLLOW``, symlinks resolved here (absolute ones from the rootfs, ``..`` stopping
at it). :func:`resolve_in_root` says where a path lands in the container,
:func:`_read_image_file` reads an image's small regular file (``/etc/passwd``) and nothing
else.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

__all__ = ["resolve_in_root"]

_ETC_FILE_MAX = 4 << 20  # /etc/passwd or /etc/group of an image larger than this is not read
_MAX_SYMLINKS = 40  # as the kernel (ELOOP)


def _walk(
    rootfs: Path, path: str, *, mkdir: bool = False, partial: bool = False
) -> tuple[int, list[str], list[str]]:
    """Resolve ``path`` inside ``rootfs`` as if it were ``/``: the one walker of nyx.

    Every component is opened relative to its parent's fd with ``O_NOFOLLOW``; symlinks are
    read and resolved here (absolute ones from ``rootfs``, ``..`` stops at ``rootfs``), so
    neither a symlink nor ``..`` nor a swap during the walk can reach a host file. With
    ``mkdir``, missing directories are created (0755). With ``partial``, a missing component
    ends the walk instead of failing it.

    :returns: an ``O_PATH`` fd of the deepest component found (the caller closes it), the
        canonical names that lead to it from ``/`` and the names left unresolved (only with
        ``partial``).
    :raises OSError: a missing component (``FileNotFoundError``), a loop (``ELOOP``), a
        non-directory in the middle (``ENOTDIR``).
    """
    flags = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
    # the directories walked, root first (rootfs itself is nyx's own path: followed)
    stack = [os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)]
    names: list[str] = []  # names[i] leads to stack[i + 1]
    parts = [p for p in path.split("/") if p not in ("", ".")]
    links = 0
    try:
        while parts:
            part = parts.pop(0)
            if part == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                    names.pop()
                continue
            try:
                fd = os.open(part, flags, dir_fd=stack[-1])
            except FileNotFoundError:
                if partial and ".." not in parts:
                    return stack.pop(), names, [part, *parts]
                if not mkdir:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=stack[-1])  # never follows a symlink
                parts.insert(0, part)
                continue
            mode = os.fstat(fd).st_mode
            if stat.S_ISLNK(mode):
                os.close(fd)
                links += 1
                if links > _MAX_SYMLINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
                target = os.readlink(part, dir_fd=stack[-1])
                if target.startswith("/"):
                    while len(stack) > 1:
                        os.close(stack.pop())
                    names.clear()
                parts = [p for p in target.split("/") if p not in ("", ".")] + parts
                continue
            stack.append(fd)
            names.append(part)
            if parts and not stat.S_ISDIR(mode):
                raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
        return stack.pop(), names, []
    finally:
        for fd in stack:
            os.close(fd)


def _open_in_root(rootfs: Path, path: str, *, mkdir: bool = False) -> int:
    """An ``O_PATH`` fd of ``path`` resolved inside ``rootfs`` (see :func:`_walk`); the
    caller closes it. With ``mkdir``, missing directories are created (0755).

    :raises OSError: a missing component (``FileNotFoundError``), a loop (``ELOOP``), a
        non-directory in the middle (``ENOTDIR``).
    """
    return _walk(rootfs, path, mkdir=mkdir)[0]


def resolve_in_root(rootfs: Path, path: str) -> str:
    """``path`` as the container will see it: its symlinks resolved inside ``rootfs``
    (:func:`_walk`), a missing tail kept as written. ``/etc/x`` with ``/etc -> /private``
    in the image is ``/private/x``.

    :raises OSError: a loop (``ELOOP``) or a non-directory in the middle (``ENOTDIR``).
    """
    fd, names, rest = _walk(rootfs, path, partial=True)
    os.close(fd)
    return "/" + "/".join([*names, *rest])


def _file_kind(mode: int) -> str:
    kinds = [
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
    ]
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def _read_image_file(rootfs: Path, path: str, limit: int = _ETC_FILE_MAX) -> tuple[str, str]:
    """The text of the image's ``path`` and ``""``, or ``""`` and why it was not read.

    Only a regular file of at most ``limit`` bytes, resolved inside ``rootfs``, is read: a
    device (``/dev/zero``), a FIFO, a huge file or a symlink out of the image never is.
    """
    try:
        fd = _open_in_root(rootfs, path)
    except FileNotFoundError:
        return "", ""  # missing: like an empty file (docker: numeric ids still work)
    except OSError as exc:
        return "", f"{path} cannot be resolved in the image ({exc.strerror})"
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return "", f"{path} is {_file_kind(st.st_mode)} in the image, not read"
        if st.st_size > limit:
            return "", f"{path} is larger than {limit >> 20} MiB in the image, not read"
        # reopen the very inode the walk found (an O_PATH fd cannot be read)
        with open(f"/proc/self/fd/{fd}", "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        return "", f"{path} cannot be read in the image ({exc.strerror})"
    finally:
        os.close(fd)
    if len(data) > limit:
        return "", f"{path} is larger than {limit >> 20} MiB in the image, not read"
    return data.decode(errors="replace"), ""
