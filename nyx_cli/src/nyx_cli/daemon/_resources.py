"""What the supervisor serves besides containers: images, networks and volumes.

:class:`Resources` is a part of :class:`~nyx_cli.daemon._supervisor.Supervisor` (its base
class), kept apart to keep each module readable in one sitting: the image store's calls
(load, pull, remove while no container uses it), user networks through the
:class:`~nyx_cli.daemon._networks.NetworkRegistry`, named volumes and the host-side checks of
a container's mounts, its stop signal and its init binary.
"""

from __future__ import annotations

import contextlib
import importlib
import secrets
import shutil
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loguru import logger

from nyx_core import NetworkBackend
from nyx_core.errors import ConfigError, NyxError

from ..errors import ConflictError, NotFoundError, NotImplementedYet
from ._faults import Faults
from ._host import Host
from ._live import Live
from ._models import ContainerSpec
from ._models_runtime import parse_signal
from ._networks import NetworkRegistry
from ._settings import DaemonSettings
from ._volumes import ANONYMOUS_LABEL, VolumeStore

__all__ = ["Resources", "all_labels_match", "image_public"]

#: states in which a container holds its network (and its published ports)
HOLDS_NETWORK = ("created", "running", "restarting")


def image_public(img: Any) -> dict[str, Any]:
    """The image object of the API."""
    return {
        "id": getattr(img, "id", None),
        "repo_tags": list(getattr(img, "repo_tags", []) or []),
        "digest": getattr(img, "digest", None),
        "size": getattr(img, "size", None),
        "created": getattr(img, "created", None),
    }


def all_labels_match(have: dict[str, str], want: dict[str, str | None]) -> bool:
    """``want`` maps key → value (or None: key present)."""
    return all(k in have and (v is None or have[k] == v) for k, v in want.items())


