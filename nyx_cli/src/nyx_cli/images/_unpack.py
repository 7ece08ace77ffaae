"""Layer tars: a tar reader that refuses unbounded headers, and the unpacker that writes a
layer the way overlayfs wants its lower layers.

Whiteouts become what overlayfs understands: ``.wh.NAME`` a 0/0 character device ``NAME``,
``.wh..wh..opq`` the ``trusted.overlay.opaque=y`` xattr on its directory. Device nodes other
than the few a container may open, and xattrs other than ``user.*``, ``security.capability``
and POSIX ACLs, are skipped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tarfile
from pathlib import Path
from typing import Any, BinaryIO, cast

from loguru import logger

from ..errors import ImageError, ImageLimitError, InvalidImageError
from ._model import ImageLimits

__all__ = ["unpack_layer"]

logger.disable(__name__)

_CHUNK = 1 << 20
_HEADER_MAX = 1 << 20  # a pax / GNU long-name header (Go's archive/tar allows 1 MiB too)
_HEADER_CHAIN = 8  # extended headers before one member
_NAME_MAX = 4096  # PATH_MAX: longer member or link names cannot be created anyway
# Character devices a container may open (runc's default device cgroup rules), by (major,
# minor); 0/0 is also an overlayfs whiteout. Other devices in a layer are skipped.
_ALLOWED_DEVICES = {(0, 0), (1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2)}
_XATTR_PREFIXES = ("user.",)
_XATTR_NAMES = {"security.capability", "system.posix_acl_access", "system.posix_acl_default"}


_EXTENDED = {tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE}
_LONG = {tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK}


class _BadTarHeader(InvalidImageError):
    """A tar header nyx refuses to parse (the caller adds which archive or layer)."""


class _TarInfo(tarfile.TarInfo):
    """tarfile's member, refusing what would make nyxd read without bound into memory.

    tarfile reads a pax or GNU long-name header in one piece (as large as its size field
    says), chains extended headers by recursion and expands sparse files to their full
    size: headers over 1 MiB, long chains and sparse members are refused. Docker's and
    buildkit's tar writers never produce sparse members.
    """

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise _BadTarHeader(f"member {self.name!r}: sparse files are not supported")
        if self.type not in _EXTENDED and self.type not in _LONG:
            return cast(tarfile.TarInfo, super()._proc_member(tarfile_))  # type: ignore[misc]
        if self.size > _HEADER_MAX:
            raise _BadTarHeader(f"a tar header of {self.size} bytes (at most {_HEADER_MAX})")
        chain = int(getattr(tarfile_, "_nyx_chain", 0)) + 1
        if chain > _HEADER_CHAIN:
            raise _BadTarHeader(f"more than {_HEADER_CHAIN} extended tar headers in a row")
        if self.type == tarfile.XGLTYPE:
            total = int(getattr(tarfile_, "_nyx_global", 0)) + self.size
            if total > _HEADER_MAX:
                raise _BadTarHeader(f"global tar headers exceed {_HEADER_MAX} bytes")
            setattr(tarfile_, "_nyx_global", total)  # noqa: B010
        setattr(tarfile_, "_nyx_chain", chain)  # noqa: B010
        try:
            return cast(tarfile.TarInfo, super()._proc_member(tarfile_))  # type: ignore[misc]
        finally:
            setattr(tarfile_, "_nyx_chain", chain - 1)  # noqa: B010

    def _proc_gnusparse_00(self, *args: Any) -> None:
        raise _BadTarHeader("sparse files are not supported")

    _proc_gnusparse_01 = _proc_gnusparse_10 = _proc_gnusparse_00


def _clean(name: str) -> str | None:
    """A member name relative to the root, ``None`` for the root itself; rejects ``..``."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidImageError(f"archive member {name!r} escapes the root")
    return "/".join(parts) or None


# -- layer unpacking -----------------------------------------------------------------------


