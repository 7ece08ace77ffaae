"""The local image store: content-addressed blobs, layers unpacked once (privately)."""

from __future__ import annotations

from ._model import Image, ImageLimits
from ._reference import canonical_reference, normalize_tag
from ._store import ImageStore

__all__ = ["Image", "ImageLimits", "ImageStore", "canonical_reference", "normalize_tag"]
