"""``nyx compose``: run a Compose stack through nyxd's control socket.

The file is read and validated here (``nyx_cli.compose._project`` does the pure work), then the
stack's networks and containers are created with plain HTTP requests to nyxd:
``POST /v1/networks``, ``POST /v1/containers`` (a ``ContainerSpec`` plus ``"start": true``),
and removed again by ``down``. Before a service starts, ``up`` waits for what its
``depends_on`` conditions ask (a dependency healthy, or exited 0). Restart policies and
healthchecks are nyxd's: they go in the spec. Errors are one clear line, never a traceback.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from http.client import HTTPException
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn
from urllib.parse import quote, urlencode

import click
import yaml

from nyx_core import NyxError, PortMapping

from ..client._commands import status as _status_text
from ..client._http import ApiError as HttpApiError
from ..client._http import Client, DaemonUnavailable, default_socket
from ..daemon._models import NetworkAttachment
from ._project import (
    COMPOSE_FILENAMES,
    CONFIG_HASH_LABEL,
    PROJECT_LABEL,
    SERVICE_LABEL,
    ComposeNetwork,
    ComposePlan,
    ComposeService,
    ComposeVolume,
    check_project_name,
    load_compose,
    normalize_project_name,
    plan_stack,
)
from ._service_runtime import ServiceRuntime

__all__ = ["ApiError", "DaemonClient", "compose", "load_yaml"]


# ------------------------------------------------------------------ talking to nyxd


class ApiError(Exception):
    """nyxd answered with an error status; ``message`` is its ``{"error": ...}``."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(message)


class DaemonClient:
    """nyx's control-socket client (``nyx_cli.client._http``) with compose's error types.

    A missing or refused socket becomes one ``ClickException`` line; an API error an
    :class:`ApiError` carrying the status, so callers can treat 404/409 as they need.
    """

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self._client = Client(socket_path)

    def request(self, method: str, path: str, body: object = None) -> Any:
        """Send one request, return the decoded JSON (``None`` for an empty body)."""
        try:
            return self._client.request(method, path, body=body)
        except DaemonUnavailable as exc:
            raise click.ClickException(str(exc)) from exc
        except HttpApiError as exc:
            raise ApiError(exc.status, str(exc)) from exc

    def stream(self, path: str) -> Iterator[bytes]:
        """Yield the response body line by line until the server closes it."""
        buf = b""
        try:
            for chunk in self._client.stream("GET", path):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    yield line + b"\n"
        except DaemonUnavailable as exc:
            raise click.ClickException(str(exc)) from exc
        except HttpApiError as exc:
            raise ApiError(exc.status, str(exc)) from exc
        if buf:
            yield buf


# ------------------------------------------------------------------ the compose file


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


# ------------------------------------------------------------------ daemon helpers


def _stack_containers(client: DaemonClient, project: str) -> list[dict[str, Any]]:
    query = urlencode({"label": f"{PROJECT_LABEL}={project}", "all": "1"})
    data = client.request("GET", f"/v1/containers?{query}")
    if isinstance(data, dict):
        data = data.get("containers", [])
    if not isinstance(data, list):
        return []
    name_re = re.compile(rf"^{re.escape(project)}-.+-\d+$")
    out: list[dict[str, Any]] = []
    for c in data:
        if not isinstance(c, dict):
            continue
        labels = c.get("labels")
        if isinstance(labels, dict):
            if labels.get(PROJECT_LABEL) == project:
                out.append(c)
        elif name_re.match(str(c.get("name", ""))):
            out.append(c)
    return out


def _service_of(container: Mapping[str, Any], project: str) -> str:
    labels = container.get("labels")
    if isinstance(labels, dict) and isinstance(labels.get(SERVICE_LABEL), str):
        return str(labels[SERVICE_LABEL])
    name = str(container.get("name", ""))
    m = re.match(rf"^{re.escape(project)}-(.+)-\d+$", name)
    return m.group(1) if m else name


def _cid(container: Mapping[str, Any]) -> str:
    return str(container.get("id") or container.get("name"))


def _running(container: Mapping[str, Any]) -> bool:
    state = str(container.get("state", "")).lower()
    return state in ("running", "starting", "created", "restarting")


def _status(kind: str, name: str, what: str) -> None:
    click.echo(f" {kind} {name}  {what}")


