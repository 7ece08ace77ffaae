"""``nyx pull``: fetch an image from an OCI registry (distribution API v2) into an OCI layout.

HTTP goes through :mod:`._registry_client` (httpx). :func:`pull_to_oci_layout` resolves the
reference, authenticates (anonymous or stored bearer tokens, basic auth), picks the host's
platform from a manifest list / OCI index, downloads the config and layers in parallel
(resuming interrupted downloads with ``Range``, skipping blobs already present) and writes a
verified OCI image layout. Docker schema2 manifests are stored as-is, with their own media
types, so the manifest digest stays the registry's.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from loguru import logger

from nyx_core.errors import ConfigError

from .._faults import checkpoint
from ..errors import DigestMismatchError, NoMatchingPlatformError, RegistryError, UnauthorizedError
from ._auth import Credentials, load_credentials, store_credentials
from ._layout import (
    DIGEST_RE,
    OCI_INDEX,
    Descriptor,
    OciLayout,
    descriptor,
    hash_bytes,
    partial_file,
)
from ._platform import (
    Platform,
    host_platform,
    normalize_arch,
    parse_platform,
    platform_of_config,
    select_platform_manifest,
)
from ._reference import Reference, is_loopback_registry, normalize_reference, normalize_registry

if TYPE_CHECKING:
    from ._client import RegistryClient

__all__ = [
    "MEDIA_TYPES_INDEX",
    "MEDIA_TYPES_MANIFEST",
    "Platform",
    "ProgressEvent",
    "PulledImage",
    "host_platform",
    "is_insecure_registry",
    "login",
    "parse_platform",
    "pull_to_oci_layout",
    "select_platform_manifest",
]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_SCHEMA1 = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)
MEDIA_TYPES_INDEX = (OCI_INDEX, DOCKER_LIST)
MEDIA_TYPES_MANIFEST = (OCI_MANIFEST, DOCKER_MANIFEST)
CONFIG_TYPES = (
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
)
ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))

MAX_MANIFEST_BYTES = 4 << 20
CHUNK = 1 << 16
PROGRESS_EVERY = 512 << 10

logger.disable(__name__)

ProgressKind = Literal[
    "resolve", "manifest", "blob-start", "blob-progress", "blob-skip", "blob-done", "done"
]


@dataclass(frozen=True)
class ProgressEvent:
    """One step of a pull, for a progress display.

    ``kind`` is ``resolve`` (reference normalised, registry contacted), ``manifest``
    (manifest chosen: ``digest``), ``blob-start`` / ``blob-progress`` / ``blob-done`` for each
    downloaded blob (``current`` of ``total`` bytes), ``blob-skip`` for a blob already present
    and ``done``. Callbacks may be called from worker threads, never two at a time.
    """

    kind: ProgressKind
    reference: str
    digest: str = ""
    media_type: str = ""
    current: int = 0
    total: int = 0
    message: str = ""


@dataclass(frozen=True)
class PulledImage:
    """The result of :func:`pull_to_oci_layout`.

    ``digest`` is the digest of the single-platform manifest stored in the layout;
    ``index_digest`` that of the manifest list / OCI index it was chosen from (what docker
    shows as the repo digest), ``None`` for single-platform images.
    """

    reference: str
    digest: str
    layout_path: Path
    index_digest: str | None = None
    media_type: str = OCI_MANIFEST
    platform: str = ""
    size: int = 0
    downloaded: int = 0

    @property
    def repo_digest(self) -> str:
        """``name@digest`` of what the reference resolved to in the registry."""
        ref = normalize_reference(self.reference)
        return f"{ref.name}@{self.index_digest or self.digest}"


# --------------------------------------------------------------------------- downloads


class _Emitter:
    def __init__(self, callback: Callable[[ProgressEvent], None] | None, reference: str) -> None:
        self.callback = callback
        self.reference = reference
        self.lock = threading.Lock()

    def __call__(self, kind: ProgressKind, **fields: Any) -> None:
        if self.callback is None:
            return
        with self.lock:
            self.callback(ProgressEvent(kind, self.reference, **fields))


class _Aborted(Exception):
    """Another download of the same pull failed; stop this one."""


class _LocalError(Exception):
    """Writing the layout failed (disk full, permissions); retrying will not help."""


class _Transient(Exception):
    """A retryable HTTP status (429, 5xx) during a blob download."""


def _content_range_start(value: str) -> int | None:
    match = re.match(r"\s*bytes\s+(\d+)-\d+/(?:\d+|\*)\s*\Z", value)
    return int(match.group(1)) if match else None


def _hash_file(fh: Any, algorithm: str) -> Any:
    hasher = hashlib.new(algorithm)
    fh.seek(0)
    while chunk := fh.read(CHUNK):
        hasher.update(chunk)
    return hasher


@dataclass
class _Fill:
    """State of one blob download: what is in the partial file and how it got there."""

    hasher: Any
    offset: int = 0
    fetched: int = 0
    resumed: bool = False  # some bytes came from before a Range request


def _fill_partial(
    client: RegistryClient,
    ref: Reference,
    scope: str,
    desc: Descriptor,
    fh: Any,
    partial: Path,
    emit: _Emitter,
    abort: threading.Event,
    retries: int,
) -> _Fill:
    """Append to ``fh`` until it holds ``desc.size`` bytes, resuming with ``Range``."""
    state = _Fill(hashlib.new(desc.algorithm))
    path = f"/v2/{ref.path}/blobs/{desc.digest}"
    failures = 0
    retryable: tuple[type[Exception], ...] = (*client.transport_errors, _Transient)
    while True:
        if abort.is_set():
            raise _Aborted()
        have = os.fstat(fh.fileno()).st_size
        if have > desc.size:
            fh.truncate(0)
            have = 0
        state.hasher = _hash_file(fh, desc.algorithm)
        state.offset = have
        if have and have == desc.size:
            state.resumed = True  # complete from an earlier attempt
            return state
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            resp = client.request("GET", path, scope, headers)
            with resp:
                if resp.status in (429, 500, 502, 503, 504):
                    raise _Transient(f"HTTP {resp.status} {resp.reason}")
                if resp.status == 416 and have:
                    fh.truncate(0)
                    raise _Transient("registry refused to resume (HTTP 416)")
                if resp.status not in (200, 206):
                    client.fail(resp, f"blob {desc.digest}", ref)
                if resp.status == 206:
                    start = _content_range_start(resp.headers.get("Content-Range", ""))
                    if start != have:
                        fh.truncate(0)
                        raise _Transient(f"unexpected Content-Range for offset {have}")
                    state.resumed = state.resumed or have > 0
                elif have:
                    fh.truncate(0)  # the registry ignored Range: start over
                    state.offset = 0
                    state.hasher = hashlib.new(desc.algorithm)
                last = state.offset
                while chunk := resp.read(CHUNK):
                    try:
                        fh.write(chunk)
                    except OSError as exc:  # local disk, not the network: no retry
                        raise _LocalError(f"writing {partial}: {exc}") from exc
                    state.hasher.update(chunk)
                    state.offset += len(chunk)
                    state.fetched += len(chunk)
                    if state.offset > desc.size:
                        break
                    if state.offset - last >= PROGRESS_EVERY:
                        last = state.offset
                        emit(
                            "blob-progress",
                            digest=desc.digest,
                            media_type=desc.media_type,
                            current=state.offset,
                            total=desc.size,
                        )
                    if abort.is_set():
                        raise _Aborted()
                fh.flush()
            if state.offset < desc.size:
                raise _Transient(f"connection closed after {state.offset} of {desc.size} bytes")
            return state
        except retryable as exc:
            fh.flush()
            failures += 1
            logger.debug("download of {} interrupted ({}), attempt {}", desc.digest, exc, failures)
            if failures > retries:
                raise RegistryError(
                    f"download of blob {desc.digest} of {ref} from {client.domain} failed "
                    f"after {failures} attempts: {exc}"
                ) from exc
            emit(
                "blob-progress",
                digest=desc.digest,
                media_type=desc.media_type,
                current=os.fstat(fh.fileno()).st_size,
                total=desc.size,
                message=f"retrying after: {exc}",
            )
            time.sleep(min(0.1 * 2**failures, 5.0))


def _download_blob(
    client: RegistryClient,
    ref: Reference,
    scope: str,
    desc: Descriptor,
    layout: OciLayout,
    emit: _Emitter,
    abort: threading.Event,
    retries: int,
) -> int:
    """Download one blob into the layout (resuming a ``.partial``); returns bytes fetched.

    A blob that fails verification after a resumed download is fetched once more from the
    start (the kept part may be what was wrong); otherwise the mismatch is an error.
    """
    final = layout.blob(desc.digest)
    final.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = final.with_name(final.name + ".partial")
    with partial_file(final) as fh:
        if layout.present(desc):  # finished by someone else while we waited for the lock
            emit("blob-skip", digest=desc.digest, media_type=desc.media_type, total=desc.size)
            return 0
        emit("blob-start", digest=desc.digest, media_type=desc.media_type, total=desc.size)
        fetched = 0
        refetches = 0
        while True:
            state = _fill_partial(client, ref, scope, desc, fh, partial, emit, abort, retries)
            fetched += state.fetched
            size = os.fstat(fh.fileno()).st_size
            actual = f"{desc.algorithm}:{state.hasher.hexdigest()}"
            if size == desc.size and actual == desc.digest:
                break
            if state.resumed and refetches < 2:
                refetches += 1
                logger.debug("resumed download of {} does not verify: refetching", desc.digest)
                fh.truncate(0)
                continue
            partial.unlink(missing_ok=True)
            raise DigestMismatchError(
                f"blob of {ref} from registry {client.domain} does not match its descriptor: "
                f"expected {desc.digest} ({desc.size} bytes), got {actual} ({size} bytes)"
            )
        os.fsync(fh.fileno())
        os.replace(partial, final)
    checkpoint("pull:blob")
    layout.publish(final)
    emit("blob-done", digest=desc.digest, media_type=desc.media_type, current=size, total=size)
    return fetched


def _fetch_blobs(
    client: RegistryClient,
    ref: Reference,
    scope: str,
    descs: Sequence[Descriptor],
    layout: OciLayout,
    emit: _Emitter,
    workers: int,
    retries: int,
) -> int:
    todo: list[Descriptor] = []
    seen: set[str] = set()
    for desc in descs:
        if desc.digest in seen:
            continue
        seen.add(desc.digest)
        if layout.present(desc):
            layout.publish(layout.blob(desc.digest))
            emit("blob-skip", digest=desc.digest, media_type=desc.media_type, total=desc.size)
        else:
            todo.append(desc)
    if not todo:
        return 0
    abort = threading.Event()
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(todo)))) as pool:
        futures = [
            pool.submit(_download_blob, client, ref, scope, d, layout, emit, abort, retries)
            for d in todo
        ]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f for f in done if f.exception() is not None), None)
        if failed is not None:
            abort.set()
            for fut in futures:
                fut.cancel()
            wait(futures)
            exc = failed.exception()
            assert exc is not None
            raise exc
    return sum(f.result() for f in futures)


# --------------------------------------------------------------------------- manifests


def _fetch_manifest(
    client: RegistryClient, ref: Reference, obj: str, scope: str
) -> tuple[bytes, str, str]:
    """GET a manifest by tag or digest; returns (body, media type, verified digest)."""
    path = f"/v2/{ref.path}/manifests/{obj}"
    for attempt in range(3):
        resp = client.request_retrying("GET", path, scope, {"Accept": ACCEPT})
        with resp:
            if resp.status != 200:
                client.fail(resp, f"manifest {obj!r}", ref)
            try:
                body = resp.read(MAX_MANIFEST_BYTES + 1)
            except client.transport_errors as exc:
                if attempt == 2:
                    raise RegistryError(
                        f"registry {client.domain}: reading manifest {obj!r} of {ref}: {exc}"
                    ) from exc
                continue
            content_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
            header_digest = resp.headers.get("Docker-Content-Digest", "").strip()
        break
    if len(body) > MAX_MANIFEST_BYTES:
        raise RegistryError(f"manifest {obj!r} of {ref} is larger than 4 MiB")
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise RegistryError(f"manifest {obj!r} of {ref} is not JSON") from exc
    if not isinstance(data, dict):
        raise RegistryError(f"manifest {obj!r} of {ref} is not a JSON object")
    media_type = str(data.get("mediaType") or content_type or "")
    if media_type not in (*MEDIA_TYPES_INDEX, *MEDIA_TYPES_MANIFEST, *DOCKER_SCHEMA1):
        if isinstance(data.get("manifests"), list):
            media_type = OCI_INDEX
        elif isinstance(data.get("layers"), list):
            media_type = OCI_MANIFEST
    if DIGEST_RE.match(obj):
        digest = hash_bytes(obj, body)
        if digest != obj:
            raise DigestMismatchError(
                f"manifest of {ref} from registry {client.domain} does not match its digest: "
                f"asked for {obj}, content hashes to {digest}"
            )
    else:
        digest = hash_bytes("sha256:", body)
        if header_digest.startswith("sha256:") and header_digest != digest:
            raise DigestMismatchError(
                f"manifest {obj!r} of {ref} from registry {client.domain}: "
                f"Docker-Content-Digest says {header_digest}, content hashes to {digest}"
            )
    return body, media_type, digest


def is_insecure_registry(domain: str, insecure_registries: Sequence[str]) -> bool:
    """May registry ``domain`` use plain HTTP or unverified TLS?

    Yes for loopback registries (exactly ``localhost``, 127.0.0.0/8, ``::1``) and for those
    ``insecure_registries`` covers: ``host[:port]`` (a bare host covers all its ports) or a
    CIDR, matched against registries addressed by an IP literal only (a name is never
    resolved to decide).
    """
    if is_loopback_registry(domain):
        return True
    host = urllib.parse.urlsplit(f"//{domain}").hostname or domain
    for raw in insecure_registries:
        entry = raw.strip()
        if not entry:
            continue
        if "/" in entry and "://" not in entry:
            try:
                net = ipaddress.ip_network(entry, strict=False)
            except ValueError as exc:
                raise ConfigError(
                    f"invalid insecure registry {raw!r}: expected host[:port] or a CIDR"
                ) from exc
            with contextlib.suppress(ValueError):
                if ipaddress.ip_address(host) in net:
                    return True
            continue
        name = normalize_registry(entry)
        if name == domain or (":" not in name and name == host):
            return True
    return False


# --------------------------------------------------------------------------- public API


def pull_to_oci_layout(
    reference: str,
    dest: Path,
    *,
    insecure_registries: Sequence[str] = (),
    platform: str | None = None,
    auth_file: Path | None = None,
    progress: Callable[[ProgressEvent], None] | None = None,
    blob_cache: Path | None = None,
    max_concurrent_downloads: int = 3,
    retries: int = 5,
    timeout: float = 60.0,
) -> PulledImage:
    """Pull ``reference`` into the OCI image layout ``dest`` (created if missing).

    The layout gets one ``index.json`` entry for the single-platform manifest, annotated with
    the normalised reference (``org.opencontainers.image.ref.name``); an existing entry for the
    same reference is replaced, other entries and blobs are kept. Blobs already in ``dest`` or
    in ``blob_cache`` (a directory with ``blobs/<alg>/<hex>``, hard-linked where possible) are
    not downloaded again.

    :param insecure_registries: registries (``host[:port]`` or CIDRs) that may use plain HTTP
        or unverified TLS; ``localhost``, 127.0.0.0/8 and ``::1`` always may.
    :param platform: ``os/arch[/variant]``; default the host's (``linux/amd64``, ...).
    :param auth_file: docker-style config with stored credentials (``~/.docker/config.json``).
    :param progress: called with :class:`ProgressEvent` (from worker threads, serialised).
    :raises InvalidReferenceError, ImageNotFoundError, UnauthorizedError,
        DigestMismatchError, NoMatchingPlatformError, RegistryError: all ``NyxError``.
    """
    ref = normalize_reference(reference)
    want = parse_platform(platform) if platform else host_platform()
    from ._client import RegistryClient  # httpx: imported on the first pull

    client = RegistryClient(
        ref.domain,
        insecure=is_insecure_registry(ref.domain, insecure_registries),
        credentials=load_credentials(ref.domain, auth_file),
        timeout=timeout,
    )
    with client:
        return _pull(
            client,
            ref,
            dest,
            want=want,
            explicit_platform=bool(platform),
            progress=progress,
            blob_cache=blob_cache,
            workers=max_concurrent_downloads,
            retries=retries,
        )


def _pull(
    client: RegistryClient,
    ref: Reference,
    dest: Path,
    *,
    want: Platform,
    explicit_platform: bool,
    progress: Callable[[ProgressEvent], None] | None,
    blob_cache: Path | None,
    workers: int,
    retries: int,
) -> PulledImage:
    emit = _Emitter(progress, str(ref))
    scope = f"repository:{ref.path}:pull"
    client.ping()
    emit("resolve", message=f"{client.scheme}://{client.host}/v2/{ref.path}")
    logger.info("pulling {} from {}://{}", ref, client.scheme, client.host)

    body, media_type, digest = _fetch_manifest(client, ref, ref.object, scope)
    index_digest: str | None = None
    plat = ""
    if media_type in MEDIA_TYPES_INDEX:
        index = json.loads(body)
        entry = select_platform_manifest(index, want)
        chosen = descriptor(entry, f"manifest list entry of {ref}")
        index_digest = digest
        body, media_type, digest = _fetch_manifest(client, ref, chosen.digest, scope)
        if len(body) != chosen.size:
            raise DigestMismatchError(
                f"manifest {chosen.digest} of {ref}: index says {chosen.size} bytes, "
                f"registry sent {len(body)}"
            )
        p = entry.get("platform") or {}
        arch, variant = normalize_arch(str(p.get("architecture", "")), str(p.get("variant", "")))
        plat = str(Platform(str(p.get("os", "")).lower(), arch, variant))
    if media_type in DOCKER_SCHEMA1:
        raise RegistryError(
            f"{ref} only has a Docker schema 1 manifest, which nyx does not support "
            "(re-push it with a current docker/skopeo to get schema 2 or OCI)"
        )
    if media_type not in MEDIA_TYPES_MANIFEST:
        raise RegistryError(f"{ref}: unsupported manifest media type {media_type!r}")
    manifest = json.loads(body)
    config = descriptor(manifest.get("config"), f"config descriptor of {ref}")
    if config.media_type and config.media_type not in CONFIG_TYPES:
        raise RegistryError(
            f"{ref} is not a container image: its config media type is {config.media_type!r} "
            f"(expected one of {', '.join(CONFIG_TYPES)})"
        )
    raw_layers = manifest.get("layers")
    if not isinstance(raw_layers, list):
        raise RegistryError(f"manifest {digest} of {ref} has no 'layers' array")
    layers = [descriptor(lay, f"layer {i} of {ref}") for i, lay in enumerate(raw_layers)]
    manifest_desc = Descriptor(media_type, digest, len(body))
    total = config.size + sum(lay.size for lay in layers)
    emit("manifest", digest=digest, media_type=media_type, total=total)

    try:
        dest.mkdir(mode=0o700, parents=True, exist_ok=True)
        layout = OciLayout(dest, blob_cache)
    except OSError as exc:
        raise ConfigError(f"cannot use {str(dest)!r} as image layout directory: {exc}") from exc
    try:
        downloaded = _fetch_blobs(
            client, ref, scope, [config, *layers], layout, emit, workers, retries
        )
    except (_LocalError, OSError) as exc:
        raise RegistryError(f"pulling {ref} into {str(dest)!r}: {exc}") from exc

    try:
        config_json = json.loads(layout.blob(config.digest).read_bytes())
    except ValueError as exc:
        raise RegistryError(f"image config {config.digest} of {ref} is not JSON") from exc
    image_platform = platform_of_config(config_json) if isinstance(config_json, dict) else None
    if index_digest is None and image_platform is not None:
        plat = str(image_platform)
        if explicit_platform and (image_platform.os, image_platform.architecture) != (
            want.os,
            want.architecture,
        ):
            raise NoMatchingPlatformError(
                f"{ref} is a single-platform image for {image_platform}, not {want}"
            )

    try:
        layout.write_verified(manifest_desc, body)
        layout.add_to_index(manifest_desc, ref, plat)
    except OSError as exc:
        raise RegistryError(f"writing the image layout {str(dest)!r}: {exc}") from exc
    emit("done", digest=digest, media_type=media_type, current=total, total=total)
    logger.info("pulled {} {} ({} bytes downloaded)", ref, digest, downloaded)
    return PulledImage(
        reference=str(ref),
        digest=digest,
        layout_path=dest,
        index_digest=index_digest,
        media_type=media_type,
        platform=plat,
        size=total,
        downloaded=downloaded,
    )


def login(
    registry: str,
    username: str,
    password: str,
    auth_file: Path | None = None,
    *,
    insecure_registries: Sequence[str] = (),
    timeout: float = 30.0,
) -> None:
    """Check ``username``/``password`` against ``registry`` and store them, as ``docker login``.

    The registry's ``/v2/`` challenge decides how: a bearer realm must issue a token for the
    credentials, a basic-auth registry must accept them. They are then written to
    ``auth_file`` (default ``~/.docker/config.json``) as ``auths.<registry>.auth``.

    :raises UnauthorizedError: the registry refused the credentials.
    """
    domain = normalize_registry(registry)
    if not username:
        raise ConfigError("login: username must not be empty")
    from ._client import TRANSPORT_ERRORS, RegistryClient, error_detail

    creds = Credentials(username=username, password=password)
    with RegistryClient(
        domain,
        insecure=is_insecure_registry(domain, insecure_registries),
        credentials=creds,
        timeout=timeout,
    ) as client:
        client.ping()
        if client.mode == "bearer":
            client.fetch_token("", account=True)
        elif client.mode == "basic":
            basic = creds.basic_header()
            assert basic is not None
            try:
                resp = client.send("GET", f"{client.base_url()}/v2/", {"Authorization": basic})
            except TRANSPORT_ERRORS as exc:
                raise RegistryError(f"login to {domain} failed: {exc}") from exc
            with resp:
                if resp.status in (401, 403):
                    _, text = error_detail(resp)
                    raise UnauthorizedError(
                        f"registry {domain} refused the credentials for user {username!r}: {text}"
                    )
                if resp.status != 200:
                    _, text = error_detail(resp)
                    raise RegistryError(f"login to {domain} failed: {text}")
    store_credentials(domain, username, password, auth_file)
    logger.info("stored credentials for {} (user {})", domain, username)
