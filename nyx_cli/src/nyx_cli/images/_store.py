"""The local image store: content-addressed blobs, layers unpacked once, tags in one index.

Layout under ``root`` (e.g. ``state_dir/images``)::

    blobs/sha256/<hex>      configs, manifests and layer blobs as loaded (digests verified)
    layers/<diffid-hex>/    each layer unpacked once, ready to be an overlayfs lowerdir
    index.json              the images, their tags and the blobs they reference
    tmp/                    half-written blobs and layers (renamed into place when verified)

Every directory of the store is 0700 and every file 0600 (root's alone): image content can
hold set-uid binaries and secrets, and no other user may reach them, not even while a layer
is being unpacked. Opening the store removes what an interrupted load left: ``tmp/``, and
blobs and layers the index does not reference (a crash between renaming them into place
and writing the index).

:meth:`ImageStore.load` imports an OCI image layout (dir or tar) or a ``docker save`` archive.
Whiteouts become what overlayfs understands: ``.wh.NAME`` a 0/0 character device ``NAME``,
``.wh..wh..opq`` the ``trusted.overlay.opaque=y`` xattr on its directory. Layers and JSON
documents are read under :class:`ImageLimits` (checked while streaming); device nodes other
than the few a container may open, and xattrs other than ``user.*``, ``security.capability``
and POSIX ACLs, are skipped.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
import tarfile
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, BinaryIO, cast

from loguru import logger
from pydantic import BaseModel, Field

from .._faults import checkpoint
from ..errors import (
    ImageDigestMismatchError,
    ImageError,
    ImageLimitError,
    ImageNotFoundError,
    InvalidImageError,
)
from ._compression import decompressed_stream

__all__ = [
    "Image",
    "ImageLimits",
    "ImageStore",
    "canonical_reference",
    "normalize_tag",
]

logger.disable(__name__)

_MANIFEST_TYPES = {
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
}
_INDEX_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}\Z")
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*\Z")
_DOMAIN = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]+)?\Z")
_TAG = re.compile(r"[\w][\w.-]{0,127}\Z")
_CHUNK = 1 << 20
_REF_NAME = "org.opencontainers.image.ref.name"
_HEADER_MAX = 1 << 20  # a pax / GNU long-name header (Go's archive/tar allows 1 MiB too)
_HEADER_CHAIN = 8  # extended headers before one member
_NAME_MAX = 4096  # PATH_MAX: longer member or link names cannot be created anyway
_ARCHIVE_MEMBERS = 100_000  # members of a docker save / OCI layout tar
_LAYER_CAP = "image_layer_max_bytes"
_JSON_CAP = "image_config_max_bytes"
_DIR_MODE = 0o700  # every directory of the store
_FILE_MODE = 0o600  # every file nyx writes there (layer content keeps the image's modes)
# Character devices a container may open (runc's default device cgroup rules), by (major,
# minor); 0/0 is also an overlayfs whiteout. Other devices in a layer are skipped.
_ALLOWED_DEVICES = {(0, 0), (1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2)}
_XATTR_PREFIXES = ("user.",)
_XATTR_NAMES = {"security.capability", "system.posix_acl_access", "system.posix_acl_default"}


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} bytes"


@dataclass(frozen=True)
class ImageLimits:
    """Caps on untrusted image content, checked while it streams (nyxd settings)."""

    layer_bytes: int = 16 << 30
    """a layer's uncompressed tar and its compressed blob (``image_layer_max_bytes``)"""
    image_bytes: int = 64 << 30
    """the sum of an image's uncompressed layers (``image_max_bytes``)"""
    layer_entries: int = 1_000_000
    """tar entries in one layer (``image_layer_max_entries``)"""
    json_bytes: int = 4 << 20
    """a config, manifest, index or manifest.json (``image_config_max_bytes``)"""

    @classmethod
    def from_settings(cls, settings: Any) -> ImageLimits:
        """The caps of nyxd's settings (:class:`~nyx_core.NyxSettings`)."""
        return cls(
            layer_bytes=settings.image_layer_max_bytes,
            image_bytes=settings.image_max_bytes,
            layer_entries=settings.image_layer_max_entries,
            json_bytes=settings.image_config_max_bytes,
        )

    @staticmethod
    def describe(field: str, value: int) -> str:
        """``the cap of 4 MiB (image_config_max_bytes, NYXD_IMAGE_CONFIG_MAX_BYTES)``."""
        shown = _size(value) if field.endswith("bytes") else str(value)
        return f"the cap of {shown} ({field}, NYXD_{field.upper()})"


