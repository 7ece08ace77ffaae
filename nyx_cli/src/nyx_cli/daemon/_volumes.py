"""Named volumes: directories nyxd keeps under ``<state_dir>/volumes``, across containers and
nyxd restarts.

```
volumes/                 0700
  <name>/                0700   one per volume
    volume.json          0600   name, labels, created (written atomically)
    _data/                      what the container sees; root 0755, or the owner and mode
                                of the image's directory after the first copy-up
```

Only root reaches a volume's data from the host (0700 parents); inside a container the
bind mount is made by runc as root before it pivots, so the parents do not matter there.
Whether a volume is in use is the supervisor's to say (it knows the containers); this
store only creates, lists, copies up into and removes. The only driver is ``local``.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from loguru import logger
from pydantic import BaseModel, Field, ValidationError

from nyx_core.errors import ConfigError

from ..errors import ConflictError, NotFoundError
from ._state import _write_atomic, now

__all__ = ["ANONYMOUS_LABEL", "VOLUME_NAME_RE", "VolumeRecord", "VolumeStore"]

VOLUME_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")
#: the label of a volume nyxd made for a mount without a source (``-v /data``); it goes
#: with the container that has it
ANONYMOUS_LABEL = "com.nyx.volume.anonymous"


class VolumeRecord(BaseModel):
    """What nyxd keeps about one volume."""

    name: str
    driver: str = "local"
    labels: dict[str, str] = Field(default_factory=dict)
    created: str = Field(default_factory=now)


class VolumeStore:
    """Volumes under ``root`` (``<state_dir>/volumes``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)
        self._lock = threading.Lock()
        self._copy_locks: dict[str, threading.Lock] = {}
        for leftover in self.root.glob(".rm-*"):  # a removal a crash interrupted
            shutil.rmtree(leftover, ignore_errors=True)

    @staticmethod
    def check_name(name: object, field: str = "volume name") -> str:
        if not isinstance(name, str) or not VOLUME_NAME_RE.match(name):
            raise ConfigError(
                f"{field} {name!r}: must be 1-128 letters, digits, '_', '.', '-', "
                "starting with a letter or digit"
            )
        return name

    def data_dir(self, name: str) -> Path:
        """The directory the container sees (``_data``)."""
        return self.root / self.check_name(name) / "_data"

    def _record(self, name: str) -> VolumeRecord | None:
        try:
            text = (self.root / name / "volume.json").read_text()
        except FileNotFoundError:
            return None
        try:
            return VolumeRecord.model_validate_json(text)
        except (ValidationError, ValueError):
            logger.bind(volume=name).warning("volume record unreadable; shown without labels")
            return VolumeRecord(name=name)

    def public(self, rec: VolumeRecord) -> dict[str, Any]:
        """The volume object of the API (without ``containers``: the supervisor adds it)."""
        return {
            "name": rec.name,
            "driver": rec.driver,
            "mountpoint": str(self.data_dir(rec.name)),
            "labels": dict(rec.labels),
            "options": {},
            "scope": "local",
            "created": rec.created,
        }

    def exists(self, name: str) -> bool:
        return (self.root / self.check_name(name) / "_data").is_dir()

    def get(self, name: str) -> VolumeRecord:
        """:raises NotFoundError: naming the volume."""
        self.check_name(name)
        rec = self._record(name) if (self.root / name / "_data").is_dir() else None
        if rec is None:
            raise NotFoundError(f"no such volume: {name}")
        return rec

    def list(self) -> list[VolumeRecord]:
        out = []
        for d in sorted(self.root.iterdir()):
            if d.name.startswith(".") or not (d / "_data").is_dir():
                continue
            rec = self._record(d.name)
            if rec is not None:
                out.append(rec)
        return out

    def create(
        self,
        name: str | None = None,
        labels: dict[str, str] | None = None,
        driver: str = "local",
        options: dict[str, str] | None = None,
    ) -> VolumeRecord:
        """Create a volume (a random 64-hex name when ``name`` is None).

        :raises ConfigError: a bad name, another driver, driver options.
        :raises ConflictError: the volume exists.
        """
        if driver != "local":
            raise ConfigError(f"driver {driver!r}: only the local driver is supported")
        if options:
            raise ConfigError(
                f"options {options!r}: the local driver takes no options (a volume is a "
                "directory under nyxd's state dir; use a bind mount for anything else)"
            )
        name = secrets.token_hex(32) if name is None else self.check_name(name)
        with self._lock:
            vdir = self.root / name
            if (vdir / "_data").is_dir():
                raise ConflictError(f"volume {name!r} already exists")
            vdir.mkdir(mode=0o700, exist_ok=True)
            os.chmod(vdir, 0o700)
            rec = VolumeRecord(name=name, labels=dict(labels or {}))
            _write_atomic(vdir / "volume.json", rec.model_dump_json())
            data = vdir / "_data"
            data.mkdir(mode=0o755)
            os.chmod(data, 0o755)  # whatever the umask: Docker's _data is 0755 root
        logger.bind(volume=name).info("volume created")
        return rec

    def ensure(self, name: str, labels: dict[str, str] | None = None) -> bool:
        """Create ``name`` unless it exists (a container's first use): ``True`` if created."""
        try:
            self.create(name, labels)
            return True
        except ConflictError:
            return False

    def remove(self, name: str) -> None:
        """Remove the volume and its data (the caller checked no container uses it).

        :raises NotFoundError: naming the volume.
        """
        self.get(name)
        with self._lock:
            vdir = self.root / name
            grave = self.root / f".rm-{name}-{secrets.token_hex(4)}"
            try:
                os.rename(vdir, grave)  # gone at once; the data is deleted after
            except FileNotFoundError as exc:
                raise NotFoundError(f"no such volume: {name}") from exc
            self._copy_locks.pop(name, None)
        shutil.rmtree(grave, ignore_errors=True)  # fd-based: never follows a symlink
        logger.bind(volume=name).info("volume removed")

    @contextmanager
    def copy_lock(self, name: str) -> Iterator[Path]:
        """Held while a container's start copies image content into the volume."""
        with self._lock:
            lock = self._copy_locks.setdefault(name, threading.Lock())
        with lock:
            yield self.data_dir(name)
