"""A container's mounts on the host side: checked at create, prepared at start.

At create (:func:`check_binds`): a bind source must exist on the host and must not be inside
nyx's own state or run directory (another container's rootfs, records, volume data).
At start (:func:`prepare`), once the rootfs is mounted: every target is resolved inside the
image (:func:`nyx_cli.runtime._inroot.resolve_in_root`: the image's symlinks, never the
host's) and refused if it lands on a file nyx manages; a named volume that is empty gets
the image's content at its target (:func:`nyx_cli.runtime._copyup.copy_up`); the files of
compose secrets and configs are written under the container's private run dir and mounted
read-only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from nyx_core.errors import ConfigError

from ..runtime._bundle import BundleMount
from ._models import ContainerSpec
from ._models_runtime import NYX_FILES

if TYPE_CHECKING:
    from ._settings import DaemonSettings
    from ._volumes import VolumeStore

__all__ = ["check_binds", "prepare"]


def _inside(path: str, parent: Path) -> bool:
    try:
        real_parent = os.path.realpath(parent)
    except OSError:
        return False
    return path == real_parent or path.startswith(real_parent.rstrip("/") + "/")


def _bind_source(source: str, field: str, settings: DaemonSettings) -> str:
    """The host path a bind mounts (symlinks resolved), checked."""
    real = os.path.realpath(source)
    if not os.path.exists(real):
        raise ConfigError(
            f"{field} {source!r}: does not exist on the host (create it first; "
            "nyxd does not make host directories)"
        )
    for own in (settings.state_dir, settings.run_dir):
        if _inside(real, Path(own)):
            raise ConfigError(
                f"{field} {source!r}: inside nyxd's own directory {str(own)!r} "
                "(use a named volume to share data between containers)"
            )
    return real


def check_binds(spec: ContainerSpec, settings: DaemonSettings) -> None:
    """Refuse a bind source that is missing or nyx's own, naming the mount.

    :raises ConfigError: ``mounts[i].source ...``.
    """
    for i, m in enumerate(spec.mounts):
        if m.type == "bind" and m.source is not None:
            _bind_source(m.source, f"mounts[{i}].source", settings)


def _resolve(rootfs: Path, target: str, field: str) -> str:
    from ..runtime._inroot import resolve_in_root

    try:
        resolved = resolve_in_root(rootfs, target)
    except OSError as exc:
        raise ConfigError(
            f"{field} {target!r}: cannot be resolved in the image ({exc.strerror})"
        ) from exc
    if resolved in NYX_FILES:
        raise ConfigError(
            f"{field} {target!r}: is {resolved} in the image, a file nyx manages in every container"
        )
    return resolved


def _tmpfs_options(size: int | None, mode: int | None, exec_: bool) -> tuple[str, ...]:
    out = []
    if size is not None:
        out.append(f"size={size}")
    if mode is not None:
        out.append(f"mode={mode:o}")
    if exec_:
        out.append("exec")
    return tuple(out)


def _write_file(path: Path, data: bytes, mode: int, uid: int, gid: int) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    try:
        _write_all(fd, data)
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def prepare(
    spec: ContainerSpec,
    rootfs: Path,
    cdir: Path,
    settings: DaemonSettings,
    volumes: VolumeStore,
) -> list[BundleMount]:
    """The bundle mounts of ``spec``'s mounts and files (after nyx's own /etc files).

    :raises ConfigError: naming ``mounts[i]`` or ``files[i]``.
    :raises NotFoundError: a volume that no longer exists.
    """
    from ..runtime._copyup import copy_up

    out: list[BundleMount] = []
    for i, m in enumerate(spec.mounts):
        dest = _resolve(rootfs, m.target, f"mounts[{i}].target")
        if m.type == "bind":
            assert m.source is not None
            source = _bind_source(m.source, f"mounts[{i}].source", settings)
            out.append(BundleMount(dest, source, "bind", m.readonly))
        elif m.type == "volume":
            assert m.source is not None  # anonymous volumes are named at create
            volumes.get(m.source)
            with volumes.copy_lock(m.source) as data:
                if not m.nocopy:
                    copy_up(rootfs, dest, data)
            out.append(BundleMount(dest, str(data), "bind", m.readonly))
        else:
            options = _tmpfs_options(m.tmpfs_size, m.tmpfs_mode, m.tmpfs_exec)
            out.append(BundleMount(dest, "", "tmpfs", m.readonly, options))
    if spec.files:
        fdir = cdir / "files"
        fdir.mkdir(mode=0o700, exist_ok=True)
        os.chmod(fdir, 0o700)
        for i, f in enumerate(spec.files):
            dest = _resolve(rootfs, f.target, f"files[{i}].target")
            path = fdir / str(i)
            path.unlink(missing_ok=True)
            _write_file(path, f.content(), f.mode, f.uid, f.gid)
            out.append(BundleMount(dest, str(path), "bind", True))
    return out
