"""Layer compression: gzip (stdlib), zstd (optional ``zstandard`` package) and uncompressed.

OCI and Docker layer media types say how a layer blob is compressed; :func:`decompressed_stream`
turns a blob file object into a stream of the uncompressed tar. :func:`detect_compression`
sniffs the magic bytes for blobs whose media type is missing or generic.
"""

from __future__ import annotations

import gzip
import io
from typing import IO, Any, BinaryIO, Literal, cast

from ..errors import UnsupportedCompressionError

__all__ = [
    "Compression",
    "UnsupportedCompressionError",
    "compression_for_media_type",
    "decompressed_stream",
    "detect_compression",
    "zstd_available",
]

Compression = Literal["gzip", "zstd", "none"]

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

_GZIP_TYPES = {
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
}
_ZSTD_TYPES = {
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
}
_PLAIN_TYPES = {
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.docker.image.rootfs.diff.tar",
}


def compression_for_media_type(media_type: str) -> Compression | None:
    """Return the compression a layer media type declares, or ``None`` if it does not say."""
    if media_type in _GZIP_TYPES or media_type.endswith(("+gzip", ".tar.gzip")):
        return "gzip"
    if media_type in _ZSTD_TYPES or media_type.endswith("+zstd"):
        return "zstd"
    if media_type in _PLAIN_TYPES or media_type.endswith((".tar", "+tar")):
        return "none"
    return None


def detect_compression(head: bytes) -> Compression:
    """Guess a blob's compression from its first bytes (4 are enough)."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return "none"


def zstd_available() -> bool:
    """True when the optional ``zstandard`` package is importable."""
    try:
        import zstandard  # noqa: F401
    except ImportError:
        return False
    return True


def _zstd_reader(fileobj: BinaryIO) -> BinaryIO:
    try:
        import zstandard
    except ImportError as exc:
        raise UnsupportedCompressionError(
            "zstd-compressed layer but the optional 'zstandard' package is not installed; "
            "install it with: pip install 'nyx-core[zstd]' (or pip install zstandard)"
        ) from exc
    dctx: Any = zstandard.ZstdDecompressor()
    reader = dctx.stream_reader(fileobj, read_across_frames=True)
    return cast(BinaryIO, io.BufferedReader(reader, buffer_size=1 << 16))


def _peek(fileobj: BinaryIO, n: int) -> tuple[bytes, BinaryIO]:
    """Read the first ``n`` bytes without losing them, whether or not ``fileobj`` seeks."""
    peek = getattr(fileobj, "peek", None)
    if callable(peek):
        head = cast(bytes, peek(n))[:n]
        if len(head) >= n or not fileobj.seekable():
            return head, fileobj
    if fileobj.seekable():
        pos = fileobj.tell()
        head = fileobj.read(n)
        fileobj.seek(pos)
        return head, fileobj
    buffered = io.BufferedReader(cast(Any, fileobj), buffer_size=1 << 16)
    return buffered.peek(n)[:n], cast(BinaryIO, buffered)


def decompressed_stream(fileobj: BinaryIO, media_type: str) -> BinaryIO:
    """Return a stream of the uncompressed layer tar read from ``fileobj``.

    ``media_type`` is the layer's descriptor media type (OCI or Docker schema2). When it does
    not name a compression (``application/octet-stream``, empty), the magic bytes decide.
    The magic bytes always decide how the blob is read, so a gzip blob mislabelled as plain
    tar is still read correctly; the media type only rejects compressions nyx lacks.

    :raises UnsupportedCompressionError: zstd without ``zstandard`` installed, or a media
        type nyx does not know (e.g. ``+bzip2``).
    """
    declared = compression_for_media_type(media_type)
    if declared is None and media_type.endswith(("+bzip2", "+xz", "+lz4", "+estargz")):
        raise UnsupportedCompressionError(
            f"layer media type {media_type!r} uses a compression nyx does not support "
            "(supported: gzip, zstd, uncompressed)"
        )
    head, stream = _peek(fileobj, 4)
    kind = detect_compression(head)
    if kind == "gzip":
        return cast(BinaryIO, gzip.GzipFile(fileobj=cast(IO[bytes], stream), mode="rb"))
    if kind == "zstd":
        return _zstd_reader(stream)
    return stream