def _ensure_network(client: DaemonClient, net: ComposeNetwork) -> bool:
    """Create the network, or reuse it when it exists as the file says: ``True`` if created.

    An ``external`` network is never created (nor removed by ``down``): it must exist.
    """
    if net.external:
        try:
            client.request("GET", f"/v1/networks/{quote(net.name, safe='')}")
        except ApiError as exc:
            if exc.status != 404:
                raise ApiError(exc.status, f"network {net.name}: {exc.message}") from exc
            raise click.ClickException(
                f"networks.{net.key}: external network {net.name!r} does not exist; create it "
                f"first (nyx network create {net.name})"
            ) from exc
        _status("Network", net.name, "External")
        return False
    try:
        client.request("POST", "/v1/networks", net.request())
        _status("Network", net.name, "Created")
        return True
    except ApiError as exc:
        if exc.status != 409:
            raise ApiError(exc.status, f"network {net.name}: {exc.message}") from exc
    existing = client.request("GET", "/v1/networks")
    if isinstance(existing, dict):
        existing = existing.get("networks", [])
    for have in existing or []:
        if isinstance(have, dict) and have.get("name") == net.name:
            wanted: dict[str, Any] = {
                "internal": net.internal,
                "options": dict(net.options),
                "labels": dict(net.labels),
            }
            if net.subnet is not None:
                wanted["subnet"] = net.subnet
            got = {k: have.get(k, {} if k in ("options", "labels") else None) for k in wanted}
            got["internal"] = bool(got["internal"])
            diff = [f"{k}={got[k]}" for k in wanted if got[k] != wanted[k]]
            if diff:
                said = ", ".join(f"{k}={wanted[k]}" for k in wanted if got[k] != wanted[k])
                raise click.ClickException(
                    f"network {net.name} exists with {', '.join(diff)}, the file says {said}; "
                    "run `nyx compose down` first"
                )
            _status("Network", net.name, "Exists")
            return False
    raise click.ClickException(f"network {net.name}: nyxd says it exists but does not list it")


def _ensure_volume(client: DaemonClient, vol: ComposeVolume, project: str) -> None:
    """Create the stack's volume, or use the one that exists (an external one must)."""
    path = f"/v1/volumes/{quote(vol.name, safe='')}"
    if vol.external:
        try:
            client.request("GET", path)
        except ApiError as exc:
            if exc.status == 404:
                raise click.ClickException(
                    f"external volume {vol.name} not found; create it first "
                    f"(nyx volume create {vol.name})"
                ) from exc
            raise
        _status("Volume", vol.name, "External")
        return
    try:
        client.request("POST", "/v1/volumes", vol.request(project))
        _status("Volume", vol.name, "Created")
        return
    except ApiError as exc:
        if exc.status != 409:
            raise ApiError(exc.status, f"volume {vol.name}: {exc.message}") from exc
    have = client.request("GET", path)
    labels = have.get("labels") if isinstance(have, dict) else None
    if not isinstance(labels, dict) or labels.get(PROJECT_LABEL) != project:
        click.echo(
            f"warning: volume {vol.name} exists but was not created by stack {project}; "
            "it is used as it is (say `external: true` to mean that)",
            err=True,
        )
    _status("Volume", vol.name, "Exists")


def _make_bind_sources(plan: ComposePlan) -> None:
    """Short-syntax bind sources (and ``create_host_path``) that are missing are made by
    the user running compose, as directories (Compose does the same through the engine)."""
    for svc in plan.project.services.values():
        for path in svc.runtime.create_paths:
            if not os.path.lexists(path):
                try:
                    os.makedirs(path, exist_ok=True)
                except OSError as exc:
                    raise click.ClickException(
                        f"services.{svc.name}.volumes: cannot create {path}: {exc}"
                    ) from exc


def _undo_up(
    client: DaemonClient, containers: list[dict[str, Any]], networks: list[str]
) -> list[str]:
    """Remove what a failed ``up`` created, newest first; returns what could not be undone."""
    failed: list[str] = []
    for c in reversed(containers):
        try:
            _remove_container(client, c)
            _status("Container", str(c.get("name")), "Removed")
        except (ApiError, click.ClickException) as exc:
            failed.append(f"container {c.get('name')}: {exc}")
    for name in reversed(networks):
        try:
            client.request("DELETE", f"/v1/networks/{quote(name, safe='')}")
            _status("Network", name, "Removed")
        except (ApiError, click.ClickException) as exc:
            failed.append(f"network {name}: {exc}")
    return failed


