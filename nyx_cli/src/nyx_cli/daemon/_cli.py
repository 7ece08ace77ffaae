"""``nyxd``: its flags are the daemon's settings plus the selected plugins' settings.

Every flag is generated from a settings field (its ``description`` is the help text, its
env var and default are shown): :class:`~nyx_cli.daemon._settings.DaemonSettings` gives
``--net-driver``, ``--dns``, ``--state-dir``...; the driver named by ``--net-driver`` and
the DNS provider named by ``--dns-provider`` add the fields of their ``settings_class``
(``--bridge`` of the native driver, ``--cni-bin-dir`` of the CNI driver...). nyxd finds
those two names first (flags, then ``NYXD_NET_DRIVER``/``NYXD_DNS_PROVIDER``, then the
defaults), then builds the command. A field's flags are ``--<field>`` for nyxd's own and
``--<plugin>-<field>`` for a plugin's, unless the field lists others in
``json_schema_extra={"flags": [...]}`` (the spec's ``--bridge``, ``--driver-opt``).
"""

from __future__ import annotations

import os
import sys
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import click
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from nyx_core import DNS_GROUP, DRIVER_GROUP, NyxError, PluginSettings, plugin_settings_class

from .._argv import normalize_argv
from ._settings import DaemonSettings

__all__ = ["main", "nyxd", "parse"]


@dataclass
class _Source:
    """One settings class whose fields become flags: nyxd's own or a plugin's."""

    cls: type[BaseSettings]
    plugin: str | None = None  # "native", "embedded"... None for nyxd's own
    dests: dict[str, str] = field(default_factory=dict)  # click dest -> field name


def _flags(name: str, info: FieldInfo, plugin: str | None) -> list[str]:
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    given = extra.get("flags")
    if isinstance(given, list) and given:
        return [str(f) for f in given]
    stem = name.replace("_", "-")
    return [f"--{plugin}-{stem}" if plugin else f"--{stem}"]


def _env(cls: type[BaseSettings], name: str, info: FieldInfo) -> str:
    alias = info.validation_alias
    choices = getattr(alias, "choices", None)
    if choices:
        return " / ".join(str(c) for c in choices)
    prefix = str(cls.model_config.get("env_prefix", ""))
    return f"{prefix}{name.upper()}"


def _default(info: FieldInfo) -> str:
    if info.default_factory is not None:
        return "none"
    value = info.default
    if value in ((), None, {}):
        return "none"
    return str(value)


def _option(source: _Source, name: str, info: FieldInfo, taken: dict[str, str]) -> click.Option:
    flags = _flags(name, info, source.plugin)
    owner = f"the {source.plugin} plugin" if source.plugin else "nyxd"
    for flag in flags:
        if flag in taken:
            raise click.UsageError(f"flag {flag} of {owner} is already nyx's {taken[flag]}")
        taken[flag] = f"{owner}'s {name}"
    dest = f"{source.plugin or 'nyxd'}__{name}".replace("-", "_")
    source.dests[dest] = name
    ann = info.annotation
    origin = typing.get_origin(ann)
    help_text = f"{info.description} [env {_env(source.cls, name, info)}; default {_default(info)}]"
    kwargs: dict[str, Any] = {"default": None, "help": help_text}
    if origin in (dict, tuple, list):
        kwargs.update(
            multiple=True,
            metavar="KEY=VALUE" if origin is dict else "VALUE",
            callback=lambda ctx, param, value: list(value) or None,  # unset: env or default
        )
    elif ann is bool:
        flags = [f"{flags[0]}/--no-{flags[0][2:]}", *flags[1:]]
        kwargs["default"] = None
    elif origin is typing.Literal:
        kwargs["type"] = click.Choice([str(v) for v in typing.get_args(ann)])
    elif ann is int:
        kwargs["type"] = int
    elif ann is float:
        kwargs["type"] = float
    return click.Option([*flags, dest], **kwargs)


