"""The local image store: content-addressed blobs, layers unpacked once (privately)."""

from __future__ import annotations

from ._store import Image, ImageLimits, ImageStore, canonical_reference, normalize_tag

__all__ = ["Image", "ImageLimits", "ImageStore", "canonical_reference", "normalize_tag"]
