"""The result cache: one JSON file per attachment, in libcni's ``cniCacheV1`` format.

``<state_dir>/cni/results/<network>-<container id>-<ifname>`` holds the configuration the
attachment was added with (base64, like libcni), the netns, the capability arguments and
the final ``ADD`` result, so ``DEL``, ``CHECK`` and ``GC`` work after nyxd restarts.

nyx writes the entry *before* the first plugin runs (without ``result``) and completes it
after the last one: a crash half-way leaves an entry that the start-up GC deletes.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loguru import logger

from nyx_core import BackendError

__all__ = ["CacheEntry", "ResultCache"]

KIND = "cniCacheV1"


@dataclass
class CacheEntry:
    """One cached attachment."""

    network: str
    container_id: str
    ifname: str
    config: dict[str, Any]
    netns: str = ""
    capability_args: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    cni_args: list[list[str]] = field(default_factory=list)

    @property
    def cni_args_text(self) -> str:
        """``CNI_ARGS`` as the plugins get it (``K=V;K2=V2``)."""
        return ";".join(f"{k}={v}" for k, v in self.cni_args)

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "kind": KIND,
            "containerId": self.container_id,
            "config": base64.b64encode(
                json.dumps(self.config, separators=(",", ":")).encode()
            ).decode(),
            "ifName": self.ifname,
            "networkName": self.network,
            "netns": self.netns,
            "cniArgs": self.cni_args,
            "capabilityArgs": self.capability_args,
        }
        if self.result is not None:
            obj["result"] = self.result
        return obj

    @classmethod
    def from_json(cls, obj: Any) -> CacheEntry:
        if not isinstance(obj, dict) or obj.get("kind") != KIND:
            raise ValueError("not a cniCacheV1 entry")
        config = json.loads(base64.b64decode(obj["config"]))
        result = obj.get("result")
        return cls(
            network=str(obj["networkName"]),
            container_id=str(obj["containerId"]),
            ifname=str(obj["ifName"]),
            config=config if isinstance(config, dict) else {},
            netns=str(obj.get("netns") or ""),
            capability_args=dict(obj.get("capabilityArgs") or {}),
            result=result if isinstance(result, dict) and result else None,
            cni_args=[
                [str(p[0]), str(p[1])]
                for p in (obj.get("cniArgs") or [])
                if isinstance(p, list) and len(p) == 2
            ],
        )


class ResultCache:
    """Cache files under ``<state_dir>/cni/results``."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir) / "cni" / "results"

    def path(self, network: str, container_id: str, ifname: str) -> Path:
        return self.dir / f"{network}-{container_id}-{ifname}"

    def put(self, entry: CacheEntry) -> None:
        """Write the entry atomically (temp file + rename)."""
        path = self.path(entry.network, entry.container_id, entry.ifname)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(entry.to_json(), fh, separators=(",", ":"))
            os.replace(tmp, path)
        except OSError as exc:
            raise BackendError(f"CNI result cache {path}: cannot write: {exc}") from exc

    def get(self, network: str, container_id: str, ifname: str) -> CacheEntry | None:
        path = self.path(network, container_id, ifname)
        try:
            return CacheEntry.from_json(json.loads(path.read_bytes()))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("ignoring unreadable CNI cache entry {}: {}", path, exc)
            return None

    def delete(self, network: str, container_id: str, ifname: str) -> None:
        try:
            self.path(network, container_id, ifname).unlink()
        except FileNotFoundError:
            pass

    def entries(
        self, network: str | None = None, container_id: str | None = None
    ) -> list[CacheEntry]:
        """Every readable entry (of ``network`` and of ``container_id`` if given)."""
        found = []
        try:
            names = sorted(os.listdir(self.dir))
        except FileNotFoundError:
            return []
        for name in names:
            if name.startswith("."):
                continue
            if container_id is not None and f"-{container_id}-" not in name:
                continue  # <network>-<container id>-<ifname>: skip without reading
            try:
                entry = CacheEntry.from_json(json.loads((self.dir / name).read_bytes()))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                logger.warning("ignoring unreadable CNI cache entry {}: {}", name, exc)
                continue
            if (network is None or entry.network == network) and (
                container_id is None or entry.container_id == container_id
            ):
                found.append(entry)
        return found