class Image(BaseModel):
    """An image in the local store."""

    id: str = Field(description='"sha256:<config digest>"')
    repo_tags: list[str] = Field(default_factory=list, description="tags, e.g. busybox:nyx")
    digest: str | None = Field(default=None, description="manifest digest when known")
    config: dict[str, Any] = Field(
        default_factory=dict, description="the image config's config object (Cmd, Env ...)"
    )
    layers: list[str] = Field(default_factory=list, description="diff_ids, bottom first")
    size: int = Field(default=0, description="bytes of the uncompressed layers")
    created: str | None = None
    repo_digests: list[str] = Field(
        default_factory=list, description="name@digest references it was pulled by"
    )
    architecture: str | None = None
    os: str | None = None


# -- references --------------------------------------------------------------------------


def _split(ref: str) -> tuple[str, str | None, str | None]:
    """``name``, ``tag``, ``digest`` of a reference; raises :class:`ImageError` if malformed."""
    text = ref.strip()
    name, _, digest = text.partition("@")
    tag: str | None = None
    slash, colon = name.rfind("/"), name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG.match(tag):
            raise InvalidImageError(f"invalid image reference {ref!r}: bad tag {tag!r}")
    if digest and not _DIGEST.match(digest):
        raise InvalidImageError(f"invalid image reference {ref!r}: bad digest {digest!r}")
    if not name or any(c.isspace() for c in text):
        raise InvalidImageError(f"invalid image reference {ref!r}")
    first, sep, rest = name.partition("/")
    has_domain = sep and ("." in first or ":" in first or first == "localhost")
    if has_domain and not _DOMAIN.match(first):
        raise InvalidImageError(f"invalid image reference {ref!r}: bad registry host {first!r}")
    path = rest if has_domain else name
    for component in path.split("/"):
        if not _COMPONENT.match(component):
            raise InvalidImageError(
                f"invalid image reference {ref!r}: repository component {component!r} must be "
                "lowercase letters, digits and separators"
            )
    return name, tag, digest or None


def normalize_tag(ref: str) -> str:
    """The tag as stored: the reference as written, with ``:latest`` when it has no tag.

    ``busybox`` → ``busybox:latest``; ``docker.io/library/nginx:alpine`` stays as is.
    """
    name, tag, _ = _split(ref)
    return f"{name}:{tag or 'latest'}"


def canonical_reference(ref: str) -> str:
    """Docker's fully qualified form: ``busybox`` → ``docker.io/library/busybox:latest``."""
    name, tag, digest = _split(ref)
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        domain, path = first, rest
    else:
        domain, path = "docker.io", name
    if domain in ("index.docker.io", "registry-1.docker.io"):
        domain = "docker.io"
    if domain == "docker.io" and "/" not in path:
        path = f"library/{path}"
    text = f"{domain}/{path}"
    if tag or not digest:
        text += f":{tag or 'latest'}"
    if digest:
        text += f"@{digest}"
    return text


# -- tar parsing -------------------------------------------------------------------------

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


def _json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise InvalidImageError(f"{what} is not valid JSON: {str(exc)[:200]}") from exc


# -- archive sources ---------------------------------------------------------------------