class _Unpacker:
    """Writes one layer tar into ``dest`` the way overlayfs wants its lower layers."""

    def __init__(self, dest: Path, layer: str, max_entries: int | None = None) -> None:
        self.dest = dest
        self.layer = layer
        self.is_root = os.geteuid() == 0
        self.safe_dirs: set[str] = {""}
        self.created: set[str] = set()  # paths this layer itself provides
        self.skipped: set[str] = set()  # device nodes left out (hard links to them too)
        self.dir_times: list[tuple[str, int]] = []
        self.max_entries = max_entries
        self.entries = 0
        self.root_info: tarfile.TarInfo | None = None  # applied by finish()

    def _fail(self, name: str, why: str) -> ImageError:
        return InvalidImageError(f"layer {self.layer}: entry {name!r}: {why}")

    def _parent(self, rel: str, name: str) -> str:
        """Make sure every directory above ``rel`` is a real directory inside ``dest``."""
        parent = rel.rpartition("/")[0]
        if parent in self.safe_dirs:
            return parent
        current = ""
        for part in parent.split("/"):
            current = f"{current}/{part}" if current else part
            if current in self.safe_dirs:
                continue
            path = self.dest / current
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                os.mkdir(path, 0o755)
                self.created.add(current)
            else:
                if stat.S_ISLNK(st.st_mode):
                    raise self._fail(name, f"writes through the symlink {current!r}")
                if not stat.S_ISDIR(st.st_mode):
                    raise self._fail(name, f"{current!r} is not a directory")
            self.safe_dirs.add(current)
        return parent

    def _remove(self, rel: str, keep_dir: bool = False) -> bool:
        """Remove what ``rel`` is now; returns True when a directory was kept."""
        path = self.dest / rel
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return True
            shutil.rmtree(path)
            self.safe_dirs = {d for d in self.safe_dirs if d != rel and not d.startswith(rel + "/")}
        else:
            os.unlink(path)
        return False

    def _owner(self, path: Path, info: tarfile.TarInfo) -> None:
        try:
            os.lchown(path, info.uid, info.gid)
        except PermissionError:
            if self.is_root:
                raise

    def _xattrs(self, path: Path, info: tarfile.TarInfo) -> None:
        for key, value in info.pax_headers.items():
            if not key.startswith("SCHILY.xattr."):
                continue
            attr = key[len("SCHILY.xattr.") :]
            if attr not in _XATTR_NAMES and not attr.startswith(_XATTR_PREFIXES):
                # trusted.* (overlayfs' own: only nyx decides what overlayfs sees),
                # security.selinux/ima/evm/apparmor (host policy, never the image's), ...
                logger.debug("layer {}: xattr {} on {} skipped", self.layer, attr, path)
                continue
            try:
                os.setxattr(
                    path, attr, value.encode("utf-8", "surrogateescape"), follow_symlinks=False
                )
            except OSError as exc:
                logger.debug("layer {}: xattr {} on {} skipped: {}", self.layer, attr, path, exc)

    def entry(self, tar: tarfile.TarFile, info: tarfile.TarInfo) -> None:
        self.entries += 1
        if self.max_entries is not None and self.entries > self.max_entries:
            raise ImageLimitError(
                f"layer {self.layer}: more entries than "
                + ImageLimits.describe("image_layer_max_entries", self.max_entries)
            )
        if len(info.name) > _NAME_MAX or len(info.linkname) > _NAME_MAX:
            raise self._fail(info.name[:200] + "...", f"name longer than {_NAME_MAX}")
        rel = _clean(info.name)
        if rel is None:
            if info.isdir():  # the layer's root: its mode is applied by finish()
                self.root_info = info
            return
        parent = self._parent(rel, info.name)
        base = rel.rpartition("/")[2]
        if base.startswith(".wh."):
            self._whiteout(rel, parent, base, info)
            return
        path = self.dest / rel
        mode = info.mode & 0o7777
        if info.isdir():
            if not self._remove(rel, keep_dir=True):
                os.mkdir(path, 0o700)
            self.created.add(rel)
            self._owner(path, info)
            os.chmod(path, mode)
            self._xattrs(path, info)
            self.safe_dirs.add(rel)
            self.dir_times.append((rel, int(info.mtime)))
            return
        self._remove(rel)
        self.created.add(rel)
        if info.isreg():
            src = tar.extractfile(info)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                if src is not None:
                    shutil.copyfileobj(src, out, _CHUNK)
        elif info.issym():
            os.symlink(info.linkname, path)
        elif info.islnk():
            target = _clean(info.linkname)
            if target is None:
                raise self._fail(info.name, "hard link to the root")
            if target in self.skipped:
                self.skipped.add(rel)
                self.created.discard(rel)
                return
            self._parent(target, info.linkname)
            source = self.dest / target
            if not os.path.lexists(source) or os.path.isdir(source):
                raise self._fail(info.name, f"hard link target {info.linkname!r} is missing")
            os.link(source, path, follow_symlinks=False)
            return  # shares the target's inode and metadata
        elif info.ischr() or info.isblk():
            if not info.ischr() or (info.devmajor, info.devminor) not in _ALLOWED_DEVICES:
                # the container's device cgroup would refuse it anyway (and /dev is a tmpfs)
                kind = "character" if info.ischr() else "block"
                logger.warning(
                    "layer {}: {} device {} ({}:{}) skipped",
                    self.layer,
                    kind,
                    rel,
                    info.devmajor,
                    info.devminor,
                )
                self.skipped.add(rel)
                self.created.discard(rel)
                return
            mode &= 0o777  # no set-id or sticky bits on a device node
            os.mknod(path, stat.S_IFCHR | mode, os.makedev(info.devmajor, info.devminor))
        elif info.isfifo():
            mode &= 0o777
            os.mkfifo(path, mode)
        else:
            logger.debug("layer {}: entry {} of type {!r} skipped", self.layer, rel, info.type)
            return
        self._owner(path, info)
        if not info.issym():
            os.chmod(path, mode)  # after chown, which clears set-id bits
        self._xattrs(path, info)
        os.utime(path, (info.mtime, info.mtime), follow_symlinks=False)

    def _whiteout(self, rel: str, parent: str, base: str, info: tarfile.TarInfo) -> None:
        directory = self.dest / parent if parent else self.dest
        if base == ".wh..wh..opq":
            os.setxattr(directory, "trusted.overlay.opaque", b"y", follow_symlinks=False)
            return
        if base.startswith(".wh..wh."):
            return  # aufs bookkeeping (.wh..wh.plnk ...), meaningless here
        name = base[len(".wh.") :]
        if not name or name in (".", ".."):
            raise self._fail(info.name, "bad whiteout name")
        target = f"{parent}/{name}" if parent else name
        if target in self.created:
            return  # a whiteout only hides lower layers, never its own layer's entries
        self._remove(target)
        os.mknod(self.dest / target, stat.S_IFCHR | 0o600, os.makedev(0, 0))
        self._owner(self.dest / target, info)

    def finish(self) -> None:
        """Apply the layer root's metadata and the directories' mtimes (deepest first).

        Until here the root keeps the 0700 of its staging directory.
        """
        if self.root_info is not None:
            self._owner(self.dest, self.root_info)
            os.chmod(self.dest, self.root_info.mode & 0o7777)
            self._xattrs(self.dest, self.root_info)
            self.dir_times.append(("", int(self.root_info.mtime)))
        for rel, mtime in sorted(self.dir_times, key=lambda item: -item[0].count("/")):
            path = self.dest / rel if rel else self.dest
            with contextlib.suppress(OSError):
                os.utime(path, (mtime, mtime), follow_symlinks=False)


def unpack_layer(
    stream: BinaryIO, dest: Path, layer: str = "?", max_entries: int | None = None
) -> None:
    """Unpack an uncompressed layer tar from ``stream`` into the existing empty ``dest``.

    ``dest`` should be private (0700 under a 0700 parent): entries land there one by one.
    :raises ImageLimitError: more than ``max_entries`` entries.
    """
    unpacker = _Unpacker(dest, layer, max_entries)
    try:
        with tarfile.open(fileobj=stream, mode="r|", tarinfo=_TarInfo) as tar:
            members: list[tarfile.TarInfo] = cast(Any, tar).members
            while (info := tar.next()) is not None:
                members.clear()  # a stream is read once: keep no TarInfo (and its headers)
                unpacker.entry(tar, info)
        unpacker.finish()
    except _BadTarHeader as exc:
        raise InvalidImageError(f"layer {layer}: {exc}") from exc
    except (tarfile.TarError, EOFError, RecursionError) as exc:
        raise InvalidImageError(f"layer {layer}: not a valid tar stream: {exc}") from exc
    except OSError as exc:
        raise ImageError(f"layer {layer}: unpacking failed: {exc}") from exc
