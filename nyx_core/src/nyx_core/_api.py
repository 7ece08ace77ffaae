"""The control-socket API: JSON over HTTP/1.1 on a unix socket, routes under ``/v1``.

A threaded stdlib server: one thread per connection, so a blocking ``wait`` or a followed
``logs`` stream never holds up other requests. Errors are ``{"error": "..."}`` with the
status code of the error's kind (400 bad request, 401 registry refused credentials, 404 not
found, 409 conflict, 501 not available here, 502 registry failure,
500 anything else). ``docs/api.md`` and ``docs/openapi.yaml`` describe the
routes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
import socketserver
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from loguru import logger
from pydantic import ValidationError

from ._models import ContainerSpec, PortMapping
from ._state import ConflictError, NotFoundError
from .errors import (
    ConfigError,
    ImageNotFoundError,
    PortConflictError,
    RegistryError,
    UnauthorizedError,
    UnsupportedCompressionError,
)

__all__ = ["ApiServer", "SupervisorApi", "error_status"]


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
    def create_network(
        self, name: str, internal: bool = False, subnet: str | None = None
    ) -> dict[str, Any]: ...
    def remove_network(self, name: str) -> None: ...


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def error_status(exc: BaseException) -> int:
    """The HTTP status for an exception raised by the supervisor."""
    name = type(exc).__name__  # supervisor-side classes, matched by name to keep imports light
    if isinstance(exc, HttpError):
        return exc.status
    if isinstance(exc, NotFoundError | ImageNotFoundError):
        return 404
    if isinstance(exc, ConflictError | PortConflictError):
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
            parts.append(f"{loc}: {err['msg']} (got {err.get('input')!r})")
        body: dict[str, Any] = {"error": "invalid request: " + "; ".join(parts)}
    else:
        body = {"error": str(exc) or type(exc).__name__}
    code = getattr(exc, "exit_code", None)
    if isinstance(code, int):
        body["exit_code"] = code
    return body


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
        ("DELETE", r"/v1/networks/(?P<ref>[^/]+)", "networks_remove"),
    ]
]


def _flag(q: dict[str, list[str]], name: str) -> bool:
    v = q.get(name, [""])[-1].lower()
    return v in ("1", "true", "yes", "on")


def _float(q: dict[str, list[str]], name: str) -> float | None:
    if name not in q:
        return None
    raw = q[name][-1]
    try:
        return float(raw)
    except ValueError as exc:
        raise ConfigError(f"query parameter {name}={raw!r} is not a number") from exc


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "nyxd"
    server: _UnixHttpServer
    _body_read = False

    # --------------------------------------------------------------- plumbing

    def address_string(self) -> str:
        return "unix"

    def log_message(self, format: str, *args: Any) -> None:
        logger.trace("api " + format % args)

    def _send_json(self, status: int, obj: Any) -> None:
        data = json.dumps(obj, default=str).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_empty(self, status: int = 204) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _stream(self, content_type: str, chunks: Iterator[bytes]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for chunk in chunks:
                if chunk:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _body_bytes(self) -> bytes:
        self._body_read = True
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return b"".join(self._iter_chunked())
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _iter_chunked(self) -> Iterator[bytes]:
        while True:
            line = self.rfile.readline(1024)
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return
            data = self.rfile.read(size)
            self.rfile.readline(8)
            yield data

    def _body_to_file(self, dest: Path) -> None:
        self._body_read = True
        with dest.open("wb") as f:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                for chunk in self._iter_chunked():
                    f.write(chunk)
                return
            left = int(self.headers.get("Content-Length") or 0)
            while left > 0:
                chunk = self.rfile.read(min(left, 1 << 20))
                if not chunk:
                    break
                f.write(chunk)
                left -= len(chunk)

    def _json_body(self) -> Any:
        raw = self._body_bytes()
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise HttpError(400, f"request body is not JSON: {exc}") from exc

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query, keep_blank_values=True)
        path = url.path.rstrip("/") or "/"
        self._body_read = False
        allowed = []
        for m, pattern, handler in _ROUTES:
            match = pattern.match(path)
            if not match:
                continue
            if m != method:
                allowed.append(m)
                continue
            params = {k: unquote(v) for k, v in match.groupdict().items()}
            try:
                getattr(self, "h_" + handler)(query, **params)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
            except Exception as exc:
                status = error_status(exc)
                if status >= 500:
                    logger.bind(path=path, error=repr(exc)).warning("api request failed")
                self._drain()
                self._send_json(status, _error_body(exc))
            return
        self._drain()
        if allowed:
            self._send_json(405, {"error": f"method {method} not allowed on {path}"})
        else:
            self._send_json(404, {"error": f"no route {method} {path}"})

    def _drain(self) -> None:
        """Read a request body the handler did not (or close the connection)."""
        if self._body_read:
            return
        self._body_read = True
        chunked = self.headers.get("Transfer-Encoding", "").lower() == "chunked"
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            n = 0
        if chunked or n > (16 << 20):
            self.close_connection = True
        elif n:
            self.rfile.read(n)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    # --------------------------------------------------------------- routes

    @property
    def sup(self) -> SupervisorApi:
        return self.server.supervisor

    def h_ping(self, q: dict[str, list[str]]) -> None:
        self._send_json(200, {"ok": True})

    def h_info(self, q: dict[str, list[str]]) -> None:
        self._send_json(200, self.sup.info())

    def h_containers_list(self, q: dict[str, list[str]]) -> None:
        labels: dict[str, str | None] = {}
        for item in q.get("label", []):
            k, sep, v = item.partition("=")
            labels[k] = v if sep else None
        self._send_json(200, self.sup.list_containers(all=_flag(q, "all"), labels=labels))

    def h_containers_create(self, q: dict[str, list[str]]) -> None:
        body = self._json_body()
        self._body_read = True
        if not isinstance(body, dict):
            raise HttpError(400, "request body must be a JSON object (a ContainerSpec)")
        start = body.pop("start", True)
        if "start" in q:
            start = _flag(q, "start")
        ports = body.get("ports")
        if isinstance(ports, list):  # docker-style strings are accepted too
            body["ports"] = [PortMapping.parse(p) if isinstance(p, str) else p for p in ports]
        spec = ContainerSpec.model_validate(body)
        self._send_json(201, self.sup.create(spec, start=bool(start)))

    def h_containers_get(self, q: dict[str, list[str]], ref: str) -> None:
        self._send_json(200, self.sup.get(ref))

    def h_containers_remove(self, q: dict[str, list[str]], ref: str) -> None:
        self.sup.remove(ref, force=_flag(q, "force"))
        self._send_empty(204)

    def h_containers_start(self, q: dict[str, list[str]], ref: str) -> None:
        self._send_json(200, self.sup.start(ref))

    def h_containers_stop(self, q: dict[str, list[str]], ref: str) -> None:
        timeout = _float(q, "timeout")
        if timeout is None:
            timeout = _float(q, "t")
        self._send_json(200, self.sup.stop(ref, timeout=timeout))

    def h_containers_wait(self, q: dict[str, list[str]], ref: str) -> None:
        self._send_json(200, self.sup.wait(ref, timeout=_float(q, "timeout")))

    def h_containers_logs(self, q: dict[str, list[str]], ref: str) -> None:
        chunks = self.sup.logs(ref, follow=_flag(q, "follow"))
        first = next(chunks, b"")  # raises NotFound before the headers are sent
        self._stream("text/plain; charset=utf-8", _prepend(first, chunks))

    def h_images_list(self, q: dict[str, list[str]]) -> None:
        self._send_json(200, self.sup.list_images())

    def h_images_load(self, q: dict[str, list[str]]) -> None:
        ctype = self.headers.get("Content-Type", "")
        if ctype.startswith("application/json"):
            body = self._json_body()
            self._body_read = True
            path = body.get("path") if isinstance(body, dict) else None
            if not isinstance(path, str) or not path:
                raise HttpError(400, 'JSON body must be {"path": "<image tar or OCI layout>"}')
            self._send_json(200, self.sup.load_image(Path(path)))
            return
        tmp_root = Path(self.sup.settings.state_dir) / "tmp"
        tmp_root.mkdir(parents=True, exist_ok=True)
        dest = tmp_root / f"load-{secrets.token_hex(6)}.tar"
        try:
            self._body_to_file(dest)
            self._body_read = True
            if dest.stat().st_size == 0:
                raise HttpError(400, "empty request body: send an image tar")
            self._send_json(200, self.sup.load_image(dest))
        finally:
            dest.unlink(missing_ok=True)

    def h_images_pull(self, q: dict[str, list[str]]) -> None:
        body = self._json_body()
        self._body_read = True
        ref = body.get("reference") if isinstance(body, dict) else None
        if not isinstance(ref, str) or not ref:
            raise HttpError(400, 'JSON body must be {"reference": "<image>", "insecure": false}')
        insecure = bool(body.get("insecure", False))
        if not _flag(q, "progress"):
            self._send_json(200, self.sup.pull_image(ref, insecure=insecure))
            return
        self._stream("application/x-ndjson", _pull_events(self.sup, ref, insecure))

    def h_images_remove(self, q: dict[str, list[str]], ref: str) -> None:
        self.sup.remove_image(ref)
        self._send_empty(204)

    def h_networks_list(self, q: dict[str, list[str]]) -> None:
        self._send_json(200, self.sup.list_networks())

    def h_networks_create(self, q: dict[str, list[str]]) -> None:
        body = self._json_body()
        self._body_read = True
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            raise HttpError(400, 'JSON body must be {"name": ..., "internal": false}')
        subnet = body.get("subnet")
        if subnet is not None and not isinstance(subnet, str):
            raise HttpError(400, f"subnet {subnet!r} must be a string like 10.89.5.0/24")
        net = self.sup.create_network(body["name"], bool(body.get("internal", False)), subnet)
        self._send_json(201, net)

    def h_networks_remove(self, q: dict[str, list[str]], ref: str) -> None:
        self.sup.remove_network(ref)
        self._send_empty(204)


def _prepend(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


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


class _UnixHttpServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, path: str, supervisor: SupervisorApi) -> None:
        self.supervisor = supervisor
        super().__init__(path, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.opt(exception=True).debug("api connection error")


class ApiServer:
    """The control socket: binds ``path`` (mode 0660, group ``nyx`` when it exists)."""

    def __init__(self, path: Path, supervisor: SupervisorApi, *, group: str = "nyx") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_socket() or self.path.exists():
            self.path.unlink()
        old = os.umask(0o117)
        try:
            self._server = _UnixHttpServer(str(self.path), supervisor)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o660)
        try:
            import grp

            gid = grp.getgrnam(group).gr_gid
            os.chown(self.path, -1, gid)
        except (KeyError, PermissionError):
            pass
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="api"
        )
        self._thread.daemon = True
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
        self._server.server_close()
        self.path.unlink(missing_ok=True)
