"""The container's root filesystem: :class:`Rootfs` mounts an image's unpacked layers with
overlayfs (upper/work dirs per container) and unmounts them."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

from loguru import logger

from ..daemon._netns import mount, umount
from ..errors import RuntimeErrorNyx

__all__ = ["Rootfs"]

logger.disable(__name__)

_OVERLAY_OPTS_MAX = 4000  # mount(2) data is one page


class Rootfs:
    """The container's root filesystem: image layers under a per-container overlay."""

    @staticmethod
    def mount(image_layers: list[Path], container_dir: Path) -> Path:
        """Mount ``image_layers`` (bottom first) at ``container_dir/rootfs``; returns it.

        Writes go to ``container_dir/upper`` (``container_dir/work`` is overlayfs' scratch).
        """
        container_dir = Path(container_dir)
        merged, upper, work = (container_dir / n for n in ("rootfs", "upper", "work"))
        for d in (merged, upper, work):
            d.mkdir(parents=True, exist_ok=True)
        lowers = [str(p) for p in reversed(image_layers)]
        if not lowers:
            empty = container_dir / "empty"
            empty.mkdir(exist_ok=True)
            lowers = [str(empty)]
        for lower in lowers:
            if any(c in lower for c in ",:\n"):
                raise RuntimeErrorNyx(f"layer path {lower!r} cannot be an overlayfs lowerdir")
        opts = f"lowerdir={':'.join(lowers)},upperdir={upper},workdir={work}"
        try:
            if len(opts) <= _OVERLAY_OPTS_MAX:
                mount("overlay", merged, "overlay", 0, opts)
            else:
                Rootfs._mount_relative(lowers, upper, work, merged)
        except (OSError, subprocess.SubprocessError) as exc:
            raise RuntimeErrorNyx(f"overlay mount of {str(merged)!r} failed: {exc}") from exc
        return merged

    @staticmethod
    def _mount_relative(lowers: list[str], upper: Path, work: Path, merged: Path) -> None:
        """Many layers: name them relative to their common parent, from a child's cwd."""
        parent = os.path.commonpath(lowers)
        rel = [os.path.relpath(p, parent) for p in lowers]
        opts = f"lowerdir={':'.join(rel)},upperdir={upper},workdir={work}"
        proc = subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o", opts, str(merged)],
            cwd=parent,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise OSError(errno.EIO, proc.stderr.strip() or "mount failed")

    @staticmethod
    def unmount(container_dir: Path) -> None:
        """Unmount ``container_dir/rootfs``; nothing mounted is no error."""
        merged = Path(container_dir) / "rootfs"
        try:
            for _ in range(16):
                if not umount(merged):
                    break
        except OSError as exc:
            logger.warning("unmount {}: {}", merged, exc)
