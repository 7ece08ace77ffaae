"""The control-socket API: JSON over HTTP/1.1 on a unix socket, routes under ``/v1``.

The HTTP layer (h11, one thread per connection, the limits) is in :mod:`._api_http`; this
module holds the routes. Errors are ``{"error": "..."}`` with the status code of the error's
kind (400 bad request, 401 registry refused credentials, 404 not found, 409 conflict, 413 body
over the limit, 501 not available here, 502 registry failure, 500 anything else).
``docs/api.md`` and ``docs/openapi.yaml`` describe the routes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from loguru import logger
from pydantic import ValidationError

from nyx_core import PortMapping
from nyx_core.errors import AddressInUseError, ConfigError, NyxError, PortConflictError

from ..errors import (
    ConflictError,
    ImageNotFoundError,
    NotFoundError,
    RegistryError,
    UnauthorizedError,
    UnsupportedCompressionError,
)
from ._api_http import MAX_QUERY_FIELDS, Exchange, HttpError, HttpServer, Limits
from ._api_models import ImagePull, NetworkCreate, VolumeCreate
from ._faults import checkpoint
from ._models import ContainerSpec

__all__ = ["ApiServer", "Limits", "SupervisorApi", "error_status"]


class SupervisorApi(Protocol):
    """What the API needs from the supervisor (tests pass a fake)."""

    settings: Any

    def info(self) -> dict[str, Any]: ...
    def list_containers(
        self, all: bool = False, labels: dict[str, str | None] | None = None
    ) -> list[dict[str, Any]]: ...
    def create(self, spec: ContainerSpec, start: bool = True) -> dict[str, Any]: ...
    def get(self, ref: str) -> dict[str, Any]: ...
    def start(self, ref: str) -> dict[str, Any]: ...
    def stop(self, ref: str, timeout: float | None = None) -> dict[str, Any]: ...
    def remove(self, ref: str, force: bool = False) -> None: ...
    def wait(self, ref: str, timeout: float | None = None) -> dict[str, Any]: ...
    def logs(self, ref: str, follow: bool = False) -> Iterator[bytes]: ...
    def list_images(self) -> list[dict[str, Any]]: ...
    def load_image(self, path: Path) -> list[dict[str, Any]]: ...
    def pull_image(
        self, reference: str, insecure: bool = False, progress: Callable[..., Any] | None = None
    ) -> dict[str, Any]: ...
    def remove_image(self, ref: str) -> None: ...
    def list_networks(self) -> list[dict[str, Any]]: ...
    def get_network(self, name: str) -> dict[str, Any]: ...
    def create_network(
        self,
        name: str,
        internal: bool = False,
        subnet: str | None = None,
        gateway: str | None = None,
        options: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
        ipv6: bool = False,
        subnet6: str | None = None,
        gateway6: str | None = None,
    ) -> dict[str, Any]: ...
    def remove_network(self, name: str) -> None: ...
    def reload_networks(self) -> dict[str, Any]: ...
    def list_volumes(self, labels: dict[str, str | None] | None = None) -> list[dict[str, Any]]: ...
    def get_volume(self, name: str) -> dict[str, Any]: ...
    def create_volume(
        self,
        name: str | None = None,
        labels: dict[str, str] | None = None,
        driver: str = "local",
        options: dict[str, str] | None = None,
    ) -> dict[str, Any]: ...
    def remove_volume(self, name: str) -> None: ...


def error_status(exc: BaseException) -> int:
    """The HTTP status for an exception raised by the supervisor."""
    name = type(exc).__name__  # supervisor-side classes, matched by name to keep imports light
    if isinstance(exc, HttpError):
        return exc.status
    if isinstance(exc, NotFoundError | ImageNotFoundError):
        return 404
    if isinstance(exc, ConflictError | PortConflictError | AddressInUseError):
        return 409
    if isinstance(exc, UnauthorizedError):
        return 401
    if isinstance(exc, UnsupportedCompressionError) or name == "NotImplementedYet":
        return 501
    if isinstance(exc, ConfigError | ValidationError | json.JSONDecodeError) or name == (
        "CommandError"
    ):
        return 400
    if isinstance(exc, RegistryError):
        return 502
    return 500


def _error_body(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "body"
            got = repr(err.get("input"))
            got = got if len(got) <= 80 else got[:77] + "..."
            parts.append(f"{loc}: {err['msg']} (got {got})")
        body: dict[str, Any] = {"error": "invalid request: " + "; ".join(parts)}
    elif isinstance(exc, NyxError | HttpError):
        body = {"error": str(exc) or type(exc).__name__}
    else:  # a bug, not the client's fault: its text is for the log, not for the client
        body = {"error": f"internal error ({type(exc).__name__}); see nyxd's log"}
    code = getattr(exc, "exit_code", None)
    if isinstance(code, int):
        body["exit_code"] = code
    return body


def _error_answer(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """The status and the body that answer ``exc``; 5xx are logged."""
    status = error_status(exc)
    if status >= 500:
        if isinstance(exc, NyxError):
            logger.bind(error=str(exc)).warning("api request failed")
        else:
            logger.opt(exception=exc).error("api request failed")
    return status, _error_body(exc)


Route = tuple[str, re.Pattern[str], str]
_ROUTES: list[Route] = [
    (m, re.compile("^" + p + "$"), h)
    for m, p, h in [
        ("GET", r"/v1/info", "info"),
        ("GET", r"/_ping", "ping"),
        ("GET", r"/v1/containers", "containers_list"),
        ("POST", r"/v1/containers", "containers_create"),
        ("GET", r"/v1/containers/(?P<ref>[^/]+)", "containers_get"),
        ("DELETE", r"/v1/containers/(?P<ref>[^/]+)", "containers_remove"),
        ("POST", r"/v1/containers/(?P<ref>[^/]+)/start", "containers_start"),
        ("POST", r"/v1/containers/(?P<ref>[^/]+)/stop", "containers_stop"),
        ("GET", r"/v1/containers/(?P<ref>[^/]+)/logs", "containers_logs"),
        ("GET", r"/v1/containers/(?P<ref>[^/]+)/wait", "containers_wait"),
        ("GET", r"/v1/images", "images_list"),
        ("POST", r"/v1/images/load", "images_load"),
        ("POST", r"/v1/images/pull", "images_pull"),
        ("DELETE", r"/v1/images/(?P<ref>.+)", "images_remove"),
        ("GET", r"/v1/networks", "networks_list"),
        ("POST", r"/v1/networks", "networks_create"),
        ("POST", r"/v1/networks/reload", "networks_reload"),
        ("GET", r"/v1/networks/(?P<name>[^/]+)", "networks_get"),
        ("DELETE", r"/v1/networks/(?P<name>[^/]+)", "networks_remove"),
        ("GET", r"/v1/volumes", "volumes_list"),
        ("POST", r"/v1/volumes", "volumes_create"),
        ("GET", r"/v1/volumes/(?P<name>[^/]+)", "volumes_get"),
        ("DELETE", r"/v1/volumes/(?P<name>[^/]+)", "volumes_remove"),
    ]
]
_TAKES_BODY = {
    "containers_create",
    "images_load",
    "images_pull",
    "networks_create",
    "volumes_create",
}


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def _flag(q: dict[str, list[str]], name: str) -> bool:
    raw = q.get(name, [""])[-1]
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise HttpError(400, f"query parameter {name}={raw!r} is not a boolean (1 or 0)")


def _float(q: dict[str, list[str]], name: str) -> float | None:
    if name not in q:
        return None
    raw = q[name][-1]
    try:
        value = float(raw)
    except ValueError as exc:
        raise HttpError(400, f"query parameter {name}={raw!r} is not a number") from exc
    if not math.isfinite(value) or value < 0:
        raise HttpError(400, f"query parameter {name}={raw!r} is not a number of seconds")
    return value


def _labels(q: dict[str, list[str]]) -> dict[str, str | None]:
    """``?label=k=v&label=k``: every one must match (``None``: the key is present)."""
    labels: dict[str, str | None] = {}
    for item in q.get("label", []):
        k, sep, v = item.partition("=")
        labels[k] = v if sep else None
    return labels


def _object(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise HttpError(400, f"request body must be a JSON object ({what})")
    return body


class _Routes:
    """The handlers: ``h_<name>(exchange, query, **path_params)``."""

    def __init__(self, supervisor: SupervisorApi) -> None:
        self.sup = supervisor

    def __call__(self, ex: Exchange) -> None:
        url = urlsplit(ex.target)
        try:
            query = parse_qs(url.query, keep_blank_values=True, max_num_fields=MAX_QUERY_FIELDS)
        except ValueError as exc:
            raise HttpError(400, f"bad query string: {exc}") from exc
        path = url.path.rstrip("/") or "/"
        allowed = []
        for m, pattern, handler in _ROUTES:
            match = pattern.match(path)
            if not match:
                continue
            if m != ex.method:
                allowed.append(m)
                continue
            params = {k: unquote(v) for k, v in match.groupdict().items()}
            if handler not in _TAKES_BODY:
                ex.discard_body()
            getattr(self, "h_" + handler)(ex, query, **params)
            return
        if allowed:
            raise HttpError(405, f"method {ex.method} not allowed on {path}")
        raise HttpError(404, f"no route {ex.method} {path}")

    def h_ping(self, ex: Exchange, q: dict[str, list[str]]) -> None:
        ex.send_json(200, {"ok": True})

    def h_info(self, ex: Exchange, q: dict[str, list[str]]) -> None:
        ex.send_json(200, self.sup.info())

    def h_containers_list(self, ex: Exchange, q: dict[str, list[str]]) -> None:
        labels = _labels(q)
        ex.send_json(200, self.sup.list_containers(all=_flag(q, "all"), labels=labels))

    def h_containers_create(self, ex: Exchange, q: dict[str, list[str]]) -> None:
        body = _object(ex.json(), "a ContainerSpec")
        start = body.pop("start", True)
        if not isinstance(start, bool):
            raise HttpError(400, f"start: must be true or false (got {start!r})")
        if "start" in q:
            start = _flag(q, "start")
        ports = body.get("ports")
        if isinstance(ports, list):  # docker-style strings are accepted too
            body["ports"] = [PortMapping.parse(p) if isinstance(p, str) else p for p in ports]
        spec = ContainerSpec.model_validate(body, strict=True)
        ex.send_json(201, self.sup.create(spec, start=start))

    def h_containers_get(self, ex: Exchange, q: dict[str, list[str]], ref: str) -> None:
        ex.send_json(200, self.sup.get(ref))

    def h_containers_remove(self, ex: Exchange, q: dict[str, list[str]], ref: str) -> None:
        self.sup.remove(ref, force=_flag(q, "force"))
        ex.send_empty(204)

    def h_containers_start(self, ex: Exchange, q: dict[str, list[str]], ref: str) -> None:
        ex.send_json(200, self.sup.start(ref))

    def h_containers_stop(self, ex: Exchange, q: dict[str, list[str]], ref: str) -> None:
        timeout = _float(q, "timeout")
        if timeout is None:
            timeout = _float(q, "t")
        ex.send_json(200, self.sup.stop(ref, timeout=timeout))

    def h_containers_wait(self, ex: Exchange, q: dict[str, list[str]], ref: str) -> None:
        ex.send_json(200, self.sup.wait(ref, timeout=_float(q, "timeout")))

    def h_containers_logs(self, ex: Exchange, q: dict[str, list[str]], ref: str) -> None:
        # raises NotFound before the headers; then the headers go at once, before any
        # output: a client attaching before the start knows it is attached
        chunks = self.sup.logs(ref, follow=_flag(q, "follow"))
        ex.send_stream("text/plain; charset=utf-8", chunks)

    def h_images_list(self, ex: Exchange, q: dict[str, list[str]]) -> None:
        ex.send_json(200, self.sup.list_images())

    def h_images_load(self, ex: Exchange, q: dict[str, list[str]]) -> None:
        ctype = ex.headers.get("content-type", "")
        if ctype.startswith("application/json"):
            # nyxd (root) opening a path its client names would read any file on the host
            # for any member of the socket's group, or any container's root: send the bytes
            raise HttpError(
                400,
                "images are loaded from the request body only (a docker save or OCI layout "
                "tar, as `nyx load -i` sends it), not from a path on nyxd's host",
            )
        tmp_root = Path(self.sup.settings.state_dir) / "tmp"
        tmp_root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(tmp_root, 0o700)
        fd, name = tempfile.mkstemp(prefix="load-", suffix=".tar", dir=tmp_root)  # 0600
        dest = Path(name)
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in ex.body_chunks(ex.limits.max_upload):
                    f.write(chunk)
            if dest.stat().st_size == 0:
                raise HttpError(400, "empty request body: send an image tar")
            checkpoint("load:uploaded")
            loaded = self.sup.load_image(dest)
        finally:
            dest.unlink(missing_ok=True)
        ex.send_json(200, loaded)

    def h_images_pull(self, ex: Exchange, q: dict[str, list[str]]) -> None:
        body = ImagePull.model_validate(_object(ex.json(), '{"reference": "<image>"}'))
        if not _flag(q, "progress"):
            ex.send_json(200, self.sup.pull_image(body.reference, insecure=body.insecure))
            return
        ex.send_stream(
            "application/x-ndjson", _pull_events(self.sup, body.reference, body.insecure)
        )

    def h_images_remove(self, ex: Exchange, q: dict[str, list[str]], ref: str) -> None:
        self.sup.remove_image(ref)
        ex.send_empty(204)

    def h_networks_list(self, ex: Exchange, q: dict[str, list[str]]) -> None:
        ex.send_json(200, self.sup.list_networks())

    def h_networks_create(self, ex: Exchange, q: dict[str, list[str]]) -> None:
        body = NetworkCreate.model_validate(_object(ex.json(), '{"name": ...}'))
        ex.send_json(
            201,
            self.sup.create_network(
                body.name,
                internal=body.internal,
                subnet=body.subnet,
                gateway=body.gateway,
                options=dict(body.options),
                labels=dict(body.labels),
                ipv6=body.ipv6,
                subnet6=body.subnet6,
                gateway6=body.gateway6,
            ),
        )

    def h_networks_reload(self, ex: Exchange, q: dict[str, list[str]]) -> None:
        ex.send_json(200, self.sup.reload_networks())

    def h_networks_get(self, ex: Exchange, q: dict[str, list[str]], name: str) -> None:
        ex.send_json(200, self.sup.get_network(name))

    def h_networks_remove(self, ex: Exchange, q: dict[str, list[str]], name: str) -> None:
        self.sup.remove_network(name)
        ex.send_empty(204)

    def h_volumes_list(self, ex: Exchange, q: dict[str, list[str]]) -> None:
        ex.send_json(200, self.sup.list_volumes(labels=_labels(q)))

    def h_volumes_create(self, ex: Exchange, q: dict[str, list[str]]) -> None:
        body = VolumeCreate.model_validate(_object(ex.json(), '{"name": ...}'))
        ex.send_json(
            201,
            self.sup.create_volume(
                body.name,
                labels=dict(body.labels),
                driver=body.driver,
                options=dict(body.options),
            ),
        )

    def h_volumes_get(self, ex: Exchange, q: dict[str, list[str]], name: str) -> None:
        ex.send_json(200, self.sup.get_volume(name))

    def h_volumes_remove(self, ex: Exchange, q: dict[str, list[str]], name: str) -> None:
        self.sup.remove_volume(name)
        ex.send_empty(204)


def _pull_events(sup: SupervisorApi, ref: str, insecure: bool) -> Iterator[bytes]:
    """Run the pull in a thread; yield its progress events, then the image or the error."""
    import queue

    events: queue.Queue[dict[str, Any] | None] = queue.Queue()

    def progress(*args: Any, **kwargs: Any) -> None:
        event: dict[str, Any] = {}
        if args and dataclasses.is_dataclass(args[0]) and not isinstance(args[0], type):
            event.update(dataclasses.asdict(args[0]))
        elif args and isinstance(args[0], dict):
            event.update(args[0])
        elif args:
            event["progress"] = [a if isinstance(a, int | float | str) else str(a) for a in args]
        for k, v in kwargs.items():
            event[k] = v if isinstance(v, int | float | str | bool | None) else str(v)
        events.put({"progress": event})

    def run() -> None:
        try:
            events.put({"image": sup.pull_image(ref, insecure=insecure, progress=progress)})
        except Exception as exc:
            body = _error_body(exc)
            body["status"] = error_status(exc)
            events.put(body)
        events.put(None)

    threading.Thread(target=run, daemon=True, name="pull").start()
    while True:
        ev = events.get()
        if ev is None:
            return
        yield (json.dumps(ev, default=str) + "\n").encode()


class ApiServer:
    """The control socket: binds ``path`` (mode 0660, group ``nyx`` when it exists).

    Members of the socket's group can do what nyxd does: they are root-equivalent.
    """

    def __init__(
        self,
        path: Path,
        supervisor: SupervisorApi,
        *,
        group: str = "nyx",
        limits: Limits | None = None,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_socket() or self.path.exists():
            self.path.unlink()
        self.limits = limits or Limits.from_settings(supervisor.settings)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o117)  # 0660 from the start: no window with a wider mode
        try:
            sock.bind(str(self.path))
        except OSError:
            sock.close()
            raise
        finally:
            os.umask(old)
        sock.listen(128)
        os.chmod(self.path, 0o660)
        try:
            import grp

            gid = grp.getgrnam(group).gr_gid
            os.chown(self.path, -1, gid)
        except (KeyError, PermissionError):
            pass
        self._server = HttpServer(sock, _Routes(supervisor), _error_answer, self.limits)

    def start(self) -> None:
        self._server.start()

    def close(self) -> None:
        self._server.close()
        self.path.unlink(missing_ok=True)
