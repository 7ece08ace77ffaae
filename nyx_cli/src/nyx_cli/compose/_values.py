"""The values of a compose service's keys that stand alone: ``command``/``entrypoint``,
``environment``, ``ports``, ``restart``, durations, ``healthcheck`` and ``labels``.

Each parser takes the value at ``path`` (``services.web.ports[0]``) and returns nyx's model of
it or raises :class:`~nyx_core.errors.ConfigError` naming the path and the value; unknown
sub-keys are errors or warnings as :func:`._checks.check_keys` says.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import ValidationError

from nyx_core import PortMapping
from nyx_core.errors import ConfigError

from .._duration import parse_duration
from ..daemon._models import Healthcheck
from ..daemon._restart import RestartPolicy
from ._checks import bad as _bad
from ._checks import boolean as _bool
from ._checks import check_keys as _check_keys
from ._checks import join as _join
from ._checks import mapping as _mapping
from ._checks import scalar_text as _scalar_text
from ._checks import string as _str

__all__ = [
    "RestartName",
    "argv",
    "duration",
    "environment",
    "healthcheck",
    "labels",
    "port",
    "restart",
]

RestartName = Literal["no", "on-failure", "always", "unless-stopped"]
_ENVKEY_RE = re.compile(r"^[^=\s]+$")
_PORT_LONG_KEYS = {"target", "published", "host_ip", "protocol", "mode", "name", "app_protocol"}
_HEALTHCHECK_KEYS = {
    "test",
    "interval",
    "timeout",
    "retries",
    "start_period",
    "start_interval",
    "disable",
}


def argv(value: object, path: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return tuple(shlex.split(value))
        except ValueError as exc:
            raise _bad(path, value, f"cannot be split like a shell command: {exc}") from exc
    if isinstance(value, list):
        return tuple(_scalar_text(v, f"{path}[{i}]") for i, v in enumerate(value))
    raise _bad(path, value, "must be a string or a list of strings")


def environment(value: object, path: str, environ: Mapping[str, str]) -> dict[str, str]:
    env: dict[str, str] = {}
    if value is None:
        return env
    if isinstance(value, list):
        for i, item in enumerate(value):
            ipath = f"{path}[{i}]"
            text = _str(item, ipath)
            key, sep, val = text.partition("=")
            if not key or not _ENVKEY_RE.match(key):
                raise _bad(ipath, item, "must be KEY=VALUE or KEY")
            if sep:
                env[key] = val
            elif key in environ:
                env[key] = environ[key]
        return env
    if isinstance(value, Mapping):
        for key, val in _mapping(value, path).items():
            kpath = _join(path, key)
            if not _ENVKEY_RE.match(key):
                raise _bad(kpath, key, "is not a valid variable name")
            if val is None:
                if key in environ:
                    env[key] = environ[key]
                continue
            env[key] = _scalar_text(val, kpath)
        return env
    raise _bad(path, value, "must be a list of KEY=VALUE or a mapping")


def port(value: object, path: str, warnings: list[str]) -> PortMapping:
    if isinstance(value, bool) or not isinstance(value, str | int | Mapping):
        raise _bad(path, value, "must be a HOST:CONTAINER string or a mapping")
    if isinstance(value, int):
        raise _bad(path, value, "a bare container port is not published; use HOST_PORT:PORT")
    if isinstance(value, str):
        try:
            return PortMapping.parse(value)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    node = _mapping(value, path)
    _check_keys(node, _PORT_LONG_KEYS, path, warnings)
    for ignored in ("mode", "name", "app_protocol"):
        if ignored in node and not (ignored == "mode" and node[ignored] == "ingress"):
            warnings.append(f"{_join(path, ignored)}: not supported, ignored")
    if "target" not in node:
        raise _bad(path, dict(node), "long syntax needs 'target'")
    if "published" not in node:
        raise _bad(path, dict(node), "long syntax needs 'published' (nyx publishes named ports)")
    target = node["target"]
    if isinstance(target, bool) or not isinstance(target, int | str):
        raise _bad(_join(path, "target"), target, "must be a port number")
    published = node["published"]
    if isinstance(published, bool) or not isinstance(published, int | str):
        raise _bad(_join(path, "published"), published, "must be a port number or range")
    proto = node.get("protocol", "tcp")
    if proto not in ("tcp", "udp"):
        raise _bad(_join(path, "protocol"), proto, "must be tcp or udp")
    host_ip = node.get("host_ip")
    if host_ip is not None and not isinstance(host_ip, str):
        raise _bad(_join(path, "host_ip"), host_ip, "must be an IP address string")
    ip = ""
    if host_ip:
        ip = f"[{host_ip}]:" if ":" in host_ip else f"{host_ip}:"
    published_text = str(published)
    target_text = str(target)
    if "-" in published_text and "-" not in target_text:
        lo, _, hi = published_text.partition("-")
        if lo.isdigit() and hi.isdigit() and target_text.isdigit():
            # compose: a published range for one target port means "any one of them";
            # nyx publishes exactly what it is told, so only a single port is accepted.
            raise _bad(_join(path, "published"), published, "a range needs a target range too")
    try:
        return PortMapping.parse(f"{ip}{published_text}:{target_text}/{proto}")
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def restart(value: object, path: str) -> tuple[RestartName, int | None]:
    # YAML 1.1 reads a bare `no` as false.
    if value is None or value is False:
        return "no", None
    try:
        policy = RestartPolicy.parse(value)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return policy.name, policy.max_retries


def duration(value: object, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, str):
        raise _bad(path, value, "must be a duration like 30s, 1m30s or 500ms")
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def healthcheck(value: object, path: str, warnings: list[str]) -> Healthcheck | None:
    """Compose's ``healthcheck``: ``test`` (a string runs with the shell, a list starts
    with CMD, CMD-SHELL or NONE), durations as strings, ``retries``, ``disable``."""
    if value is None:
        return None
    node = _mapping(value, path)
    _check_keys(node, _HEALTHCHECK_KEYS, path, warnings)
    fields: dict[str, Any] = {}
    if node.get("disable") is not None and _bool(node["disable"], _join(path, "disable")):
        if node.get("test") is not None:
            raise _bad(_join(path, "disable"), True, "and test cannot both be set")
        return Healthcheck(test=["NONE"])
    tpath = _join(path, "test")
    test = node.get("test")
    if isinstance(test, str):
        if not test.strip():
            raise _bad(tpath, test, "must not be empty")
        fields["test"] = ["CMD-SHELL", test]
    elif isinstance(test, list):
        fields["test"] = [_str(t, f"{tpath}[{i}]") for i, t in enumerate(test)]
    elif test is not None:
        raise _bad(tpath, test, "must be a command line or a list starting with CMD")
    for key in ("interval", "timeout", "start_period", "start_interval"):
        if node.get(key) is not None:
            fields[key] = duration(node[key], _join(path, key))
    if node.get("retries") is not None:
        retries = node["retries"]
        if isinstance(retries, bool) or not isinstance(retries, int):
            raise _bad(_join(path, "retries"), retries, "must be a whole number")
        fields["retries"] = retries
    try:
        return Healthcheck(**fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = _join(path, ".".join(str(p) for p in err["loc"]))
        raise _bad(where, err.get("input"), err["msg"].removeprefix("Value error, ")) from None


def labels(value: object, path: str) -> dict[str, str]:
    """Compose labels: a list of ``KEY=VALUE`` (or ``KEY``) or a mapping."""
    if isinstance(value, list):
        out: dict[str, str] = {}
        for i, item in enumerate(value):
            key, _, val = _str(item, f"{path}[{i}]").partition("=")
            if not key:
                raise _bad(f"{path}[{i}]", item, "must be KEY=VALUE or KEY")
            out[key] = val
        return out
    return {
        k: "" if v is None else _scalar_text(v, _join(path, k))
        for k, v in _mapping(value, path).items()
    }