def _stop_path(container: Mapping[str, Any], timeout: float | None) -> str:
    path = f"/v1/containers/{quote(_cid(container), safe='')}/stop"
    return path if timeout is None else f"{path}?{urlencode({'timeout': timeout})}"


def _remove_container(
    client: DaemonClient, container: Mapping[str, Any], timeout: float | None = None
) -> None:
    cid = quote(_cid(container), safe="")
    if _running(container):
        with contextlib.suppress(ApiError):
            client.request("POST", _stop_path(container, timeout))
    try:
        client.request("DELETE", f"/v1/containers/{cid}?force=1")
    except ApiError as exc:
        if exc.status != 404:
            raise


def _order_for_stop(
    containers: list[dict[str, Any]], plan: ComposePlan | None, project: str
) -> list[dict[str, Any]]:
    rank = {s: i for i, s in enumerate(plan.stop_order())} if plan is not None else {}
    indexed = list(enumerate(containers))
    # services unknown to the file (orphans) go first, then the plan's reverse start order;
    # without a file, the reverse of nyxd's listing order.
    indexed.sort(key=lambda ic: (rank.get(_service_of(ic[1], project), -1), -ic[0]))
    return [c for _, c in indexed]


# ------------------------------------------------------------------ log following


def _prefix(container: Mapping[str, Any], project: str) -> str:
    return f"{_service_of(container, project)}-1"


def _follow(
    client: DaemonClient,
    containers: Sequence[Mapping[str, Any]],
    project: str,
    follow: bool,
    on_interrupt: Callable[[], None] | None = None,
) -> None:
    """Print the containers' logs, prefixed like Compose; with ``follow`` until they end
    (nyxd's follow goes on while a container restarts by its policy)."""
    width = max((len(_prefix(c, project)) for c in containers), default=0)
    events: queue.Queue[tuple[str, str] | Mapping[str, Any]] = queue.Queue()
    suffix = "?follow=1" if follow else ""

    def pump(container: Mapping[str, Any]) -> None:
        label = _prefix(container, project).ljust(width)
        try:
            for raw in client.stream(
                f"/v1/containers/{quote(_cid(container), safe='')}/logs{suffix}"
            ):
                events.put((label, raw.decode(errors="replace").rstrip("\r\n")))
        except (ApiError, click.ClickException, OSError, HTTPException) as exc:
            events.put((label, f"(logs ended: {exc})"))
        finally:
            events.put(container)

    if not follow:
        for c in containers:
            label = _prefix(c, project).ljust(width)
            for raw in client.stream(f"/v1/containers/{quote(_cid(c), safe='')}/logs"):
                click.echo(f"{label}  | {raw.decode(errors='replace').rstrip(chr(13) + chr(10))}")
        return

    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: FrameType | None) -> NoReturn:
        raise KeyboardInterrupt

    def start(container: Mapping[str, Any]) -> None:
        threading.Thread(target=pump, args=(container,), daemon=True).start()

    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        signal.signal(signal.SIGTERM, on_term)
    pending = len(containers)
    try:
        for c in containers:
            start(c)
        while pending:
            try:
                item = events.get(timeout=0.5)
            except queue.Empty:
                continue
            if isinstance(item, tuple):
                click.echo(f"{item[0]}  | {item[1]}")
                continue
            pending -= 1
    except KeyboardInterrupt:
        if on_interrupt is None:
            raise SystemExit(130) from None
        on_interrupt()
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)


def _interruptible(call: Callable[[], object]) -> bool:
    """Run ``call`` in a helper thread so a signal interrupts the wait, not the request
    (whose connection then still finishes and closes cleanly). ``False`` on an API error."""
    done = threading.Event()
    failed: list[BaseException] = []

    def work() -> None:
        try:
            call()
        except (ApiError, click.ClickException) as exc:
            failed.append(exc)
        finally:
            done.set()

    threading.Thread(target=work, daemon=True).start()
    while not done.wait(0.2):
        pass
    return not failed


_CONDITION_WORDS = {
    "service_healthy": "healthy",
    "service_completed_successfully": "completed successfully",
}


