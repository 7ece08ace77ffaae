"""Persisted supervisor state: one JSON file per container, one for user networks.

Everything nyxd must know after a crash lives under ``<state_dir>``: which containers
existed, what was set up for them (netns, network, DNS, rootfs, runc) and the user-defined
networks. Files are written atomically (temporary file + rename).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from nyx_core.errors import NyxError

from ._health import HealthState
from ._models import ContainerSpec

__all__ = [
    "ContainerRecord",
    "ContainerState",
    "NetworkRecord",
    "StateStore",
    "now",
]

ContainerState = Literal["created", "running", "restarting", "exited", "stopped"]


def now() -> str:
    """The current time, ISO 8601 UTC."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class ContainerRecord(BaseModel):
    """What nyxd persists about one container."""

    id: str
    name: str
    spec: ContainerSpec
    state: ContainerState = "created"
    pid: int | None = None
    exit_code: int | None = None
    hostname: str
    ips: list[str] = Field(default_factory=list)
    networks: list[str] = Field(default_factory=list)
    internal_networks: list[str] | None = Field(
        default=None,
        description="those of networks that are internal for this container (spec or network "
        "created internal), decided once at create; the driver (SetupOptions.internal) and "
        "the DNS provider (internal_networks) both read this. None: a record of an older "
        "nyxd, decided from the spec at its next start or re-adoption",
    )
    network_of: str | None = Field(
        default=None,
        description="network_mode container:<ref>: the id of the container whose network "
        "namespace this one joins (resolved at create)",
    )
    created: str = Field(default_factory=now)
    started: str | None = None
    finished: str | None = None
    error: str | None = None
    # what was set up, so a restarted nyxd knows what to undo
    netns_path: str | None = None
    network_setup: bool = False
    dns_registered: bool = False
    rootfs_mounted: bool = False
    runc_created: bool = False
    # restart policy and health (see _restart.py, _health.py)
    restart_count: int = Field(default=0, description="restarts done by its restart policy")
    stopped_by_hand: bool = Field(
        default=False,
        description="its last stop was asked for (not nyxd's shutdown); cleared when it starts",
    )
    health: HealthState | None = Field(default=None, description="None: no healthcheck")

    def public(self) -> dict[str, object]:
        """The container object of the API."""
        return {
            "id": self.id,
            "name": self.name,
            "image": self.spec.image,
            "state": self.state,
            "pid": self.pid,
            "exit_code": self.exit_code,
            "hostname": self.hostname,
            "ips": list(self.ips),
            "ports": [str(p) for p in self.spec.ports],
            "networks": list(self.networks),
            "network_mode": self.spec.network_mode or "bridge",
            "expose": list(self.spec.expose),
            "labels": dict(self.spec.labels),
            "command": self.spec.command,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "error": self.error,
            "restart": self.spec.restart,
            "restart_count": self.restart_count,
            "health": self.health.model_dump() if self.health is not None else None,
        }


class NetworkRecord(BaseModel):
    """A user-defined network as the driver created it (``NetworkInfo``)."""

    name: str
    subnet: str
    gateway: str = Field(description="gateway/prefix, e.g. 10.89.0.1/24")
    subnet6: str | None = Field(default=None, description="IPv6 subnet of a dual-stack network")
    gateway6: str | None = Field(default=None, description="IPv6 gateway/prefix")
    internal: bool = False
    options: dict[str, str] = Field(default_factory=dict, description="driver options")
    labels: dict[str, str] = Field(default_factory=dict)
    interface: str | None = Field(default=None, description="the driver's host-side device")
    extra: dict[str, Any] = Field(default_factory=dict, description="driver-specific facts")
    created: str = Field(default_factory=now)
    pending: Literal["create", "remove"] | None = Field(
        default=None,
        description="set while the driver is asked to create or remove it: a nyxd that "
        "finds it at start was killed in between and removes the network from the driver",
    )


def _write_atomic(path: Path, text: str) -> None:
    """Write ``path`` atomically, mode 0600, its directory made 0700 when created."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    with os.fdopen(os.open(tmp, flags, 0o600), "w") as f:
        f.write(text)
    os.replace(tmp, path)


class StateStore:
    """Container and network records under ``<state_dir>``.

    ``containers/`` is 0700 and every record 0600: a record holds the container's spec,
    environment included, and its log what the container printed. Opening the store makes
    an existing ``containers/`` private too.
    """

    def __init__(self, state_dir: Path) -> None:
        self.root = Path(state_dir)
        self.containers_dir = self.root / "containers"
        self.networks_file = self.root / "networks.json"
        self.containers_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.containers_dir, 0o700)
        for stale in self.root.glob(".networks.json.*.tmp"):  # a crash while writing
            stale.unlink(missing_ok=True)

    def container_dir(self, container_id: str) -> Path:
        return self.containers_dir / container_id

    def log_path(self, container_id: str) -> Path:
        return self.container_dir(container_id) / "container.log"

    def save(self, rec: ContainerRecord) -> None:
        _write_atomic(self.container_dir(rec.id) / "container.json", rec.model_dump_json())

    def delete(self, container_id: str) -> None:
        shutil.rmtree(self.container_dir(container_id), ignore_errors=True)

    def load_all(self) -> tuple[list[ContainerRecord], list[str]]:
        """Every readable record, and the ids of unreadable ones (kept out of the way)."""
        records: list[ContainerRecord] = []
        broken: list[str] = []
        with os.scandir(self.containers_dir) as it:
            dirs = sorted(e.name for e in it if e.is_dir(follow_symlinks=False))
        for name in dirs:
            d = os.path.join(self.containers_dir, name)
            with contextlib.suppress(OSError):
                for entry in os.listdir(d):  # a crash while writing left its temporary file
                    if entry.startswith(".container.json.") and entry.endswith(".tmp"):
                        os.unlink(os.path.join(d, entry))
            try:
                with open(os.path.join(d, "container.json"), "rb") as f:
                    records.append(ContainerRecord.model_validate_json(f.read()))
            except (OSError, ValidationError, ValueError):
                broken.append(name)
        return records, broken

    def load_networks(self) -> dict[str, NetworkRecord]:
        try:
            raw = json.loads(self.networks_file.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise NyxError(f"network state {self.networks_file} is unreadable: {exc}") from exc
        return {n["name"]: NetworkRecord.model_validate(n) for n in raw}

    def save_networks(self, networks: dict[str, NetworkRecord]) -> None:
        data = [n.model_dump() for n in networks.values()]
        _write_atomic(self.networks_file, json.dumps(data, indent=1))