class _Source:
    """Files of an image archive: a directory or a tar file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tar: tarfile.TarFile | None = None
        self._members: dict[str, tarfile.TarInfo] = {}
        if path.is_dir():
            return
        if not path.is_file():
            raise InvalidImageError(f"image archive {str(path)!r} does not exist")
        try:
            self._tar = tarfile.open(path, "r:*", tarinfo=_TarInfo)  # noqa: SIM115 (close())
            while (info := self._tar.next()) is not None:
                if len(self._members) >= _ARCHIVE_MEMBERS:
                    raise InvalidImageError(
                        f"{str(path)!r} has more than {_ARCHIVE_MEMBERS} members"
                    )
                if len(info.name) > _NAME_MAX or len(info.linkname) > _NAME_MAX:
                    raise InvalidImageError(f"{str(path)!r}: a member name is too long")
                info.pax_headers = {}  # not needed here; could be 1 MiB per member
                self._members[_clean(info.name) or "."] = info
        except (tarfile.TarError, OSError, EOFError, RecursionError, _BadTarHeader) as exc:
            self.close()
            raise InvalidImageError(f"{str(path)!r} is not a readable tar archive: {exc}") from exc
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()

    def exists(self, name: str) -> bool:
        name = _clean(name) or "."
        if self._tar is None:
            return (self.path / name).is_file()
        info = self._members.get(name)
        return info is not None and (info.isreg() or info.islnk() or info.issym())

    def open(self, name: str) -> BinaryIO:
        clean = _clean(name)
        if clean is None or not self.exists(clean):
            raise InvalidImageError(f"{str(self.path)!r}: missing {name!r}")
        if self._tar is None:
            target = (self.path / clean).resolve()
            if not target.is_relative_to(self.path.resolve()):
                raise InvalidImageError(f"{str(self.path)!r}: {name!r} points outside the archive")
            try:  # O_NONBLOCK: a FIFO swapped in after exists() must not block the open
                fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError as exc:
                raise InvalidImageError(f"{str(self.path)!r}: {name!r}: {exc.strerror}") from exc
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise InvalidImageError(f"{str(self.path)!r}: {name!r} is not a regular file")
            os.set_blocking(fd, True)
            return os.fdopen(fd, "rb")
        info = self._members[clean]
        for _ in range(16):
            if info.issym():
                link = _clean(f"{PurePosixPath(clean).parent}/{info.linkname}")
            elif info.islnk():
                link = _clean(info.linkname)
            else:
                break
            if link is None or link not in self._members:
                raise InvalidImageError(f"{str(self.path)!r}: {name!r} is a dangling link")
            clean, info = link, self._members[link]
        f = self._tar.extractfile(info)
        if f is None:
            raise InvalidImageError(f"{str(self.path)!r}: {name!r} is not a file")
        return cast(BinaryIO, f)

    def read(self, name: str, limit: int) -> bytes:
        with self.open(name) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise ImageLimitError(
                f"{str(self.path)!r}: {name!r} is larger than "
                + ImageLimits.describe("image_config_max_bytes", limit)
            )
        return data

    def json(self, name: str, limit: int) -> Any:
        return _json(self.read(name, limit), f"{str(self.path)!r}: {name!r}")


def _clean(name: str) -> str | None:
    """A member name relative to the root, ``None`` for the root itself; rejects ``..``."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidImageError(f"archive member {name!r} escapes the root")
    return "/".join(parts) or None


class _Hashing:
    """A read-only stream that hashes and counts what passes through it.

    With ``limit``, reading more than ``limit`` bytes raises ``too_large()`` at once: a
    gzip bomb is stopped after ``limit`` bytes, not after it has been written out.
    """

    def __init__(
        self,
        raw: IO[bytes],
        limit: int | None = None,
        too_large: Callable[[], ImageError] | None = None,
    ) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()
        self.size = 0
        self.limit = limit
        self.too_large = too_large

    def read(self, n: int = -1) -> bytes:
        if self.limit is not None and (n < 0 or n > _CHUNK):
            n = _CHUNK  # never one unbounded read; callers loop until b""
        data = self.raw.read(n)
        self.sha.update(data)
        self.size += len(data)
        if self.limit is not None and self.size > self.limit:
            raise self.too_large() if self.too_large else ImageLimitError("stream too large")
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass

    @property
    def digest(self) -> str:
        return f"sha256:{self.sha.hexdigest()}"


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


# -- the store ---------------------------------------------------------------------------


