"""The runtime parts of a :class:`~nyx_cli.daemon._models.ContainerSpec`: mounts (bind,
volume, tmpfs), files (compose secrets and configs), capabilities, the stop signal.

Only what can be checked without the host is checked here (so a bad value is a 400 that
names the field and the value before anything happens); the host-side checks (a bind
source exists and is not nyx's own, the target resolved inside the image) are made by
:mod:`nyx_cli.daemon._mounts` when the container is created and started.
"""

from __future__ import annotations

import base64
import binascii
import signal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nyx_core.errors import ConfigError

from ..runtime._seccomp import normalize_capability

__all__ = [
    "NYX_FILES",
    "FileMount",
    "Mount",
    "check_target",
    "normalize_capabilities",
    "parse_signal",
]

#: files nyx mounts into every container itself: no mount may replace them
NYX_FILES = ("/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/dev/init")
_UID_MAX = (1 << 32) - 2


def check_target(target: object, field: str) -> str:
    """A mount's path in the container, normalised (``//a/./b`` is ``/a/b``).

    :raises ValueError: naming ``field`` and the value: not absolute, ``..``, ``/``,
        ``/proc``, or one of nyx's own files (:data:`NYX_FILES`).
    """
    if not isinstance(target, str) or not target.startswith("/") or "\0" in target:
        raise ValueError(f"{field} {target!r}: must be an absolute path in the container")
    if ".." in target.split("/"):
        raise ValueError(f"{field} {target!r}: '..' is not allowed in a mount path")
    path = "/" + "/".join(p for p in target.split("/") if p not in ("", "."))
    if path == "/":
        raise ValueError(f"{field} {target!r}: cannot mount over the container's root")
    if path == "/proc" or path.startswith("/proc/"):
        raise ValueError(f"{field} {target!r}: cannot mount inside /proc")
    if path in NYX_FILES:
        raise ValueError(
            f"{field} {target!r}: nyx manages this file in every container "
            "(hosts, hostname, resolv.conf and the init are nyx's own)"
        )
    return path


def _host_path(source: object, field: str) -> str:
    if not isinstance(source, str) or not source.startswith("/") or "\0" in source:
        raise ValueError(f"{field} {source!r}: a bind source must be an absolute host path")
    if ".." in source.split("/"):
        raise ValueError(f"{field} {source!r}: '..' is not allowed in a bind source")
    return "/" + "/".join(p for p in source.split("/") if p not in ("", "."))


class Mount(BaseModel):
    """A mount: a host path (``bind``), a named volume (``volume``; without a source an
    anonymous one that goes with the container) or a ``tmpfs``."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["bind", "volume", "tmpfs"] = Field(examples=["volume"])
    source: str | None = Field(
        default=None,
        description="bind: an absolute host path; volume: the volume's name (none: an "
        "anonymous volume); tmpfs: none",
        examples=["pgdata"],
    )
    target: str = Field(description="absolute path in the container", examples=["/data"])
    readonly: bool = False
    nocopy: bool = Field(
        default=False,
        description="volume: do not copy the image's content into an empty volume",
    )
    tmpfs_size: int | None = Field(default=None, gt=0, description="tmpfs: bytes at most")
    tmpfs_mode: int | None = Field(
        default=None, ge=0, le=0o7777, description="tmpfs: the root's mode (default 1777)"
    )
    tmpfs_exec: bool = Field(default=False, description="tmpfs: allow exec (default noexec)")

    @model_validator(mode="after")
    def _check(self) -> Mount:
        self.target = check_target(self.target, "target")
        if self.type != "volume" and self.nocopy:
            raise ValueError(f"nocopy: a volume option, not for a {self.type} mount")
        tmpfs_set = self.tmpfs_size is not None or self.tmpfs_mode is not None or self.tmpfs_exec
        if self.type != "tmpfs" and tmpfs_set:
            raise ValueError(f"tmpfs_size/tmpfs_mode/tmpfs_exec: not for a {self.type} mount")
        if self.type == "bind":
            if self.source is None:
                raise ValueError(f"source: a bind mount of {self.target!r} needs a host path")
            self.source = _host_path(self.source, "source")
        elif self.type == "volume":
            if self.source is not None:
                from ._volumes import VOLUME_NAME_RE

                if not VOLUME_NAME_RE.match(self.source):
                    raise ValueError(
                        f"source {self.source!r}: not a volume name (letters, digits, '_', "
                        "'.', '-'; a host path needs type bind)"
                    )
        elif self.source is not None:
            raise ValueError(f"source {self.source!r}: a tmpfs mount has no source")
        return self


class FileMount(BaseModel):
    """A file nyxd writes for the container and mounts read-only at ``target``: a compose
    secret or config, its content sent in the request (base64)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=256, examples=["db_password"])
    target: str = Field(examples=["/run/secrets/db_password"])
    data: str = Field(description="the content, base64")
    mode: int = Field(default=0o444, ge=0, le=0o7777)
    uid: int = Field(default=0, ge=0, le=_UID_MAX)
    gid: int = Field(default=0, ge=0, le=_UID_MAX)

    @model_validator(mode="after")
    def _check(self) -> FileMount:
        self.target = check_target(self.target, "target")
        try:
            base64.b64decode(self.data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"data of {self.name!r}: not base64 ({exc})") from exc
        return self

    def content(self) -> bytes:
        return base64.b64decode(self.data, validate=True)


def normalize_capabilities(values: list[str], field: str) -> list[str]:
    """``["net_admin", "CAP_SYS_TIME", "all"]`` as ``CAP_NET_ADMIN``, ... ``ALL``."""
    out = []
    for value in values:
        try:
            out.append(normalize_capability(value, field))
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc
    return list(dict.fromkeys(out))


def parse_signal(value: str | int, field: str = "stop_signal") -> int:
    """``SIGTERM``, ``TERM``, ``15``, ``SIGRTMIN+3`` as a signal number.

    :raises ValueError: naming ``field`` and the value.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str):
        text = value.strip().upper()
        if text.isdigit():
            number = int(text)
        else:
            name = text if text.startswith("SIG") else "SIG" + text
            rt = name.partition("+")
            rt_minus = name.partition("-")
            try:
                if name in signal.Signals.__members__:
                    number = int(signal.Signals[name])
                elif rt[0] == "SIGRTMIN" and rt[2].isdigit():
                    number = int(signal.SIGRTMIN) + int(rt[2])
                elif rt_minus[0] == "SIGRTMAX" and rt_minus[2].isdigit():
                    number = int(signal.SIGRTMAX) - int(rt_minus[2])
                else:
                    raise KeyError(name)
            except KeyError:
                raise ValueError(f"{field} {value!r}: not a signal name or number") from None
    else:
        raise ValueError(f"{field} {value!r}: not a signal name or number")
    if not 1 <= number <= int(signal.SIGRTMAX):
        raise ValueError(f"{field} {value!r}: not a signal number (1-{int(signal.SIGRTMAX)})")
    if number == signal.SIGSTOP:
        raise ValueError(f"{field} {value!r}: a process cannot be stopped with SIGSTOP")
    return number
