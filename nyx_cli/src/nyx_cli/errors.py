"""The daemon's errors: every error class nyxd raises beyond the contract's.

All are :class:`nyx_core.NyxError` subclasses (the contract's hierarchy lives in
:mod:`nyx_core.errors`); the API maps each class to an HTTP status
(:func:`nyx_cli.daemon._api.error_status`).
"""

from __future__ import annotations

from nyx_core.errors import ConfigError, NyxError

__all__ = [
    "CommandError",
    "ConflictError",
    "DigestMismatchError",
    "ImageDigestMismatchError",
    "ImageError",
    "ImageLimitError",
    "ImageNotFoundError",
    "InvalidImageError",
    "InvalidReferenceError",
    "NoMatchingPlatformError",
    "NotFoundError",
    "NotImplementedYet",
    "RegistryError",
    "RuntimeErrorNyx",
    "UnauthorizedError",
    "UnsupportedCompressionError",
]


class RuntimeErrorNyx(NyxError):
    """The container runtime (runc, images, bundles) failed."""


class NotFoundError(NyxError, LookupError):
    """No container, image or network has that id or name (HTTP 404)."""


class ConflictError(NyxError):
    """The request conflicts with the current state: name taken, container running (409)."""


class NotImplementedYet(NyxError):
    """A feature whose module is not installed (HTTP 501)."""


class CommandError(RuntimeErrorNyx):
    """The container's command cannot be run: 127 not found, 126 not executable."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class RegistryError(NyxError):
    """Pulling from (or logging in to) an OCI registry failed; names the registry and image."""


class InvalidReferenceError(RegistryError, ConfigError):
    """An image reference (``nginx:alpine``, ``host:5000/app@sha256:...``) is malformed."""


class ImageNotFoundError(RegistryError):
    """The registry does not know the repository, tag or digest (404, MANIFEST_UNKNOWN, ...)."""


class UnauthorizedError(RegistryError):
    """The registry refused the credentials, or the image needs credentials nyx does not have."""


class DigestMismatchError(RegistryError):
    """A downloaded manifest or blob does not match its digest or size."""


class NoMatchingPlatformError(RegistryError):
    """A multi-platform image has no manifest for the requested platform."""


class UnsupportedCompressionError(RegistryError):
    """A layer uses a compression nyx cannot decompress (or zstd without ``zstandard``)."""


class ImageError(RuntimeErrorNyx):
    """An image archive or layout is malformed, or the store is damaged."""


class InvalidImageError(ImageError, ConfigError):
    """An image archive, layout or reference given to nyx is malformed (a client error)."""


class ImageDigestMismatchError(DigestMismatchError, ConfigError):
    """A blob of an archive being loaded does not match its digest or size."""


class ImageLimitError(InvalidImageError):
    """An image exceeds one of nyxd's caps (:class:`ImageLimits`); the message names it."""
