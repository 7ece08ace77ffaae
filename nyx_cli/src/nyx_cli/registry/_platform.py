"""Platforms for ``nyx pull``: the host's, ``os/arch[/variant]`` strings, and picking one
manifest out of a manifest list / OCI index the way containerd's platform matcher does."""

from __future__ import annotations

import platform as _platform
from dataclasses import dataclass
from typing import Any

from nyx_core.errors import ConfigError

from ..errors import NoMatchingPlatformError, RegistryError

__all__ = [
    "Platform",
    "host_platform",
    "normalize_arch",
    "parse_platform",
    "platform_of_config",
    "select_platform_manifest",
]


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text


_ARCH_ALIASES = {
    "x86_64": ("amd64", ""),
    "x86-64": ("amd64", ""),
    "amd64": ("amd64", ""),
    "aarch64": ("arm64", "v8"),
    "arm64": ("arm64", "v8"),
    "armv8l": ("arm64", "v8"),
    "armv7l": ("arm", "v7"),
    "armhf": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "armel": ("arm", "v6"),
    "armv5tel": ("arm", "v5"),
    "i386": ("386", ""),
    "i686": ("386", ""),
    "x86": ("386", ""),
}


def normalize_arch(arch: str, variant: str) -> tuple[str, str]:
    arch = arch.lower()
    base, default_variant = _ARCH_ALIASES.get(arch, (arch, ""))
    variant = variant.lower()
    if base == "arm64" and variant in ("", "8"):
        variant = "v8"
    elif base == "arm" and not variant:
        variant = default_variant or "v7"
    elif base == "arm" and variant.isdigit():
        variant = "v" + variant
    elif base == "amd64" and variant == "v1":
        variant = ""
    if not variant and arch != base and default_variant and base != "arm64":
        variant = default_variant
    return base, variant


def host_platform() -> Platform:
    """The platform images are pulled for by default: ``linux/<arch from platform.machine()>``."""
    arch, variant = normalize_arch(_platform.machine() or "amd64", "")
    return Platform("linux", arch, variant)


def parse_platform(text: str) -> Platform:
    """Parse ``os/arch[/variant]`` (``linux/arm64``, ``linux/arm/v7``) or a bare ``arch``."""
    parts = [p.strip() for p in text.strip().split("/")]
    if not text.strip() or len(parts) > 3 or not all(parts):
        raise ConfigError(f"invalid platform {text!r}: expected os/arch[/variant]")
    if len(parts) == 1:
        parts = ["linux", *parts]
    os_name = parts[0].lower()
    arch, variant = normalize_arch(parts[1], parts[2] if len(parts) == 3 else "")
    return Platform(os_name, arch, variant)


def _variant_preference(want: Platform) -> list[str]:
    if want.architecture == "arm64":
        return ["v8", ""] if want.variant in ("", "v8") else [want.variant]
    if want.architecture == "arm":
        order = ["v8", "v7", "v6", "v5"]
        start = order.index(want.variant) if want.variant in order else 1
        return order[start:]
    if want.architecture == "amd64":
        if not want.variant:
            return ["", "v1"]
        levels = ["v4", "v3", "v2", "", "v1"]
        start = levels.index(want.variant) if want.variant in levels else 3
        return levels[start:]
    return [want.variant, ""] if want.variant else [""]


def select_platform_manifest(index: dict[str, Any], want: Platform) -> dict[str, Any]:
    """Pick ``want``'s manifest descriptor from a manifest list / OCI index.

    Matching is on OS and architecture; for variants an exact match wins, then compatible
    older ones (``arm/v7`` accepts ``v6``, ``arm64`` accepts a missing ``v8``).

    :raises NoMatchingPlatformError: listing the platforms the index has.
    """
    manifests = index.get("manifests")
    if not isinstance(manifests, list):
        raise RegistryError("manifest list / OCI index has no 'manifests' array")
    prefs = _variant_preference(want)
    best: tuple[int, dict[str, Any]] | None = None
    available: list[str] = []
    for entry in manifests:
        if not isinstance(entry, dict):
            continue
        plat = entry.get("platform")
        if not isinstance(plat, dict):
            continue
        os_name = str(plat.get("os", "")).lower()
        if os_name == "unknown":  # attestation manifests (buildkit)
            continue
        arch, variant = normalize_arch(
            str(plat.get("architecture", "")), str(plat.get("variant", ""))
        )
        available.append(str(Platform(os_name, arch, variant)))
        if os_name != want.os or arch != want.architecture or variant not in prefs:
            continue
        rank = prefs.index(variant)
        if best is None or rank < best[0]:
            best = (rank, entry)
    if best is None:
        listed = ", ".join(sorted(set(available))) or "none"
        raise NoMatchingPlatformError(f"no manifest for platform {want} (the image has: {listed})")
    return best[1]


def platform_of_config(config: dict[str, Any]) -> Platform | None:
    """The platform an image config declares (``os``, ``architecture``, ``variant``)."""
    os_name = config.get("os")
    arch = config.get("architecture")
    if not isinstance(os_name, str) or not isinstance(arch, str) or not os_name or not arch:
        return None
    base, variant = normalize_arch(arch, str(config.get("variant") or ""))
    return Platform(os_name.lower(), base, variant)
