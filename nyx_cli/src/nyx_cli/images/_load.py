"""Loading images into the store: archive formats, verified blobs, layers unpacked once.

:class:`_Loader` is the half of :class:`~nyx_cli.images._store.ImageStore` that turns an
OCI image layout (dir or tar) or a ``docker save`` archive into blobs under
``blobs/sha256/``, layers under ``layers/`` and an image record in the index. Digests and
sizes are verified while the content streams, layers and JSON documents are read under
:class:`~nyx_cli.images._model.ImageLimits`, and a blob or layer is renamed into place only
once verified (``tmp/`` holds it until then).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import IO, Any, BinaryIO, cast

from loguru import logger

from .._faults import checkpoint
from ..errors import ImageDigestMismatchError, ImageError, ImageLimitError, InvalidImageError
from ._archive import _json, _Source
from ._compression import decompressed_stream
from ._model import Image, ImageLimits
from ._reference import _DIGEST, _split, canonical_reference, normalize_tag
from ._unpack import _CHUNK, unpack_layer

__all__: list[str] = []

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
_REF_NAME = "org.opencontainers.image.ref.name"
_LAYER_CAP = "image_layer_max_bytes"
_JSON_CAP = "image_config_max_bytes"
_DIR_MODE = 0o700  # every directory of the store
_FILE_MODE = 0o600  # every file nyx writes there (layer content keeps the image's modes)


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


class _Loader:
    """Blobs, layers and image records of the store, and the archive formats that fill it
    (the base of :class:`~nyx_cli.images._store.ImageStore`, which sets ``root`` and
    ``limits`` and holds the index lock while these run)."""

    root: Path
    limits: ImageLimits

    # paths
    def _blob(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / digest.removeprefix("sha256:")

    def _layer(self, diff_id: str) -> Path:
        return self.root / "layers" / diff_id.removeprefix("sha256:")

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
