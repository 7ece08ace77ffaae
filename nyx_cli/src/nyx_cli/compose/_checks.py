"""The small checks every part of the compose loader shares: key paths, types, and the
rule that nothing is silently ignored (:func:`check_keys`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from nyx_core.errors import ConfigError

from ._keys import INFORMATIONAL, REFUSED, SPEC_KEYS

__all__ = [
    "HOSTNAME_RE",
    "alias",
    "bad",
    "boolean",
    "check_keys",
    "join",
    "mapping",
    "scalar_text",
    "string",
    "strings",
]

HOSTNAME_RE = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$")


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def bad(path: str, value: object, why: str) -> ConfigError:
    return ConfigError(f"{path}: {why} (got {value!r})")


def mapping(value: object, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise bad(path, value, "must be a mapping")
    for k in value:
        if not isinstance(k, str):
            raise bad(join(path, str(k)), k, "keys must be strings")
    return value


def string(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise bad(path, value, "must be a string")
    return value


def boolean(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise bad(path, value, "must be true or false")
    return value


def scalar_text(value: object, path: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise bad(path, value, "must be a string or number")


def check_keys(
    node: Mapping[str, Any],
    known: set[str],
    path: str,
    warnings: list[str],
    scope: str | None = None,
) -> None:
    """Nothing silently ignored: a key of ``node`` that is not ``known`` (nor ``x-*``) is a
    warning when it is purely informational (:data:`._keys.INFORMATIONAL` of ``scope``),
    else an error naming every such key's path (it would change what runs)."""
    refused: list[str] = []
    for key in node:
        if key.startswith("x-") or key in known:
            continue
        kpath = join(path, key)
        info = INFORMATIONAL.get(scope or "", {}).get(key)
        if info is not None:
            warnings.append(f"{kpath}: {info}, ignored")
            continue
        why = REFUSED.get(scope or "", {}).get(key)
        if why is None:
            spec = SPEC_KEYS.get(scope or "")
            why = (
                "not supported by nyx (it would change what runs)"
                if spec is not None and key in spec
                else "unknown key"
            )
        refused.append(f"{kpath}: {why}")
    if refused:
        raise ConfigError("; ".join(refused))


def alias(value: object, path: str) -> str:
    text = string(value, path)
    if not HOSTNAME_RE.match(text):
        raise bad(path, value, "is not a valid DNS name (letters, digits, '-')")
    return text


def strings(value: object, path: str) -> tuple[str, ...]:
    """A string or a list of strings (compose's ``string_or_list``)."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(scalar_text(v, f"{path}[{i}]") for i, v in enumerate(value))
    raise bad(path, value, "must be a string or a list of strings")