class Resources:
    """Images, networks and volumes (see the module docstring); the supervisor sets the
    attributes below."""

    settings: DaemonSettings
    backend: NetworkBackend
    host: Host
    lock: threading.RLock
    live: dict[str, Live]
    networks: NetworkRegistry
    volumes: VolumeStore
    faults: Faults

    # ------------------------------------------------------------------ images

    def _image(self, ref: str) -> Any:
        try:
            img = self.host.images.get(ref)
        except NyxError:
            raise
        except (KeyError, LookupError, FileNotFoundError) as exc:
            raise NotFoundError(f"no such image: {ref}") from exc
        if img is None:
            raise NotFoundError(f"no such image: {ref}")
        return img

    def list_images(self) -> list[dict[str, Any]]:
        return [image_public(i) for i in self.host.images.list()]

    def load_image(self, path: Path) -> list[dict[str, Any]]:
        images = self.host.images.load(path)
        logger.bind(images=[getattr(i, "repo_tags", None) for i in images]).info("images loaded")
        return [image_public(i) for i in images]

    def pull_image(
        self, reference: str, insecure: bool = False, progress: Callable[..., Any] | None = None
    ) -> dict[str, Any]:
        """Pull ``reference`` into the image store.

        Whether a registry may use plain HTTP or unverified TLS is nyxd's own configuration
        (``--insecure-registry``; loopback registries always may), never the caller's:
        ``insecure=True`` for a registry that is not configured so is refused before any
        traffic, with a :class:`ConfigError` naming the registry and the flag.
        """
        try:
            registry: Any = importlib.import_module("nyx_cli.registry._pull")
        except ImportError as exc:
            raise NotImplementedYet(
                "image pull is not available: nyx_cli.registry is not installed"
            ) from exc
        ref = registry.normalize_reference(reference)
        configured = tuple(self.settings.insecure_registries)
        if insecure and not registry.is_insecure_registry(ref.domain, configured):
            raise ConfigError(
                f"registry {ref.domain} is not an insecure registry of this nyxd: plain HTTP "
                "and unverified TLS are nyxd's configuration, not a request option; start "
                f"nyxd with --insecure-registry {ref.domain} (or NYXD_INSECURE_REGISTRIES) to "
                "allow them"
            )
        tmp_root = self.settings.state_dir / "tmp"
        tmp_root.mkdir(mode=0o700, parents=True, exist_ok=True)
        dest = tmp_root / f"pull-{secrets.token_hex(6)}"
        dest.mkdir(mode=0o700)  # the layout inside is 0700 directories, 0600 files
        try:
            pulled = registry.pull_to_oci_layout(
                reference,
                dest,
                insecure_registries=configured,
                progress=progress,
                auth_file=self.settings.registry_auth_file,
            )
            self.faults.hit("pull:fetched")
            img = self.host.images.import_oci_layout(Path(pulled.layout_path), reference)
        finally:
            shutil.rmtree(dest, ignore_errors=True)
        logger.bind(reference=reference).info("image pulled")
        return image_public(img)

    def remove_image(self, ref: str) -> None:
        img = self._image(ref)
        ident = getattr(img, "id", None)
        tags = set(getattr(img, "repo_tags", []) or [])
        with self.lock:
            for live in self.live.values():
                used = live.rec.spec.image
                if used in (ref, ident) or used in tags:
                    raise ConflictError(
                        f"image {ref!r} is used by container {live.rec.name!r}; remove it first"
                    )
        self.host.images.remove(ref)

    # ------------------------------------------------------------------ networks

    def list_networks(self) -> list[dict[str, Any]]:
        return self.networks.list()

    def get_network(self, name: str) -> dict[str, Any]:
        return self.networks.get(name)

    def create_network(
        self,
        name: str,
        internal: bool = False,
        subnet: str | None = None,
        gateway: str | None = None,
        options: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
        ipv6: bool = False,
        subnet6: str | None = None,
        gateway6: str | None = None,
    ) -> dict[str, Any]:
        """Create a network through the driver (refused without ``network_lifecycle``)."""
        with self.lock:
            return self.networks.create(
                name,
                internal=internal,
                subnet=subnet,
                gateway=gateway,
                options=options,
                labels=labels,
                ipv6=ipv6,
                subnet6=subnet6,
                gateway6=gateway6,
            )

    def remove_network(self, name: str) -> None:
        """Remove a network no container uses, from the driver first."""
        with self.lock:
            users = [
                v.rec.name
                for v in self.live.values()
                if v.rec.state in HOLDS_NETWORK and name in v.rec.networks
            ]
            self.networks.remove(name, users)

    def reload_networks(self) -> dict[str, Any]:
        """``nyx network reload``: the driver re-applies its host state from its records."""
        if not self.backend.implements("nyx_backend_reload"):
            raise NotImplementedYet(
                f"net driver {self.backend.name!r} cannot reload (it has no nyx_backend_reload)"
            )
        report = self.backend.reload()
        logger.info("networks reloaded", driver=self.backend.name)
        return {"driver": self.backend.name, "report": report}

    # ------------------------------------------------------------------ mounts and volumes

    def _check_mounts(self, spec: ContainerSpec) -> tuple[ContainerSpec, set[str]]:
        """Host-side checks of binds and ``init``; anonymous volumes get their names
        (returned too)."""
        from ._mounts import check_binds

        check_binds(spec, self.settings)
        if spec.init:
            self.init_binary()
        anonymous: set[str] = set()
        if not any(m.type == "volume" and m.source is None for m in spec.mounts):
            return spec, anonymous
        spec = spec.model_copy(deep=True)
        for m in spec.mounts:
            if m.type == "volume" and m.source is None:
                m.source = secrets.token_hex(32)
                anonymous.add(m.source)
        return spec, anonymous

    def _claim_volumes(self, spec: ContainerSpec, cid: str, anonymous: set[str]) -> None:
        """Create the volumes ``spec`` names that do not exist yet (under ``self.lock``, so a
        volume cannot be removed between its check and the container's record)."""
        made: list[str] = []
        try:
            for m in spec.mounts:
                if m.type != "volume" or m.source is None or self.volumes.exists(m.source):
                    continue
                labels = {ANONYMOUS_LABEL: cid} if m.source in anonymous else None
                if self.volumes.ensure(m.source, labels):
                    made.append(m.source)
        except BaseException:
            for name in made:
                with contextlib.suppress(NyxError):
                    self.volumes.remove(name)
            raise

    def _release_volumes(self, spec: ContainerSpec) -> None:
        """Remove the anonymous volumes of a removed container (under ``self.lock``)."""
        for m in spec.mounts:
            if m.type != "volume" or m.source is None or self._volume_users(m.source):
                continue
            try:
                if ANONYMOUS_LABEL in self.volumes.get(m.source).labels:
                    self.volumes.remove(m.source)
            except NyxError as exc:
                logger.bind(volume=m.source, error=str(exc)).warning("anonymous volume kept")

    def _volume_users(self, name: str) -> list[str]:
        return [
            v.rec.name
            for v in self.live.values()
            if any(m.type == "volume" and m.source == name for m in v.rec.spec.mounts)
        ]

    def _stop_signal(self, spec: ContainerSpec) -> int:
        """The spec's stop signal, else the image's ``StopSignal``, else SIGTERM."""
        chosen: str | None = spec.stop_signal
        if chosen is None:
            with contextlib.suppress(Exception):
                config = getattr(self._image(spec.image), "config", None) or {}
                chosen = config.get("StopSignal") or None
        if chosen is None:
            return int(signal.SIGTERM)
        try:
            return parse_signal(chosen)
        except ValueError as exc:
            logger.bind(error=str(exc)).warning("stop signal unusable; SIGTERM instead")
            return int(signal.SIGTERM)

    def init_binary(self) -> Path:
        """The init binary ``init: true`` runs as PID 1.

        :raises ConfigError: none on nyxd's host.
        """
        from ..runtime._runc import find_init

        found = find_init(self.settings.init_path)
        if found is None:
            raise ConfigError(
                "init: no init binary on nyxd's host; install tini (apt-get install tini) "
                "or point NYXD_INIT_PATH (--init-path) at a static init"
            )
        return found

    def _volume_public(self, rec: Any) -> dict[str, Any]:
        return {**self.volumes.public(rec), "containers": self._volume_users(rec.name)}

    def list_volumes(self, labels: dict[str, str | None] | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [
                self._volume_public(r)
                for r in self.volumes.list()
                if not labels or all_labels_match(r.labels, labels)
            ]

    def get_volume(self, name: str) -> dict[str, Any]:
        with self.lock:
            return self._volume_public(self.volumes.get(name))

    def create_volume(
        self,
        name: str | None = None,
        labels: dict[str, str] | None = None,
        driver: str = "local",
        options: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        with self.lock:
            return self._volume_public(self.volumes.create(name, labels, driver, options))

    def remove_volume(self, name: str) -> None:
        """Remove a volume no container (of any state) uses."""
        with self.lock:
            self.volumes.get(name)
            users = self._volume_users(name)
            if users:
                raise ConflictError(
                    f"volume {name!r} is in use by container(s) {', '.join(sorted(users))}; "
                    "remove them first"
                )
            self.volumes.remove(name)
