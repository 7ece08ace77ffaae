"""``nyx compose``: run a Compose stack through nyxd's control socket.

The file is read and validated here (``nyx_cli.compose._project`` does the pure work), then the
stack's networks and containers are created with plain HTTP requests to nyxd
(:mod:`._stack`): ``POST /v1/networks``, ``POST /v1/containers`` (a ``ContainerSpec`` plus
``"start": true``), and removed again by ``down``. Before a service starts, ``up`` waits for
what its ``depends_on`` conditions ask (a dependency healthy, or exited 0). Restart policies
and healthchecks are nyxd's: they go in the spec. Errors are one clear line, never a
traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click
import yaml

from nyx_core import NyxError, PortMapping

from ..client._commands import status as _status_text
from ..client._http import default_socket
from ._file import _dotenv, find_compose_file, load_yaml
from ._logs import _follow, _interruptible
from ._plan import ComposePlan, plan_stack
from ._project import (
    COMPOSE_FILENAMES,
    CONFIG_HASH_LABEL,
    check_project_name,
    load_compose,
    normalize_project_name,
)
from ._render import _Dumper, _normalized
from ._stack import (
    ApiError,
    DaemonClient,
    _await_condition,
    _check_driver,
    _cid,
    _ensure_network,
    _ensure_volume,
    _make_bind_sources,
    _order_for_stop,
    _remove_container,
    _remove_volumes,
    _running,
    _service_of,
    _stack_containers,
    _status,
    _stop_path,
    _undo_up,
)

__all__ = ["compose"]


@dataclass
class _Options:
    file: Path | None
    project_name: str | None
    socket_path: str

    def client(self) -> DaemonClient:
        return DaemonClient(self.socket_path)

    def compose_file(self, required: bool = True) -> Path | None:
        if self.file is not None:
            if not self.file.is_file():
                why = "is not a regular file" if self.file.exists() else "not found"
                raise click.ClickException(f"compose file {str(self.file)!r} {why}")
            return self.file
        try:
            return find_compose_file(Path.cwd())
        except click.ClickException:
            if required:
                raise
            return None

    def plan(self, required: bool = True) -> ComposePlan | None:
        """Load, validate and plan the file; print its warnings on stderr."""
        path = self.compose_file(required)
        if path is None:
            return None
        directory = path.resolve().parent
        environ = {**_dotenv(directory / ".env"), **os.environ}
        explicit = self.project_name or os.environ.get("COMPOSE_PROJECT_NAME") or None
        try:
            data = load_yaml(path.read_text(), str(path))
            project = load_compose(
                data,
                explicit,
                default_project=normalize_project_name(directory.name),
                environ=environ,
                project_dir=directory,
            )
            plan = plan_stack(project)
        except NyxError as exc:
            raise click.ClickException(f"{path}: {exc}") from exc
        for warning in project.warnings:
            click.echo(f"warning: {path}: {warning}", err=True)
        return plan

    def project(self, plan: ComposePlan | None) -> str:
        if plan is not None:
            return plan.name
        explicit = self.project_name or os.environ.get("COMPOSE_PROJECT_NAME")
        if explicit:
            try:
                return check_project_name(explicit)
            except NyxError as exc:
                raise click.ClickException(str(exc)) from exc
        try:
            return normalize_project_name(Path.cwd().name)
        except NyxError as exc:
            raise click.ClickException(str(exc)) from exc


def _socket_from_context(ctx: click.Context) -> str | None:
    """The ``--socket`` the parent ``nyx`` group got, whatever way it stored it."""
    obj = ctx.obj
    for value in (
        obj.get("socket") if isinstance(obj, Mapping) else None,
        getattr(obj, "socket", None),
        getattr(obj, "socket_path", None),
        getattr(getattr(obj, "client", None), "socket_path", None),
    ):
        if isinstance(value, str | os.PathLike) and str(value):
            return str(value)
    parent = ctx.parent
    while parent is not None:
        value = parent.params.get("socket")
        if value:
            return str(value)
        parent = parent.parent
    return None


@click.group("compose", context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-f",
    "--file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"compose file [default: the first of {', '.join(COMPOSE_FILENAMES)} in the cwd]",
)
@click.option(
    "-p",
    "--project-name",
    default=None,
    help="project name [default: COMPOSE_PROJECT_NAME, the file's name:, the directory name]",
)
@click.option(
    "--socket",
    "socket_path",
    default=None,
    help="nyxd control socket [env NYXD_SOCKET; default /run/nyx/nyxd.sock]",
)
@click.pass_context
def compose(
    ctx: click.Context, file: Path | None, project_name: str | None, socket_path: str | None
) -> None:
    """Run a Compose stack (services, networks, internal networks) on nyxd."""
    resolved = socket_path or _socket_from_context(ctx) or default_socket()
    ctx.obj = _Options(file=file, project_name=project_name, socket_path=resolved)


def _options(ctx: click.Context) -> _Options:
    obj = ctx.find_object(_Options)
    assert obj is not None
    return obj


@compose.command("up")
@click.option("-d", "--detach", is_flag=True, help="start the stack and return")
@click.option(
    "--wait-timeout",
    type=click.FloatRange(min=0),
    default=300.0,
    show_default=True,
    help="seconds to wait for a depends_on condition (service_healthy, "
    "service_completed_successfully) before giving up",
)
@click.pass_context
def up(ctx: click.Context, detach: bool, wait_timeout: float) -> None:
    """Create networks and start services in depends_on order, each once its dependencies
    meet their conditions (then follow their logs)."""
    opts = _options(ctx)
    plan = opts.plan()
    assert plan is not None
    client = opts.client()
    new_networks: list[str] = []
    new_containers: list[dict[str, Any]] = []
    started: list[dict[str, Any]] = []
    service = ""
    try:
        _check_driver(client, plan)
        existing = _stack_containers(client, plan.name)
        by_service: dict[str, list[dict[str, Any]]] = {}
        for c in existing:
            by_service.setdefault(_service_of(c, plan.name), []).append(c)
        for orphan_service, orphans in by_service.items():
            if orphan_service not in plan.project.services:
                for c in orphans:
                    click.echo(
                        f"warning: container {c.get('name')} belongs to service "
                        f"{orphan_service!r}, which the file no longer has (`down` removes it)",
                        err=True,
                    )
        for net in plan.networks():
            if _ensure_network(client, net):
                new_networks.append(net.name)
        for vol in plan.volumes():
            _ensure_volume(client, vol, plan.name)
        _make_bind_sources(plan)
        by_started: dict[str, dict[str, Any]] = {}
        for service in plan.order:
            svc = plan.project.services[service]
            for dep in svc.depends_on:
                condition = svc.condition(dep)
                if condition != "service_started" and dep in by_started:
                    _await_condition(client, by_started[dep], service, dep, condition, wait_timeout)
            body = plan.create_request(service)
            name = plan.container_name(service)
            current = by_service.get(service, [])
            same = [
                c
                for c in current
                if _running(c)
                and isinstance(c.get("labels"), dict)
                and c["labels"].get(CONFIG_HASH_LABEL) == body["labels"][CONFIG_HASH_LABEL]
            ]
            if same and len(current) == 1:
                _status("Container", name, "Running")
                started.append(same[0])
                by_started[service] = same[0]
                continue
            for joiner in plan.joiners(service):  # in its netns: they go first, come back
                for c in by_service.pop(joiner, []):
                    _remove_container(client, c)
                    _status("Container", str(c.get("name")), "Recreate")
            for c in current:
                _remove_container(client, c)
                _status("Container", str(c.get("name", name)), "Recreate")
            try:
                created = client.request("POST", "/v1/containers", body)
            except ApiError as exc:
                raise ApiError(exc.status, f"service {service}: {exc.message}") from exc
            if not isinstance(created, dict):
                created = {"id": name, "name": name}
            created.setdefault("name", name)
            created.setdefault("labels", body["labels"])
            created.setdefault("state", "running")
            new_containers.append(created)
            _status("Container", name, "Started")
            started.append(created)
            by_started[service] = created
    except (ApiError, click.ClickException) as exc:
        message = exc.message
        if new_containers or new_networks:
            click.echo(f"up failed: {message}; undoing what it created", err=True)
            failed = _undo_up(client, new_containers, new_networks)
            if failed:
                message += f" (could not undo: {'; '.join(failed)})"
        raise click.ClickException(message) from exc
    if detach:
        return

    def stop_all() -> None:
        click.echo("Gracefully stopping... (press Ctrl+C again to force)", err=True)
        pending = list(reversed(started))
        timeout: float | None = None
        while pending:
            c = pending[0]
            try:
                if _interruptible(partial(client.request, "POST", _stop_path(c, timeout))):
                    _status("Container", str(c.get("name")), "Stopped")
                pending.pop(0)
            except KeyboardInterrupt:
                if timeout == 0:
                    raise
                click.echo("Killing...", err=True)
                timeout = 0

    _follow(client, started, plan.name, follow=True, on_interrupt=stop_all)


@compose.command("down")
@click.option(
    "-t",
    "--timeout",
    type=click.FloatRange(min=0),
    default=None,
    help="seconds to wait for a container to stop before killing it [default: nyxd's]",
)
@click.option(
    "-v",
    "--volumes",
    "remove_volumes",
    is_flag=True,
    help="also remove the stack's named volumes (not external ones) and their data",
)
@click.pass_context
def down(ctx: click.Context, timeout: float | None, remove_volumes: bool) -> None:
    """Stop and remove the stack's containers (reverse order), then its networks; with -v
    its named volumes too."""
    opts = _options(ctx)
    plan = opts.plan(required=opts.project_name is None)
    project = opts.project(plan)
    client = opts.client()
    errors: list[str] = []
    try:
        containers = _stack_containers(client, project)
    except ApiError as exc:
        raise click.ClickException(exc.message) from exc
    networks: list[str] = (
        [n.name for n in plan.networks() if not n.external] if plan is not None else []
    )
    external = {n.name for n in plan.networks() if n.external} if plan is not None else set()
    for c in _order_for_stop(containers, plan, project):
        name = str(c.get("name") or _cid(c))
        try:
            _remove_container(client, c, timeout)
            _status("Container", name, "Removed")
        except (ApiError, click.ClickException) as exc:
            errors.append(f"container {name}: {exc}")
        attached = c.get("networks")
        for net in attached if isinstance(attached, list) else []:
            net_name = net.get("name") if isinstance(net, dict) else net
            if (
                isinstance(net_name, str)
                and net_name.startswith(f"{project}_")
                and net_name not in networks
                and net_name not in external
            ):
                networks.append(net_name)
    if plan is None:
        default = f"{project}_default"
        if default not in networks:
            networks.append(default)
    for net_name in networks:
        try:
            client.request("DELETE", f"/v1/networks/{quote(net_name, safe='')}")
            _status("Network", net_name, "Removed")
        except ApiError as exc:
            if exc.status != 404:
                errors.append(f"network {net_name}: {exc.message}")
        except click.ClickException as exc:
            errors.append(f"network {net_name}: {exc.message}")
    if remove_volumes:
        errors += _remove_volumes(client, plan, project)
    if errors:
        raise click.ClickException(
            f"down finished with {len(errors)} error(s): " + "; ".join(errors)
        )


def _ips(container: Mapping[str, Any]) -> str:
    ips = container.get("ips")
    if isinstance(ips, dict):
        return ",".join(f"{k}={v}" for k, v in ips.items())
    if isinstance(ips, list):
        return ",".join(str(i) for i in ips)
    return str(ips or "")


def _ports(container: Mapping[str, Any]) -> str:
    out: list[str] = []
    for p in container.get("ports") or []:
        try:
            out.append(str(PortMapping.model_validate(p)) if isinstance(p, dict) else str(p))
        except ValueError:
            out.append(str(p))
    return ",".join(out)


@compose.command("config")
@click.option("-q", "--quiet", is_flag=True, help="only validate; print nothing")
@click.pass_context
def config(ctx: click.Context, quiet: bool) -> None:
    """Validate the file and print it as nyx understood it (no daemon needed).

    Services are listed in start order, networks by the names nyxd gets.
    """
    plan = _options(ctx).plan()
    assert plan is not None
    if not quiet:
        text = yaml.dump(_normalized(plan), Dumper=_Dumper, sort_keys=False, width=100)
        click.echo(text, nl=False)


@compose.command("ps")
@click.pass_context
def ps(ctx: click.Context) -> None:
    """List the stack's containers."""
    opts = _options(ctx)
    plan = opts.plan(required=opts.project_name is None)
    project = opts.project(plan)
    try:
        containers = _stack_containers(opts.client(), project)
    except ApiError as exc:
        raise click.ClickException(exc.message) from exc
    rows = [("NAME", "SERVICE", "STATUS", "RESTARTS", "IPS", "PORTS")]
    for c in containers:
        rows.append(
            (
                str(c.get("name", "")),
                _service_of(c, project),
                _status_text(c),
                str(c.get("restart_count") or 0),
                _ips(c),
                _ports(c),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


@compose.command("logs")
@click.option("-f", "--follow", is_flag=True, help="keep following new output")
@click.argument("services", nargs=-1)
@click.pass_context
def logs(ctx: click.Context, follow: bool, services: tuple[str, ...]) -> None:
    """Show the logs of the stack's containers (or only of SERVICE...)."""
    opts = _options(ctx)
    plan = opts.plan(required=opts.project_name is None)
    project = opts.project(plan)
    client = opts.client()
    try:
        containers = _stack_containers(client, project)
        if services:
            known = {_service_of(c, project) for c in containers}
            if plan is not None:
                known |= set(plan.project.services)
            for s in services:
                if s not in known:
                    raise click.ClickException(
                        f"no such service: {s} (services: {', '.join(sorted(known)) or 'none'})"
                    )
            containers = [c for c in containers if _service_of(c, project) in services]
        if plan is not None:
            rank = {s: i for i, s in enumerate(plan.order)}
            containers.sort(key=lambda c: rank.get(_service_of(c, project), -1))
        _follow(client, containers, project, follow=follow)
    except ApiError as exc:
        raise click.ClickException(exc.message) from exc


def main(argv: list[str] | None = None) -> None:  # pragma: no cover - handy for debugging
    compose.main(args=sys.argv[1:] if argv is None else argv, prog_name="nyx compose")
