"""A Compose stack on nyxd: its containers, networks and volumes, found by label and
created, awaited or removed with plain HTTP requests on nyxd's control socket.

:class:`DaemonClient` is nyx's control-socket client with compose's error types; what the
daemon's driver cannot do is refused from its capabilities (``GET /v1/info``) before
anything starts.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote, urlencode

import click

from ..client._http import ApiError as HttpApiError
from ..client._http import Client, DaemonUnavailable
from ._plan import ComposePlan
from ._project import PROJECT_LABEL, SERVICE_LABEL, ComposeNetwork, ComposeVolume

__all__ = ["ApiError", "DaemonClient"]


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