class ImageStore:
    """Images on local disk. Thread-safe; one store per root.

    Opening the store makes its directories private (0700, also for a store an older nyx
    left world-readable) and removes what an interrupted load left: ``tmp/``, a half-written
    index, blobs and layers no image references (unless an overlay mount uses the layer).
    """

    def __init__(self, root: Path, limits: ImageLimits | None = None) -> None:
        self.root = Path(root)
        self.limits = limits or ImageLimits()
        self._lock = threading.RLock()
        with self._locked() as index:
            for sub in ("", "blobs", "blobs/sha256", "layers", "tmp"):
                os.chmod(self.root / sub, _DIR_MODE)
            for name in ("index.json", "lock"):
                with contextlib.suppress(FileNotFoundError):
                    os.chmod(self.root / name, _FILE_MODE)
            for stale in self.root.glob("index.json.*"):  # a crash between write and rename
                stale.unlink(missing_ok=True)
            self._collect(index)  # and blobs or layers a crash left unreferenced

    # paths
    def _blob(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / digest.removeprefix("sha256:")

    def _layer(self, diff_id: str) -> Path:
        return self.root / "layers" / diff_id.removeprefix("sha256:")

    def _ensure(self) -> None:
        self.root.parent.mkdir(parents=True, exist_ok=True)
        for sub in ("", "blobs", "blobs/sha256", "layers", "tmp"):
            with contextlib.suppress(FileExistsError):
                os.mkdir(self.root / sub, _DIR_MODE)  # umask can only remove bits

    def _clean_tmp(self) -> None:
        """Remove half-written blobs and layers (a crash, a failed load)."""
        for stale in (self.root / "tmp").iterdir():
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """The index, locked against other threads and processes; saved when changed."""
        with self._lock:
            self._ensure()
            fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, _FILE_MODE)
            with open(fd, "a+b") as lockf:
                fcntl.flock(lockf, fcntl.LOCK_EX)
                index = self._read_index()
                before = json.dumps(index, sort_keys=True)
                yield index
                if json.dumps(index, sort_keys=True) != before:
                    self._write_index(index)

    @contextlib.contextmanager
    def _loading(self) -> Iterator[dict[str, Any]]:
        """:meth:`_locked` for a load: a failure removes every blob and layer it added."""
        with self._locked() as index:
            try:
                yield index
            except BaseException:
                self._collect(self._read_index())  # the index on disk, without this load
                raise

    def _read_index(self) -> dict[str, Any]:
        try:
            data = json.loads((self.root / "index.json").read_text())
        except FileNotFoundError:
            data = {}
        except ValueError as exc:
            raise ImageError(f"image index {str(self.root / 'index.json')!r} is corrupt") from exc
        data.setdefault("version", 1)
        data.setdefault("images", {})
        data.setdefault("layer_sizes", {})
        return cast(dict[str, Any], data)

    def _write_index(self, index: dict[str, Any]) -> None:
        checkpoint("store:index")
        tmp = self.root / f"index.json.{uuid.uuid4().hex}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _FILE_MODE)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(index, indent=1, sort_keys=True))
        os.replace(tmp, self.root / "index.json")

    # blobs and layers
    def _put_blob(
        self, src: BinaryIO, expected: str | None, size: int | None, what: str, limit: int, cap: str
    ) -> tuple[str, int]:
        """Copy a blob into the store, verifying digest and size when they are known.

        More than ``limit`` bytes (the setting ``cap``) stop the copy with
        :class:`ImageLimitError`; a declared ``size`` over the limit is refused before.
        """
        if expected is not None:
            if not _DIGEST.match(expected):
                raise InvalidImageError(f"{what}: unsupported digest {expected!r} (sha256 only)")
            if self._blob(expected).is_file():
                return expected, self._blob(expected).stat().st_size

        def too_large() -> ImageError:
            return ImageLimitError(f"{what} is larger than {ImageLimits.describe(cap, limit)}")

        if size is not None and size > limit:
            raise too_large()
        tmp = self.root / "tmp" / f"blob-{uuid.uuid4().hex}"
        hashing = _Hashing(src, limit, too_large)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _FILE_MODE)
            with os.fdopen(fd, "wb") as out:
                while chunk := hashing.read(_CHUNK):
                    out.write(chunk)
            digest = hashing.digest
            if expected is not None and digest != expected:
                raise ImageDigestMismatchError(f"{what}: digest is {digest}, expected {expected}")
            if size is not None and hashing.size != size:
                raise ImageDigestMismatchError(f"{what}: size is {hashing.size}, expected {size}")
            checkpoint("store:blob")  # a verified blob still in tmp/
            os.replace(tmp, self._blob(digest))
            return digest, hashing.size
        finally:
            tmp.unlink(missing_ok=True)

    def _unpack(
        self, blob: str, diff_id: str, media_type: str, sizes: dict[str, int], used: int
    ) -> int:
        """Unpack layer ``blob`` once; returns its uncompressed size.

        ``used``: bytes of the image's layers below it (for the image cap). The layer is
        unpacked into a private staging dir under ``tmp/`` while its diff_id is computed in
        the same pass, and renamed into ``layers/`` only when the digest matches; any
        failure removes the staging dir.
        """
        final = self._layer(diff_id)
        if final.is_dir():
            return int(sizes.get(diff_id, 0))
        limits = self.limits
        limit = min(limits.layer_bytes, max(limits.image_bytes - used, 0))

        def too_large() -> ImageError:
            if limit == limits.layer_bytes:
                cap = ImageLimits.describe("image_layer_max_bytes", limit)
            else:
                cap = ImageLimits.describe("image_max_bytes", limits.image_bytes)
                cap += f", with {used} bytes in the layers below"
            return ImageLimitError(
                f"layer {blob} (diff_id {diff_id}): uncompressed size exceeds {cap}"
            )

        tmp = self.root / "tmp" / f"layer-{uuid.uuid4().hex}"
        tmp.mkdir(mode=_DIR_MODE)
        try:
            with open(self._blob(blob), "rb") as raw:
                hashing = _Hashing(decompressed_stream(raw, media_type), limit, too_large)
                unpack_layer(cast(BinaryIO, hashing), tmp, diff_id, limits.layer_entries)
                hashing.drain()
            if hashing.digest != diff_id:
                raise ImageDigestMismatchError(
                    f"layer {blob}: uncompressed digest is {hashing.digest}, the image config "
                    f"says {diff_id}"
                )
            sizes[diff_id] = hashing.size
            checkpoint("store:layer")  # a verified layer still in tmp/
            try:
                os.rename(tmp, final)
            except OSError:
                if not final.is_dir():
                    raise
            return hashing.size
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def _check_layers(self, config: dict[str, Any], count: int, what: str) -> list[str]:
        rootfs = config.get("rootfs")
        diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
        if not isinstance(diff_ids, list) or not all(
            isinstance(d, str) and _DIGEST.match(d) for d in diff_ids
        ):
            raise InvalidImageError(f"{what}: image config has no valid rootfs.diff_ids")
        if len(diff_ids) != count:
            raise InvalidImageError(
                f"{what}: {count} layer(s) but the image config lists {len(diff_ids)} diff_ids"
            )
        return list(diff_ids)

    def _record(
        self,
        index: dict[str, Any],
        config: dict[str, Any],
        config_digest: str,
        blobs: list[str],
        tags: list[str],
        digest: str | None,
    ) -> Image:
        diff_ids = list(config["rootfs"]["diff_ids"])
        sizes = index["layer_sizes"]
        inner = config.get("config")
        image = Image(
            id=config_digest,
            repo_tags=[],
            digest=digest,
            config=dict(inner) if isinstance(inner, dict) else {},
            layers=diff_ids,
            size=sum(int(sizes.get(d, 0)) for d in diff_ids),
            created=config.get("created") if isinstance(config.get("created"), str) else None,
            architecture=config.get("architecture"),
            os=config.get("os"),
        )
        old = index["images"].get(image.id)
        if old is not None:
            image.repo_tags = list(old["image"]["repo_tags"])
            image.digest = image.digest or old["image"].get("digest")
            image.repo_digests = list(old["image"].get("repo_digests", []))
            blobs = sorted(set(blobs) | set(old.get("blobs", [])))
        for tag in tags:
            self._tag(index, image, tag)
        index["images"][image.id] = {"image": image.model_dump(), "blobs": sorted(set(blobs))}
        return image

    def _tag(self, index: dict[str, Any], image: Image, tag: str) -> None:
        canon = canonical_reference(tag)
        for image_id, rec in index["images"].items():
            if image_id != image.id:
                rec["image"]["repo_tags"] = [
                    t for t in rec["image"]["repo_tags"] if canonical_reference(t) != canon
                ]
        image.repo_tags = [t for t in image.repo_tags if canonical_reference(t) != canon]
        image.repo_tags.append(normalize_tag(tag))

    # public API
    def load(self, path: Path) -> list[Image]:
        """Import every image of an OCI image layout (dir or tar) or a ``docker save`` tar.

        Digests and sizes are verified, layers unpacked once. Tags come from ``RepoTags``
        (docker) or the ``io.containerd.image.name`` / ``org.opencontainers.image.ref.name``
        annotations (a ref.name that is only a tag, like ``latest``, names no repository and
        is ignored).

        :raises ImageError: the archive is malformed. :raises DigestMismatchError: a blob
            does not match its digest.
        """
        src = _Source(Path(path))
        try:
            with self._loading() as index:
                if src.exists("manifest.json"):
                    return self._load_docker(src, index)
                if src.exists("index.json"):
                    return self._load_oci(src, index, None)
                raise InvalidImageError(
                    f"{str(path)!r} is neither an OCI image layout (no index.json) nor a "
                    "docker save archive (no manifest.json)"
                )
        finally:
            src.close()

    def import_oci_layout(self, layout: Path, reference: str) -> Image:
        """Import the image of an OCI layout directory (written by ``nyx pull``) as ``reference``.

        When the layout holds several manifests, the one whose ``ref.name`` matches the
        reference's tag is used, else the only one.
        """
        canon = canonical_reference(reference)  # validates
        src = _Source(Path(layout))
        try:
            with self._loading() as index:
                (image,) = self._load_oci(src, index, reference)
                if "@" in canon:
                    rec = index["images"][image.id]["image"]
                    rec["repo_digests"] = sorted({*rec.get("repo_digests", []), canon})
                    image = Image.model_validate(rec)
        finally:
            src.close()
        return image

    def _load_docker(self, src: _Source, index: dict[str, Any]) -> list[Image]:
        manifest = src.json("manifest.json", self.limits.json_bytes)
        if not isinstance(manifest, list) or not manifest:
            raise InvalidImageError(f"{str(src.path)!r}: manifest.json is not a list of images")
        images = []
        for n, entry in enumerate(manifest):
            what = f"{str(src.path)!r} image {n}"
            if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
                raise InvalidImageError(f"{what}: manifest.json entry has no Config")
            layers = entry.get("Layers") or []
            if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
                raise InvalidImageError(f"{what}: Layers must be a list of paths")
            config_name = entry["Config"]
            named = PurePosixPath(config_name).name.removesuffix(".json")
            expected = f"sha256:{named}" if _HEX64.match(named) else None
            with src.open(config_name) as f:
                config_digest, _ = self._put_blob(
                    f, expected, None, f"{what} config", self.limits.json_bytes, _JSON_CAP
                )
            config = self._config(config_digest, what)
            diff_ids = self._check_layers(config, len(layers), what)
            blobs = [config_digest]
            used = 0
            for layer_name, diff_id in zip(layers, diff_ids, strict=True):
                if self._layer(diff_id).is_dir() and self._blob(diff_id).is_file():
                    blobs.append(diff_id)
                    used += int(index["layer_sizes"].get(diff_id, 0))
                    continue
                with src.open(layer_name) as f:
                    blob, _ = self._put_blob(
                        f,
                        None,
                        None,
                        f"{what} layer {layer_name!r}",
                        self.limits.layer_bytes,
                        _LAYER_CAP,
                    )
                used += self._unpack(blob, diff_id, "", index["layer_sizes"], used)
                blobs.append(blob)
            tags = entry.get("RepoTags") or []
            valid = [t for t in tags if isinstance(t, str) and self._valid_tag(t, what)]
            images.append(self._record(index, config, config_digest, blobs, valid, None))
        return images

    def _valid_tag(self, tag: str, what: str) -> bool:
        try:
            normalize_tag(tag)
        except ImageError:
            logger.warning("{}: ignoring bad tag {!r}", what, tag)
            return False
        return True

    def _config(self, digest: str, what: str) -> dict[str, Any]:
        limit = self.limits.json_bytes
        with open(self._blob(digest), "rb") as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise ImageLimitError(
                f"{what}: {digest} is larger than {ImageLimits.describe(_JSON_CAP, limit)}"
            )
        config = _json(data, f"{what}: {digest}")
        if not isinstance(config, dict):
            raise InvalidImageError(f"{what}: image config is not an object")
        return config

    def _descriptor(self, desc: Any, what: str) -> tuple[str, int, str]:
        if not isinstance(desc, dict):
            raise InvalidImageError(f"{what}: descriptor is not an object")
        digest, size = desc.get("digest"), desc.get("size")
        if not isinstance(digest, str) or not _DIGEST.match(digest):
            raise InvalidImageError(f"{what}: bad or unsupported digest {digest!r} (sha256 only)")
        if not isinstance(size, int) or size < 0:
            raise InvalidImageError(f"{what}: bad size {size!r}")
        return digest, size, str(desc.get("mediaType", ""))

    def _blob_from(
        self, src: _Source, desc: Any, what: str, layer: bool = False
    ) -> tuple[str, str]:
        digest, size, media_type = self._descriptor(desc, what)
        name = f"blobs/sha256/{digest.removeprefix('sha256:')}"
        limit, cap = (
            (self.limits.layer_bytes, _LAYER_CAP) if layer else (self.limits.json_bytes, _JSON_CAP)
        )
        if not self._blob(digest).is_file():
            with src.open(name) as f:
                self._put_blob(f, digest, size, what, limit, cap)
        elif self._blob(digest).stat().st_size != size:
            raise ImageDigestMismatchError(f"{what}: size of {digest} is not {size}")
        return digest, media_type

    def _load_oci(self, src: _Source, index: dict[str, Any], reference: str | None) -> list[Image]:
        top = src.json("index.json", self.limits.json_bytes)
        manifests = top.get("manifests") if isinstance(top, dict) else None
        if not isinstance(manifests, list) or not manifests:
            raise InvalidImageError(f"{str(src.path)!r}: index.json lists no manifests")
        chosen: list[tuple[dict[str, Any], list[str]]] = []
        for desc in manifests:
            ann = desc.get("annotations") if isinstance(desc, dict) else None
            ann = ann if isinstance(ann, dict) else {}
            names = []
            full = ann.get("io.containerd.image.name")
            ref_name = ann.get(_REF_NAME)
            if isinstance(full, str):
                names.append(full)
            elif isinstance(ref_name, str) and ("/" in ref_name or ":" in ref_name):
                names.append(ref_name)
            chosen.append((desc, [n for n in names if self._valid_tag(n, str(src.path))]))
        if reference is None:
            chosen = _host_platform_only(chosen)
        else:
            chosen = [(_named(src, chosen, reference), [])]
            _, ref_tag, ref_digest = _split(reference)
            if ref_tag or not ref_digest:
                chosen[0][1].append(canonical_reference(reference).partition("@")[0])
        images = []
        for desc, tags in chosen:
            images.append(self._load_manifest(src, index, desc, tags, 0))
        return images

    def _load_manifest(
        self, src: _Source, index: dict[str, Any], desc: Any, tags: list[str], depth: int
    ) -> Image:
        what = f"{str(src.path)!r} manifest"
        digest, media_type = self._blob_from(src, desc, what)
        doc = self._config(digest, what)  # JSON object check
        media_type = str(doc.get("mediaType") or media_type)
        if media_type in _INDEX_TYPES or "manifests" in doc:
            if depth > 2:
                raise InvalidImageError(f"{what}: indexes nested too deep")
            return self._load_manifest(src, index, self._platform(doc, what), tags, depth + 1)
        if media_type and media_type not in _MANIFEST_TYPES:
            raise InvalidImageError(f"{what}: unsupported manifest media type {media_type!r}")
        config_digest, _ = self._blob_from(src, doc.get("config"), f"{what} config")
        config = self._config(config_digest, what)
        layers = doc.get("layers") or []
        if not isinstance(layers, list):
            raise InvalidImageError(f"{what}: layers is not a list")
        diff_ids = self._check_layers(config, len(layers), what)
        blobs = [digest, config_digest]
        used = 0
        for n, (layer_desc, diff_id) in enumerate(zip(layers, diff_ids, strict=True)):
            blob, layer_type = self._blob_from(src, layer_desc, f"{what} layer {n}", layer=True)
            used += self._unpack(blob, diff_id, layer_type, index["layer_sizes"], used)
            blobs.append(blob)
        return self._record(index, config, config_digest, blobs, tags, digest)

    @staticmethod
    def _platform(doc: dict[str, Any], what: str) -> Any:
        arch = _arch()
        for desc in doc.get("manifests") or []:
            plat = desc.get("platform") if isinstance(desc, dict) else None
            if (
                isinstance(plat, dict)
                and plat.get("os") == "linux"
                and (plat.get("architecture") == arch)
            ):
                return desc
        raise InvalidImageError(f"{what}: no manifest for linux/{arch}")

    def list(self) -> list[Image]:
        """All images, sorted by first tag (untagged last), then id."""
        with self._locked() as index:
            images = [Image.model_validate(rec["image"]) for rec in index["images"].values()]
        return sorted(images, key=lambda i: (i.repo_tags[:1] or ["~"], i.id))

    def get(self, ref: str) -> Image:
        """An image by tag (``busybox`` means ``busybox:latest``), id, digest or id prefix.

        :raises ImageNotFoundError: naming the reference (also when a prefix is ambiguous).
        """
        with self._locked() as index:
            return Image.model_validate(self._find(index, ref)["image"])

    def _find(self, index: dict[str, Any], ref: str) -> dict[str, Any]:
        records = index["images"]
        try:
            canon = canonical_reference(ref)
        except ImageError:
            canon = None
        if canon is not None:
            for rec in records.values():
                if any(canonical_reference(t) == canon for t in rec["image"]["repo_tags"]):
                    return cast(dict[str, Any], rec)
            if "@" in ref:
                wanted = ref.rpartition("@")[2]
                for rec in records.values():
                    image = rec["image"]
                    if canon in image.get("repo_digests", []) or image.get("digest") == wanted:
                        return cast(dict[str, Any], rec)
        hexpart = ref.removeprefix("sha256:")
        if re.fullmatch(r"[0-9a-f]{1,64}", hexpart):
            found = [
                rec
                for image_id, rec in records.items()
                if image_id.removeprefix("sha256:").startswith(hexpart)
            ]
            if len(found) == 1:
                return cast(dict[str, Any], found[0])
            if len(found) > 1:
                raise ImageNotFoundError(f"image id prefix {ref!r} is ambiguous")
        raise ImageNotFoundError(f"image {ref!r} not found")

    def tag(self, ref: str, tag: str) -> Image:
        """Add ``tag`` to the image ``ref`` (moving it from any other image)."""
        normalize_tag(tag)
        with self._locked() as index:
            rec = self._find(index, ref)
            image = Image.model_validate(rec["image"])
            self._tag(index, image, tag)
            rec["image"] = image.model_dump()
            return image

    def remove(self, ref: str) -> None:
        """Untag ``ref`` when it is one of several tags, else delete the image.

        Blobs and layers no other image uses are deleted, except layers an overlay mount
        still uses. :raises ImageNotFoundError: no such image.
        """
        with self._locked() as index:
            rec = self._find(index, ref)
            image = rec["image"]
            try:
                canon = canonical_reference(ref)
            except ImageError:
                canon = None
            untagged = [t for t in image["repo_tags"] if canonical_reference(t) != canon]
            if canon is not None and len(untagged) < len(image["repo_tags"]) and untagged:
                image["repo_tags"] = untagged
                return
            del index["images"][image["id"]]
            self._collect(index)

    def _collect(self, index: dict[str, Any]) -> None:
        used_blobs = {b for rec in index["images"].values() for b in rec.get("blobs", [])}
        used_layers = {d for rec in index["images"].values() for d in rec["image"]["layers"]}
        mounted = _mounted_lowerdirs()
        self._clean_tmp()
        for blob in (self.root / "blobs" / "sha256").iterdir():
            if f"sha256:{blob.name}" not in used_blobs:
                blob.unlink(missing_ok=True)
        for layer in (self.root / "layers").iterdir():
            diff_id = f"sha256:{layer.name}"
            if diff_id not in used_layers and str(layer) not in mounted:
                shutil.rmtree(layer, ignore_errors=True)
                index["layer_sizes"].pop(diff_id, None)

    def layer_dirs(self, image: Image) -> builtins.list[Path]:
        """The unpacked layer directories of ``image``, bottom first."""
        dirs = [self._layer(d) for d in image.layers]
        missing = [str(d) for d in dirs if not d.is_dir()]
        if missing:
            raise ImageError(f"image {image.id}: unpacked layers missing: {', '.join(missing)}")
        return dirs