def _selected(argv: Sequence[str], name: str, env: str, default: str) -> str:
    """The value of ``--name`` (any spelling) in ``argv``, else ``env``, else ``default``."""
    found: str | None = None
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        for prefix in (f"--{name}", f"-{name}"):
            if arg == prefix and i + 1 < len(argv):
                found = argv[i + 1]
            elif arg.startswith(prefix + "="):
                found = arg.split("=", 1)[1]
    return found or os.environ.get(env) or default


def _sources(argv: Sequence[str]) -> list[_Source]:
    """nyxd's settings and the settings classes of the driver and DNS provider selected."""
    defaults = DaemonSettings.model_fields
    driver = _selected(argv, "net-driver", "NYXD_NET_DRIVER", str(defaults["net_driver"].default))
    provider = _selected(
        argv, "dns-provider", "NYXD_DNS_PROVIDER", str(defaults["dns_provider"].default)
    )
    sources = [_Source(DaemonSettings)]
    for group, name in ((DRIVER_GROUP, driver), (DNS_GROUP, provider)):
        try:
            cls = plugin_settings_class(group, name)
        except NyxError:
            continue  # not installed: loading it reports that, listing what is
        if cls is not None and all(s.cls is not cls for s in sources):
            sources.append(_Source(cls, plugin=name))
    return sources


def _plugin_table() -> str:
    from nyx_core import installed_plugins

    rows = [f"{p.group:<18} {p.name:<12} {p.distribution} {p.version}" for p in installed_plugins()]
    return "\n".join(rows) if rows else "no nyx plugins installed"


def build_command(sources: Sequence[_Source]) -> click.Command:
    """The ``nyxd`` click command for these settings sources."""
    taken: dict[str, str] = {"--list-plugins": "--list-plugins", "--help": "--help"}
    params: list[click.Parameter] = []
    for source in sources:
        for name, info in source.cls.model_fields.items():
            params.append(_option(source, name, info, taken))
    params.append(
        click.Option(
            ["--list-plugins"], is_flag=True, help="list installed drivers and DNS providers"
        )
    )

    def run(list_plugins: bool, **values: Any) -> None:
        if list_plugins:
            click.echo(_plugin_table())
            return
        from ._boot import boot

        boot(*_split(sources, values))

    cmd = click.Command(
        "nyxd",
        callback=run,
        params=params,
        help="The nyx daemon: owns the network backend and DNS, supervises containers.",
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    return click.version_option(package_name="nyx-cli")(cmd)


Flags = tuple[dict[str, Any], list[tuple[type[PluginSettings], dict[str, Any]]]]


def _split(sources: Sequence[_Source], values: dict[str, Any]) -> Flags:
    """Parsed flag values as nyxd's settings kwargs and each plugin's settings kwargs."""
    core: dict[str, Any] = {}
    plugins: list[tuple[type[PluginSettings], dict[str, Any]]] = []
    for source in sources:
        got = {fname: values[dest] for dest, fname in source.dests.items()}
        if source.plugin is None:
            core = got
        else:
            assert issubclass(source.cls, PluginSettings)
            plugins.append((source.cls, got))
    return core, plugins


def parse(argv: Sequence[str]) -> Flags:
    """What nyxd would boot with for ``argv``: its settings' and its plugins' flag values
    (``None`` for a flag not given). For tests and tools; raises click's usage errors."""
    sources = _sources(argv)
    cmd = build_command(sources)
    longs = [
        opt[2:] for p in cmd.params for opt in [*p.opts, *p.secondary_opts] if opt.startswith("--")
    ]
    ctx = cmd.make_context("nyxd", normalize_argv(list(argv), longs))
    values = {k: v for k, v in ctx.params.items() if k != "list_plugins"}
    return _split(sources, values)


def nyxd(argv: Sequence[str] | None = None) -> click.Command:
    """The command nyxd would run for ``argv`` (its plugins' flags included)."""
    return build_command(_sources(sys.argv[1:] if argv is None else list(argv)))


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    cmd = nyxd(args)
    longs = [
        opt[2:] for p in cmd.params for opt in [*p.opts, *p.secondary_opts] if opt.startswith("--")
    ]
    cmd.main(args=normalize_argv(args, longs), prog_name="nyxd")
