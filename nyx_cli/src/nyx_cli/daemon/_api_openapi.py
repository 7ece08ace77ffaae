"""docs/openapi.yaml, generated from the routes and the pydantic models the API validates with.

``python -m nyx_cli.daemon._api_openapi docs/openapi.yaml`` writes it (needs PyYAML); a test fails
when the committed file differs from :func:`openapi`. Request schemas are the models the
server validates with (strictly), so the document cannot drift from the code; answers are
described by the models below, which only document.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema

from nyx_core import DnsMode

from .. import __version__
from ._api import _ROUTES
from ._api_http import MAX_JSON_DEPTH
from ._api_models import ImagePull, NetworkCreate, VolumeCreate
from ._health import HealthState
from ._models import ContainerSpec
from ._state import ContainerState

__all__ = ["main", "openapi"]


# ----------------------------------------------------------------- answers (documentation only)


class Error(BaseModel):
    """Every error answer."""

    error: str = Field(description="one line naming the field, object or limit")
    exit_code: int | None = Field(
        default=None, description="126 or 127 when the container's command cannot run"
    )


class PluginInfo(BaseModel):
    group: str
    name: str
    distribution: str
    version: str


class Info(BaseModel):
    """``GET /v1/info``."""

    version: str
    driver: str
    dns: DnsMode
    dns_provider: str | None
    plugins: list[PluginInfo]
    containers: int
    running: int
    images: int
    subnet: str
    gateway: str


class Container(BaseModel):
    """A container as the API shows it."""

    id: str
    name: str
    image: str
    state: ContainerState = Field(
        description="restarting: ended, and its restart policy starts it again after the backoff"
    )
    pid: int | None
    exit_code: int | None
    hostname: str
    ips: list[str]
    ports: list[str] = Field(examples=[["8080:80/tcp"]])
    networks: list[str]
    network_mode: str = Field(
        description="bridge (its own netns on its networks), host, none or container:<ref>"
    )
    expose: list[str] = Field(examples=[["80/tcp"]], description="ports it says it listens on")
    labels: dict[str, str]
    command: list[str] | None
    created: str = Field(description="ISO 8601 time")
    started: str | None
    finished: str | None
    error: str | None
    restart: str = Field(description="its restart policy", examples=["unless-stopped"])
    restart_count: int = Field(description="restarts its policy made")
    health: HealthState | None = Field(description="null: no healthcheck")


class ContainerCreate(ContainerSpec):
    """``POST /v1/containers``: a ContainerSpec plus ``start``."""

    start: bool = Field(default=True, description="false: record it, start it later")


class WaitResult(BaseModel):
    exit_code: int | None
    state: str


class Image(BaseModel):
    id: str
    repo_tags: list[str]
    digest: str | None
    size: int
    created: str | None


class Network(BaseModel):
    """A network as the API shows it: what the net driver made of it."""

    name: str
    subnet: str
    gateway: str = Field(description="gateway/prefix")
    internal: bool
    default: bool
    driver: str = Field(description="the net driver that made it")
    interface: str | None = Field(
        default=None, description="the driver's host-side device (the bridge)"
    )
    options: dict[str, str] = Field(default_factory=dict, description="driver options")
    labels: dict[str, str] = Field(default_factory=dict)
    extra: dict[str, Any] = Field(default_factory=dict, description="driver-specific facts")
    created: str | None = None
    error: str | None = Field(
        default=None,
        description="set when the driver refused the recorded network at nyxd's start: "
        "no container can join it until it is removed and created again",
    )


class Volume(BaseModel):
    """A named volume: a directory nyxd keeps under its state dir."""

    name: str
    driver: Literal["local"]
    mountpoint: str = Field(description="the data directory on nyxd's host")
    labels: dict[str, str]
    options: dict[str, str]
    scope: Literal["local"]
    created: str = Field(description="ISO 8601 time")
    containers: list[str] = Field(description="names of the containers that mount it")


_MODELS: list[type[BaseModel]] = [
    Error,
    Info,
    Container,
    ContainerCreate,
    WaitResult,
    Image,
    Network,
    NetworkCreate,
    ImagePull,
    Volume,
    VolumeCreate,
]


# ----------------------------------------------------------------- operations


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _flag(name: str, what: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "description": what,
        "schema": {"type": "string", "enum": ["0", "1", "false", "true"]},
    }


def _seconds(name: str, what: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "description": what, "schema": {"type": "number"}}


@dataclass
class _Op:
    summary: str
    answer: tuple[str, str, dict[str, Any] | None]  # status, description, content
    errors: tuple[int, ...] = ()
    query: list[dict[str, Any]] = field(default_factory=list)
    body: dict[str, Any] | None = None  # content of the request body


_ERRORS = {
    400: "invalid request: the message names the field and the value",
    401: "the registry refused the credentials",
    404: "no such object",
    409: "conflicts with the current state",
    413: "request body over the limit (NYXD_API_MAX_BODY, NYXD_API_MAX_UPLOAD)",
    500: "driver, DNS or runtime failure",
    501: "the feature is not available in this nyxd",
    502: "the registry failed",
}

_OPS: dict[str, _Op] = {
    "info": _Op(
        "Daemon version, driver, DNS mode, plugins and counts",
        ("200", "daemon facts", _json(_ref(Info))),
    ),
    "ping": _Op("Liveness", ("200", "ok", None)),
    "containers_list": _Op(
        "List containers",
        ("200", "containers", _json({"type": "array", "items": _ref(Container)})),
        (400,),
        [
            _flag("all", "include stopped containers"),
            {
                "name": "label",
                "in": "query",
                "description": "k=v or k; repeatable; all must match",
                "schema": {"type": "array", "items": {"type": "string"}},
                "style": "form",
                "explode": True,
            },
        ],
    ),
    "containers_create": _Op(
        "Create (and by default start) a container",
        ("201", "created (running unless start is false)", _json(_ref(Container))),
        (400, 404, 409, 413, 500),
        body=_json(_ref(ContainerCreate)),
    ),
    "containers_get": _Op(
        "One container", ("200", "the container", _json(_ref(Container))), (404,)
    ),
    "containers_remove": _Op(
        "Remove a container",
        ("204", "removed", None),
        (400, 404, 409),
        [_flag("force", "kill a running one first")],
    ),
    "containers_start": _Op(
        "Start a created container",
        ("200", "running", _json(_ref(Container))),
        (400, 404, 409, 500),
    ),
    "containers_stop": _Op(
        "SIGTERM, grace period, SIGKILL, then teardown",
        ("200", "stopped and torn down", _json(_ref(Container))),
        (400, 404),
        [_seconds("timeout", "grace seconds (default 10)")],
    ),
    "containers_logs": _Op(
        "The container's output (stdout and stderr)",
        ("200", "chunked text", {"text/plain": {"schema": {"type": "string"}}}),
        (400, 404),
        [_flag("follow", "stream until it exits")],
    ),
    "containers_wait": _Op(
        "Block until the container has exited and been torn down",
        ("200", "exit status", _json(_ref(WaitResult))),
        (400, 404, 409),
        [_seconds("timeout", "give up after this many seconds (409)")],
    ),
    "images_list": _Op(
        "List images", ("200", "images", _json({"type": "array", "items": _ref(Image)}))
    ),
    "images_load": _Op(
        "Import a docker save archive or an OCI image layout, sent as a tar",
        ("200", "the loaded images", _json({"type": "array", "items": _ref(Image)})),
        (400, 413, 500),
        body={"application/x-tar": {"schema": {"type": "string", "format": "binary"}}},
    ),
    "images_pull": _Op(
        "Pull an image from a registry",
        (
            "200",
            'the image; with progress=1 NDJSON lines {"progress": {...}}, then '
            '{"image": {...}} or {"error": "...", "status": n}',
            {
                **_json(_ref(Image)),
                "application/x-ndjson": {"schema": {"type": "string"}},
            },
        ),
        (400, 401, 404, 413, 501, 502),
        [_flag("progress", "stream progress as newline-delimited JSON")],
        body=_json(_ref(ImagePull)),
    ),
    "images_remove": _Op("Remove an image", ("204", "removed", None), (404, 409)),
    "networks_list": _Op(
        "List networks (the default one first)",
        ("200", "networks", _json({"type": "array", "items": _ref(Network)})),
    ),
    "networks_create": _Op(
        "Create a network through the net driver (recorded only when the driver accepts it)",
        ("201", "created", _json(_ref(Network))),
        (400, 409, 413, 500),
        body=_json(_ref(NetworkCreate)),
    ),
    "networks_reload": _Op(
        "Re-apply the net driver's host state (firewall, bridges) from its records, as after "
        "a firewall reload; 501 when the driver cannot",
        ("200", "what the driver re-applied", _json({"type": "object"})),
        (500, 501),
    ),
    "networks_get": _Op("Inspect a network", ("200", "the network", _json(_ref(Network))), (404,)),
    "networks_remove": _Op(
        "Remove a network no container uses (from the net driver first)",
        ("204", "removed", None),
        (404, 409, 500),
    ),
    "volumes_list": _Op(
        "List volumes",
        ("200", "volumes", _json({"type": "array", "items": _ref(Volume)})),
        (400,),
        [
            {
                "name": "label",
                "in": "query",
                "description": "k=v or k; repeatable; all must match",
                "schema": {"type": "array", "items": {"type": "string"}},
                "style": "form",
                "explode": True,
            },
        ],
    ),
    "volumes_create": _Op(
        "Create a named volume (containers also create the ones they name on first use)",
        ("201", "created", _json(_ref(Volume))),
        (400, 409, 413),
        body=_json(_ref(VolumeCreate)),
    ),
    "volumes_get": _Op("Inspect a volume", ("200", "the volume", _json(_ref(Volume))), (404,)),
    "volumes_remove": _Op(
        "Remove a volume and its data; refused while any container (even stopped) mounts it",
        ("204", "removed", None),
        (404, 409),
    ),
}

_PARAMS = {
    "ref": "id, unique id prefix or name (containers); tag or id (images)",
    "name": "the network's or the volume's name",
}


def _operation(handler: str, params: list[str]) -> dict[str, Any]:
    op = _OPS[handler]
    status, description, content = op.answer
    answer: dict[str, Any] = {"description": description}
    if content is not None:
        answer["content"] = content
    responses: dict[str, Any] = {status: answer}
    for code in sorted({*op.errors, 400}):  # any request can be malformed
        responses[str(code)] = {"$ref": f"#/components/responses/E{code}"}
    out: dict[str, Any] = {
        "summary": op.summary,
        "operationId": "".join(w.title() if i else w for i, w in enumerate(handler.split("_"))),
    }
    parameters = [
        {
            "name": p,
            "in": "path",
            "required": True,
            "description": _PARAMS[p],
            "schema": {"type": "string"},
        }
        for p in params
    ] + op.query
    if parameters:
        out["parameters"] = parameters
    if op.body is not None:
        out["requestBody"] = {"required": True, "content": op.body}
    out["responses"] = responses
    return out


def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every ``/v1`` route."""
    paths: dict[str, dict[str, Any]] = {}
    for method, pattern, handler in _ROUTES:
        params = list(pattern.groupindex)
        path = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", pattern.pattern.strip("^$"))
        if not path.startswith("/v1"):
            continue
        paths.setdefault(path, {})[method.lower()] = _operation(handler, params)
    _, defs = models_json_schema(
        [(m, "validation") for m in _MODELS], ref_template="#/components/schemas/{model}"
    )
    codes = sorted({c for op in _OPS.values() for c in op.errors} | {400})
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "nyxd control-socket API",
            "version": __version__,
            "description": (
                "JSON over HTTP/1.1 on the unix socket NYXD_SOCKET (default "
                "/run/nyx/nyxd.sock, mode 0660, group nyx: its members are root-equivalent). "
                'Every error is {"error": "..."} with the status code of its kind. JSON '
                f"bodies nest at most {MAX_JSON_DEPTH} deep; booleans and numbers are strict "
                '("false" is not a boolean). Generated by nyx_cli.daemon._api_openapi; see api.md.'
            ),
        },
        "servers": [
            {
                "url": "http://localhost",
                "description": "over the unix socket "
                "(curl --unix-socket /run/nyx/nyxd.sock http://nyx/...)",
            }
        ],
        "paths": paths,
        "components": {
            "schemas": defs["$defs"],
            "responses": {
                f"E{c}": {"description": _ERRORS[c], "content": _json(_ref(Error))} for c in codes
            },
        },
    }


def main(argv: list[str] | None = None) -> None:
    """Write the document as YAML to the path given (or stdout)."""
    import yaml

    args = sys.argv[1:] if argv is None else argv
    text = "# generated by `python -m nyx_cli.daemon._api_openapi docs/openapi.yaml`: do not edit\n"
    text += yaml.safe_dump(openapi(), sort_keys=False, width=100, allow_unicode=True)
    if args:
        Path(args[0]).write_text(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
