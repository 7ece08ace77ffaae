"""What the image store hands out and what bounds it: :class:`Image`, :class:`ImageLimits`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

__all__ = ["Image", "ImageLimits"]


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
