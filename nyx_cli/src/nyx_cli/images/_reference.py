"""Image references: parsed, checked and normalised (``busybox`` is ``busybox:latest``,
Docker's fully qualified form ``docker.io/library/busybox:latest``)."""

from __future__ import annotations

import re

from ..errors import InvalidImageError

__all__ = ["canonical_reference", "normalize_tag"]

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}\Z")
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*\Z")
_DOMAIN = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]+)?\Z")
_TAG = re.compile(r"[\w][\w.-]{0,127}\Z")


def _split(ref: str) -> tuple[str, str | None, str | None]:
    """``name``, ``tag``, ``digest`` of a reference; raises :class:`ImageError` if malformed."""
    text = ref.strip()
    name, _, digest = text.partition("@")
    tag: str | None = None
    slash, colon = name.rfind("/"), name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG.match(tag):
            raise InvalidImageError(f"invalid image reference {ref!r}: bad tag {tag!r}")
    if digest and not _DIGEST.match(digest):
        raise InvalidImageError(f"invalid image reference {ref!r}: bad digest {digest!r}")
    if not name or any(c.isspace() for c in text):
        raise InvalidImageError(f"invalid image reference {ref!r}")
    first, sep, rest = name.partition("/")
    has_domain = sep and ("." in first or ":" in first or first == "localhost")
    if has_domain and not _DOMAIN.match(first):
        raise InvalidImageError(f"invalid image reference {ref!r}: bad registry host {first!r}")
    path = rest if has_domain else name
    for component in path.split("/"):
        if not _COMPONENT.match(component):
            raise InvalidImageError(
                f"invalid image reference {ref!r}: repository component {component!r} must be "
                "lowercase letters, digits and separators"
            )
    return name, tag, digest or None


def normalize_tag(ref: str) -> str:
    """The tag as stored: the reference as written, with ``:latest`` when it has no tag.

    ``busybox`` → ``busybox:latest``; ``docker.io/library/nginx:alpine`` stays as is.
    """
    name, tag, _ = _split(ref)
    return f"{name}:{tag or 'latest'}"


def canonical_reference(ref: str) -> str:
    """Docker's fully qualified form: ``busybox`` → ``docker.io/library/busybox:latest``."""
    name, tag, digest = _split(ref)
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        domain, path = first, rest
    else:
        domain, path = "docker.io", name
    if domain in ("index.docker.io", "registry-1.docker.io"):
        domain = "docker.io"
    if domain == "docker.io" and "/" not in path:
        path = f"library/{path}"
    text = f"{domain}/{path}"
    if tag or not digest:
        text += f":{tag or 'latest'}"
    if digest:
        text += f"@{digest}"
    return text
