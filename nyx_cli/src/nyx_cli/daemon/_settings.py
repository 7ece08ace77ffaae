"""nyxd's own settings: the core settings plus what only the daemon needs.

Flags beat ``NYXD_*`` environment variables beat defaults, as for the core settings; each
field's ``description`` is its ``--help`` text.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from nyx_core import NyxSettings

from ..registry._auth import default_auth_file
from ..registry._reference import normalize_registry

__all__ = ["DaemonSettings"]


class DaemonSettings(NyxSettings):
    """Every nyxd setting: :class:`nyx_core.NyxSettings` plus the daemon's own."""

    socket: Path = Field(default=Path("/run/nyx/nyxd.sock"), description="control socket path")
    runtime: str = Field(default="runc", min_length=1, description="OCI runtime binary")
    pids_limit: int = Field(
        default=2048,
        ge=-1,
        description="most processes and threads in one container (0 or -1: unlimited)",
    )
    init_path: Path | None = Field(
        default=None,
        description="static init binary `--init` / compose `init: true` run as PID 1 "
        "(default: the first of /usr/bin/tini-static, docker-init, catatonit found)",
    )
    api_max_connections: int = Field(
        default=128,
        ge=1,
        le=4096,
        description="control socket: open connections at most (beyond: 503 at once)",
    )
    api_idle_timeout: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="control socket: seconds a connection may stay silent while nyxd waits "
        "for a request or its body (then it is closed)",
    )
    api_max_body: int = Field(
        default=1 << 20,
        ge=1024,
        description="control socket: largest JSON request body in bytes (beyond: 413)",
    )
    api_max_upload: int = Field(
        default=16 << 30,
        ge=1 << 20,
        description="control socket: largest image tar `nyx load` may send, in bytes (beyond: 413)",
    )
    image_layer_max_bytes: int = Field(
        default=16 << 30,
        ge=1 << 20,
        description="largest layer nyxd unpacks, in bytes: its uncompressed tar and its "
        "compressed blob (checked while streaming)",
    )
    image_max_bytes: int = Field(
        default=64 << 30,
        ge=1 << 20,
        description="largest image, in bytes: the sum of its uncompressed layers",
    )
    image_layer_max_entries: int = Field(
        default=1_000_000,
        ge=1,
        description="most tar entries (files, directories, links) in one layer",
    )
    image_config_max_bytes: int = Field(
        default=4 << 20,
        ge=64 << 10,
        description="largest image config, manifest, index or manifest.json, in bytes",
    )
    insecure_registries: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description=(
            "registry HOST[:PORT] (or a CIDR of registry IP addresses) nyxd may pull from over "
            "plain HTTP or unverified TLS; repeat the flag, comma-separate in the env var. "
            "localhost, 127.0.0.0/8 and ::1 always may (see docs/registry.md)"
        ),
        json_schema_extra={"flags": ["--insecure-registry", "--insecure-registries"]},
    )

    registry_auth_file: Path = Field(
        default_factory=default_auth_file,
        description="the docker-style credentials file nyxd reads when pulling, and where "
        "`nyx login` stores them (it asks nyxd): default $DOCKER_CONFIG/config.json, else "
        "~/.docker/config.json of nyxd's user (root's)",
    )

    @field_validator("insecure_registries", mode="before")
    @classmethod
    def _split_registries(cls, value: Any) -> Any:
        if isinstance(value, str):  # NYXD_INSECURE_REGISTRIES=a:5000,10.0.0.0/8
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("insecure_registries")
    @classmethod
    def _valid_registries(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        out: list[str] = []
        for entry in value:
            text = entry.strip()
            if "/" in text and "://" not in text:
                try:
                    out.append(str(ipaddress.ip_network(text, strict=False)))
                except ValueError as exc:
                    raise ValueError(
                        f"insecure registry {entry!r} is neither HOST[:PORT] nor a CIDR"
                    ) from exc
                continue
            try:
                out.append(normalize_registry(text))
            except ValueError as exc:
                raise ValueError(
                    f"insecure registry {entry!r} is neither HOST[:PORT] nor a CIDR"
                ) from exc
        return tuple(out)
