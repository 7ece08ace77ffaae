"""``nyx pull`` and ``nyx login``: the OCI distribution client (httpx underneath)."""

from __future__ import annotations

from ._pull import ProgressEvent, PulledImage, login, pull_to_oci_layout
from ._reference import Reference, normalize_reference

__all__ = [
    "ProgressEvent",
    "PulledImage",
    "Reference",
    "login",
    "normalize_reference",
    "pull_to_oci_layout",
]
