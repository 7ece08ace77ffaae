"""``nyxd``: loads the network driver and DNS provider named by its flags."""

from __future__ import annotations

import sys
from typing import Any

import click

from nyx_core import NyxSettings

from ._argv import normalize_argv

__all__ = ["main", "nyxd"]


def _help(field: str) -> str:
    info = NyxSettings.model_fields[field]
    default = info.default
    return f"{info.description} [env NYXD_{field.upper()}; default {default}]"


def _plugin_table() -> str:
    from nyx_core import installed_plugins

    rows = [f"{p.group:<18} {p.name:<12} {p.distribution} {p.version}" for p in installed_plugins()]
    return "\n".join(rows) if rows else "no nyx plugins installed"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--net-driver", default=None, help=_help("net_driver"))
@click.option(
    "--dns",
    default=None,
    type=click.Choice(["auto", "embedded", "cni", "off"]),
    help=_help("dns"),
)
@click.option("--dns-provider", default=None, help=_help("dns_provider"))
@click.option(
    "--driver-opt",
    "driver_opts",
    multiple=True,
    metavar="KEY=VALUE",
    help=_help("driver_opts"),
)
@click.option("--cni-bin-dir", default=None, help=_help("cni_bin_dir"))
@click.option("--cni-conf-dir", default=None, help=_help("cni_conf_dir"))
@click.option("--network", default=None, help=_help("network"))
@click.option(
    "--log-level",
    default=None,
    type=click.Choice(["trace", "debug", "info", "warning", "error", "critical"]),
    help=_help("log_level"),
)
@click.option("--gateway-ip", default=None, help=_help("gateway_ip"))
@click.option("--container-subnet", default=None, help=_help("container_subnet"))
@click.option("--bridge", default=None, help=_help("bridge"))
@click.option("--dns-port", default=None, type=int, help=_help("dns_port"))
@click.option("--runtime", default=None, help=_help("runtime"))
@click.option("--pids-limit", default=None, type=int, help=_help("pids_limit"))
@click.option("--max-published-ports", default=None, type=int, help=_help("max_published_ports"))
@click.option(
    "--image-layer-max-bytes", default=None, type=int, help=_help("image_layer_max_bytes")
)
@click.option("--image-max-bytes", default=None, type=int, help=_help("image_max_bytes"))
@click.option(
    "--image-layer-max-entries", default=None, type=int, help=_help("image_layer_max_entries")
)
@click.option(
    "--image-config-max-bytes", default=None, type=int, help=_help("image_config_max_bytes")
)
@click.option("--socket", default=None, help=_help("socket"))
@click.option("--state-dir", default=None, help=_help("state_dir"))
@click.option("--run-dir", default=None, help=_help("run_dir"))
@click.option("--api-max-connections", default=None, type=int, help=_help("api_max_connections"))
@click.option("--api-idle-timeout", default=None, type=float, help=_help("api_idle_timeout"))
@click.option("--api-max-body", default=None, type=int, help=_help("api_max_body"))
@click.option("--api-max-upload", default=None, type=int, help=_help("api_max_upload"))
@click.option(
    "--insecure-registry",
    "--insecure-registries",  # the setting's name, as docker's daemon.json key
    "insecure_registries",
    metavar="HOST[:PORT]",
    multiple=True,
    callback=lambda ctx, param, value: list(value) or None,  # unset: env var or default
    help=_help("insecure_registries"),
)
@click.option("--list-plugins", is_flag=True, help="list installed drivers and DNS providers")
@click.version_option(package_name="nyx-cli")
def nyxd(list_plugins: bool, **flags: Any) -> None:
    """The nyx daemon: owns the network backend and DNS, supervises containers."""
    if list_plugins:
        click.echo(_plugin_table())
        return
    from ._boot import boot

    if not flags.get("driver_opts"):
        flags["driver_opts"] = None  # unset: NYXD_DRIVER_OPTS or the default
    boot(flags)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    longs = [p.opts[0][2:] for p in nyxd.params if p.opts and p.opts[0].startswith("--")]
    nyxd.main(args=normalize_argv(args, longs), prog_name="nyxd")
