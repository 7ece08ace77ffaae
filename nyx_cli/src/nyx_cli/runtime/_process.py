"""What runs in the container: :func:`process_from_image` turns the image config plus a run
request into the process (docker's rules for Entrypoint/Cmd, Env, WorkingDir, User), and
:func:`resolve_user` finds the user's ids in the image's ``/etc/passwd`` and ``/etc/group``.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from loguru import logger
from pydantic import BaseModel, Field

from nyx_core.errors import ConfigError

from ._inroot import _read_image_file

__all__ = ["DEFAULT_PATH", "ProcessSpec", "process_from_image", "resolve_user"]

logger.disable(__name__)

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ProcessSpec(BaseModel):
    """What runs in the container."""

    args: list[str] = Field(description="argv, args[0] looked up in PATH")
    env: list[str] = Field(default_factory=list, description='"KEY=value" entries')
    cwd: str = Field(default="/", description="absolute working directory")
    user: str | None = Field(
        default=None, description='"name", "uid", "name:group" or "uid:gid" (image rootfs)'
    )


def _strings(value: Any, field: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{field} must be a list of strings, not {value!r}")
    return list(value)


def process_from_image(
    config: dict[str, Any],
    entrypoint: list[str] | None,
    command: list[str] | None,
    env: dict[str, str],
    workdir: str | None,
    user: str | None,
) -> ProcessSpec:
    """The process of a container, with docker's rules.

    - ``entrypoint=None`` keeps the image's Entrypoint; a list replaces it (``[]`` or
      ``[""]`` removes it). Replacing the entrypoint with a non-empty one drops the image's
      Cmd. ``command`` (when non-empty) replaces the Cmd. argv = entrypoint + cmd.
    - Env: the image's, then ``env`` (which wins per key); PATH defaults to the usual one.
    - ``workdir`` or the image's WorkingDir or ``/``; must be absolute.
    - ``user`` or the image's User (resolved against the rootfs when the bundle is written).

    :raises ConfigError: naming the field, when nothing is left to run or a value is bad.
    """
    image_entry = _strings(config.get("Entrypoint"), "image Entrypoint") or []
    image_cmd = _strings(config.get("Cmd"), "image Cmd") or []
    given_entry = _strings(entrypoint, "entrypoint")
    given_cmd = _strings(command, "command") or []
    if given_entry is None:
        entry, cmd = image_entry, given_cmd or image_cmd
    elif given_entry in ([], [""]):
        entry, cmd = [], given_cmd or image_cmd
    else:
        entry, cmd = given_entry, given_cmd
    args = entry + cmd
    if not args or not args[0]:
        raise ConfigError("command: no command specified (the image has no Entrypoint or Cmd)")

    merged: dict[str, str] = {}
    for item in _strings(config.get("Env"), "image Env") or []:
        key, sep, value = item.partition("=")
        if key and sep:
            merged[key] = value
    for key, value in env.items():
        if not key or "=" in key or "\0" in key:
            raise ConfigError(f"env: bad variable name {key!r}")
        if not isinstance(value, str) or "\0" in value:
            raise ConfigError(f"env: bad value for {key!r}: {value!r}")
        merged[key] = value
    merged.setdefault("PATH", DEFAULT_PATH)

    cwd = workdir or config.get("WorkingDir") or "/"
    if not isinstance(cwd, str) or not cwd.startswith("/"):
        raise ConfigError(f"workdir: {cwd!r} is not an absolute path")
    cwd = str(PurePosixPath(cwd))
    chosen_user = user if user else config.get("User") or None
    if chosen_user is not None and (not isinstance(chosen_user, str) or ":" in chosen_user[:1]):
        raise ConfigError(f"user: bad value {chosen_user!r}")
    return ProcessSpec(
        args=args, env=[f"{k}={v}" for k, v in merged.items()], cwd=cwd, user=chosen_user
    )


def _table(rootfs: Path, name: str) -> tuple[list[list[str]], str]:
    """The rows of the image's ``/etc/<name>``, and why it was not read (or ``""``)."""
    text, why = _read_image_file(rootfs, f"/etc/{name}")
    if why:
        logger.warning("user lookup: {}", why)
    rows = []
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            rows.append(line.split(":"))
    return rows, why


def resolve_user(rootfs: Path, user: str | None) -> tuple[int, int, list[int], str]:
    """``(uid, gid, additional gids, home)`` for ``user`` in the image at ``rootfs``.

    Docker's rules: names are looked up in ``/etc/passwd`` and ``/etc/group``; a numeric
    uid need not exist (gid 0, home ``/``); without an explicit group the user's primary
    group and the groups listing them apply. The files are resolved inside ``rootfs`` and
    read only when regular and at most 4 MiB; otherwise they count as empty (numeric ids
    still work).

    :raises ConfigError: a name that the image does not know (saying why a file was not read).
    """
    spec = user or "0"
    user_part, _, group_part = spec.partition(":")
    rows, passwd_why = _table(rootfs, "passwd")
    passwd = [r for r in rows if len(r) >= 7]
    entry = None
    for row in passwd:
        if row[0] == user_part or (user_part.isdigit() and row[2] == user_part):
            entry = row
            break
    if entry is None and not user_part.isdigit():
        why = f" ({passwd_why})" if passwd_why else ""
        raise ConfigError(f"user: {user_part!r} not found in the image's /etc/passwd{why}")
    uid = int(entry[2]) if entry else int(user_part)
    gid = int(entry[3]) if entry and entry[3].isdigit() else 0
    home = entry[5] if entry and entry[5] else "/"
    rows, group_why = _table(rootfs, "group")
    groups = [r for r in rows if len(r) >= 3]
    extra: list[int] = []
    if group_part:
        if group_part.isdigit():
            gid = int(group_part)
        else:
            match = [r for r in groups if r[0] == group_part and r[2].isdigit()]
            if not match:
                why = f" ({group_why})" if group_why else ""
                raise ConfigError(f"user: group {group_part!r} not found in /etc/group{why}")
            gid = int(match[0][2])
    elif entry is not None:
        for row in groups:
            members = row[3].split(",") if len(row) > 3 else []
            if entry[0] in members and row[2].isdigit() and int(row[2]) != gid:
                extra.append(int(row[2]))
    return uid, gid, sorted(set(extra)), home
