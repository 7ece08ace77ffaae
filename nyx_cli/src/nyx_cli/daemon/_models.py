"""The daemon's request models: a container to run and the networks it joins.

The API, the supervisor, the state store and compose share them; drivers never see them
(they get :class:`nyx_core.SetupOptions`).
"""

from __future__ import annotations

from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from nyx_core import PortMapping

from ._models_runtime import FileMount, Mount, normalize_capabilities, parse_signal

__all__ = ["ContainerSpec", "FileMount", "Mount", "NetworkAttachment", "StackService"]


class NetworkAttachment(BaseModel):
    """One network a container joins (compose services may join several).

    The network must exist (the default one, or one made by ``POST /v1/networks``, which
    is where a subnet is chosen and checked): a container cannot bring its own subnet.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="nyx", pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
    aliases: list[str] = Field(default_factory=list)
    internal: bool = False

    @model_validator(mode="before")
    @classmethod
    def _no_subnet(cls, data: Any) -> Any:
        """Refuse a ``subnet`` (older nyxd took it unchecked); drop a stored ``null``."""
        if isinstance(data, dict) and "subnet" in data:
            if data["subnet"] is not None:
                raise ValueError(
                    f"subnet {data['subnet']!r}: a container joins existing networks only; "
                    "create the network with its subnet first (POST /v1/networks, "
                    "nyx network create --subnet)"
                )
            data = {k: v for k, v in data.items() if k != "subnet"}
        return data


class StackService(BaseModel):
    """For the DNS policy: the networks (name, internal) one compose service is attached to."""

    networks: list[NetworkAttachment] = Field(default_factory=list)


class ContainerSpec(BaseModel):
    """A request to run one container (API, supervisor and CLI share it)."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field(min_length=1)
    name: str | None = Field(default=None, pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")
    hostname: str | None = Field(
        default=None, pattern=r"^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$"
    )
    command: list[str] | None = None
    entrypoint: list[str] | None = None
    env: dict[str, str] = Field(default_factory=dict)
    workdir: str | None = None
    user: str | None = None
    ports: list[PortMapping] = Field(default_factory=list)
    aliases: list[str] = Field(default_factory=list)
    network: str = "nyx"
    internal: bool = False
    networks: list[NetworkAttachment] = Field(
        default_factory=list,
        description="networks to join; empty means the default network (network/internal)",
    )
    stack: str | None = Field(default=None, description="compose project name, if any")
    stack_services: dict[str, StackService] | None = Field(
        default=None, description="every service of the stack with its networks (DNS policy)"
    )
    dns: bool | None = Field(default=None, description="None: follow the daemon's DNS policy")
    rm: bool = False
    labels: dict[str, str] = Field(default_factory=dict)
    # -- mounts, capabilities, init, stop (see _models_runtime)
    mounts: list[Mount] = Field(
        default_factory=list, description="bind mounts, named or anonymous volumes, tmpfs"
    )
    files: list[FileMount] = Field(
        default_factory=list,
        description="files written by nyxd and mounted read-only (compose secrets, configs)",
    )
    cap_add: list[str] = Field(
        default_factory=list, description="capabilities added to docker's 14 (or ALL)"
    )
    cap_drop: list[str] = Field(default_factory=list, description="capabilities dropped (or ALL)")
    init: bool = Field(default=False, description="run a tiny init (tini) as PID 1")
    stop_signal: str | None = Field(
        default=None, description="signal that stops it (default: the image's, else SIGTERM)"
    )
    stop_timeout: float | None = Field(
        default=None, ge=0, le=86400, description="grace seconds before SIGKILL (default 10)"
    )

    @field_validator("cap_add", "cap_drop")
    @classmethod
    def _caps(cls, value: list[str], info: ValidationInfo) -> list[str]:
        return normalize_capabilities(value, info.field_name or "capabilities")

    @field_validator("stop_signal")
    @classmethod
    def _signal(cls, value: str | None) -> str | None:
        if value is not None:
            parse_signal(value)
        return value

    @model_validator(mode="after")
    def _one_mount_per_target(self) -> ContainerSpec:
        seen: dict[str, str] = {}
        for i, target in [(f"mounts[{i}]", m.target) for i, m in enumerate(self.mounts)] + [
            (f"files[{i}]", f.target) for i, f in enumerate(self.files)
        ]:
            if target in seen:
                raise ValueError(f"{i}: target {target!r} is also the target of {seen[target]}")
            seen[target] = i
        return self

    def attachments(self) -> list[NetworkAttachment]:
        """The networks to join, the default network when none is listed."""
        if self.networks:
            return list(self.networks)
        return [NetworkAttachment(name=self.network, aliases=self.aliases, internal=self.internal)]
