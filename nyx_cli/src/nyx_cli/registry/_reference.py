"""Image references, parsed and normalised the way docker does.

``nginx:alpine`` → ``docker.io/library/nginx:alpine``; ``localhost:5000/app`` keeps its
registry; ``app@sha256:...`` pins a digest. The grammar is the one of the distribution
project's reference package (``[domain/]path[:tag][@digest]``), written from its documentation.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from ..errors import InvalidReferenceError

__all__ = [
    "DEFAULT_DOMAIN",
    "DOCKER_HUB_API_HOST",
    "Reference",
    "is_loopback_registry",
    "normalize_reference",
    "normalize_registry",
]

DEFAULT_DOMAIN = "docker.io"
DOCKER_HUB_API_HOST = "registry-1.docker.io"
_LEGACY_DOMAINS = {"index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
OFFICIAL_NAMESPACE = "library"
MAX_NAME_LENGTH = 255

_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*\Z")
_DOMAIN_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"(?:{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?\Z")
_TAG = re.compile(r"[\w][\w.-]{0,127}\Z")
_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}\Z")
_KNOWN_DIGEST_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}
_HEX64 = re.compile(r"[a-f0-9]{64}\Z")


@dataclass(frozen=True)
class Reference:
    """A fully qualified image reference.

    ``domain`` is the registry as users write it (``docker.io``, ``localhost:5000``), ``path``
    the repository (``library/nginx``); at least one of ``tag`` and ``digest`` is set.
    """

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """``domain/path``: the repository without tag or digest."""
        return f"{self.domain}/{self.path}"

    @property
    def api_host(self) -> str:
        """The host:port the registry API is served on (Docker Hub's is not ``docker.io``)."""
        return DOCKER_HUB_API_HOST if self.domain == DEFAULT_DOMAIN else self.domain

    @property
    def object(self) -> str:
        """What to ask ``/v2/<path>/manifests/<object>`` for: the digest when pinned."""
        return self.digest or self.tag or "latest"

    @property
    def familiar(self) -> str:
        """The short form docker shows (``nginx:alpine``, ``user/app:1``)."""
        text = str(self)
        prefix = f"{DEFAULT_DOMAIN}/{OFFICIAL_NAMESPACE}/"
        if text.startswith(prefix) and "/" not in self.path[len(OFFICIAL_NAMESPACE) + 1 :]:
            return text[len(prefix) :]
        if text.startswith(f"{DEFAULT_DOMAIN}/"):
            return text[len(DEFAULT_DOMAIN) + 1 :]
        return text

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def _fail(ref: str, why: str) -> InvalidReferenceError:
    return InvalidReferenceError(f"invalid image reference {ref!r}: {why}")


def normalize_registry(registry: str) -> str:
    """Normalise a registry name as given to ``nyx login`` / ``nyxd --insecure-registry``.

    Accepts ``host``, ``host:port``, ``https://host/v1/`` and Docker Hub's aliases (all of
    which become ``docker.io``). Returns the domain as it appears in references.
    """
    text = registry.strip()
    for scheme in ("https://", "http://"):
        if text.lower().startswith(scheme):
            text = text[len(scheme) :]
    text = text.split("/", 1)[0]
    if not text or not _DOMAIN.match(text):
        raise InvalidReferenceError(f"invalid registry {registry!r}: expected host[:port]")
    lowered = text.lower()
    if lowered == DEFAULT_DOMAIN or lowered in _LEGACY_DOMAINS:
        return DEFAULT_DOMAIN
    return lowered


def _split_domain(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if sep and (any(c in first for c in ".:") or first == "localhost" or first.lower() != first):
        return first, rest
    return DEFAULT_DOMAIN, name


def normalize_reference(ref: str) -> Reference:
    """Parse ``ref`` and fill in docker's defaults.

    ``nginx`` → ``docker.io/library/nginx:latest``; ``user/app`` → ``docker.io/user/app:latest``;
    ``host:5000/app@sha256:<hex>`` keeps registry and digest (no default tag is added to a
    digest reference); a reference with both tag and digest keeps both and pulls the digest.

    :raises InvalidReferenceError: naming the reference and what is wrong with it.
    """
    if not isinstance(ref, str) or not ref.strip():
        raise _fail(str(ref), "empty reference")
    text = ref.strip()
    if any(c.isspace() for c in text):
        raise _fail(ref, "contains whitespace")

    name, at, digest = text.partition("@")
    digest_value: str | None = None
    if at:
        if not _DIGEST.match(digest):
            raise _fail(ref, f"bad digest {digest!r} (expected algorithm:hex, e.g. sha256:...)")
        algorithm, _, hexpart = digest.partition(":")
        want = _KNOWN_DIGEST_LENGTHS.get(algorithm)
        if want is not None and len(hexpart) != want:
            raise _fail(ref, f"{algorithm} digest must have {want} hex digits, not {len(hexpart)}")
        if want is None:
            raise _fail(ref, f"unsupported digest algorithm {algorithm!r}")
        if hexpart.lower() != hexpart:
            raise _fail(ref, "digest hex must be lowercase")
        digest_value = digest

    tag: str | None = None
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG.match(tag):
            raise _fail(ref, f"bad tag {tag!r} (letters, digits, '_', '.', '-'; at most 128)")

    if not name:
        raise _fail(ref, "missing repository name")
    if _HEX64.match(name):
        raise _fail(ref, "a repository name must not be a 64-character hex string (an image id?)")

    domain, path = _split_domain(name)
    if not _DOMAIN.match(domain):
        raise _fail(ref, f"bad registry host {domain!r}")
    if domain.lower() in _LEGACY_DOMAINS or domain.lower() == DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = f"{OFFICIAL_NAMESPACE}/{path}"
    if not path:
        raise _fail(ref, "missing repository path after the registry host")
    for component in path.split("/"):
        if not _PATH_COMPONENT.match(component):
            why = "must be lowercase" if component.lower() != component else "has bad characters"
            raise _fail(
                ref,
                f"repository path component {component!r} {why} "
                "(lowercase letters, digits and single '.', '_', '__' or '-' separators)",
            )
    if len(domain) + 1 + len(path) > MAX_NAME_LENGTH:
        raise _fail(ref, f"repository name longer than {MAX_NAME_LENGTH} characters")

    if tag is None and digest_value is None:
        tag = "latest"
    return Reference(domain=domain, path=path, tag=tag, digest=digest_value)


def is_loopback_registry(domain: str) -> bool:
    """True for exactly ``localhost`` and loopback IP literals (127.0.0.0/8, ``::1``).

    These may use plain HTTP without being configured, as in docker. A name is trusted only
    when it is ``localhost`` itself: ``*.localhost`` names are resolved by whatever resolver
    the host has (DNS may send them anywhere), so they are ordinary registries.
    """
    host = domain
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    if host.lower() == "localhost":
        return True
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback
