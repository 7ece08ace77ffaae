"""``nyx``'s click commands: the public CLI (parsing, help, usage errors).

The hot commands' work lives in ``_commands`` (no click), which ``_main``'s hand parser calls
directly for the common command lines; everything else, and every line it does not fully
understand (``--help``, a usage error, a rare command), comes here. Exit codes: see
``_commands``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import click

from . import _commands
from ._commands import EXIT_DAEMON, BadValue
from ._commands import call as _call
from ._commands import die as _die
from ._commands import size as _size
from ._commands import table as _table
from ._http import ApiError, Client, DaemonUnavailable, InputError, default_socket, q

__all__ = ["cli"]


def _client(ctx: click.Context) -> Client:
    return Client(ctx.obj["socket"])


def _socket(ctx: click.Context) -> str:
    return str(ctx.obj["socket"])


class _Group(click.Group):
    """Exit codes like docker's; sub-command groups of other modules imported on use."""

    lazy = {"compose": ("nyx_cli.compose._cli", "compose")}

    def _lazy_available(self, name: str) -> bool:
        import importlib.util

        try:
            return importlib.util.find_spec(self.lazy[name][0]) is not None
        except ImportError:
            return False

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = set(super().list_commands(ctx))
        names.update(n for n in self.lazy if self._lazy_available(n))
        return sorted(names)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is None and cmd_name in self.lazy:
            import importlib

            module, attr = self.lazy[cmd_name]
            try:
                found = getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError):
                return None
            if isinstance(found, click.Command):
                self.add_command(found, cmd_name)
                return found
        return cmd

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            rv = super().main(*args, **kwargs)
        except click.exceptions.Exit as exc:
            raise SystemExit(exc.exit_code) from None
        except click.Abort:
            _die("aborted", 130)
        except click.UsageError as exc:
            exc.show()
            raise SystemExit(EXIT_DAEMON) from None
        except click.ClickException as exc:
            exc.show()
            raise SystemExit(EXIT_DAEMON) from None
        if isinstance(rv, int):
            raise SystemExit(rv)
        return rv


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--socket",
    "socket_path",
    default=None,
    metavar="PATH",
    help="nyxd control socket [env NYXD_SOCKET; default /run/nyx/nyxd.sock]",
)
@click.version_option(package_name="nyx-cli")
@click.pass_context
def cli(ctx: click.Context, socket_path: str | None) -> None:
    """nyx: run containers through nyxd."""
    ctx.ensure_object(dict)
    ctx.obj["socket"] = socket_path or default_socket()


# ---------------------------------------------------------------------------- run


def _env_pairs(values: Sequence[str]) -> dict[str, str]:
    try:
        return _commands.env_pairs(values)
    except BadValue as exc:
        raise click.BadParameter(exc.message, param_hint=exc.param_hint) from None


def _labels(values: Sequence[str]) -> dict[str, str]:
    try:
        return _commands.label_pairs(values)
    except BadValue as exc:
        raise click.BadParameter(exc.message, param_hint=exc.param_hint) from None


def _converted(convert: Any, *args: Any) -> Any:
    try:
        return convert(*args)
    except BadValue as exc:
        raise click.BadParameter(exc.message, param_hint=exc.param_hint) from None


@cli.command(context_settings={"allow_interspersed_args": False})
@click.option("-d", "--detach", is_flag=True, help="exit after start, print the id")
@click.option("--rm", is_flag=True, help="remove the container when it exits")
@click.option("--name", default=None, help="container name (unique)")
@click.option("--hostname", default=None, help="hostname (and DNS name <hostname>.nyxd.local)")
@click.option("-p", "--publish", multiple=True, metavar="[IP:]HOST:CTR[/PROTO]", help="publish")
@click.option("-e", "--env", multiple=True, metavar="NAME=VALUE", help="environment variable")
@click.option(
    "--network",
    "networks",
    multiple=True,
    help="network to join (repeatable), or alone: host, none, bridge or container:NAME",
)
@click.option("--network-alias", "aliases", multiple=True, help="extra DNS name")
@click.option("--dns-off", is_flag=True, help="no embedded DNS, no resolv.conf override")
@click.option("-l", "--label", "labels", multiple=True, metavar="KEY=VALUE", help="label")
@click.option("--entrypoint", default=None, help="override the image's entrypoint")
@click.option("-w", "--workdir", default=None, help="working directory inside the container")
@click.option("-u", "--user", default=None, help="user[:group] inside the container")
@click.option("--ip", default=None, help="IPv4 address on the (one) network")
@click.option("--ip6", default=None, help="IPv6 address on the (one, dual-stack) network")
@click.option("--mac-address", default=None, help="MAC address on the (one) network")
@click.option(
    "--add-host",
    "add_hosts",
    multiple=True,
    metavar="NAME:IP",
    help="add a line to /etc/hosts (IP host-gateway: the network's gateway)",
)
@click.option("--dns", multiple=True, metavar="IP", help="nameserver for resolv.conf")
@click.option("--dns-search", multiple=True, metavar="DOMAIN", help="resolv.conf search domain")
@click.option("--dns-option", "dns_options", multiple=True, help="resolv.conf option (ndots:2)")
@click.option("--domainname", default=None, help="the container's NIS domain name")
@click.option("--expose", multiple=True, metavar="PORT[/PROTO]", help="port it listens on")
@click.option(
    "--sysctl",
    "sysctls",
    multiple=True,
    metavar="KEY=VALUE",
    help="net.* sysctl in the container's network namespace",
)
@click.option(
    "-v",
    "--volume",
    "volumes",
    multiple=True,
    metavar="[SRC:]DST[:ro]",
    help="bind a host path (/, ./, ~) or mount a named volume; DST alone: anonymous volume",
)
@click.option(
    "--mount",
    "mounts",
    multiple=True,
    metavar="type=bind|volume|tmpfs,source=..,target=..[,readonly]",
    help="a mount, docker's long syntax",
)
@click.option("--tmpfs", multiple=True, metavar="DST[:size=64m,mode=1777,exec]", help="tmpfs")
@click.option("--env-file", "env_files", multiple=True, metavar="FILE", help="NAME=VALUE lines")
@click.option("--cap-add", multiple=True, metavar="CAP", help="add a capability (or ALL)")
@click.option("--cap-drop", multiple=True, metavar="CAP", help="drop a capability (or ALL)")
@click.option("--init", is_flag=True, help="run tini as PID 1 (reaps zombies, forwards signals)")
@click.option("--stop-signal", default=None, help="signal that stops it (default SIGTERM)")
@click.option("--stop-timeout", type=float, default=None, help="grace seconds before SIGKILL")
@click.option(
    "--restart",
    default=None,
    metavar="POLICY",
    help="no, on-failure[:N], always or unless-stopped (nyxd restarts it) [default: no]",
)
@click.option("--health-cmd", default=None, help="command that checks its health (sh -c)")
@click.option("--health-interval", default=None, metavar="DURATION", help="e.g. 30s (30s)")
@click.option("--health-timeout", default=None, metavar="DURATION", help="probe timeout (30s)")
@click.option("--health-retries", default=None, metavar="N", help="failures to unhealthy (3)")
@click.option("--health-start-period", default=None, metavar="DURATION", help="grace (0s)")
@click.option("--no-healthcheck", is_flag=True, help="turn off the image's HEALTHCHECK")
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def run(
    ctx: click.Context,
    detach: bool,
    rm: bool,
    name: str | None,
    hostname: str | None,
    publish: tuple[str, ...],
    env: tuple[str, ...],
    networks: tuple[str, ...],
    aliases: tuple[str, ...],
    dns_off: bool,
    labels: tuple[str, ...],
    entrypoint: str | None,
    workdir: str | None,
    user: str | None,
    ip: str | None,
    ip6: str | None,
    mac_address: str | None,
    add_hosts: tuple[str, ...],
    dns: tuple[str, ...],
    dns_search: tuple[str, ...],
    dns_options: tuple[str, ...],
    domainname: str | None,
    expose: tuple[str, ...],
    sysctls: tuple[str, ...],
    volumes: tuple[str, ...],
    mounts: tuple[str, ...],
    tmpfs: tuple[str, ...],
    env_files: tuple[str, ...],
    cap_add: tuple[str, ...],
    cap_drop: tuple[str, ...],
    init: bool,
    stop_signal: str | None,
    stop_timeout: float | None,
    restart: str | None,
    health_cmd: str | None,
    health_interval: str | None,
    health_timeout: str | None,
    health_retries: str | None,
    health_start_period: str | None,
    no_healthcheck: bool,
    image: str,
    command: tuple[str, ...],
) -> int:
    """Run a container: print its JSON, stream its output, exit with its exit code."""
    return _commands.run(
        _socket(ctx),
        detach=detach,
        rm=rm,
        name=name,
        hostname=hostname,
        publish=publish,
        env=_env_pairs(env),
        networks=networks,
        aliases=aliases,
        dns_off=dns_off,
        labels=_labels(labels),
        entrypoint=entrypoint,
        workdir=workdir,
        user=user,
        ip=ip,
        ip6=ip6,
        mac_address=mac_address,
        add_hosts=add_hosts,
        dns=dns,
        dns_search=dns_search,
        dns_options=dns_options,
        domainname=domainname,
        expose=expose,
        sysctls=_converted(_commands.sysctl_pairs, sysctls),
        volumes=_converted(_commands.volume_specs, volumes),
        mounts=_converted(_commands.mount_specs, mounts),
        tmpfs=_converted(_commands.tmpfs_specs, tmpfs),
        env_files=_converted(_commands.env_file_pairs, env_files),
        cap_add=cap_add,
        cap_drop=cap_drop,
        init=init,
        stop_signal=stop_signal,
        stop_timeout=stop_timeout,
        restart=restart,
        health_cmd=health_cmd,
        health_interval=_converted(_commands.duration, health_interval, "--health-interval"),
        health_timeout=_converted(_commands.duration, health_timeout, "--health-timeout"),
        health_retries=_converted(_commands.count, health_retries, "--health-retries"),
        health_start_period=_converted(
            _commands.duration, health_start_period, "--health-start-period"
        ),
        no_healthcheck=no_healthcheck,
        image=image,
        command=command,
    )


# ----------------------------------------------------------------------- containers


@cli.command()
@click.option("-a", "--all", "all_", is_flag=True, help="show stopped containers too")
@click.option("-q", "--quiet", is_flag=True, help="only ids")
@click.option("--json", "as_json", is_flag=True, help="JSON list")
@click.option("--filter", "filters", multiple=True, metavar="label=K=V", help="filter by label")
@click.pass_context
def ps(
    ctx: click.Context, all_: bool, quiet: bool, as_json: bool, filters: tuple[str, ...]
) -> None:
    """List containers."""
    _commands.ps(_socket(ctx), all_=all_, quiet=quiet, as_json=as_json, filters=filters)


@cli.command()
@click.option("-t", "--time", "timeout", type=float, default=None, help="grace seconds (10)")
@click.argument("containers", nargs=-1, required=True)
@click.pass_context
def stop(ctx: click.Context, timeout: float | None, containers: tuple[str, ...]) -> None:
    """Stop containers: SIGTERM, grace period, SIGKILL."""
    _commands.stop(_socket(ctx), timeout=timeout, containers=containers)


@cli.command()
@click.option("-f", "--force", is_flag=True, help="kill and remove a running container")
@click.argument("containers", nargs=-1, required=True)
@click.pass_context
def rm(ctx: click.Context, force: bool, containers: tuple[str, ...]) -> None:
    """Remove containers."""
    _commands.rm(_socket(ctx), force=force, containers=containers)


@cli.command()
@click.option("-f", "--follow", is_flag=True, help="keep streaming until the container exits")
@click.argument("container")
@click.pass_context
def logs(ctx: click.Context, follow: bool, container: str) -> None:
    """Print a container's output."""
    _commands.logs(_socket(ctx), follow=follow, container=container)


@cli.command()
@click.argument("refs", nargs=-1, required=True)
@click.pass_context
def inspect(ctx: click.Context, refs: tuple[str, ...]) -> None:
    """Show containers (or images) as JSON."""
    _commands.inspect(_socket(ctx), refs=refs)


@cli.command()
@click.argument("container")
@click.pass_context
def wait(ctx: click.Context, container: str) -> int:
    """Wait for a container to exit; print its exit code."""
    return _commands.wait(_socket(ctx), container=container)


# ---------------------------------------------------------------------------- images


@cli.command()
@click.option("-q", "--quiet", is_flag=True, help="only ids")
@click.option("--json", "as_json", is_flag=True, help="JSON list")
@click.pass_context
def images(ctx: click.Context, quiet: bool, as_json: bool) -> None:
    """List images."""
    _commands.images(_socket(ctx), quiet=quiet, as_json=as_json)


@cli.command()
@click.option(
    "-i",
    "--input",
    "path",
    type=click.Path(dir_okay=True),
    default=None,
    help="image tar (docker save or OCI) or OCI layout dir; default stdin",
)
@click.pass_context
def load(ctx: click.Context, path: str | None) -> None:
    """Load images from a tar archive or an OCI layout."""
    client = _client(ctx)
    if path is None and sys.stdin.isatty():
        raise click.UsageError("no input: use -i FILE or pipe an image tar to stdin")
    source: Path | BinaryIO = Path(path) if path is not None else sys.stdin.buffer
    try:  # streamed: nyxd never opens a path of its client's choosing
        loaded = _call(client.load, source)
    except InputError as exc:
        _die(str(exc))
    for img in loaded:
        for tag in img.get("repo_tags") or [img.get("id")]:
            click.echo(f"Loaded image: {tag}")


@cli.command()
@click.option("--insecure", is_flag=True, hidden=True, help="removed: see nyxd --insecure-registry")
@click.option("-q", "--quiet", is_flag=True, help="no progress")
@click.argument("reference")
@click.pass_context
def pull(ctx: click.Context, insecure: bool, quiet: bool, reference: str) -> None:
    """Pull an image from a registry (through nyxd).

    Registries that may use plain HTTP or an unverified certificate are nyxd's
    configuration (nyxd --insecure-registry HOST[:PORT]), as in docker's daemon.json.
    """
    if insecure:
        raise click.UsageError(
            "nyx pull --insecure was removed: which registries may use plain HTTP or an "
            "unverified certificate is nyxd's configuration; start nyxd with "
            "--insecure-registry HOST[:PORT] (localhost and 127.0.0.0/8 need nothing)"
        )
    client = _client(ctx)
    body = {"reference": reference}
    tty = sys.stderr.isatty()
    try:
        for ev in client.lines("POST", "/v1/images/pull", params={"progress": 1}, body=body):
            if "error" in ev:
                code = ev.get("exit_code")
                _die(ev["error"], code if isinstance(code, int) else EXIT_DAEMON)
            if "image" in ev:
                if tty and not quiet:
                    click.echo("", err=True)
                click.echo(ev["image"].get("id"))
                return
            if not quiet:
                _show_progress(ev.get("progress") or {}, tty)
    except (ApiError, DaemonUnavailable) as exc:
        code = exc.body.get("exit_code") if isinstance(exc, ApiError) else None
        _die(str(exc), code if isinstance(code, int) else EXIT_DAEMON)
    _die("pull ended without a result")


def _show_progress(ev: dict[str, Any], tty: bool) -> None:
    kind = ev.get("kind", "")
    digest = str(ev.get("digest", "")).removeprefix("sha256:")[:12]
    if kind == "blob-progress":
        if not tty:
            return
        cur, tot = ev.get("current", 0), ev.get("total", 0)
        pct = f"{100 * cur // tot}%" if tot else _size(cur)
        click.echo(f"\r{digest}: downloading {pct} of {_size(tot)}    ", err=True, nl=False)
        return
    text = {
        "resolve": f"resolving {ev.get('reference', '')}",
        "manifest": f"manifest {ev.get('digest', '')}",
        "blob-start": f"{digest}: downloading {_size(ev.get('total'))}",
        "blob-skip": f"{digest}: already present",
        "blob-done": f"{digest}: done",
        "done": "pull complete",
    }.get(kind, ev.get("message") or str(ev))
    prefix = "\r" if tty else ""
    click.echo(f"{prefix}{text}".ljust(60), err=True)


@cli.command()
@click.option("-u", "--username", prompt=True, help="user name")
@click.option("-p", "--password", default=None, help="password (prefer --password-stdin)")
@click.option("--password-stdin", is_flag=True, help="read the password from stdin")
@click.option("--insecure", is_flag=True, help="plain HTTP / unverified TLS for this registry")
@click.argument("registry")
@click.pass_context
def login(
    ctx: click.Context,
    registry: str,
    username: str,
    password: str | None,
    password_stdin: bool,
    insecure: bool,
) -> None:
    """Check registry credentials and store them where nyxd reads them when pulling.

    The file is the one nyxd names (``registry_auth_file`` in ``nyx info``; nyxd's
    ``--registry-auth-file``, by default root's ~/.docker/config.json); without a running
    nyxd, ``$DOCKER_CONFIG/config.json`` or ~/.docker/config.json of the caller.
    """
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    if password is None:
        password = click.prompt("Password", hide_input=True)
    from ..registry import login as registry_login  # httpx: only for this command
    from ..registry._auth import default_auth_file

    try:
        target = Path(_client(ctx).info()["registry_auth_file"])
    except (DaemonUnavailable, ApiError, KeyError, TypeError):
        target = default_auth_file()
        click.echo(f"nyx: nyxd did not say where it reads credentials; using {target}", err=True)
    try:
        registry_login(
            registry,
            username,
            password,
            target,
            insecure_registries=(registry,) if insecure else (),
        )
    except PermissionError as exc:
        _die(f"cannot store the credentials in {target}, where nyxd reads them: {exc}; "
             "run nyx login as root")  # fmt: skip
    except Exception as exc:
        _die(f"login to {registry} failed: {exc}")
    click.echo(f"Login Succeeded (credentials in {target})")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="raw JSON")
@click.pass_context
def info(ctx: click.Context, as_json: bool) -> None:
    """Show nyxd's version, driver, DNS mode and plugins."""
    _commands.info(_socket(ctx), as_json=as_json)


# ---------------------------------------------------------------------------- networks


@cli.group()
def network() -> None:
    """Manage networks."""


@network.command("ls")
@click.pass_context
def network_ls(ctx: click.Context) -> None:
    """List networks (with the device the net driver made for each)."""
    rows = _call(_client(ctx).request, "GET", "/v1/networks")
    _table(
        [
            (
                n["name"],
                ",".join(x for x in (n["subnet"], n.get("subnet6")) if x),
                ",".join(x for x in (n["gateway"], n.get("gateway6")) if x),
                "yes" if n.get("internal") else "",
                n.get("interface") or "",
                ",".join(f"{k}={v}" for k, v in sorted((n.get("options") or {}).items())),
            )
            for n in rows
        ],
        ("NAME", "SUBNET", "GATEWAY", "INTERNAL", "INTERFACE", "OPTIONS"),
    )
    for n in rows:
        if n.get("error"):
            click.echo(
                f"warning: network {n['name']}: refused by the net driver: {n['error']}", err=True
            )


@network.command("inspect")
@click.argument("names", nargs=-1, required=True)
@click.pass_context
def network_inspect(ctx: click.Context, names: tuple[str, ...]) -> None:
    """Show networks as JSON: what the net driver made of them (device, options, labels)."""
    out = [_call(_client(ctx).request, "GET", f"/v1/networks/{q(n)}") for n in names]
    click.echo(json.dumps(out, indent=2))


def _options(values: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in values:
        k, sep, v = item.partition("=")
        if not k or not sep:
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE", param_hint="-o/--opt")
        out[k] = v
    return out


@network.command("create")
@click.option("--internal", is_flag=True, help="no traffic leaves the network's subnet")
@click.option("--subnet", default=None, help="IPv4 subnet (default: a free /24 of 10.89/16)")
@click.option("--gateway", default=None, help="gateway address (default: the subnet's first)")
@click.option(
    "--ipv6",
    is_flag=True,
    help="dual stack: an IPv6 subnet too (default: a free /64 of fd6e:7978:1::/48)",
)
@click.option("--subnet6", default=None, help="IPv6 subnet, /64 or larger (implies --ipv6)")
@click.option("--gateway6", default=None, help="IPv6 gateway (default: the subnet6's first)")
@click.option(
    "-o",
    "--opt",
    "opts",
    multiple=True,
    metavar="KEY=VALUE",
    help="driver option (repeatable), e.g. -o mtu=1400; the driver refuses what it cannot do",
)
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="label (repeatable)")
@click.argument("name")
@click.pass_context
def network_create(
    ctx: click.Context,
    internal: bool,
    subnet: str | None,
    gateway: str | None,
    ipv6: bool,
    subnet6: str | None,
    gateway6: str | None,
    opts: tuple[str, ...],
    labels: tuple[str, ...],
    name: str,
) -> None:
    """Create a network (the net driver makes it, or refuses saying why)."""
    body = {
        "name": name,
        "internal": internal,
        "subnet": subnet,
        "gateway": gateway,
        "ipv6": ipv6 or subnet6 is not None,
        "subnet6": subnet6,
        "gateway6": gateway6,
        "options": _options(opts),
        "labels": _labels(labels),
    }
    net = _call(_client(ctx).request, "POST", "/v1/networks", body=body)
    click.echo(net["name"])


@network.command("rm")
@click.argument("names", nargs=-1, required=True)
@click.pass_context
def network_rm(ctx: click.Context, names: tuple[str, ...]) -> None:
    """Remove networks."""
    for n in names:
        _call(_client(ctx).request, "DELETE", f"/v1/networks/{q(n)}")
        click.echo(n)


@network.command("reload")
@click.pass_context
def network_reload(ctx: click.Context) -> None:
    """Re-apply every network's firewall rules and bridges (after a firewall reload)."""
    out = _call(_client(ctx).request, "POST", "/v1/networks/reload")
    report = out.get("report") if isinstance(out, dict) else None
    click.echo(json.dumps(report, indent=2) if isinstance(report, dict | list) else "reloaded")


# ---------------------------------------------------------------------------- volumes


@cli.group()
def volume() -> None:
    """Manage named volumes (directories nyxd keeps across containers)."""


@volume.command("create")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="label (repeatable)")
@click.option("-d", "--driver", default="local", help="only local")
@click.option(
    "-o", "--opt", "opts", multiple=True, metavar="KEY=VALUE", help="driver option (none exist)"
)
@click.argument("name", required=False)
@click.pass_context
def volume_create(
    ctx: click.Context,
    labels: tuple[str, ...],
    driver: str,
    opts: tuple[str, ...],
    name: str | None,
) -> None:
    """Create a volume (NAME default: a random one); prints its name."""
    body: dict[str, Any] = {"labels": _labels(labels), "driver": driver, "options": _options(opts)}
    if name is not None:
        body["name"] = name
    vol = _call(_client(ctx).request, "POST", "/v1/volumes", body=body)
    click.echo(vol["name"])


@volume.command("ls")
@click.option("-q", "--quiet", is_flag=True, help="only names")
@click.option("--filter", "filters", multiple=True, metavar="label=K[=V]", help="filter by label")
@click.pass_context
def volume_ls(ctx: click.Context, quiet: bool, filters: tuple[str, ...]) -> None:
    """List volumes, with the containers that mount them."""
    labels = [f.removeprefix("label=") for f in filters]
    rows = _call(_client(ctx).request, "GET", "/v1/volumes", params={"label": labels or None})
    if quiet:
        for v in rows:
            click.echo(v["name"])
        return
    _table(
        [(v["driver"], v["name"], ",".join(v.get("containers") or [])) for v in rows],
        ("DRIVER", "VOLUME NAME", "CONTAINERS"),
    )


@volume.command("inspect")
@click.argument("names", nargs=-1, required=True)
@click.pass_context
def volume_inspect(ctx: click.Context, names: tuple[str, ...]) -> None:
    """Show volumes as JSON (mountpoint, labels, containers)."""
    out = [_call(_client(ctx).request, "GET", f"/v1/volumes/{q(n)}") for n in names]
    click.echo(json.dumps(out, indent=2))


@volume.command("rm")
@click.argument("names", nargs=-1, required=True)
@click.pass_context
def volume_rm(ctx: click.Context, names: tuple[str, ...]) -> None:
    """Remove volumes and their data (refused while any container mounts one)."""
    for n in names:
        _call(_client(ctx).request, "DELETE", f"/v1/volumes/{q(n)}")
        click.echo(n)


@cli.command("rmi")
@click.argument("refs", nargs=-1, required=True)
@click.pass_context
def rmi(ctx: click.Context, refs: tuple[str, ...]) -> None:
    """Remove images."""
    _commands.rmi(_socket(ctx), refs=refs)
