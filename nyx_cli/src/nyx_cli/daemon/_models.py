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
from ._restart import RestartPolicy

__all__ = [
    "ContainerSpec",
    "FileMount",
    "Healthcheck",
    "Mount",
    "NetworkAttachment",
    "StackService",
]

_TEST_KINDS = ("CMD", "CMD-SHELL", "NONE")
_MIN_DURATION = 0.001  # docker's minimum for every healthcheck duration (1 ms)


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


class Healthcheck(BaseModel):
    """How nyxd checks a running container's health (docker's ``HEALTHCHECK``, compose's
    ``healthcheck:``); what is left unset comes from the image's ``Healthcheck``, then from
    docker's defaults (30 s interval and timeout, 3 retries, no start period).

    Durations are seconds. ``test``: ``["CMD", "prog", "arg"...]`` runs ``prog`` in the
    container, ``["CMD-SHELL", "command line"]`` runs it with ``/bin/sh -c``, ``["NONE"]``
    turns the image's healthcheck off. Exit 0 is healthy, anything else a failure.
    """

    model_config = ConfigDict(extra="forbid")

    test: list[str] | None = Field(
        default=None,
        description='["CMD", prog, args...], ["CMD-SHELL", "command"] or ["NONE"]; '
        "null: the image's",
        examples=[["CMD-SHELL", "wget -q -O /dev/null http://localhost/ || exit 1"]],
    )
    interval: float | None = Field(
        default=None, ge=_MIN_DURATION, description="seconds between probes (default 30)"
    )
    timeout: float | None = Field(
        default=None,
        ge=_MIN_DURATION,
        description="seconds a probe may take before it counts as failed (default 30)",
    )
    retries: int | None = Field(
        default=None, ge=1, description="consecutive failures that make it unhealthy (default 3)"
    )
    start_period: float | None = Field(
        default=None,
        ge=0,
        description="seconds after the start during which failures do not count (default 0)",
    )
    start_interval: float | None = Field(
        default=None,
        ge=_MIN_DURATION,
        description="seconds between probes during the start period (default: interval)",
    )

    @field_validator("test")
    @classmethod
    def _check_test(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value or value[0] not in _TEST_KINDS:
            raise ValueError(
                f"healthcheck test {value!r} must start with CMD, CMD-SHELL or NONE "
                '(["CMD", "prog", "arg"], ["CMD-SHELL", "command"], ["NONE"])'
            )
        if any("\0" in v for v in value):
            raise ValueError(f"healthcheck test {value!r} contains a NUL character")
        kind, rest = value[0], value[1:]
        if kind == "NONE" and rest:
            raise ValueError(f'healthcheck test {value!r}: ["NONE"] takes no arguments')
        if kind == "CMD" and (not rest or not rest[0]):
            raise ValueError(f"healthcheck test {value!r}: CMD needs a program to run")
        if kind == "CMD-SHELL" and (len(rest) != 1 or not rest[0].strip()):
            raise ValueError(
                f"healthcheck test {value!r}: CMD-SHELL takes one command line "
                '(["CMD-SHELL", "curl -f http://localhost/ || exit 1"])'
            )
        return value


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

    restart: str = Field(
        default="no",
        description="restart policy: no, on-failure[:N], always, unless-stopped",
        examples=["unless-stopped"],
    )
    healthcheck: Healthcheck | None = Field(
        default=None, description="null: the image's HEALTHCHECK, if any"
    )

    @field_validator("restart")
    @classmethod
    def _check_restart(cls, value: str) -> str:
        return str(RestartPolicy.parse(value))

    @model_validator(mode="after")
    def _restart_without_rm(self) -> ContainerSpec:
        if self.rm and self.restart != "no":
            raise ValueError(
                f"restart {self.restart!r} and rm: a container removed when it exits cannot "
                "be restarted; choose one"
            )
        return self

    def restart_policy(self) -> RestartPolicy:
        """The parsed ``restart``."""
        return RestartPolicy.parse(self.restart)

    def attachments(self) -> list[NetworkAttachment]:
        """The networks to join, the default network when none is listed."""
        if self.networks:
            return list(self.networks)
        return [NetworkAttachment(name=self.network, aliases=self.aliases, internal=self.internal)]
