"""The container runtime: runc bundles, the overlay rootfs, the seccomp profile."""

from __future__ import annotations

from ._runc import (
    DEFAULT_CAPABILITIES,
    ProcessSpec,
    Rootfs,
    RuncRuntime,
    process_from_image,
    resolve_user,
)
from ._seccomp import seccomp_profile

__all__ = [
    "DEFAULT_CAPABILITIES",
    "ProcessSpec",
    "Rootfs",
    "RuncRuntime",
    "process_from_image",
    "resolve_user",
    "seccomp_profile",
]
