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

:meth:`ImageStore.load` imports an OCI image layout (dir or tar) or a ``docker save`` archive
(the formats and the verification are :mod:`._load`, the layer tars :mod:`._unpack`);
lookups, tags, removal and the index are here.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import json
import os
import re
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

from .._faults import checkpoint
from ..errors import ImageError, ImageNotFoundError, InvalidImageError
from ._archive import _Source
from ._load import _DIR_MODE, _FILE_MODE, _Loader
from ._model import Image, ImageLimits
from ._reference import canonical_reference, normalize_tag

__all__ = ["ImageStore"]


class ImageStore(_Loader):
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
