"""Writing an OCI image layout: descriptors, verified blobs, ``index.json``.

Blobs only ever appear under ``blobs/<alg>/<hex>`` after their digest and size were checked:
downloads go to ``<hex>.partial`` (locked with ``flock`` so parallel pulls sharing a layout or
a blob cache do not collide) and are renamed into place. A present blob of the right size is
therefore a verified one. Directories are created 0700 and files 0600: image content is
nobody else's business until the image store publishes it (nyxd pulls into ``state/tmp``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import RegistryError
from ._reference import Reference

__all__ = ["Descriptor", "OciLayout", "descriptor", "partial_file"]

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
IMAGE_NAME_ANNOTATION = "io.containerd.image.name"
DIGEST_RE = re.compile(r"(sha256:[a-f0-9]{64}|sha384:[a-f0-9]{96}|sha512:[a-f0-9]{128})\Z")


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def algorithm(self) -> str:
        return self.digest.partition(":")[0]

    @property
    def hex(self) -> str:
        return self.digest.partition(":")[2]


def descriptor(obj: Any, where: str) -> Descriptor:
    if not isinstance(obj, dict):
        raise RegistryError(f"malformed {where}: descriptor is not an object")
    digest = obj.get("digest")
    size = obj.get("size")
    if not isinstance(digest, str) or not DIGEST_RE.match(digest):
        raise RegistryError(f"malformed {where}: bad digest {digest!r}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise RegistryError(f"malformed {where}: bad size {size!r} for {digest}")
    return Descriptor(str(obj.get("mediaType", "")), digest, size, obj)


def hash_bytes(digest: str, data: bytes) -> str:
    algorithm = digest.partition(":")[0]
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


class OciLayout:
    """An OCI image layout directory being filled; blobs appear only once verified."""

    def __init__(self, root: Path, cache: Path | None) -> None:
        self.root = root
        self.cache = cache
        (root / "blobs").mkdir(mode=0o700, parents=True, exist_ok=True)
        marker = root / "oci-layout"
        if not marker.exists():
            _atomic_write(marker, json.dumps({"imageLayoutVersion": "1.0.0"}).encode())

    def blob(self, digest: str, base: Path | None = None) -> Path:
        algorithm, _, hexpart = digest.partition(":")
        return (base or self.root) / "blobs" / algorithm / hexpart

    def present(self, desc: Descriptor) -> bool:
        """True when the blob is in the layout (or linked in from the cache) at full size."""
        path = self.blob(desc.digest)
        if _has_size(path, desc.size):
            return True
        if self.cache is not None:
            cached = self.blob(desc.digest, self.cache)
            if _has_size(cached, desc.size):
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                _link_or_copy(cached, path)
                return True
        return False

    def publish(self, path: Path) -> None:
        """Share a verified blob with the cache."""
        if self.cache is None:
            return
        rel = path.relative_to(self.root)
        cached = self.cache / rel
        if not cached.exists():
            cached.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with contextlib.suppress(OSError):
                _link_or_copy(path, cached)

    def write_verified(self, desc: Descriptor, data: bytes) -> None:
        path = self.blob(desc.digest)
        if not _has_size(path, desc.size):
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            _atomic_write(path, data)
        self.publish(path)

    def add_to_index(self, desc: Descriptor, ref: Reference, plat: str) -> None:
        """Add (or replace) the entry for ``ref``; concurrent pulls into one layout keep
        each other's entries (``flock`` on ``oci-layout`` around read-modify-write)."""
        with open(self.root / "oci-layout", "rb") as marker:
            fcntl.flock(marker.fileno(), fcntl.LOCK_EX)
            try:
                self._add_to_index(desc, ref, plat)
            finally:
                fcntl.flock(marker.fileno(), fcntl.LOCK_UN)

    def _add_to_index(self, desc: Descriptor, ref: Reference, plat: str) -> None:
        index_path = self.root / "index.json"
        index: dict[str, Any] = {"schemaVersion": 2, "manifests": []}
        with contextlib.suppress(FileNotFoundError, ValueError):
            loaded = json.loads(index_path.read_text(encoding="utf-8"))
            if isinstance(loaded, dict) and isinstance(loaded.get("manifests"), list):
                index = loaded
        name = str(ref)
        kept = [
            m
            for m in index["manifests"]
            if not (
                isinstance(m, dict)
                and isinstance(m.get("annotations"), dict)
                and m["annotations"].get(REF_NAME_ANNOTATION) == name
            )
        ]
        entry: dict[str, Any] = {
            "mediaType": desc.media_type,
            "digest": desc.digest,
            "size": desc.size,
            "annotations": {REF_NAME_ANNOTATION: name, IMAGE_NAME_ANNOTATION: name},
        }
        if plat:
            os_name, _, rest = plat.partition("/")
            arch, _, variant = rest.partition("/")
            entry["platform"] = {"os": os_name, "architecture": arch}
            if variant:
                entry["platform"]["variant"] = variant
        kept.append(entry)
        index["schemaVersion"] = 2
        index.setdefault("mediaType", OCI_INDEX)
        index["manifests"] = kept
        _atomic_write(index_path, (json.dumps(index, indent=2) + "\n").encode())


def _has_size(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except OSError:
        return False


def _link_or_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
            os.chmod(tmp, 0o600)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def _open_private(path: Path, flags: int, mode: str) -> Any:
    """``open(path, mode)``, but a file it creates is 0600 from the start."""
    fd = os.open(path, flags | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        return os.fdopen(fd, mode)
    except BaseException:
        os.close(fd)
        raise


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with _open_private(tmp, os.O_WRONLY | os.O_TRUNC, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


_PATH_LOCKS: dict[str, tuple[threading.Lock, list[int]]] = {}  # path -> (lock, [users])
_PATH_LOCKS_GUARD = threading.Lock()


@contextlib.contextmanager
def _thread_lock(key: str) -> Iterator[None]:
    """A lock per path between threads (``flock`` only separates processes)."""
    with _PATH_LOCKS_GUARD:
        lock, users = _PATH_LOCKS.setdefault(key, (threading.Lock(), [0]))
        users[0] += 1
    try:
        with lock:
            yield
    finally:
        with _PATH_LOCKS_GUARD:
            users[0] -= 1
            if users[0] == 0:
                del _PATH_LOCKS[key]


@contextlib.contextmanager
def partial_file(path: Path) -> Iterator[Any]:
    """Open ``<blob>.partial`` for appending, locked against other threads and processes.

    The lock is an ``flock`` on the partial file itself; after locking, the file is checked to
    still be the one at the path (another holder may have renamed it into place meanwhile).
    """
    partial = path.with_name(path.name + ".partial")
    with _thread_lock(str(partial)):
        while True:
            fh = _open_private(partial, os.O_RDWR | os.O_APPEND, "a+b")
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
                try:
                    same = os.stat(partial).st_ino == os.fstat(fh.fileno()).st_ino
                except FileNotFoundError:
                    same = False
                if not same:
                    fh.close()
                    continue
                try:
                    yield fh
                finally:
                    # keep a partial download for resuming, but not an empty file
                    with contextlib.suppress(OSError):
                        if (
                            os.fstat(fh.fileno()).st_size == 0
                            and os.stat(partial).st_ino == os.fstat(fh.fileno()).st_ino
                        ):
                            partial.unlink()
                return
            finally:
                fh.close()