def _arch() -> str:
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(machine, machine)


def _host_platform_only(
    chosen: list[tuple[dict[str, Any], list[str]]],
) -> list[tuple[dict[str, Any], list[str]]]:
    """Drop manifests of other platforms when the layout has some for this one."""

    def other(desc: dict[str, Any]) -> bool:
        plat = desc.get("platform")
        return isinstance(plat, dict) and (
            plat.get("os", "linux") != "linux" or plat.get("architecture", _arch()) != _arch()
        )

    mine = [c for c in chosen if not other(c[0])]
    return mine or chosen


def _named(
    src: _Source, chosen: list[tuple[dict[str, Any], list[str]]], reference: str
) -> dict[str, Any]:
    """The manifest of a layout that ``reference`` names (the only one, if just one)."""
    if len(chosen) == 1:
        return chosen[0][0]
    canon = canonical_reference(reference)
    _, tag, digest = _split(reference)
    for desc, names in chosen:
        if digest and desc.get("digest") == digest:
            return desc
        if any(canonical_reference(n).partition("@")[0] == canon.partition("@")[0] for n in names):
            return desc
    for desc, _ in _host_platform_only(chosen):
        if (desc.get("annotations") or {}).get(_REF_NAME) == (tag or "latest"):
            return desc
    raise InvalidImageError(f"{str(src.path)!r}: no manifest is named {reference!r}")


def _mounted_lowerdirs() -> set[str]:
    """Directories used as overlayfs lowerdirs by mounts visible to this process."""
    found: set[str] = set()
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return found
    for line in text.splitlines():
        _, _, rest = line.partition(" - ")
        fields = rest.split(" ")
        if len(fields) >= 3 and fields[0] == "overlay":
            for opt in fields[2].split(","):
                if opt.startswith("lowerdir="):
                    found.update(opt[len("lowerdir=") :].split(":"))
    return found