def _await_condition(
    client: DaemonClient,
    container: Mapping[str, Any],
    service: str,
    dependency: str,
    condition: str,
    timeout: float,
    poll: float = 0.2,
) -> None:
    """Wait until ``dependency``'s container meets ``condition`` (``service_healthy``: its
    health is ``healthy``; ``service_completed_successfully``: it exited 0).

    :raises click.ClickException: it cannot (unhealthy, exited, no healthcheck, a non-zero
        exit) or did not within ``timeout`` seconds, naming both services and why.
    """
    name = str(container.get("name") or _cid(container))
    what = _CONDITION_WORDS[condition]
    need = f"service {service} needs {dependency} {what}"
    _status("Container", name, "Waiting")
    deadline = time.monotonic() + timeout
    while True:
        try:
            info = client.request("GET", f"/v1/containers/{quote(_cid(container), safe='')}")
        except ApiError as exc:
            raise click.ClickException(f"{need}: {exc.message}") from exc
        info = info if isinstance(info, dict) else {}
        state, code = info.get("state"), info.get("exit_code")
        health = info.get("health")
        said = ""
        if condition == "service_healthy":
            if not isinstance(health, dict):
                raise click.ClickException(
                    f"{need}, but {name} has no healthcheck (neither the file's healthcheck: "
                    "nor the image's HEALTHCHECK)"
                )
            status = health.get("status")
            log = health.get("log") or [{}]
            lines = str(log[-1].get("output", "")).strip().splitlines()
            said = lines[-1] if lines else ""
            if status == "healthy":
                _status("Container", name, "Healthy")
                return
            if status == "unhealthy":
                raise click.ClickException(
                    f"{need}: {name} is unhealthy" + (f" (last probe: {said!r})" if said else "")
                )
            if state in ("exited", "stopped"):
                raise click.ClickException(
                    f"{need}: {name} {state} with exit code {code} before it was healthy"
                )
        elif state in ("exited", "stopped"):
            if code == 0:
                _status("Container", name, "Exited")
                return
            raise click.ClickException(f"{need}: {name} {state} with exit code {code}")
        if time.monotonic() >= deadline:
            now = f"it is {state}" + (
                f", health {health.get('status')}" if isinstance(health, dict) else ""
            )
            raise click.ClickException(
                f"{need}: gave up after {timeout:g}s ({now}); see `nyx compose logs "
                f"{dependency}`, or raise --wait-timeout"
            )
        time.sleep(poll)


def _check_driver(client: DaemonClient, plan: ComposePlan) -> None:
    """What the daemon's driver cannot do is refused (or reported) before anything starts.

    Read from the driver's capabilities in ``GET /v1/info``, never from its name.
    """
    info = client.request("GET", "/v1/info")
    caps = info.get("capabilities") if isinstance(info, dict) else None
    if not isinstance(caps, dict):
        return
    driver = info.get("driver")
    for net in plan.networks():
        if net.driver is not None and net.driver not in ("bridge", driver):
            raise click.ClickException(
                f"networks.{net.key}.driver: {net.driver!r} is not nyxd's net driver "
                f"{driver!r}; leave it out (or say bridge or {driver})"
            )
    if not caps.get("static_addresses"):
        for name, svc in plan.project.services.items():
            for sn in svc.networks:
                for key in ("ipv4_address", "ipv6_address", "mac_address"):
                    if getattr(sn, key) is not None:
                        raise click.ClickException(
                            f"services.{name}.networks.{sn.key}.{key}: nyxd's net driver "
                            f"{driver!r} does not honour static addresses or MACs"
                        )
            if svc.net.mac_address is not None:
                raise click.ClickException(
                    f"services.{name}.mac_address: nyxd's net driver {driver!r} does not "
                    "honour static addresses or MACs"
                )
    if not caps.get("multiple_networks"):
        for name, svc in plan.project.services.items():
            if len(svc.networks) > 1:
                keys = ", ".join(sn.key for sn in svc.networks)
                raise click.ClickException(
                    f"services.{name}.networks: nyxd's net driver {driver!r} attaches a "
                    f"container to one network; {name} lists {len(svc.networks)} ({keys}). "
                    "Use one network per service or a driver with multiple_networks"
                )
    if not caps.get("enforces_internal"):
        for net in plan.networks():
            if net.internal:
                click.echo(
                    f"warning: networks.{net.key}.internal: not enforced by nyxd's net driver "
                    f"{driver!r} (configure it yourself); it still selects the DNS policy",
                    err=True,
                )


# ------------------------------------------------------------------ commands


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


