"""The container runtime: runc bundles, the overlay rootfs, the seccomp profile."""

from __future__ import annotations

from ._process import ProcessSpec, process_from_image, resolve_user
from ._rootfs import Rootfs
from ._runc import RuncRuntime
from ._seccomp import DEFAULT_CAPABILITIES, seccomp_profile

__all__ = [
    "DEFAULT_CAPABILITIES",
    "ProcessSpec",
    "Rootfs",
    "RuncRuntime",
    "process_from_image",
    "resolve_user",
    "seccomp_profile",
]
