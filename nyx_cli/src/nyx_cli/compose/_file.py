"""The compose file as ``nyx compose`` finds and reads it: the first of
:data:`~nyx_cli.compose._project.COMPOSE_FILENAMES`, YAML read the way Compose reads it
(YAML 1.2 scalars), and the project's ``.env``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click
import yaml

from ._project import COMPOSE_FILENAMES

__all__ = ["load_yaml"]


class _Loader(yaml.SafeLoader):
    """YAML the way Compose reads it (YAML 1.2 scalars): ``22:22`` stays a string (no
    base-60 integers), ``no``/``yes``/``on``/``off`` stay strings, dates stay strings."""


_REPLACED = {"tag:yaml.org,2002:int", "tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp"}
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _REPLACED]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?(?:0|[1-9][0-9_]*)|0o[0-7_]+|0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = str(loader.construct_scalar(node)).replace("_", "")
    if text.startswith("0o"):
        return int(text[2:], 8)
    return int(text, 0) if text.startswith("0x") else int(text)


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def load_yaml(text: str, source: str) -> Any:
    """Parse a compose file; a syntax error is one ``ClickException`` line naming the file
    and the position."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise click.ClickException(f"{source}: invalid YAML: {exc}") from exc


def _dotenv(path: Path) -> dict[str, str]:
    """The project's ``.env`` (dotenv format, :mod:`nyx_cli._envfile`)."""
    from .._envfile import parse_env_file

    if not path.is_file():
        return {}
    try:
        return parse_env_file(path.read_text(), str(path))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc


def find_compose_file(cwd: Path) -> Path:
    for name in COMPOSE_FILENAMES:
        candidate = cwd / name
        if candidate.is_file():
            return candidate
    raise click.ClickException(
        f"no compose file in {cwd} (looked for {', '.join(COMPOSE_FILENAMES)}); use -f FILE"
    )