def _remove_volumes(client: DaemonClient, plan: ComposePlan | None, project: str) -> list[str]:
    """``down -v``: the file's volumes that are not external, or (without the file) those
    nyxd has labelled with the project."""
    if plan is not None:
        names = [v.name for v in plan.project.volumes.values() if not v.external]
    else:
        query = urlencode({"label": f"{PROJECT_LABEL}={project}"})
        listed = client.request("GET", f"/v1/volumes?{query}")
        names = [str(v["name"]) for v in listed or [] if isinstance(v, dict)]
    errors = []
    for name in names:
        try:
            client.request("DELETE", f"/v1/volumes/{quote(name, safe='')}")
            _status("Volume", name, "Removed")
        except ApiError as exc:
            if exc.status != 404:
                errors.append(f"volume {name}: {exc.message}")
        except click.ClickException as exc:
            errors.append(f"volume {name}: {exc.message}")
    return errors


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


class _Dumper(yaml.SafeDumper):
    """Output that reads back as the same compose file: ``$`` escaped as ``$$`` (values are
    already interpolated), multi-line strings as ``|`` blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    value = value.replace("$", "$$")
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def _normalized(plan: ComposePlan) -> dict[str, Any]:
    """The validated file as nyx understood it (``config``), itself a valid compose file:
    services in start order, the names nyxd gets as ``name``/``x-nyx-container-name``."""
    services: dict[str, Any] = {}
    for name in plan.order:
        svc = plan.project.services[name]
        entry: dict[str, Any] = {"image": svc.image}
        if not svc.net.shares_names:
            entry["hostname"] = svc.hostname
        if svc.entrypoint is not None:
            entry["entrypoint"] = list(svc.entrypoint)
        if svc.command is not None:
            entry["command"] = list(svc.command)
        if svc.environment:
            entry["environment"] = dict(svc.environment)
        if svc.ports:
            entry["ports"] = [str(p) for p in svc.ports]
        key_of = {n.name: n.key for n in plan.project.networks.values()}
        if svc.networks:
            entry["networks"] = {
                key_of[a.name]: _attachment_entry(a, svc, name, plan)
                for a in plan.attachments(name)
            }
        entry.update(_net_entry(svc))
        if svc.depends_on:
            entry["depends_on"] = {dep: {"condition": svc.condition(dep)} for dep in svc.depends_on}
        entry["restart"] = svc.restart_policy
        if svc.healthcheck is not None:
            entry["healthcheck"] = _healthcheck_entry(svc.healthcheck.model_dump())
        entry["x-nyx-container-name"] = plan.container_name(name)
        entry.update(_runtime_entry(plan, svc.runtime))
        services[name] = entry
    networks = {n.key: _network_entry(n) for n in plan.networks()}
    out: dict[str, Any] = {"name": plan.name, "services": services, "networks": networks}
    out.update(_runtime_top(plan))
    return out


def _runtime_entry(plan: ComposePlan, rt: ServiceRuntime) -> dict[str, Any]:
    """A service's mounts and process keys as ``config`` prints them (long syntax)."""
    key_of = {v.name: v.key for v in plan.project.volumes.values()}
    entry: dict[str, Any] = {}
    volumes: list[dict[str, Any]] = []
    tmpfs: list[str] = []
    for m in rt.mounts:
        if m.type == "tmpfs":
            opts = [f"size={m.tmpfs_size}"] if m.tmpfs_size else []
            opts += [f"mode={m.tmpfs_mode:o}"] if m.tmpfs_mode is not None else []
            opts += ["exec"] if m.tmpfs_exec else []
            opts += ["ro"] if m.readonly else []
            tmpfs.append(m.target + (":" + ",".join(opts) if opts else ""))
            continue
        v: dict[str, Any] = {"type": m.type, "target": m.target}
        if m.source is not None:
            v["source"] = key_of.get(m.source, m.source) if m.type == "volume" else m.source
        if m.readonly:
            v["read_only"] = True
        if m.nocopy:
            v["volume"] = {"nocopy": True}
        if m.type == "bind" and m.source in rt.create_paths:
            v["bind"] = {"create_host_path": True}
        volumes.append(v)
    if volumes:
        entry["volumes"] = volumes
    if tmpfs:
        entry["tmpfs"] = tmpfs
    for key, refs in (("secrets", rt.secrets), ("configs", rt.configs)):
        if refs:
            entry[key] = [
                {
                    "source": r.source,
                    "target": r.target,
                    "uid": str(r.uid),
                    "gid": str(r.gid),
                    "mode": f"0{r.mode:o}",
                }
                for r in refs
            ]
    if rt.env_files:
        entry["env_file"] = [{"path": e.path, "required": e.required} for e in rt.env_files]
    plain: dict[str, Any] = {
        "working_dir": rt.workdir,
        "user": rt.user,
        "stop_signal": rt.stop_signal,
        "stop_grace_period": f"{rt.stop_timeout:g}s" if rt.stop_timeout is not None else None,
        "cap_add": [c.removeprefix("CAP_") for c in rt.cap_add] or None,
        "cap_drop": [c.removeprefix("CAP_") for c in rt.cap_drop] or None,
        "labels": dict(rt.labels) or None,
        "init": rt.init or None,
    }
    entry.update({k: v for k, v in plain.items() if v is not None})
    return entry


