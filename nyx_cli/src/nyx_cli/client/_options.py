"""The values of ``nyx run``'s options, converted for the request: ``-e``/``--env-file``,
``-l``, ``--sysctl``, ``-v``/``--mount``/``--tmpfs`` (docker's syntax) and the
``--health-*`` durations and counts.

Each converter raises :class:`BadValue` naming the option; both entry paths (click's and the
hand parser's) report it as a usage error. No heavy import: the ``nyx`` fast path loads it.
"""

from __future__ import annotations

import os

from .._duration import parse_duration

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

__all__ = [
    "NETWORK_MODES",
    "BadValue",
    "count",
    "duration",
    "env_file_pairs",
    "env_pairs",
    "label_pairs",
    "mount_specs",
    "sysctl_pairs",
    "tmpfs_specs",
    "volume_specs",
]


class BadValue(Exception):
    """An option value that cannot be converted (``env_pairs``, ``label_pairs``).

    The click commands turn it into ``click.BadParameter`` (a usage error, exit 125); the
    hand parser hands the whole command line to click, which reports it the same way.
    """

    def __init__(self, message: str, param_hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.param_hint = param_hint


def env_pairs(values: Sequence[str]) -> dict[str, str]:
    """``-e NAME=VALUE`` (or ``-e NAME``: its value here, if it has one) as a dict."""
    env: dict[str, str] = {}
    for item in values:
        k, sep, v = item.partition("=")
        if not k:
            raise BadValue(f"{item!r}: expected NAME=VALUE", "-e")
        if not sep:
            if k not in os.environ:
                continue
            v = os.environ[k]
        env[k] = v
    return env


def label_pairs(values: Sequence[str]) -> dict[str, str]:
    """``--label KEY=VALUE`` as a dict."""
    out = {}
    for item in values:
        k, _, v = item.partition("=")
        if not k:
            raise BadValue(f"{item!r}: expected KEY=VALUE", "--label")
        out[k] = v
    return out


def sysctl_pairs(values: Sequence[str]) -> dict[str, str]:
    """``--sysctl KEY=VALUE`` as a dict (nyxd checks the names: ``net.*`` only)."""
    out = {}
    for item in values:
        k, sep, v = item.partition("=")
        if not k or not sep:
            raise BadValue(f"{item!r}: expected KEY=VALUE", "--sysctl")
        out[k] = v
    return out


NETWORK_MODES = ("host", "none", "bridge")
"""``--network`` values that are a mode, not a network (with ``container:NAME``)."""


def env_file_pairs(paths: Sequence[str]) -> dict[str, str]:
    """``--env-file FILE``: ``NAME=VALUE`` lines, taken literally (docker's format); a
    ``NAME`` alone takes its value here."""
    from .._envfile import parse_env_file

    env: dict[str, str] = {}
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
            env.update(parse_env_file(text, path, quotes=False, environ=os.environ))
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise BadValue(f"{path!r}: {exc}", "--env-file") from None
    return env


_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def _parse_size(text: str, hint: str) -> int:
    low = text.strip().lower()
    unit = low[-1:] if low[-1:] in "bkmg" else ""
    number = low[: len(low) - len(unit)]
    if not number.isdigit() or int(number) <= 0:
        raise BadValue(f"{text!r}: expected a size in bytes (64m, 1g, 65536)", hint)
    return int(number) * _SIZE_UNITS[unit]


def _mode(text: str, hint: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o7777:
        raise BadValue(f"{text!r}: expected an octal mode (1777)", hint)
    return mode


def _host_source(text: str) -> str | None:
    """A ``-v`` source that is a host path, made absolute; ``None`` for a volume name."""
    if text.startswith("~"):
        text = os.path.expanduser(text)
    if text.startswith("/"):
        return text
    if text == "." or text.startswith(("./", "../")):
        return os.path.abspath(text)
    return None


def volume_specs(values: Sequence[str]) -> list[dict[str, Any]]:
    """``-v [SOURCE:]TARGET[:OPTIONS]`` as mounts: a SOURCE that is a path (``/``, ``./``,
    ``~``) is a bind (created when missing, as docker does), any other a named volume; no
    SOURCE, an anonymous volume. OPTIONS: ``ro``, ``rw``, ``nocopy``, ``z``/``Z`` (no
    SELinux here: nothing to relabel), ``rprivate``/``private``."""
    out: list[dict[str, Any]] = []
    for item in values:
        parts = item.split(":")
        if len(parts) > 3 or not all(parts):
            raise BadValue(f"{item!r}: expected [SOURCE:]TARGET[:OPTIONS]", "-v")
        if len(parts) == 1 or (len(parts) == 2 and not parts[1].startswith("/")):
            parts = ["", *parts]
        source, target = parts[0], parts[1]
        options = parts[2].split(",") if len(parts) > 2 else []
        mount: dict[str, Any] = {"target": target}
        path = _host_source(source) if source else None
        if path is not None:
            mount.update(type="bind", source=path, _create=True)
        else:
            mount.update(type="volume", source=source or None)
        for opt in options:
            if opt in ("ro", "readonly"):
                mount["readonly"] = True
            elif opt in ("rw", "z", "Z", "rprivate", "private"):
                continue
            elif opt == "nocopy" and mount["type"] == "volume":
                mount["nocopy"] = True
            else:
                raise BadValue(f"{item!r}: unsupported option {opt!r}", "-v")
        out.append(mount)
    return out


_MOUNT_TYPES = ("bind", "volume", "tmpfs")


def mount_specs(values: Sequence[str]) -> list[dict[str, Any]]:
    """``--mount type=bind|volume|tmpfs,source=...,target=...[,readonly]...`` (docker's keys:
    ``src``/``source``, ``dst``/``destination``/``target``, ``ro``/``readonly[=true|false]``,
    ``volume-nocopy``, ``tmpfs-size``, ``tmpfs-mode``, ``bind-propagation=rprivate``). A
    bind source must exist (nothing is created)."""
    out: list[dict[str, Any]] = []
    truth = {"": True, "1": True, "true": True, "0": False, "false": False}
    for item in values:
        mount: dict[str, Any] = {"type": "volume"}
        for field in item.split(","):
            key, sep, value = field.partition("=")
            key = key.strip().lower()
            if key == "type" and value in _MOUNT_TYPES:
                mount["type"] = value
            elif key in ("source", "src") and value:
                mount["source"] = value
            elif key in ("target", "destination", "dst") and value:
                mount["target"] = value
            elif key in ("readonly", "ro") and value.lower() in truth:
                mount["readonly"] = truth[value.lower()]
            elif key == "volume-nocopy" and value.lower() in truth:
                mount["nocopy"] = truth[value.lower()]
            elif key == "tmpfs-size" and sep:
                mount["tmpfs_size"] = _parse_size(value, "--mount")
            elif key == "tmpfs-mode" and sep:
                mount["tmpfs_mode"] = _mode(value, "--mount")
            elif key == "consistency" or (
                key == "bind-propagation" and value in ("rprivate", "private")
            ):
                continue
            else:
                raise BadValue(f"{item!r}: unsupported or bad field {field!r}", "--mount")
        if "target" not in mount:
            raise BadValue(f"{item!r}: target= is required", "--mount")
        if mount["type"] == "bind" and "source" in mount:
            mount["source"] = _host_source(mount["source"]) or mount["source"]
        out.append(mount)
    return out


def tmpfs_specs(values: Sequence[str]) -> list[dict[str, Any]]:
    """``--tmpfs TARGET[:OPTIONS]``: OPTIONS ``size=64m``, ``mode=1777``, ``ro``/``rw``,
    ``exec``/``noexec`` (default noexec), ``nosuid``, ``nodev`` (always)."""
    out: list[dict[str, Any]] = []
    for item in values:
        target, _, opts = item.partition(":")
        if not target:
            raise BadValue(f"{item!r}: expected TARGET[:OPTIONS]", "--tmpfs")
        mount: dict[str, Any] = {"type": "tmpfs", "target": target}
        for opt in filter(None, opts.split(",")):
            key, sep, value = opt.partition("=")
            if key == "size" and sep:
                mount["tmpfs_size"] = _parse_size(value, "--tmpfs")
            elif key == "mode" and sep:
                mount["tmpfs_mode"] = _mode(value, "--tmpfs")
            elif opt in ("ro", "rw"):
                mount["readonly"] = opt == "ro"
            elif opt in ("exec", "noexec"):
                mount["tmpfs_exec"] = opt == "exec"
            elif opt in ("nosuid", "nodev", "suid", "dev") and not sep:
                if opt in ("suid", "dev"):
                    raise BadValue(f"{item!r}: a tmpfs is always nosuid,nodev", "--tmpfs")
            else:
                raise BadValue(f"{item!r}: unsupported option {opt!r}", "--tmpfs")
        out.append(mount)
    return out


def duration(value: str | None, option: str) -> float | None:
    """``--health-interval 30s`` and the like, in seconds."""
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise BadValue(str(exc), option) from None


def count(value: str | None, option: str) -> int | None:
    """``--health-retries 3``: a whole number of at least 1."""
    if value is None:
        return None
    if not value.isdigit() or int(value) < 1:
        raise BadValue(f"{value!r} is not a whole number >= 1", option)
    return int(value)