def _runtime_top(plan: ComposePlan) -> dict[str, Any]:
    """The top-level volumes, secrets and configs as ``config`` prints them."""
    out: dict[str, Any] = {}
    volumes = {}
    for vol in plan.volumes():
        v: dict[str, Any] = {"name": vol.name}
        if vol.external:
            v["external"] = True
        if vol.labels:
            v["labels"] = dict(vol.labels)
        volumes[vol.key] = v
    if volumes:
        out["volumes"] = volumes
    for kind, sources in (("secrets", plan.project.secrets), ("configs", plan.project.configs)):
        entries = {}
        for key, src in sources.items():
            if src.file is not None:
                entries[key] = {"file": src.file}
            elif src.environment is not None:
                entries[key] = {"environment": src.environment}
            else:
                entries[key] = {"content": src.content or ""}
        if entries:
            out[kind] = entries
    return out


def _healthcheck_entry(hc: Mapping[str, Any]) -> dict[str, Any]:
    """A healthcheck as the file would say it (durations as seconds with a unit)."""
    if hc.get("test") == ["NONE"]:
        return {"disable": True}
    out: dict[str, Any] = {}
    for key, value in hc.items():
        if value is None:
            continue
        out[key] = f"{value:g}s" if isinstance(value, float) else value
    return out


def _attachment_entry(
    att: NetworkAttachment, svc: ComposeService, service: str, plan: ComposePlan
) -> dict[str, Any] | None:
    """A service's network as the file said it (link aliases and the service-level
    mac_address are the file's own keys, not repeated here)."""
    (sn,) = [n for n in svc.networks if plan.project.networks[n.key].name == att.name]
    out: dict[str, Any] = {}
    if sn.aliases:
        out["aliases"] = list(sn.aliases)
    for key in ("ipv4_address", "ipv6_address", "mac_address"):
        if getattr(sn, key) is not None:
            out[key] = getattr(sn, key)
    return out or None


def _net_entry(svc: ComposeService) -> dict[str, Any]:
    """The networking keys of a service as nyx understood them."""
    net = svc.net
    entry: dict[str, Any] = {}
    for key in ("container_name", "domainname", "mac_address", "network_mode"):
        if getattr(net, key) is not None:
            entry[key] = getattr(net, key)
    for key in ("dns", "dns_search", "dns_opt", "extra_hosts", "expose"):
        if getattr(net, key):
            entry[key] = list(getattr(net, key))
    if net.links:
        entry["links"] = [t if a == t else f"{t}:{a}" for t, a in net.links]
    if net.sysctls:
        entry["sysctls"] = dict(net.sysctls)
    return entry


def _network_entry(net: ComposeNetwork) -> dict[str, Any]:
    if net.external:
        return {"name": net.name, "external": True}
    entry: dict[str, Any] = {"name": net.name, "internal": net.internal}
    if net.driver is not None:
        entry["driver"] = net.driver
    if net.options:
        entry["driver_opts"] = dict(net.options)
    if net.labels:
        entry["labels"] = dict(net.labels)
    if net.ipv6:
        entry["enable_ipv6"] = True
    configs = [
        {"subnet": subnet, **({"gateway": gateway} if gateway else {})}
        for subnet, gateway in ((net.subnet, net.gateway), (net.subnet6, net.gateway6))
        if subnet is not None
    ]
    if configs:
        entry["ipam"] = {"config": configs}
    return entry


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
